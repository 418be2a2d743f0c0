//! Completing a warm transfer with REFER + Replaces (RFC 5589 §7, RFC 3891),
//! the protocol half, sans-IO. Once the node has bridged the caller to the
//! person it called, it can leave the media path: a REFER in the caller's
//! dialog whose `Refer-To` is the person's Contact carrying a `Replaces`
//! header that names the node's dialog with the person. The caller's phone
//! then calls the person itself; the person's phone takes that call in
//! place of the node's and ends the node's (BYE); the caller's phone
//! reports `200` in a NOTIFY and the node ends the caller's dialog.
//!
//! Here: whether both phones said they can ([`PeerCaps`], [`plan`]), the
//! `Replaces` value as the person's phone matches it ([`ReplacesId`]), the
//! `Refer-To` with the value escaped in its URI header part, and how long
//! the node waits for the person's phone to end the replaced dialog
//! ([`ReplacedWait`]). The REFER's progress is [`super::refer::ReferProgress`];
//! the SIP core carries out the rest (`in_dialog.rs`).

use std::time::{Duration, Instant};

use super::dialog::Dialog;
use super::message::Message;

/// After the transfer succeeded, the person's phone must end the replaced
/// dialog itself (RFC 3891 §3); after this long the node ends it (BYE).
pub const REPLACED_BYE_WAIT: Duration = Duration::from_secs(10);

/// What a far end said it can do: in its INVITE (a call to us) or in its
/// 2xx (a call we placed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCaps {
    /// `Allow` lists REFER.
    pub refer: bool,
    /// `Supported` or `Require` lists `replaces`.
    pub replaces: bool,
}

impl PeerCaps {
    pub fn of(msg: &Message) -> PeerCaps {
        PeerCaps {
            refer: msg.lists("Allow", "REFER"),
            replaces: msg.lists("Supported", "replaces") || msg.lists("Require", "replaces"),
        }
    }
}

/// Why a warm transfer stays bridged through the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// The caller's phone did not list REFER in `Allow`.
    CallerNoRefer,
    /// The caller's phone did not list `replaces` (it would call the
    /// person as a new call, leaving the node's call with them open).
    CallerNoReplaces,
    /// The person's phone did not list `replaces` in its answer.
    PersonNoReplaces,
    /// The person's dialog has no usable Contact to send the caller to.
    PersonTarget,
}

impl Unsupported {
    pub fn as_str(self) -> &'static str {
        match self {
            Unsupported::CallerNoRefer => "the caller's phone does not allow REFER",
            Unsupported::CallerNoReplaces => "the caller's phone does not support Replaces",
            Unsupported::PersonNoReplaces => "the person's phone does not support Replaces",
            Unsupported::PersonTarget => "the person's phone gave no usable Contact",
        }
    }
}

/// The dialog to replace, named as the phone receiving the `Replaces`
/// header matches it (RFC 3891 §3): `to-tag` is that phone's own tag,
/// `from-tag` the other side's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacesId {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
}

impl ReplacesId {
    /// Our `dialog` with a peer, named for that peer: its tag (our remote
    /// tag) is the `to-tag`, ours the `from-tag`.
    pub fn for_peer_of(dialog: &Dialog) -> ReplacesId {
        ReplacesId {
            call_id: dialog.call_id.clone(),
            to_tag: dialog.remote_tag.clone(),
            from_tag: dialog.local_tag.clone(),
        }
    }

    /// Whether a `Replaces` sent to us names our `dialog`.
    pub fn names(&self, dialog: &Dialog) -> bool {
        self.call_id == dialog.call_id
            && self.to_tag == dialog.local_tag
            && self.from_tag == dialog.remote_tag
    }

    /// The header's value: `call-id;to-tag=…;from-tag=…`.
    pub fn header_value(&self) -> String {
        format!(
            "{};to-tag={};from-tag={}",
            self.call_id, self.to_tag, self.from_tag
        )
    }

    /// A `Replaces` header's value; `None` unless it has a Call-ID and
    /// both tags (parameters in any order; `early-only` and others ignored).
    pub fn parse(value: &str) -> Option<ReplacesId> {
        let mut parts = value.split(';');
        let call_id = parts.next()?.trim();
        if call_id.is_empty() || call_id.contains(char::is_whitespace) {
            return None;
        }
        let (mut to_tag, mut from_tag) = (None, None);
        for p in parts.take(16) {
            let (name, v) = p.split_once('=').unwrap_or((p, ""));
            let v = v.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "to-tag" if !v.is_empty() => to_tag = Some(v.to_string()),
                "from-tag" if !v.is_empty() => from_tag = Some(v.to_string()),
                _ => {}
            }
        }
        Some(ReplacesId {
            call_id: call_id.to_string(),
            to_tag: to_tag?,
            from_tag: from_tag?,
        })
    }
}

/// `s` escaped for a SIP URI header value (RFC 3261 §25.1 `hvalue`):
/// unreserved and `[ ] / ? : + $` stay, every other byte becomes `%XX`
/// (`@` → `%40`, `;` → `%3B`, `=` → `%3D`).
pub fn escape_hvalue(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'['
                    | b']'
                    | b'/'
                    | b'?'
                    | b':'
                    | b'+'
                    | b'$'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Refer-To` value sending the caller to `target` (the person's
/// Contact URI) in place of the dialog `replaces` names:
/// `<target?Replaces=…>` (joined with `&` when the URI has headers
/// already). `None` when `target` is not a SIP URI we can put in angle
/// brackets as is.
pub fn refer_to(target: &str, replaces: &ReplacesId) -> Option<String> {
    let target = target.trim();
    let lower = target.to_ascii_lowercase();
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"');
    if !(lower.starts_with("sip:") || lower.starts_with("sips:"))
        || target.contains(bad)
        || target.len() > 512
    {
        return None;
    }
    let sep = if target.contains('?') { '&' } else { '?' };
    Some(format!(
        "<{target}{sep}Replaces={}>",
        escape_hvalue(&replaces.header_value())
    ))
}

/// Whether the node can ask the caller's phone to take the person's call
/// over, from what both phones advertised and the node's dialog with the
/// person; the `Refer-To` value when it can.
pub fn plan(
    caller: PeerCaps,
    person: PeerCaps,
    person_dialog: &Dialog,
) -> Result<String, Unsupported> {
    if !caller.refer {
        return Err(Unsupported::CallerNoRefer);
    }
    if !caller.replaces {
        return Err(Unsupported::CallerNoReplaces);
    }
    if !person.replaces {
        return Err(Unsupported::PersonNoReplaces);
    }
    refer_to(
        &person_dialog.remote_target,
        &ReplacesId::for_peer_of(person_dialog),
    )
    .ok_or(Unsupported::PersonTarget)
}

/// A REFER under way that asks the caller's phone to take the person's
/// call over (the caller's call's `Transfer::replacing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacing {
    /// The person's call (its key in the SIP core).
    pub person: String,
    /// A hang-up of the caller's call asked for while the REFER is under
    /// way (the bridge ended when the person's phone left the node's
    /// call): carried out when the outcome is known — `transferred` if the
    /// caller's phone reports success, as asked otherwise.
    pub hangup: Option<(crate::records::HangupBy, String)>,
}

/// The node's dialog with the person once the caller's phone has taken it
/// over: the person's phone ends it; if it has not within
/// [`REPLACED_BYE_WAIT`], the node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplacedWait {
    deadline: Instant,
}

impl ReplacedWait {
    pub fn start(now: Instant) -> ReplacedWait {
        ReplacedWait {
            deadline: now + REPLACED_BYE_WAIT,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The node must end the dialog itself now.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(headers: &str) -> Message {
        Message::parse(
            format!(
                "INVITE sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKa\r\n\
From: <sip:alice@10.0.0.9>;tag=rt\r\nTo: <sip:+15555550100@127.0.0.1>\r\nCall-ID: d1\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:alice@10.0.0.9:5062>\r\n{headers}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// The node's dialog with the person: we placed the call (our tag
    /// `ourtag` in From), the person answered with tag `theirs`.
    fn person_dialog() -> Dialog {
        Dialog {
            call_id: "k3j2h1@127.0.0.1".into(),
            local_tag: "ourtag".into(),
            remote_tag: "theirs".into(),
            local_uri: "sip:+15555550100@127.0.0.1".into(),
            remote_uri: "sip:+15555550199@127.0.0.1".into(),
            remote_target: "sip:person@127.0.0.1:5070;transport=udp".into(),
            route_set: Vec::new(),
            local_seq: 1,
            remote_seq: 0,
        }
    }

    #[test]
    fn what_a_phone_advertises() {
        let both = msg("Allow: INVITE, ACK, BYE, REFER, NOTIFY\r\nSupported: timer, Replaces\r\n");
        assert_eq!(
            PeerCaps::of(&both),
            PeerCaps {
                refer: true,
                replaces: true
            }
        );
        // Several header lines, the compact form of Supported, Require.
        let split = msg("Allow: INVITE\r\nAllow: refer\r\nk: 100rel\r\nRequire: replaces\r\n");
        assert_eq!(
            PeerCaps::of(&split),
            PeerCaps {
                refer: true,
                replaces: true
            }
        );
        let compact = msg("k: replaces\r\n");
        assert!(PeerCaps::of(&compact).replaces);
        // Nothing said is nothing supported; a token inside another is not it.
        assert_eq!(PeerCaps::of(&msg("")), PeerCaps::default());
        let near = msg("Allow: REFERS, INVITE\r\nSupported: noreplaces, replaces-x\r\n");
        assert_eq!(PeerCaps::of(&near), PeerCaps::default());
    }

    #[test]
    fn the_replaces_value_is_named_for_the_person() {
        let d = person_dialog();
        let id = ReplacesId::for_peer_of(&d);
        // The person's phone compares to-tag with its own tag (ours is
        // its remote tag): RFC 3891 §3.
        assert_eq!(id.to_tag, "theirs");
        assert_eq!(id.from_tag, "ourtag");
        assert_eq!(
            id.header_value(),
            "k3j2h1@127.0.0.1;to-tag=theirs;from-tag=ourtag"
        );
        assert_eq!(ReplacesId::parse(&id.header_value()), Some(id.clone()));
        // As the person's phone sees the dialog, the value names it.
        let theirs = Dialog {
            local_tag: "theirs".into(),
            remote_tag: "ourtag".into(),
            ..d.clone()
        };
        assert!(id.names(&theirs));
        assert!(
            !id.names(&d),
            "our own view of the dialog has the tags swapped"
        );
    }

    #[test]
    fn replaces_values_from_peers() {
        let id = ReplacesId::parse(" 98asjd8@h;from-tag=b;early-only;to-tag=a ").unwrap();
        assert_eq!(
            id,
            ReplacesId {
                call_id: "98asjd8@h".into(),
                to_tag: "a".into(),
                from_tag: "b".into()
            }
        );
        for bad in [
            "",
            ";to-tag=a;from-tag=b",
            "x;to-tag=a",
            "x;from-tag=b",
            "x;to-tag=;from-tag=b",
            "x y;to-tag=a;from-tag=b",
        ] {
            assert_eq!(ReplacesId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_values_are_escaped_in_the_uri() {
        assert_eq!(
            escape_hvalue("k3j2h1@127.0.0.1;to-tag=theirs;from-tag=ourtag"),
            "k3j2h1%40127.0.0.1%3Bto-tag%3Dtheirs%3Bfrom-tag%3Dourtag"
        );
        assert_eq!(
            escape_hvalue("a b&c%d\"<>,é"),
            "a%20b%26c%25d%22%3C%3E%2C%C3%A9"
        );
        assert_eq!(escape_hvalue("[::1]:5060/x?y+$"), "[::1]:5060/x?y+$");
    }

    #[test]
    fn refer_to_carries_the_escaped_replaces() {
        let d = person_dialog();
        let id = ReplacesId::for_peer_of(&d);
        assert_eq!(
            refer_to(&d.remote_target, &id).unwrap(),
            "<sip:person@127.0.0.1:5070;transport=udp?Replaces=k3j2h1%40127.0.0.1%3Bto-tag%3Dtheirs%3Bfrom-tag%3Dourtag>"
        );
        // A Contact with headers of its own: joined with '&'.
        assert_eq!(
            refer_to("sips:p@pbx.example?X-A=1", &id).unwrap(),
            "<sips:p@pbx.example?X-A=1&Replaces=k3j2h1%40127.0.0.1%3Bto-tag%3Dtheirs%3Bfrom-tag%3Dourtag>"
        );
        // What cannot go between angle brackets as is, or is no SIP URI.
        for bad in [
            "tel:+15555550199",
            "sip:a b@h",
            "sip:a@h>x",
            "sip:\"a\"@h",
            "",
            "sip:a@h\r\nX: y",
        ] {
            assert_eq!(refer_to(bad, &id), None, "{bad:?}");
        }
        // The Refer-To parses back: the URI's header part decodes to the
        // value the person's phone matches.
        let value = refer_to(&d.remote_target, &id).unwrap();
        let escaped = value
            .trim_end_matches('>')
            .split_once("?Replaces=")
            .unwrap()
            .1;
        let decoded = escaped
            .replace("%40", "@")
            .replace("%3B", ";")
            .replace("%3D", "=");
        assert_eq!(ReplacesId::parse(&decoded), Some(id));
    }

    #[test]
    fn the_far_ends_decide() {
        let d = person_dialog();
        let yes = PeerCaps {
            refer: true,
            replaces: true,
        };
        assert!(plan(yes, yes, &d).unwrap().contains("?Replaces="));
        // The person need not take REFER: it receives an INVITE.
        let person = PeerCaps {
            refer: false,
            replaces: true,
        };
        assert!(plan(yes, person, &d).is_ok());
        assert_eq!(
            plan(
                PeerCaps {
                    refer: false,
                    ..yes
                },
                yes,
                &d
            ),
            Err(Unsupported::CallerNoRefer)
        );
        assert_eq!(
            plan(
                PeerCaps {
                    replaces: false,
                    ..yes
                },
                yes,
                &d
            ),
            Err(Unsupported::CallerNoReplaces)
        );
        assert_eq!(
            plan(
                yes,
                PeerCaps {
                    replaces: false,
                    ..yes
                },
                &d
            ),
            Err(Unsupported::PersonNoReplaces)
        );
        let odd = Dialog {
            remote_target: "tel:+15555550199".into(),
            ..d
        };
        assert_eq!(plan(yes, yes, &odd), Err(Unsupported::PersonTarget));
        // From real messages: an INVITE and an answer.
        let caller = PeerCaps::of(&msg("Allow: INVITE, REFER\r\nSupported: replaces\r\n"));
        let silent = PeerCaps::of(&msg(""));
        assert!(plan(caller, caller, &person_dialog()).is_ok());
        assert_eq!(
            plan(silent, caller, &person_dialog()),
            Err(Unsupported::CallerNoRefer)
        );
    }

    #[test]
    fn the_node_ends_the_replaced_dialog_when_the_person_does_not() {
        let t0 = Instant::now();
        let wait = ReplacedWait::start(t0);
        assert_eq!(wait.deadline(), t0 + REPLACED_BYE_WAIT);
        assert!(!wait.expired(t0 + REPLACED_BYE_WAIT - Duration::from_millis(1)));
        assert!(wait.expired(t0 + REPLACED_BYE_WAIT));
    }
}
