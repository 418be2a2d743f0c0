//! The media layer's one error type. A peer's malformed packet is a value
//! (counted and dropped), never a panic.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("RTP packet malformed: {0}")]
    MalformedRtp(String),
    #[error("RTCP packet malformed: {0}")]
    MalformedRtcp(String),
    #[error("telephone-event payload malformed: {0}")]
    MalformedTelephoneEvent(&'static str),
    #[error("unsupported sample rate {0} Hz")]
    UnsupportedRate(u32),
    #[error("codec {0:?} is not supported by this build")]
    UnsupportedCodec(super::Codec),
    #[error("playout queue full: {queued_ms} ms already queued")]
    PlayoutQueueFull { queued_ms: u64 },
    #[error("media session is closed")]
    Closed,
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("recording: {0}")]
    Recording(String),
    /// libopus refused a frame or a packet (bad size, corrupt payload).
    #[error("opus: {0}")]
    Opus(String),
}
