//! One call's RTP session. Its 20 ms slots run on the process-wide media
//! clock ([`super::clock`]): the [`Pacer`]'s packet goes out, the socket
//! is drained into the sans-IO [`super::receiver::Receiver`] (arrival times
//! from the kernel), one 16 kHz caller frame goes to the owner, and both
//! directions are recorded when asked ([`Driver`]). The owner talks to it
//! through [`MediaEvent`]s (bounded channel, closed when the session ends),
//! a cloneable [`Playout`] handle, `stats()` and `close()`. No task and no
//! timer per call: 1000 calls cost the clock's few threads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::clock::{MediaClock, Paced};
use super::control::RtcpSession;
use super::driver::{Driver, Wire, CONTROL_HEADROOM};
use super::error::MediaError;
use super::jitter::JitterConfig;
use super::playout::FRAME_MS;
use super::playout::{Pacer, PacerConfig};
use super::receiver::{Receiver, ReceiverConfig, SourcePolicy};
use super::record::{Recorder, RecordingInfo};
use super::record_writer::{Finished, RecordingFeed};
use super::resample::{resample_clip, ClipMemo};
use super::stats::MediaStats;
use super::udp::enable_timestamps;
use super::Codec;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub remote: SocketAddr,
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    pub symmetric_rtp: bool,
    /// Which sources media may come from (and so where ours may go).
    pub sources: SourcePolicy,
    pub jitter: JitterConfig,
    /// Capacity of the event channel to the owner (50 audio frames = 1 s).
    pub event_capacity: usize,
    /// Most agent audio that may be queued for playout.
    pub max_queued_ms: u32,
    /// Record both directions to this WAV file (stereo, caller left).
    pub record_path: Option<PathBuf>,
    /// Send and receive RTCP on the RTP port + 1 (and accept it muxed on
    /// the RTP port).
    pub rtcp: bool,
    /// SRTP keys (SDES) when the call's media is encrypted.
    pub srtp: Option<super::srtp::SrtpKeys>,
}

impl SessionConfig {
    pub fn new(
        remote: SocketAddr,
        codec: Codec,
        payload_type: u8,
        telephone_event_pt: Option<u8>,
    ) -> SessionConfig {
        SessionConfig {
            remote,
            codec,
            payload_type,
            telephone_event_pt,
            symmetric_rtp: true,
            sources: SourcePolicy::default(),
            jitter: JitterConfig {
                clock_rate: codec.rtp_clock_rate(),
                ..JitterConfig::default()
            },
            event_capacity: 256,
            max_queued_ms: 120_000,
            record_path: None,
            rtcp: true,
            srtp: None,
        }
    }
}

/// 20 ms of caller audio at 16 kHz (320 samples), taken at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub samples: Vec<i16>,
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    Audio(Frame),
    Dtmf {
        digit: char,
        duration_ms: u32,
    },
    /// The first RTP packet of utterance `id` went out at `at`.
    PlayoutStarted {
        id: u64,
        at: Instant,
    },
    /// The last RTP packet of utterance `id` went out at `at`.
    PlayoutFinished {
        id: u64,
        at: Instant,
    },
    /// Utterance `id` was flushed after `played_ms` (0 = never started).
    PlayoutFlushed {
        id: u64,
        played_ms: u32,
    },
    /// The peer sent an RTCP BYE (it is leaving; SIP BYE usually follows).
    RtcpBye,
}

/// What a closed session leaves behind.
#[derive(Debug, Clone)]
pub struct SessionReport {
    pub stats: MediaStats,
    pub recording: Option<RecordingInfo>,
    pub recording_error: Option<String>,
}

struct Shared {
    pacer: Mutex<Pacer>,
    driver: Mutex<Driver>,
    /// Set by `close`/drop: `play` refuses, the clock lets go.
    closed: AtomicBool,
}

impl Shared {
    /// Ends the session once: last events, RTCP BYE, the owner's channel
    /// closed, the recording handed over to be closed. Later calls return
    /// the same figures and no recording.
    fn finish(&self) -> (SessionReport, Option<oneshot::Receiver<Finished>>) {
        self.closed.store(true, Ordering::Relaxed);
        lock(&self.driver).finish(&self.pacer)
    }
}

impl Paced for Shared {
    fn send_due(&self, now: Instant) -> bool {
        let mut d = lock(&self.driver);
        if d.finished {
            return false;
        }
        d.send_due(&self.pacer, now);
        true
    }

    fn after_send(&self, now: Instant) -> Option<Instant> {
        let mut d = lock(&self.driver);
        if d.finished {
            return None;
        }
        d.after_send(&self.pacer, now);
        Some(lock(&self.pacer).next_deadline())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the call's audio down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plays the agent's audio into the call. Cheap to clone; every method
/// returns at once (the media clock does the pacing).
#[derive(Clone)]
pub struct Playout {
    shared: Arc<Shared>,
    codec: Codec,
}

impl std::fmt::Debug for Playout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playout")
            .field("codec", &self.codec)
            .finish()
    }
}

impl Playout {
    /// Queues an utterance of mono PCM at `sample_rate` (resampled here, in
    /// the caller's task, to the codec's rate).
    pub fn play(
        &self,
        utterance_id: u64,
        pcm: Vec<i16>,
        sample_rate: u32,
    ) -> Result<(), MediaError> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(MediaError::Closed);
        }
        let pcm = resample_clip(ClipMemo::global(), &pcm, sample_rate, self.codec.pcm_rate())?;
        lock(&self.shared.pacer).enqueue(utterance_id, pcm)
    }

    /// Drops everything queued (barge-in): the next 20 ms slot is silence.
    /// `PlayoutFlushed` events for each dropped utterance are sent at once.
    pub fn flush(&self) {
        lock(&self.shared.pacer).flush();
        lock(&self.shared.driver).emit_playout_events(&self.shared.pacer);
    }

    /// Holds the queued audio: silence from the next 20 ms slot until
    /// `resume` or `flush` (barge-in at speech onset).
    pub fn pause(&self) {
        lock(&self.shared.pacer).pause();
    }

    /// Plays on from the sample where `pause` stopped.
    pub fn resume(&self) {
        lock(&self.shared.pacer).resume();
    }

    /// Sends an RFC 4733 digit (needs a negotiated telephone-event PT).
    pub fn send_dtmf(&self, digit: char, duration_ms: u32) -> Result<(), MediaError> {
        lock(&self.shared.pacer).send_digit(digit, duration_ms)
    }

    pub fn queued_ms(&self) -> u64 {
        lock(&self.shared.pacer).queued_ms()
    }

    pub fn is_playing(&self) -> bool {
        lock(&self.shared.pacer).is_playing()
    }
}

/// One call's running RTP session.
pub struct MediaSession {
    shared: Arc<Shared>,
    local: SocketAddr,
    codec: Codec,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("local", &self.local)
            .field("codec", &self.codec)
            .finish()
    }
}

impl MediaSession {
    /// Starts the session on `socket` (bound): its first slot is served at
    /// once by the media clock.
    pub fn start(
        socket: std::net::UdpSocket,
        cfg: SessionConfig,
    ) -> Result<(MediaSession, mpsc::Receiver<MediaEvent>), MediaError> {
        socket.set_nonblocking(true)?;
        enable_timestamps(&socket);
        let local = socket.local_addr()?;
        Self::start_on(Wire::Udp(socket), local, cfg)
    }

    /// Starts a session whose packets another stack carries (the WebRTC
    /// leg): our RTP goes to `out`, the peer's comes from `inbound` with
    /// its arrival time. RTCP is that stack's; `cfg.rtcp` is ignored.
    pub fn start_channel(
        out: mpsc::Sender<Vec<u8>>,
        inbound: mpsc::Receiver<(Vec<u8>, Instant)>,
        mut cfg: SessionConfig,
    ) -> Result<(MediaSession, mpsc::Receiver<MediaEvent>), MediaError> {
        cfg.rtcp = false;
        let peer = cfg.remote;
        let wire = Wire::Channel { out, inbound, peer };
        Self::start_on(wire, SocketAddr::from(([0, 0, 0, 0], 0)), cfg)
    }

    fn start_on(
        wire: Wire,
        local: SocketAddr,
        cfg: SessionConfig,
    ) -> Result<(MediaSession, mpsc::Receiver<MediaEvent>), MediaError> {
        let now = Instant::now();
        let pacer = Pacer::new(
            PacerConfig {
                codec: cfg.codec,
                payload_type: cfg.payload_type,
                telephone_event_pt: cfg.telephone_event_pt,
                ssrc: rand::random(),
                initial_seq: rand::random(),
                initial_timestamp: rand::random(),
                max_queued_ms: cfg.max_queued_ms,
            },
            now,
        )?;
        let receiver = Receiver::new(
            ReceiverConfig {
                codec: cfg.codec,
                payload_type: cfg.payload_type,
                telephone_event_pt: cfg.telephone_event_pt,
                remote: cfg.remote,
                symmetric_rtp: cfg.symmetric_rtp,
                sources: cfg.sources,
                jitter: cfg.jitter,
            },
            now,
        )?;
        let recording = match &cfg.record_path {
            Some(p) => Some(RecordingFeed::new(
                Recorder::create(p, cfg.codec.pcm_rate())?,
                cfg.codec.samples_per_frame(FRAME_MS),
            )),
            None => None,
        };
        let rtcp = RtcpSession::new(
            pacer.ssrc(),
            format!("switchboard@{}", local.ip()),
            cfg.codec.rtp_clock_rate(),
            now,
        );
        // RTCP on port + 1 when we can bind it; muxed RTCP is accepted anyway.
        let rtcp_sock = if cfg.rtcp {
            bind_rtcp(local)
                .map_err(|e| tracing::debug!(error = %e, "no RTCP socket; RTCP only if muxed"))
                .ok()
        } else {
            None
        };
        let rtcp_remote = SocketAddr::new(cfg.remote.ip(), cfg.remote.port().wrapping_add(1));
        let srtp = match &cfg.srtp {
            Some(keys) => Some(
                super::srtp::SrtpSession::new(keys)
                    .map_err(|e| MediaError::Io(std::io::Error::other(e.to_string())))?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel(cfg.event_capacity.clamp(2 * CONTROL_HEADROOM, 4096));
        let mut driver = Driver::new(
            wire,
            receiver,
            recording,
            tx,
            cfg.rtcp.then_some(rtcp),
            rtcp_sock,
            rtcp_remote,
        );
        if let Some(srtp) = srtp {
            driver.set_srtp(srtp);
        }
        let shared = Arc::new(Shared {
            pacer: Mutex::new(pacer),
            driver: Mutex::new(driver),
            closed: AtomicBool::new(false),
        });
        if !MediaClock::global().add(shared.clone()) {
            return Err(MediaError::Io(std::io::Error::other(
                "no media clock thread",
            )));
        }
        Ok((
            MediaSession {
                shared,
                local,
                codec: cfg.codec,
            },
            rx,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn playout(&self) -> Playout {
        Playout {
            shared: self.shared.clone(),
            codec: self.codec,
        }
    }

    /// Figures so far.
    pub fn stats(&self) -> MediaStats {
        lock(&self.shared.driver).stats(&self.shared.pacer)
    }

    /// Applies new SDP media (re-INVITE). A codec change restarts the
    /// receive path; queued playout keeps its original encoding.
    pub fn update_remote(&self, remote: SocketAddr, codec: Codec, payload_type: u8) {
        lock(&self.shared.driver).apply_update(remote, codec, payload_type);
    }

    /// Stops the session at once and returns the final figures and the
    /// recording (once its writer has closed the file).
    pub async fn close(self) -> SessionReport {
        let (mut report, pending) = self.shared.finish();
        if let Some(outcome) = pending {
            match outcome.await {
                Ok((info, error)) => {
                    report.recording = info;
                    report.recording_error = error;
                }
                Err(_) => report.recording_error = Some("recording writer failed".into()),
            }
        }
        report
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        // Nothing is sent after this; the recording's writer closes the file
        // (a no-op after `close`), and the clock lets go at its next slot.
        let _ = self.shared.finish();
    }
}

/// The RTCP socket on RTP port + 1, non-blocking and kernel-stamped.
fn bind_rtcp(local: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(local.ip(), local.port().wrapping_add(1)))?;
    s.set_nonblocking(true)?;
    enable_timestamps(&s);
    Ok(s)
}
