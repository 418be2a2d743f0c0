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
pub mod tone;
mod udp;
pub mod vad;
pub mod webrtc;

pub use clock::{clock_status, configure_clock, ClockOptions, ClockScheduling, ClockStatus};
pub use error::MediaError;
pub use session::{Frame, MediaEvent, MediaSession, Playout, SessionConfig, SessionReport};
pub use stats::MediaStats;

/// The codec type is the domain's (shared with SIP and the WebRTC leg).
pub use crate::domain::Codec;
