//! Everything between RTP packets and 16 kHz PCM frames: RTP/RTCP sessions,
//! G.711/G.722/Opus codecs, SRTP, RFC 4733 DTMF, jitter buffer, resampling, VAD and
//! endpointing, paced playout, recording. Knows nothing of agents, SIP or the
//! database.

mod clock;
pub mod codec;
pub mod control;
mod driver;
pub mod dtmf;
pub mod endpoint;
pub mod error;
pub mod g711;
pub mod jitter;
pub mod opus;
pub mod playout;
pub mod ports;
pub mod receiver;
pub mod record;
mod record_writer;
pub mod resample;
pub mod session;
pub mod srtp;
pub mod stats;
mod udp;
pub mod vad;

pub use clock::{clock_status, configure_clock, ClockOptions, ClockScheduling, ClockStatus};
pub use error::MediaError;
pub use session::{Frame, MediaEvent, MediaSession, Playout, SessionConfig, SessionReport};
pub use stats::MediaStats;

/// An audio codec the media engine can encode and decode on the SIP leg.
/// SIP's SDP negotiation picks one; payload type numbers travel beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0, 8 kHz.
    Pcmu,
    /// G.711 A-law, static payload type 8, 8 kHz.
    Pcma,
    /// G.722, static payload type 9, 16 kHz audio (RTP clock 8 kHz, RFC 3551).
    G722,
    /// Opus (RFC 7587): a dynamic payload type, RTP clock 48 kHz whatever
    /// the audio bandwidth; decoded and encoded at 16 kHz (the agent's rate).
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

    /// The payload type our own offers use: the static one, else a
    /// dynamic one (96–127) that no static codec of ours takes.
    pub fn offer_payload_type(self) -> u8 {
        self.static_payload_type().unwrap_or(111)
    }

    /// The RTP clock rate written in SDP and used for timestamps (and so
    /// the rate of `telephone-event` beside this codec, RFC 4733 §2.1).
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            Codec::Opus => opus::OPUS_RTP_CLOCK,
            _ => 8000,
        }
    }

    /// The encoding parameters after the clock rate in `a=rtpmap`: Opus is
    /// always written `opus/48000/2` (RFC 7587 §7), mono or not.
    pub fn rtpmap_channels(self) -> Option<u8> {
        (self == Codec::Opus).then_some(2)
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
