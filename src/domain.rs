//! The domain values every layer shares, each defined once and parsed once:
//! phone numbers (`E164`), codecs, SIP transports, which way a call went,
//! its `call_logs` status and a persona's escalation policy. This module
//! depends on nothing of ours; `sip`, `media`, `agent_runtime` and `api`
//! all depend down on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A telephone number in E.164: `+` then 8 to 15 digits, the first not 0.
/// Trunk forms (`sip:`/`tel:` users, national numbers) become one in
/// `sip::number`; request bodies in `api::validate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct E164(String);

impl E164 {
    /// Accepts only the canonical form; the error says what is wrong.
    pub fn parse(s: &str) -> Result<E164, String> {
        let digits = s.strip_prefix('+').ok_or("must start with + (E.164)")?;
        if !(8..=15).contains(&digits.len()) {
            return Err("must have 8 to 15 digits after +".into());
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must contain only digits after +".into());
        }
        if digits.starts_with('0') {
            return Err("country code cannot start with 0".into());
        }
        Ok(E164(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A closed set of names spelled the same in SQL, JSON and configuration.
macro_rules! name_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!("must be one of: {}", Self::ALL.join(", "))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use name_enum;

name_enum!(
    /// A SIP transport: a trunk's `outbound_transport`, a Via's protocol.
    Transport {
        Udp = "udp",
        Tcp = "tcp",
        Tls = "tls",
        /// SIP over WebSocket (RFC 7118), and over secure WebSocket: only
        /// ever dialled in (a browser or softphone), never a trunk's.
        Ws = "ws",
        Wss = "wss",
    }
);

impl Transport {
    /// What a trunk's `outbound_transport` may be: the ones we can dial.
    pub const TRUNK: &'static [&'static str] = &["udp", "tcp", "tls"];

    /// The protocol as a Via header writes it.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The `transport=` URI parameter (none for UDP, the default).
    pub fn uri_param(self) -> Option<&'static str> {
        match self {
            Transport::Udp => None,
            other => Some(other.as_str()),
        }
    }

    /// Stream transports: no retransmission of requests (RFC 3261 §17).
    pub fn reliable(self) -> bool {
        self != Transport::Udp
    }

    /// Encrypted on the wire: SDP over it may carry SRTP keys.
    pub fn secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// A WebSocket connection cannot be opened by us (the browser or
    /// softphone dials in): without it, nothing can be sent.
    pub fn dialable(self) -> bool {
        !matches!(self, Transport::Ws | Transport::Wss)
    }
}

name_enum!(
    /// Which way a call was set up (`call_logs.direction`).
    CallDirection {
        /// A trunk called one of our numbers; the runtime answered.
        Inbound = "inbound",
        /// We called out through a trunk (the API); the far end answered.
        Outbound = "outbound",
        /// A browser (or any WebRTC peer) called an agent through WHIP.
        Web = "web",
    }
);

impl CallDirection {
    /// `agent_sessions.channel` of a call this way.
    pub fn channel(self) -> &'static str {
        match self {
            CallDirection::Inbound | CallDirection::Outbound => "phone",
            CallDirection::Web => "web",
        }
    }
}

name_enum!(
    /// `call_logs.status` (the schema's check constraint).
    CallStatus {
        Ringing = "ringing",
        InProgress = "in_progress",
        Completed = "completed",
        Failed = "failed",
        Rejected = "rejected",
        Busy = "busy",
        NoAnswer = "no_answer",
        Transferred = "transferred",
    }
);

name_enum!(
    /// `agent_sessions.status`.
    SessionStatus {
        Active = "active",
        Completed = "completed",
        Escalated = "escalated",
        Failed = "failed",
    }
);

name_enum!(
    /// How an agent hands a caller to a person (`agents.transfer_mode`):
    /// `blind` asks the far end to take the caller there (REFER); `warm`
    /// calls the person first, tells them who is calling and why, then
    /// bridges the two calls.
    TransferMode {
        Blind = "blind",
        Warm = "warm",
    }
);

name_enum!(
    /// What a persona does when the model cannot answer (`fallback_policy`).
    EscalationPolicy {
        Apologize = "apologize",
        Escalate = "escalate",
        Retry = "retry",
        Transfer = "transfer",
    }
);

impl EscalationPolicy {
    /// How many times a failed model call is tried.
    pub fn attempts(self) -> u32 {
        if self == EscalationPolicy::Retry {
            2
        } else {
            1
        }
    }

    /// Whether a failure hands the caller to a person (when there is one).
    pub fn transfers(self) -> bool {
        matches!(
            self,
            EscalationPolicy::Escalate | EscalationPolicy::Transfer
        )
    }
}

/// An audio codec the media engine encodes and decodes. SDP negotiation
/// (SIP) or the WebRTC offer picks one; payload type numbers travel beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0, 8 kHz.
    Pcmu,
    /// G.711 A-law, static payload type 8, 8 kHz.
    Pcma,
    /// G.722, static payload type 9, 16 kHz audio (RTP clock 8 kHz, RFC 3551).
    G722,
    /// Opus (RFC 7587): a dynamic payload type, RTP clock 48 kHz whatever
    /// the audio bandwidth; decoded and encoded at 16 kHz (the agent's rate).
    /// The WebRTC leg's codec, and the SIP leg's when the peer offers it.
    Opus,
}

impl Codec {
    /// The SDP encoding name (`a=rtpmap:<pt> <name>/<clock>`).
    pub fn sdp_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// The static payload type from RFC 3551 (Opus has none).
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// The payload type our own offers use: the static one, else the usual
    /// dynamic 111 (96–127, taken by no static codec of ours).
    pub fn offer_payload_type(self) -> u8 {
        self.static_payload_type().unwrap_or(111)
    }

    /// The encoding parameters after the clock rate in `a=rtpmap`: Opus is
    /// always written `opus/48000/2` (RFC 7587 §7), mono or not.
    pub fn rtpmap_channels(self) -> Option<u8> {
        (self == Codec::Opus).then_some(2)
    }

    /// The RTP clock rate written in SDP and used for timestamps (and so
    /// the rate of `telephone-event` beside this codec, RFC 4733 §2.1).
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 8000,
        }
    }

    /// Parses an SDP/config codec name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name.to_ascii_uppercase().as_str() {
            "PCMU" => Some(Codec::Pcmu),
            "PCMA" => Some(Codec::Pcma),
            "G722" => Some(Codec::G722),
            "OPUS" => Some(Codec::Opus),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        assert!(E164::parse("+15555550100").is_ok());
        assert!(E164::parse("+4930123456").is_ok());
        for bad in [
            "15555550100",
            "+1555",
            "+1234567890123456",
            "+1555 555",
            "+0155555501",
            "",
            "+",
        ] {
            assert!(E164::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!("tls".parse::<Transport>().unwrap(), Transport::Tls);
        assert!("TLS".parse::<Transport>().is_err());
        assert!(Transport::Tls.reliable() && !Transport::Udp.reliable());
        assert_eq!(CallDirection::Web.as_str(), "web");
        assert_eq!(CallDirection::Web.channel(), "web");
        assert_eq!(CallDirection::Outbound.channel(), "phone");
        assert_eq!(
            "no_answer".parse::<CallStatus>().unwrap(),
            CallStatus::NoAnswer
        );
        assert_eq!(
            serde_json::to_string(&CallStatus::InProgress).unwrap(),
            "\"in_progress\""
        );
        assert_eq!(EscalationPolicy::Retry.attempts(), 2);
        assert!(EscalationPolicy::Escalate.transfers());
        assert_eq!(Codec::from_name("OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::Opus.rtp_clock_rate(), 48_000);
    }
}
