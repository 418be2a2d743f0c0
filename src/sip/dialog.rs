//! Dialog state (RFC 3261 §12): Call-ID, tags, CSeq on both sides, remote
//! target and route set, and building in-dialog requests (BYE, REFER...).
//! Also the UAS's own 2xx retransmission until the ACK (§13.3.1.4), which the
//! transaction layer does not do, as a sans-IO timer.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::{new_branch, Message, Method, NameAddr, StartLine};
use super::transaction::Timers;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our URI (the INVITE's To for a UAS) and the peer's (From).
    pub local_uri: String,
    pub remote_uri: String,
    /// The peer's Contact: where in-dialog requests go.
    pub remote_target: String,
    /// Record-Route values, in the order our requests must carry them.
    pub route_set: Vec<String>,
    pub local_seq: u32,
    pub remote_seq: u32,
}

impl Dialog {
    /// The dialog a UAS creates when it answers `invite` (§12.1.1).
    pub fn uas(invite: &Message, local_tag: &str) -> Option<Dialog> {
        let from = invite.from()?;
        let to = invite.to()?;
        let contact = invite
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| from.uri.clone());
        Some(Dialog {
            call_id: invite.call_id()?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: from.tag().unwrap_or("").to_string(),
            local_uri: to.uri,
            remote_uri: from.uri,
            remote_target: contact,
            route_set: invite
                .header_values("Record-Route")
                .into_iter()
                .map(str::to_string)
                .collect(),
            local_seq: rand::random::<u16>() as u32 + 1,
            remote_seq: invite.cseq()?.seq,
        })
    }

    /// The dialog a UAC gets from a 2xx to its INVITE (§12.1.2): outbound
    /// calls use it for the ACK and everything after.
    pub fn uac(invite: &Message, response: &Message) -> Option<Dialog> {
        let from = invite.from()?;
        let to = response.to()?;
        let mut route_set: Vec<String> = response
            .header_values("Record-Route")
            .into_iter()
            .map(str::to_string)
            .collect();
        route_set.reverse();
        Some(Dialog {
            call_id: invite.call_id()?.to_string(),
            local_tag: from.tag()?.to_string(),
            remote_tag: to.tag()?.to_string(),
            local_uri: from.uri,
            remote_uri: to.uri,
            remote_target: response.contact()?.uri,
            route_set,
            local_seq: invite.cseq()?.seq,
            remote_seq: 0,
        })
    }

    /// The ACK for a 2xx (§13.2.2.4): its own branch, the INVITE's CSeq number.
    pub fn ack_for_2xx(&self, invite_seq: u32, via: &str, transport: &str) -> Message {
        let mut headers = vec![
            (
                "Via".to_string(),
                format!("SIP/2.0/{transport} {via};branch={};rport", new_branch()),
            ),
            ("Max-Forwards".to_string(), "70".to_string()),
            (
                "From".to_string(),
                format!("<{}>;tag={}", self.local_uri, self.local_tag),
            ),
            (
                "To".to_string(),
                format!("<{}>;tag={}", self.remote_uri, self.remote_tag),
            ),
            ("Call-ID".to_string(), self.call_id.clone()),
            ("CSeq".to_string(), format!("{invite_seq} ACK")),
        ];
        for route in &self.route_set {
            headers.push(("Route".to_string(), route.clone()));
        }
        Message {
            start: StartLine::Request {
                method: Method::Ack,
                uri: self.remote_target.clone(),
            },
            headers,
            body: Bytes::new(),
        }
    }

    /// True when `request` belongs to this dialog.
    pub fn matches(&self, request: &Message) -> bool {
        request.call_id() == Some(self.call_id.as_str())
            && request
                .to()
                .and_then(|t| t.tag().map(str::to_string))
                .as_deref()
                == Some(self.local_tag.as_str())
            && request
                .from()
                .and_then(|f| f.tag().map(str::to_string))
                .unwrap_or_default()
                == self.remote_tag
    }

    /// §12.2.2: a request with a lower CSeq than the last one is out of
    /// order (500). ACK and CANCEL reuse the INVITE's number.
    pub fn accept_remote_cseq(&mut self, request: &Message) -> bool {
        let Some(cseq) = request.cseq() else {
            return false;
        };
        if matches!(cseq.method, Method::Ack | Method::Cancel) {
            return true;
        }
        if cseq.seq <= self.remote_seq && self.remote_seq != 0 {
            return false;
        }
        self.remote_seq = cseq.seq;
        true
    }

    /// A new in-dialog request from us (§12.2.1.1). `via` is our sent-by
    /// (`host:port`), `transport` `UDP`/`TCP`, `contact` our Contact URI.
    pub fn request(
        &mut self,
        method: Method,
        via: &str,
        transport: &str,
        contact: &str,
    ) -> Message {
        self.local_seq += 1;
        // Loose routing (;lr) keeps the remote target as Request-URI; a
        // strict first route would take its place (rare; not supported).
        let uri = self.remote_target.clone();
        let mut headers = vec![
            (
                "Via".to_string(),
                format!("SIP/2.0/{transport} {via};branch={};rport", new_branch()),
            ),
            ("Max-Forwards".to_string(), "70".to_string()),
            (
                "From".to_string(),
                format!("<{}>;tag={}", self.local_uri, self.local_tag),
            ),
            (
                "To".to_string(),
                format!("<{}>;tag={}", self.remote_uri, self.remote_tag),
            ),
            ("Call-ID".to_string(), self.call_id.clone()),
            (
                "CSeq".to_string(),
                format!("{} {}", self.local_seq, method.as_str()),
            ),
            ("Contact".to_string(), format!("<{contact}>")),
        ];
        for route in &self.route_set {
            headers.push(("Route".to_string(), route.clone()));
        }
        Message {
            start: StartLine::Request { method, uri },
            headers,
            body: Bytes::new(),
        }
    }

    /// Where in-dialog requests are sent: the first route's URI, else the target.
    pub fn next_hop_uri(&self) -> String {
        match self.route_set.first().and_then(|r| NameAddr::parse(r)) {
            Some(na) => na.uri,
            None => self.remote_target.clone(),
        }
    }
}

/// The request again with credentials for a 401/407 challenge (RFC 3261
/// §22.2): CSeq + 1, a new branch, `Authorization` or `Proxy-Authorization`.
/// Prefers a SHA-256 challenge when the server offers one (RFC 8760).
pub fn authorize_retry(
    request: &Message,
    challenge: &Message,
    username: &str,
    password: &str,
) -> Option<Message> {
    let (challenge_header, answer_header) = match challenge.status()? {
        401 => ("WWW-Authenticate", "Authorization"),
        407 => ("Proxy-Authenticate", "Proxy-Authorization"),
        _ => return None,
    };
    let offers: Vec<&str> = challenge
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(challenge_header))
        .map(|(_, v)| v.as_str())
        .collect();
    let chosen = offers
        .iter()
        .find(|c| c.to_ascii_uppercase().contains("SHA-256"))
        .or(offers.first())?;
    let method = request.method()?.as_str().to_string();
    let uri = request.request_uri()?.to_string();
    let value = super::digest::answer_challenge(
        chosen,
        &method,
        &uri,
        username,
        password,
        &super::message::random_token(12),
        1,
    )?;
    let mut retry = next_attempt(request)?;
    retry.remove_header(answer_header);
    retry.add_header(answer_header, value);
    Some(retry)
}

/// `request` sent again as a new transaction of the same dialog attempt
/// (§8.1.3.5): CSeq one higher, a fresh Via branch, all else kept.
pub fn next_attempt(request: &Message) -> Option<Message> {
    let mut retry = request.clone();
    let cseq = request.cseq()?;
    let method = request.method()?.as_str().to_string();
    retry.set_header("CSeq", format!("{} {}", cseq.seq.checked_add(1)?, method));
    let mut via = request.top_via()?;
    via.set_param("branch", Some(new_branch()));
    if let Some(pos) = retry
        .headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case("Via"))
    {
        retry.headers[pos].1 = via.to_header();
    }
    Some(retry)
}

/// What the 2xx retransmission timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerTimer {
    Idle,
    Retransmit,
    /// 64*T1 passed without an ACK: the UAS must send BYE (§13.3.1.4).
    AckTimeout,
}

/// Retransmits the 2xx at T1, 2T1... capped at T2 until the ACK comes or
/// 64*T1 passes. Over TCP there is no retransmission, only the deadline.
#[derive(Debug, Clone)]
pub struct AnswerRetransmit {
    next: Option<(Instant, Duration)>,
    deadline: Instant,
    t2: Duration,
    done: bool,
}

impl AnswerRetransmit {
    pub fn new(now: Instant, timers: Timers, reliable: bool) -> AnswerRetransmit {
        AnswerRetransmit {
            next: (!reliable).then_some((now + timers.t1, timers.t1)),
            deadline: now + timers.t64(),
            t2: timers.t2,
            done: false,
        }
    }

    pub fn acked(&mut self) {
        self.done = true;
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn next_wake(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        Some(
            self.next
                .map(|(at, _)| at.min(self.deadline))
                .unwrap_or(self.deadline),
        )
    }

    pub fn on_timer(&mut self, now: Instant) -> AnswerTimer {
        if self.done {
            return AnswerTimer::Idle;
        }
        if now >= self.deadline {
            self.done = true;
            return AnswerTimer::AckTimeout;
        }
        match self.next {
            Some((at, interval)) if now >= at => {
                let next = (interval * 2).min(self.t2);
                self.next = Some((now + next, next));
                AnswerTimer::Retransmit
            }
            _ => AnswerTimer::Idle,
        }
    }
}

/// A digit from an INFO `application/dtmf-relay` body (`Signal=5`,
/// `Duration=160`).
pub fn parse_dtmf_relay(body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut digit = None;
    let mut duration = 100;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                let c = v.trim().chars().next()?;
                digit = "0123456789*#ABCDabcd"
                    .contains(c)
                    .then(|| c.to_ascii_uppercase());
            }
            "duration" => duration = v.trim().parse().unwrap_or(100).min(10_000),
            _ => {}
        }
    }
    digit.map(|d| (d, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Message {
        Message::parse(
            b"INVITE sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKa\r\n\
Record-Route: <sip:proxy1;lr>, <sip:proxy2;lr>\r\nFrom: <sip:alice@10.0.0.9>;tag=rt\r\nTo: <sip:+15555550100@127.0.0.1>\r\n\
Call-ID: d1\r\nCSeq: 7 INVITE\r\nContact: <sip:alice@10.0.0.9:5062>\r\n\r\n",
        )
        .unwrap()
    }

    #[test]
    fn uas_dialog_builds_in_dialog_bye_and_checks_cseq() {
        let inv = invite();
        let mut d = Dialog::uas(&inv, "lt").unwrap();
        assert_eq!(d.remote_target, "sip:alice@10.0.0.9:5062");
        assert_eq!(d.next_hop_uri(), "sip:proxy1;lr");
        let bye = d.request(
            Method::Bye,
            "127.0.0.1:5060",
            "UDP",
            "sip:switchboard@127.0.0.1:5060",
        );
        bye.validate_request().unwrap();
        assert_eq!(bye.request_uri(), Some("sip:alice@10.0.0.9:5062"));
        assert_eq!(bye.to().unwrap().tag(), Some("rt"));
        assert_eq!(bye.from().unwrap().tag(), Some("lt"));
        assert_eq!(
            bye.header_values("Route"),
            vec!["<sip:proxy1;lr>", "<sip:proxy2;lr>"]
        );
        let seq = bye.cseq().unwrap().seq;
        let next = d.request(Method::Refer, "127.0.0.1:5060", "UDP", "sip:s@127.0.0.1");
        assert_eq!(next.cseq().unwrap().seq, seq + 1);

        let mut remote_bye = Message::parse(
            b"BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKb\r\nFrom: <sip:alice@10.0.0.9>;tag=rt\r\n\
To: <sip:+15555550100@127.0.0.1>;tag=lt\r\nCall-ID: d1\r\nCSeq: 8 BYE\r\n\r\n",
        )
        .unwrap();
        assert!(d.matches(&remote_bye));
        assert!(d.accept_remote_cseq(&remote_bye));
        assert!(
            !d.accept_remote_cseq(&remote_bye),
            "same CSeq again is out of order"
        );
        remote_bye.set_header("Call-ID", "other");
        assert!(!d.matches(&remote_bye));
    }

    #[test]
    fn answer_retransmits_until_ack_timeout_at_64_t1() {
        let t0 = Instant::now();
        let mut r = AnswerRetransmit::new(t0, Timers::default(), false);
        let mut sends = Vec::new();
        let mut timeout = None;
        for _ in 0..100 {
            let Some(at) = r.next_wake() else { break };
            match r.on_timer(at) {
                AnswerTimer::Retransmit => sends.push((at - t0).as_millis()),
                AnswerTimer::AckTimeout => timeout = Some((at - t0).as_millis()),
                AnswerTimer::Idle => {}
            }
        }
        assert_eq!(&sends[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(timeout, Some(32_000));
        let mut acked = AnswerRetransmit::new(t0, Timers::default(), false);
        acked.acked();
        assert_eq!(acked.next_wake(), None);
        let tcp = AnswerRetransmit::new(t0, Timers::default(), true);
        assert_eq!(tcp.next_wake(), Some(t0 + Duration::from_secs(32)));
    }

    #[test]
    fn uac_dialog_acks_2xx_and_answers_a_407_challenge() {
        let invite = Message::parse(
            b"INVITE sip:+15551230000@trunk.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKout\r\n\
From: <sip:+15555550100@127.0.0.1>;tag=me\r\nTo: <sip:+15551230000@trunk.example>\r\nCall-ID: out1\r\nCSeq: 1 INVITE\r\n\r\n",
        )
        .unwrap();
        let server = crate::sip::digest::DigestServer::new("trunk", [1; 32], 300);
        let mut challenge = Message::response_to(&invite, 407, "Proxy Authentication Required");
        let us: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        for c in server.challenges(1000, us, false) {
            challenge.add_header("Proxy-Authenticate", c);
        }
        let retry = authorize_retry(&invite, &challenge, "acct", "pw").unwrap();
        assert_eq!(retry.cseq().unwrap().seq, 2);
        assert_ne!(
            retry.top_via().unwrap().branch(),
            invite.top_via().unwrap().branch()
        );
        let auth = retry.header("Proxy-Authorization").unwrap();
        assert!(auth.contains("SHA-256"), "{auth}");
        assert_eq!(
            server.verify(
                auth,
                crate::sip::digest::DigestRequest {
                    method: "INVITE",
                    request_uri: invite.request_uri().unwrap(),
                    source: us,
                },
                "acct",
                "pw",
                1001
            ),
            crate::sip::digest::Verdict::Valid
        );

        let mut ok = Message::response_to(&retry, 200, "OK");
        ok.set_to_tag("them");
        ok.add_header("Contact", "<sip:gw@192.0.2.9:5080>");
        ok.add_header("Record-Route", "<sip:p1;lr>, <sip:p2;lr>");
        let d = Dialog::uac(&retry, &ok).unwrap();
        let ack = d.ack_for_2xx(2, "127.0.0.1:5060", "UDP");
        ack.validate_request().unwrap();
        assert_eq!(ack.request_uri(), Some("sip:gw@192.0.2.9:5080"));
        assert_eq!(ack.cseq().unwrap().seq, 2);
        assert_eq!(ack.to().unwrap().tag(), Some("them"));
        assert_eq!(
            ack.header_values("Route"),
            vec!["<sip:p2;lr>", "<sip:p1;lr>"]
        );
    }

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(
            parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"),
            Some(('5', 160))
        );
        assert_eq!(parse_dtmf_relay(b"Signal= #\nDuration=x"), Some(('#', 100)));
        assert_eq!(parse_dtmf_relay(b"Signal=Z"), None);
        assert_eq!(parse_dtmf_relay(&[0xff]), None);
    }
}
