//! One call's media state, driven by the media clock ([`super::clock`]) once
//! per 20 ms slot: `send_due` puts the pacer's packet on the wire, then
//! `after_send` drains the sockets (datagrams keep the kernel's arrival
//! time, [`super::udp`]), hands the caller's frame to the owner, records
//! and reports RTCP. The owner's handles reach it through one mutex, held
//! for microseconds. Nothing here allocates per packet except the
//! caller's frame, which the owner receives by value, and the jitter
//! buffer's copy of each received payload.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::control::{RtcpSession, Sending};
use super::playout::{Pacer, PacketHeader, PlayoutEvent};
use super::receiver::{Received, Receiver};
use super::record_writer::{Finished, RecordingFeed};
use super::session::{lock, Frame, MediaEvent, SessionReport};
use super::srtp::SrtpSession;
use super::stats::{MediaStats, SendCounters};
use super::udp::{recv_dated, Stamps};
use super::Codec;

/// Largest datagram we send or read (longer ones are truncated, then
/// counted as malformed).
pub(crate) const MAX_DATAGRAM: usize = 1500;
/// Most datagrams read from one socket per slot: a flood costs bounded
/// work; the rest waits in (and overflows) the kernel's buffer.
const MAX_READS_PER_SLOT: usize = 32;
/// Most caller frames delivered in one slot after a stall.
const MAX_CATCH_UP_FRAMES: u64 = 10;
const FRAME: Duration = Duration::from_millis(20);
/// Channel slots reserved for non-audio events.
pub(crate) const CONTROL_HEADROOM: usize = 32;
const RTP_HEADER: usize = 12;

/// Where a session's RTP goes and comes from.
pub(crate) enum Wire {
    /// Our own UDP socket (the SIP leg): plain RTP, kernel-stamped.
    Udp(UdpSocket),
    /// Another stack carries the packets (the WebRTC leg's ICE and SRTP):
    /// our RTP goes out on a bounded channel, the peer's comes in with its
    /// arrival time, from `peer` as far as the receiver is concerned (the
    /// stack has authenticated it already).
    Channel {
        out: mpsc::Sender<Vec<u8>>,
        inbound: mpsc::Receiver<(Vec<u8>, Instant)>,
        peer: SocketAddr,
    },
}

/// What a slot's send leaves for the rest of its work.
#[derive(Debug, Clone, Copy)]
struct SentSlot {
    /// Slots the pacer advanced (more than 1 after a skipped stall).
    slots: u64,
    /// RTP time of the next slot, for the RTCP sender report.
    rtp_time: u32,
}

pub(crate) struct Driver {
    /// Our RTP socket (non-blocking, kernel-stamped) or channel; closed by
    /// `finish`, so the port is free when `close` returns.
    wire: Option<Wire>,
    receiver: Receiver,
    /// Both sides, handed to the recording writer a second at a time.
    recording: Option<RecordingFeed>,
    /// The owner's events; dropped when the session finishes, which ends
    /// the owner's `recv()` loop even while it still holds a `Playout`.
    tx: Option<mpsc::Sender<MediaEvent>>,
    events_dropped: u64,
    sent: SendCounters,
    rtcp: Option<RtcpSession>,
    /// Our RTCP socket on RTP port + 1 (non-blocking, kernel-stamped).
    rtcp_sock: Option<UdpSocket>,
    rtcp_remote: SocketAddr,
    /// The peer sends RTCP on the RTP port (RFC 5761): answer there too.
    rtcp_muxed: bool,
    /// Set when the session closed: the clock drops it at its next look.
    pub(crate) finished: bool,
    /// Reused buffers: the pacer's payload, the datagram, the agent's PCM
    /// of the slot (only kept when recording).
    payload: Vec<u8>,
    datagram: Vec<u8>,
    received: Vec<u8>,
    agent_pcm: Vec<i16>,
    pending: Option<SentSlot>,
    /// What `finish` reported, for a second `finish` (drop after close).
    report: Option<SessionReport>,
    /// SDES-keyed SRTP/SRTCP on this call (a TLS leg): every packet out is
    /// protected, every packet in must authenticate or is dropped.
    srtp: Option<SrtpSession>,
}

impl Driver {
    pub(crate) fn new(
        wire: Wire,
        receiver: Receiver,
        recording: Option<RecordingFeed>,
        tx: mpsc::Sender<MediaEvent>,
        rtcp: Option<RtcpSession>,
        rtcp_sock: Option<UdpSocket>,
        rtcp_remote: SocketAddr,
    ) -> Driver {
        Driver {
            srtp: None,
            wire: Some(wire),
            receiver,
            recording,
            tx: Some(tx),
            events_dropped: 0,
            sent: SendCounters::default(),
            rtcp,
            rtcp_sock,
            rtcp_remote,
            rtcp_muxed: false,
            finished: false,
            payload: Vec::with_capacity(MAX_DATAGRAM),
            datagram: Vec::with_capacity(MAX_DATAGRAM),
            received: vec![0; MAX_DATAGRAM],
            agent_pcm: Vec::new(),
            pending: None,
            report: None,
        }
    }

    /// Protects the session's packets with SRTP from now on.
    pub(crate) fn set_srtp(&mut self, srtp: SrtpSession) {
        self.srtp = Some(srtp);
    }

    pub(crate) fn emit(&mut self, ev: MediaEvent) {
        let Some(tx) = self.tx.as_ref() else {
            return;
        };
        // A slow owner loses audio frames first: the last slots of the
        // channel are kept for DTMF and playout events, which it must see.
        if matches!(ev, MediaEvent::Audio(_)) && tx.capacity() <= CONTROL_HEADROOM {
            self.events_dropped += 1;
            return;
        }
        if tx.try_send(ev).is_err() {
            self.events_dropped += 1;
        }
    }

    pub(crate) fn emit_playout_events(&mut self, pacer: &Mutex<Pacer>) {
        // One event at a time: no list to allocate on the (usual) empty tick.
        loop {
            let Some(e) = lock(pacer).poll_event() else {
                return;
            };
            self.emit(match e {
                PlayoutEvent::Started { id, at } => MediaEvent::PlayoutStarted { id, at },
                PlayoutEvent::Finished { id, at } => MediaEvent::PlayoutFinished { id, at },
                PlayoutEvent::Flushed { id, played_ms } => {
                    MediaEvent::PlayoutFlushed { id, played_ms }
                }
            });
        }
    }

    /// First half of a slot: the pacer's packet, if due, goes out now.
    pub(crate) fn send_due(&mut self, pacer: &Mutex<Pacer>, now: Instant) {
        let (header, slots, rtp_time) = {
            let mut p = lock(pacer);
            let slot_before = p.slot();
            let Some(header) = p.poll_into(now, &mut self.payload) else {
                return;
            };
            // Usually 1; more after a stall the pacer skipped over.
            let slots = p.slot().saturating_sub(slot_before);
            if self.recording.is_some() {
                self.agent_pcm.clear();
                self.agent_pcm.extend_from_slice(p.last_frame_pcm());
            }
            (header, slots, p.next_timestamp())
        };
        self.send_rtp(&header, pacer);
        self.pending = Some(SentSlot { slots, rtp_time });
    }

    fn send_rtp(&mut self, h: &PacketHeader, pacer: &Mutex<Pacer>) {
        // RFC 3550 §5.1 fixed header: V=2, no padding/extension/CSRC.
        self.datagram.clear();
        self.datagram.push(0x80);
        self.datagram
            .push(((h.marker as u8) << 7) | (h.payload_type & 0x7F));
        self.datagram.extend_from_slice(&h.seq.to_be_bytes());
        self.datagram.extend_from_slice(&h.timestamp.to_be_bytes());
        self.datagram.extend_from_slice(&h.ssrc.to_be_bytes());
        let room = MAX_DATAGRAM - RTP_HEADER;
        self.datagram
            .extend_from_slice(&self.payload[..self.payload.len().min(room)]);
        let sealed;
        let bytes: &[u8] = match self.srtp.as_mut() {
            Some(srtp) => match srtp.protect_rtp(&self.datagram) {
                Ok(b) => {
                    sealed = b;
                    &sealed
                }
                Err(e) => {
                    self.sent.errors += 1;
                    tracing::debug!(error = %e, "SRTP protect failed");
                    return;
                }
            },
            None => &self.datagram,
        };
        let sent = match self.wire.as_ref() {
            None => return,
            Some(Wire::Udp(sock)) => sock.send_to(bytes, self.receiver.send_to()),
            // A full channel (the stack is stalled) loses this packet, as
            // a full socket buffer would.
            Some(Wire::Channel { out, .. }) => out
                .try_send(bytes.to_vec())
                .map(|()| bytes.len())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::WouldBlock)),
        };
        match sent {
            Ok(n) => {
                let at = Instant::now();
                if let Some(prev) = self.sent.last_at {
                    let gap = at.saturating_duration_since(prev).as_micros() as u64;
                    self.sent.min_interval_us =
                        Some(self.sent.min_interval_us.map_or(gap, |m| m.min(gap)));
                    self.sent.max_interval_us = self.sent.max_interval_us.max(gap);
                }
                self.sent.last_at = Some(at);
                lock(pacer).mark_sent(at);
                self.sent.packets += 1;
                self.sent.bytes += n as u64;
            }
            Err(e) => {
                self.sent.errors += 1;
                tracing::debug!(error = %e, "RTP send failed");
            }
        }
    }

    /// Reads what arrived since the last slot, RTP then RTCP, each datagram
    /// dated by the kernel.
    pub(crate) fn drain(&mut self) {
        if let Some(Wire::Channel { .. }) = self.wire {
            return self.drain_channel();
        }
        let stamps = Stamps::now();
        let mut buf = std::mem::take(&mut self.received);
        for _ in 0..MAX_READS_PER_SLOT {
            let Some(Wire::Udp(sock)) = self.wire.as_ref() else {
                break;
            };
            match recv_dated(sock, &mut buf) {
                Ok((n, from, stamp)) => self.on_datagram(&buf[..n], from, stamps.arrival(stamp)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors (port unreachable after our sends) surface here
                // once each; the call goes on.
                Err(e) => tracing::debug!(error = %e, "RTP receive error"),
            }
        }
        // Taken out for the loop: `on_rtcp` needs all of `self`.
        if let Some(rtcp_sock) = self.rtcp_sock.take() {
            for _ in 0..MAX_READS_PER_SLOT {
                match recv_dated(&rtcp_sock, &mut buf) {
                    Ok((n, from, stamp)) => {
                        let plain = match self.srtp.as_mut() {
                            Some(srtp) => match srtp.unprotect_rtcp(&buf[..n]) {
                                Ok(p) => p,
                                Err(_) => {
                                    self.receiver.count_malformed();
                                    continue;
                                }
                            },
                            None => bytes::Bytes::copy_from_slice(&buf[..n]),
                        };
                        self.on_rtcp(&plain, from, stamps.arrival(stamp), true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => tracing::debug!(error = %e, "RTCP receive error"),
                }
            }
            self.rtcp_sock = Some(rtcp_sock);
        }
        self.received = buf;
    }

    /// What the other stack delivered since the last slot (bounded, as
    /// socket reads are).
    fn drain_channel(&mut self) {
        for _ in 0..MAX_READS_PER_SLOT {
            let Some(Wire::Channel { inbound, peer, .. }) = self.wire.as_mut() else {
                return;
            };
            let peer = *peer;
            match inbound.try_recv() {
                Ok((packet, at)) => self.on_datagram(&packet, peer, at),
                Err(_) => return,
            }
        }
    }

    /// Second half of a slot, after every due packet of the clock went out:
    /// what arrived, RTCP, the caller's frame(s), recording, digits,
    /// playout events.
    pub(crate) fn after_send(&mut self, pacer: &Mutex<Pacer>, now: Instant) {
        self.drain();
        // After the drain: nothing just pushed may look newer than the tick.
        let now = now.max(Instant::now());
        let Some(slot) = self.pending.take() else {
            return;
        };
        self.send_rtcp_report(now, slot.rtp_time);
        // One caller frame per elapsed slot, so a stall delays the caller's
        // audio but loses none of it (bounded: at most MAX_CATCH_UP frames).
        let frames = slot.slots.clamp(1, MAX_CATCH_UP_FRAMES);
        for k in (0..frames).rev() {
            let at = now.checked_sub(FRAME * k as u32).unwrap_or(now);
            if let Some(frame) = self.receiver.tick(at) {
                let samples = frame.to_vec();
                self.emit(MediaEvent::Audio(Frame { samples, at }));
            }
            if let Some(feed) = self.recording.as_mut() {
                // The agent side of skipped slots is silence: nothing was sent.
                let agent: &[i16] = if k == 0 { &self.agent_pcm } else { &[] };
                feed.push(self.receiver.last_codec_frame(), agent);
            }
        }
        if let Some(d) = self.receiver.poll_stale_digit(now) {
            self.emit(MediaEvent::Dtmf {
                digit: d.digit,
                duration_ms: d.duration_ms,
            });
        }
        self.emit_playout_events(pacer);
    }

    pub(crate) fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        let opened;
        let data: &[u8] = match self.srtp.as_mut() {
            Some(srtp) => {
                // RFC 5761 §4: RTCP packet types 200–204 sit where RTP has M+PT.
                let is_rtcp = data.len() > 1 && (200..=204).contains(&data[1]);
                let plain = if is_rtcp {
                    srtp.unprotect_rtcp(data)
                } else {
                    srtp.unprotect_rtp(data)
                };
                match plain {
                    Ok(p) => {
                        opened = p;
                        &opened
                    }
                    Err(e) => {
                        tracing::trace!(error = %e, %from, "SRTP packet dropped");
                        self.receiver.count_malformed();
                        return;
                    }
                }
            }
            None => data,
        };
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
                // RFC 5761: RTCP on the RTP port means the peer muxes, but
                // only when it comes from the address our RTP goes to. Any
                // other port on the peer's host (another call's reports to
                // its port + 1) must not turn our reports onto the RTP flow.
                let ours = from == self.receiver.send_to();
                if ours {
                    self.rtcp_muxed = true;
                }
                self.on_rtcp(data, from, now, ours);
            }
            Received::Nothing => {}
        }
    }

    /// One RTCP compound packet. `may_latch`: it came on our RTCP port, or
    /// on the RTP port from the peer's own RTP address, so its source is
    /// where reports go from now on; a report from anywhere else on the
    /// peer's host is read but moves nothing.
    pub(crate) fn on_rtcp(&mut self, data: &[u8], from: SocketAddr, now: Instant, may_latch: bool) {
        // RTCP from a stranger could end the call (BYE) or, answered
        // where it came from, redirect our reports: same rule as RTP.
        if !self.receiver.ip_allowed(from.ip()) {
            self.receiver.count_foreign();
            return;
        }
        let Some(rtcp) = self.rtcp.as_mut() else {
            return;
        };
        match rtcp.handle(data, now) {
            Ok(input) => {
                if !self.rtcp_muxed && may_latch {
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

    fn rtcp_target(&self) -> (Option<&UdpSocket>, SocketAddr) {
        if self.rtcp_muxed {
            let sock = match self.wire.as_ref() {
                Some(Wire::Udp(sock)) => Some(sock),
                _ => None,
            };
            (sock, self.receiver.send_to())
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
        self.send_rtcp(&bytes);
    }

    /// Sends one compound RTCP packet, as SRTCP on a keyed call.
    fn send_rtcp(&mut self, bytes: &[u8]) {
        let sealed = match self.srtp.as_mut() {
            Some(srtp) => match srtp.protect_rtcp(bytes) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::debug!(error = %e, "SRTCP protect failed");
                    return;
                }
            },
            None => None,
        };
        let wire = sealed.as_deref().unwrap_or(bytes);
        if let (Some(sock), to) = self.rtcp_target() {
            let _ = sock.send_to(wire, to);
        }
    }

    fn send_rtcp_bye(&mut self) {
        if let Some(bye) = self.rtcp.as_ref().and_then(|r| r.bye()) {
            self.send_rtcp(&bye);
        }
    }

    /// A re-INVITE's new remote, codec or payload type.
    pub(crate) fn apply_update(&mut self, remote: SocketAddr, codec: Codec, pt: u8) {
        if let Err(e) = self.receiver.update(remote, codec, pt, Instant::now()) {
            tracing::warn!(error = %e, "media update refused");
        }
    }

    /// Figures so far.
    pub(crate) fn stats(&self, pacer: &Mutex<Pacer>) -> MediaStats {
        let rtcp_stats = self.rtcp.as_ref().map(|r| r.stats()).unwrap_or_default();
        MediaStats::gather(
            self.receiver.stats(),
            self.receiver.jitter_stats(),
            lock(pacer).stats(),
            self.sent,
            self.events_dropped,
        )
        .with_rtcp(rtcp_stats)
    }

    /// Ends the session: last events, RTCP BYE, sockets closed, the
    /// recording handed to its writer to close (its outcome comes on the
    /// returned channel; the report's recording fields wait for it). The
    /// clock stops serving the session from here on.
    pub(crate) fn finish(
        &mut self,
        pacer: &Mutex<Pacer>,
    ) -> (SessionReport, Option<oneshot::Receiver<Finished>>) {
        if let Some(report) = &self.report {
            return (report.clone(), None);
        }
        self.finished = true;
        self.emit_playout_events(pacer);
        self.tx = None;
        self.send_rtcp_bye();
        self.wire = None;
        self.rtcp_sock = None;
        let pending = self.recording.take().map(RecordingFeed::finish);
        let report = SessionReport {
            stats: self.stats(pacer),
            recording: None,
            recording_error: None,
        };
        report.stats.add_to_metrics();
        self.report = Some(report.clone());
        (report, pending)
    }
}
