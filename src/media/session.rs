//! The tokio driver of one call's RTP session: a task owning the UDP socket
//! that feeds datagrams to the sans-IO [`Receiver`], wakes on the
//! [`Pacer`]'s 20 ms deadlines to send one packet and hand one 16 kHz frame
//! to the owner, and records both directions when asked. The owner talks
//! to it through [`MediaEvent`]s (bounded channel), a cloneable [`Playout`]
//! handle, `stats()` and `close()`. Dropping the session stops the task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webrtc_util::marshal::Marshal;

use super::control::{RtcpSession, Sending};
use super::error::MediaError;
use super::jitter::JitterConfig;
use super::playout::{OutgoingPacket, Pacer, PacerConfig, PlayoutEvent};
use super::receiver::{Received, Receiver, ReceiverConfig};
use super::record::{Recorder, RecordingInfo};
use super::resample::resample_all;
use super::stats::{MediaStats, SendCounters};
use super::Codec;

/// Largest datagram we read; anything longer is truncated and malformed.
const MAX_DATAGRAM: usize = 1500;
/// Most caller frames delivered in one tick after a stall.
const MAX_CATCH_UP_FRAMES: u64 = 10;
const FRAME: std::time::Duration = std::time::Duration::from_millis(20);
/// Channel slots reserved for non-audio events.
const CONTROL_HEADROOM: usize = 32;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub remote: SocketAddr,
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    pub symmetric_rtp: bool,
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
            jitter: JitterConfig {
                clock_rate: codec.rtp_clock_rate(),
                ..JitterConfig::default()
            },
            event_capacity: 256,
            max_queued_ms: 120_000,
            record_path: None,
            rtcp: true,
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
    stats: Mutex<MediaStats>,
    /// A new remote/codec from a re-INVITE, applied by the task.
    update: Mutex<Option<(SocketAddr, Codec, u8)>>,
    wake: Notify,
    cancel: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the call's audio down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plays the agent's audio into the call. Cheap to clone; every method
/// returns at once (the task does the pacing).
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
        if self.shared.cancel.is_cancelled() {
            return Err(MediaError::Closed);
        }
        let pcm = resample_all(&pcm, sample_rate, self.codec.pcm_rate())?;
        lock(&self.shared.pacer).enqueue(utterance_id, pcm)
    }

    /// Drops everything queued (barge-in): the next 20 ms slot is silence.
    /// `PlayoutFlushed` events follow for each dropped utterance.
    pub fn flush(&self) {
        lock(&self.shared.pacer).flush();
        self.shared.wake.notify_one();
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
    task: Option<JoinHandle<SessionReport>>,
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
    /// Starts the session task on `socket` (bound, non-blocking). Must be
    /// called inside a tokio runtime.
    pub fn start(
        socket: std::net::UdpSocket,
        cfg: SessionConfig,
    ) -> Result<(MediaSession, mpsc::Receiver<MediaEvent>), MediaError> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let sock = tokio::net::UdpSocket::from_std(socket)?;
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
                jitter: cfg.jitter,
            },
            now,
        )?;
        let recorder = match &cfg.record_path {
            Some(p) => Some(Recorder::create(p, cfg.codec.pcm_rate())?),
            None => None,
        };
        let ssrc = pacer.ssrc();
        let rtcp = RtcpSession::new(
            ssrc,
            format!("switchboard@{}", local.ip()),
            cfg.codec.rtp_clock_rate(),
            now,
        );
        // RTCP on port + 1 when we can bind it; muxed RTCP is accepted anyway.
        let rtcp_sock = if cfg.rtcp {
            std::net::UdpSocket::bind(SocketAddr::new(local.ip(), local.port().wrapping_add(1)))
                .and_then(|s| {
                    s.set_nonblocking(true)?;
                    tokio::net::UdpSocket::from_std(s)
                })
                .map_err(|e| tracing::debug!(error = %e, "no RTCP socket; RTCP only if muxed"))
                .ok()
        } else {
            None
        };
        let rtcp_remote = SocketAddr::new(cfg.remote.ip(), cfg.remote.port().wrapping_add(1));
        let (tx, rx) = mpsc::channel(cfg.event_capacity.clamp(2 * CONTROL_HEADROOM, 4096));
        let shared = Arc::new(Shared {
            pacer: Mutex::new(pacer),
            stats: Mutex::new(MediaStats::default()),
            update: Mutex::new(None),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let task = tokio::spawn(run(Driver {
            shared: shared.clone(),
            sock,
            receiver,
            recorder,
            tx,
            events_dropped: 0,
            sent: SendCounters::default(),
            rtcp: cfg.rtcp.then_some(rtcp),
            rtcp_sock,
            rtcp_remote,
            rtcp_muxed: false,
        }));
        Ok((
            MediaSession {
                shared,
                task: Some(task),
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

    /// Figures so far (updated every 20 ms).
    pub fn stats(&self) -> MediaStats {
        *lock(&self.shared.stats)
    }

    /// Applies new SDP media (re-INVITE). A codec change restarts the
    /// receive path; queued playout keeps its original encoding.
    pub fn update_remote(&self, remote: SocketAddr, codec: Codec, payload_type: u8) {
        *lock(&self.shared.update) = Some((remote, codec, payload_type));
        self.shared.wake.notify_one();
    }

    /// Stops the task at once and returns the final figures and recording.
    pub async fn close(mut self) -> SessionReport {
        self.shared.cancel.cancel();
        let stats = self.stats();
        match self.task.take() {
            Some(t) => t.await.unwrap_or(SessionReport {
                stats,
                recording: None,
                recording_error: Some("media task failed".into()),
            }),
            None => SessionReport {
                stats,
                recording: None,
                recording_error: None,
            },
        }
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        // The task sees the cancellation at its next await and finishes the
        // recording itself; nothing is sent after this.
        self.shared.cancel.cancel();
    }
}

struct Driver {
    shared: Arc<Shared>,
    sock: tokio::net::UdpSocket,
    receiver: Receiver,
    recorder: Option<Recorder>,
    tx: mpsc::Sender<MediaEvent>,
    events_dropped: u64,
    sent: SendCounters,
    rtcp: Option<RtcpSession>,
    rtcp_sock: Option<tokio::net::UdpSocket>,
    rtcp_remote: SocketAddr,
    /// The peer sends RTCP on the RTP port (RFC 5761): answer there too.
    rtcp_muxed: bool,
}

impl Driver {
    fn emit(&mut self, ev: MediaEvent) {
        // A slow owner loses audio frames first: the last slots of the
        // channel are kept for DTMF and playout events, which it must see.
        if matches!(ev, MediaEvent::Audio(_)) && self.tx.capacity() <= CONTROL_HEADROOM {
            self.events_dropped += 1;
            return;
        }
        if self.tx.try_send(ev).is_err() {
            self.events_dropped += 1;
        }
    }

    fn emit_playout_events(&mut self) {
        let events: Vec<PlayoutEvent> = {
            let mut p = lock(&self.shared.pacer);
            std::iter::from_fn(|| p.poll_event()).collect()
        };
        for e in events {
            self.emit(match e {
                PlayoutEvent::Started { id, at } => MediaEvent::PlayoutStarted { id, at },
                PlayoutEvent::Finished { id, at } => MediaEvent::PlayoutFinished { id, at },
                PlayoutEvent::Flushed { id, played_ms } => {
                    MediaEvent::PlayoutFlushed { id, played_ms }
                }
            });
        }
    }

    fn send(&mut self, pkt: &OutgoingPacket) {
        let packet = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: pkt.marker,
                payload_type: pkt.payload_type,
                sequence_number: pkt.seq,
                timestamp: pkt.timestamp,
                ssrc: pkt.ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::copy_from_slice(&pkt.payload),
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        match packet.marshal_to(&mut buf) {
            Ok(n) => match self.sock.try_send_to(&buf[..n], self.receiver.send_to()) {
                Ok(_) => {
                    let at = Instant::now();
                    if let Some(prev) = self.sent.last_at {
                        let gap = at.saturating_duration_since(prev).as_micros() as u64;
                        self.sent.min_interval_us =
                            Some(self.sent.min_interval_us.map_or(gap, |m| m.min(gap)));
                        self.sent.max_interval_us = self.sent.max_interval_us.max(gap);
                    }
                    self.sent.last_at = Some(at);
                    lock(&self.shared.pacer).mark_sent(at);
                    self.sent.packets += 1;
                    self.sent.bytes += n as u64;
                }
                Err(e) => {
                    self.sent.errors += 1;
                    tracing::debug!(error = %e, "RTP send failed");
                }
            },
            Err(e) => tracing::warn!(error = %e, "RTP marshal failed"),
        }
    }

    fn tick(&mut self, now: Instant) {
        let (pkt, agent_pcm, pacer_stats, rtp_time, slots) = {
            let mut p = lock(&self.shared.pacer);
            let slot_before = p.slot();
            let pkt = p.poll(now);
            // Usually 1; more after a stall the pacer skipped over.
            let slots = p.slot().saturating_sub(slot_before);
            let pcm = if pkt.is_some() && self.recorder.is_some() {
                p.last_frame_pcm().to_vec()
            } else {
                Vec::new()
            };
            (pkt, pcm, p.stats(), p.next_timestamp(), slots)
        };
        let Some(pkt) = pkt else { return };
        self.send(&pkt);
        self.send_rtcp_report(now, rtp_time);
        // One caller frame per elapsed slot, so a stall delays the caller's
        // audio but loses none of it (bounded: at most MAX_CATCH_UP frames).
        let frames = slots.clamp(1, MAX_CATCH_UP_FRAMES);
        for k in (0..frames).rev() {
            let at = now.checked_sub(FRAME * k as u32).unwrap_or(now);
            if let Some(frame) = self.receiver.tick(at) {
                let samples = frame.to_vec();
                self.emit(MediaEvent::Audio(Frame { samples, at }));
            }
            if let Some(rec) = self.recorder.as_mut() {
                let caller = self.receiver.last_codec_frame();
                // The agent side of skipped slots is silence: nothing was sent.
                let agent: &[i16] = if k == 0 { &agent_pcm } else { &[] };
                let n = caller.len().max(agent.len()).max(agent_pcm.len());
                let silence = vec![0i16; n];
                let caller = if caller.is_empty() {
                    &silence[..]
                } else {
                    caller
                };
                let agent = if agent.is_empty() {
                    &silence[..]
                } else {
                    agent
                };
                if let Err(e) = rec.write(caller, agent) {
                    tracing::warn!(error = %e, "recording stopped");
                    self.recorder = None;
                }
            }
        }
        if let Some(d) = self.receiver.poll_stale_digit(now) {
            self.emit(MediaEvent::Dtmf {
                digit: d.digit,
                duration_ms: d.duration_ms,
            });
        }
        self.emit_playout_events();
        let rtcp_stats = self.rtcp.as_ref().map(|r| r.stats()).unwrap_or_default();
        *lock(&self.shared.stats) = MediaStats::gather(
            self.receiver.stats(),
            self.receiver.jitter_stats(),
            pacer_stats,
            self.sent,
            self.events_dropped,
        )
        .with_rtcp(rtcp_stats);
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        match self.receiver.handle_datagram(data, from, now) {
            Received::Digits(digits) => {
                for d in digits {
                    self.emit(MediaEvent::Dtmf {
                        digit: d.digit,
                        duration_ms: d.duration_ms,
                    });
                }
            }
            Received::Rtcp => {
                self.rtcp_muxed = true;
                self.on_rtcp(data, from, now);
            }
            Received::Nothing => {}
        }
    }

    fn on_rtcp(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        let Some(rtcp) = self.rtcp.as_mut() else {
            return;
        };
        match rtcp.handle(data, now) {
            Ok(input) => {
                if !self.rtcp_muxed {
                    // Symmetric RTCP: answer where it really comes from.
                    self.rtcp_remote = from;
                }
                if input.bye {
                    self.emit(MediaEvent::RtcpBye);
                }
            }
            Err(e) => tracing::debug!(error = %e, "RTCP dropped"),
        }
    }

    fn rtcp_target(&self) -> (Option<&tokio::net::UdpSocket>, SocketAddr) {
        if self.rtcp_muxed || self.rtcp_sock.is_none() {
            (
                if self.rtcp_muxed {
                    Some(&self.sock)
                } else {
                    None
                },
                self.receiver.send_to(),
            )
        } else {
            (self.rtcp_sock.as_ref(), self.rtcp_remote)
        }
    }

    fn send_rtcp_report(&mut self, now: Instant, rtp_time: u32) {
        let sending = Sending {
            packets: self.sent.packets,
            octets: self.sent.bytes.saturating_sub(self.sent.packets * 12),
            rtp_time,
        };
        let reception = self.receiver.reception();
        let jitter_ms = self.receiver.jitter_stats().jitter_ms;
        let Some(bytes) = self
            .rtcp
            .as_mut()
            .and_then(|r| r.poll(now, sending, reception, jitter_ms))
        else {
            return;
        };
        if let (Some(sock), to) = self.rtcp_target() {
            let _ = sock.try_send_to(&bytes, to);
        }
    }

    fn send_rtcp_bye(&self) {
        if let Some(bye) = self.rtcp.as_ref().and_then(|r| r.bye()) {
            if let (Some(sock), to) = self.rtcp_target() {
                let _ = sock.try_send_to(&bye, to);
            }
        }
    }

    fn apply_update(&mut self) {
        let update = lock(&self.shared.update).take();
        if let Some((remote, codec, pt)) = update {
            if let Err(e) = self.receiver.update(remote, codec, pt, Instant::now()) {
                tracing::warn!(error = %e, "media update refused");
            }
        }
    }
}

async fn run(mut d: Driver) -> SessionReport {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
    let cancel = d.shared.cancel.clone();
    let shared = d.shared.clone();
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(sleep);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let deadline = lock(&shared.pacer).next_deadline();
        // Check the clock ourselves first: under heavy I/O the timer wheel
        // is serviced late, and a due slot must not wait for it.
        let now = Instant::now();
        if now >= deadline {
            d.tick(now);
            continue;
        }
        sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = &mut sleep => {
                d.tick(Instant::now());
            }
            r = d.sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => d.on_datagram(&buf[..n], from, Instant::now()),
                // ICMP errors surface here on some systems; the call goes on.
                Err(e) => tracing::debug!(error = %e, "RTP receive error"),
            },
            r = recv_rtcp(d.rtcp_sock.as_ref(), &mut rtcp_buf) => match r {
                Ok((n, from)) => d.on_rtcp(&rtcp_buf[..n], from, Instant::now()),
                Err(e) => tracing::debug!(error = %e, "RTCP receive error"),
            },
            _ = shared.wake.notified() => {
                d.apply_update();
                d.emit_playout_events();
            }
        }
    }
    d.emit_playout_events();
    d.send_rtcp_bye();
    let stats = *lock(&shared.stats);
    let (recording, recording_error) = match d.recorder.take().map(Recorder::finish) {
        Some(Ok(info)) => (Some(info), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    SessionReport {
        stats,
        recording,
        recording_error,
    }
}

/// Receives on the RTCP socket, or never when there is none.
async fn recv_rtcp(
    sock: Option<&tokio::net::UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}
