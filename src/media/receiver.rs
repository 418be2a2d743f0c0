//! The receive side of an RTP session, sans-IO: datagrams in (with source
//! address and `now`), one 16 kHz 20 ms frame out per playout tick.
//! It accepts media only by [`SourcePolicy`] (the SDP address, or a NAT'd
//! caller's port on the signalling IP, latched before the first packet),
//! counts and drops everything else, drops other payload types with a
//! counter, detects RFC 4733 digits, runs the jitter buffer, decodes,
//! conceals losses and resamples to 16 kHz.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::codec::Decoder;
use super::dtmf::{Digit, DtmfDetector};
use super::error::MediaError;
use super::jitter::{Concealer, JitterBuffer, JitterConfig, JitterPacket, JitterStats, Pop};
use super::playout::FRAME_MS;
use super::resample::Resampler;
use super::Codec;

/// Samples in the 16 kHz frames handed to the owner.
pub const FRAME_SAMPLES_16K: usize = 320;
/// Under [`Latch::AfterSilence`], after this long without packets from the
/// latched address another allowed source may take over (the caller's NAT
/// mapping changed).
const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// When media may latch to a source other than the SDP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latch {
    /// Only until the first accepted packet (from the SDP address or an
    /// allowed one): then the source is fixed for the call.
    #[default]
    FirstPacket,
    /// Also later, after 2 s of silence from the latched source (NATs
    /// that remap mid-call); still only from an allowed IP.
    AfterSilence,
}

/// Which sources the media of a call may come from. Media is always
/// accepted from the SDP address; another source only from the SDP IP or
/// the IP the call's signalling came from (a caller behind NAT whose SDP
/// names a private or wrong port), and only as `latch` allows. Anything
/// else is counted (`dropped_foreign_source`) and dropped: a stranger can
/// neither inject audio nor redirect the agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourcePolicy {
    pub signalling_ip: Option<IpAddr>,
    pub latch: Latch,
}
/// A digit whose end packets never came is reported after this idle time.
const DTMF_IDLE_MS: u64 = 300;

/// The fields of an RTP packet we use, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> RtpView<'a> {
    /// Parses an RTP packet (RFC 3550 §5.1): version 2, CSRCs and any
    /// header extension skipped, padding removed. `None` if malformed.
    pub fn parse(data: &'a [u8]) -> Option<RtpView<'a>> {
        if data.len() < 12 || data[0] >> 6 != 2 {
            return None;
        }
        let padding = data[0] & 0x20 != 0;
        let extension = data[0] & 0x10 != 0;
        let csrc_count = (data[0] & 0x0F) as usize;
        let mut off = 12 + 4 * csrc_count;
        if extension {
            let words = data.get(off + 2..off + 4)?;
            off += 4 + 4 * u16::from_be_bytes([words[0], words[1]]) as usize;
        }
        let mut end = data.len();
        if off > end {
            return None;
        }
        if padding {
            let pad = *data.last()? as usize;
            if pad == 0 || pad > end - off {
                return None;
            }
            end -= pad;
        }
        Some(RtpView {
            marker: data[1] & 0x80 != 0,
            payload_type: data[1] & 0x7F,
            seq: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
            payload: &data[off..end],
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReceiverConfig {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    /// Where the SDP said the peer is.
    pub remote: SocketAddr,
    /// Follow the real source address of the media (symmetric RTP),
    /// within `sources`.
    pub symmetric_rtp: bool,
    pub sources: SourcePolicy,
    pub jitter: JitterConfig,
}

/// Receive counters (the jitter buffer keeps its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ReceiveStats {
    pub packets: u64,
    pub bytes: u64,
    pub dropped_other_pt: u64,
    pub dropped_foreign_source: u64,
    pub malformed: u64,
    pub rtcp_packets: u64,
    pub dtmf_digits: u64,
    /// Longest time between two media packets, in ms.
    pub max_gap_ms: u64,
    pub relatches: u64,
}

/// What one datagram carried that the owner must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Nothing,
    Digits(Vec<Digit>),
    /// An RTCP packet multiplexed on the RTP port (RFC 5761).
    Rtcp,
}

#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    jitter: JitterBuffer,
    decoder: Decoder,
    concealer: Concealer,
    resampler: Resampler,
    dtmf: DtmfDetector,
    latched: Option<SocketAddr>,
    last_from_latched: Option<Instant>,
    last_media_arrival: Option<Instant>,
    started: bool,
    codec_frame_samples: usize,
    /// Decoded PCM at the codec rate not yet handed out (ptime ≠ 20 ms).
    fifo: Vec<i16>,
    codec_frame: Vec<i16>,
    frame16: Vec<i16>,
    epoch: Instant,
    stats: ReceiveStats,
}

impl Receiver {
    pub fn new(cfg: ReceiverConfig, now: Instant) -> Result<Receiver, MediaError> {
        Ok(Receiver {
            jitter: JitterBuffer::new(cfg.jitter),
            decoder: Decoder::new(cfg.codec)?,
            concealer: Concealer::default(),
            resampler: Resampler::new(cfg.codec.pcm_rate(), 16_000)?,
            dtmf: DtmfDetector::new(cfg.codec.rtp_clock_rate()),
            latched: None,
            last_from_latched: None,
            last_media_arrival: None,
            started: false,
            codec_frame_samples: cfg.codec.samples_per_frame(FRAME_MS),
            fifo: Vec::new(),
            codec_frame: Vec::new(),
            frame16: Vec::with_capacity(FRAME_SAMPLES_16K),
            epoch: now,
            stats: ReceiveStats::default(),
            cfg,
        })
    }

    pub fn stats(&self) -> ReceiveStats {
        self.stats
    }

    /// Sequence figures for our RTCP reception report.
    pub fn reception(&self) -> Option<super::jitter::Reception> {
        self.jitter.reception()
    }

    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Where our RTP should go: the latched source, else the SDP address.
    pub fn send_to(&self) -> SocketAddr {
        if self.cfg.symmetric_rtp {
            self.latched.unwrap_or(self.cfg.remote)
        } else {
            self.cfg.remote
        }
    }

    /// The SDP changed (re-INVITE): new address, codec or payload type.
    pub fn update(
        &mut self,
        remote: SocketAddr,
        codec: Codec,
        payload_type: u8,
        now: Instant,
    ) -> Result<(), MediaError> {
        if codec != self.cfg.codec {
            let jitter = self.cfg.jitter;
            *self = Receiver::new(
                ReceiverConfig {
                    codec,
                    payload_type,
                    remote,
                    ..self.cfg
                },
                now,
            )?;
            self.cfg.jitter = jitter;
            return Ok(());
        }
        self.cfg.remote = remote;
        self.cfg.payload_type = payload_type;
        self.latched = None;
        Ok(())
    }

    /// Handles one datagram from `from`.
    pub fn handle_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) -> Received {
        if data.len() < 12 || data[0] >> 6 != 2 {
            self.stats.malformed += 1;
            return Received::Nothing;
        }
        // RFC 5761 §4: RTCP packet types 200–204 sit where RTP has M+PT.
        if (200..=204).contains(&data[1]) {
            if !self.source_allowed(from) {
                self.stats.dropped_foreign_source += 1;
                return Received::Nothing;
            }
            self.stats.rtcp_packets += 1;
            return Received::Rtcp;
        }
        // Our own parser: the `rtp` crate (0.17) panics on header
        // extensions whose element lengths overrun the block (found by the
        // rtp_parse fuzz target), and a peer must never crash the call.
        let Some(pkt) = RtpView::parse(data) else {
            self.stats.malformed += 1;
            return Received::Nothing;
        };
        let pt = pkt.payload_type;
        let is_audio = pt == self.cfg.payload_type;
        let is_event = Some(pt) == self.cfg.telephone_event_pt;
        if !is_audio && !is_event {
            self.stats.dropped_other_pt += 1;
            return Received::Nothing;
        }
        if !self.accept_source(from, now) {
            self.stats.dropped_foreign_source += 1;
            return Received::Nothing;
        }
        self.stats.packets += 1;
        self.stats.bytes += data.len() as u64;
        if let Some(prev) = self.last_media_arrival {
            self.stats.max_gap_ms = self
                .stats
                .max_gap_ms
                .max(now.saturating_duration_since(prev).as_millis() as u64);
        }
        self.last_media_arrival = Some(now);
        if is_event {
            let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
            return match self.dtmf.push(pkt.timestamp, pkt.payload, now_ms) {
                Ok(d) if !d.is_empty() => {
                    self.stats.dtmf_digits += d.len() as u64;
                    Received::Digits(d)
                }
                Ok(_) => Received::Nothing,
                Err(_) => {
                    self.stats.malformed += 1;
                    Received::Nothing
                }
            };
        }
        self.started = true;
        self.jitter.push(
            JitterPacket {
                ssrc: pkt.ssrc,
                seq: pkt.seq,
                timestamp: pkt.timestamp,
                payload: bytes::Bytes::copy_from_slice(pkt.payload),
            },
            now,
        );
        Received::Nothing
    }

    /// May media from `from` come in (and, latched, receive ours)?
    pub fn source_allowed(&self, from: SocketAddr) -> bool {
        from == self.cfg.remote || Some(from) == self.latched || self.ip_allowed(from.ip())
    }

    /// Is `ip` the SDP's, the signalling's or the latched source's?
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        ip == self.cfg.remote.ip()
            || Some(ip) == self.cfg.sources.signalling_ip
            || Some(ip) == self.latched.map(|a| a.ip())
    }

    /// Counts a datagram the owner dropped for its source (RTCP port).
    pub fn count_foreign(&mut self) {
        self.stats.dropped_foreign_source += 1;
    }

    /// Counts a datagram the owner could not read (SRTP that did not
    /// authenticate or decrypt).
    pub fn count_malformed(&mut self) {
        self.stats.malformed += 1;
    }

    fn accept_source(&mut self, from: SocketAddr, now: Instant) -> bool {
        if !self.source_allowed(from) {
            return false;
        }
        if from.port() == 0 {
            // Nothing can be sent to port 0 (raw-socket senders such as
            // SIPp's pcap replay leave it so): take the audio, keep sending
            // to the SDP address.
            return true;
        }
        match self.latched {
            Some(addr) if addr == from => {
                self.last_from_latched = Some(now);
                true
            }
            None => {
                if from != self.cfg.remote {
                    tracing::debug!(%from, sdp = %self.cfg.remote, "latching to RTP source other than SDP address");
                }
                self.latched = Some(from);
                self.last_from_latched = Some(now);
                true
            }
            Some(_) => {
                let stale = self.cfg.sources.latch == Latch::AfterSilence
                    && self
                        .last_from_latched
                        .is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_AFTER);
                if stale {
                    tracing::info!(%from, "RTP source changed; re-latching");
                    self.stats.relatches += 1;
                    self.latched = Some(from);
                    self.last_from_latched = Some(now);
                }
                stale
            }
        }
    }

    /// A digit whose end packets were all lost, once it has gone quiet.
    pub fn poll_stale_digit(&mut self, now: Instant) -> Option<Digit> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let d = self.dtmf.flush_stale(now_ms, DTMF_IDLE_MS);
        if d.is_some() {
            self.stats.dtmf_digits += 1;
        }
        d
    }

    /// One playout tick: the next 20 ms at 16 kHz, or `None` before the
    /// first audio packet arrived.
    pub fn tick(&mut self, now: Instant) -> Option<&[i16]> {
        if !self.started {
            return None;
        }
        let n = self.codec_frame_samples;
        // Bounded: at most a few pops per tick (ptime 10 ms needs two).
        for _ in 0..4 {
            if self.fifo.len() >= n {
                break;
            }
            let start = self.fifo.len();
            match self.jitter.pop(now) {
                Pop::Frame(p) => {
                    self.decoder.decode(&p.payload, &mut self.fifo);
                    if self.fifo.len() - start == n {
                        self.concealer.good(&self.fifo[start..]);
                    }
                }
                Pop::Lost | Pop::Empty => {
                    if !self.decoder.conceal(n, &mut self.fifo) {
                        self.fifo.resize(start + n, 0);
                        self.concealer.conceal(&mut self.fifo[start..]);
                    }
                }
            }
        }
        self.codec_frame.clear();
        let take = n.min(self.fifo.len());
        self.codec_frame.extend(self.fifo.drain(..take));
        self.codec_frame.resize(n, 0);
        // Bound the FIFO should a peer send oversized packets.
        self.fifo.truncate(n * 8);
        self.frame16.clear();
        self.resampler.process(&self.codec_frame, &mut self.frame16);
        self.frame16.resize(FRAME_SAMPLES_16K, 0);
        Some(&self.frame16)
    }

    /// The codec-rate PCM of the last tick (for recording).
    pub fn last_codec_frame(&self) -> &[i16] {
        &self.codec_frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc_util::marshal::Marshal;

    fn receiver(latch: Latch, now: Instant) -> Receiver {
        Receiver::new(
            ReceiverConfig {
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event_pt: None,
                remote: "127.0.0.1:4000".parse().unwrap(),
                symmetric_rtp: true,
                sources: SourcePolicy {
                    signalling_ip: Some("127.0.0.1".parse().unwrap()),
                    latch,
                },
                jitter: JitterConfig::default(),
            },
            now,
        )
        .unwrap()
    }

    fn packet(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend(std::iter::repeat_n(0xFF, 160));
        p
    }

    const STRANGER: &str = "127.0.0.2:5000";
    const NAT_PORT: &str = "127.0.0.1:6000";
    const RR: [u8; 12] = [0x80, 201, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0];

    #[test]
    fn a_stranger_is_dropped_before_and_after_the_callers_first_packet() {
        let t0 = Instant::now();
        let mut rx = receiver(Latch::AfterSilence, t0);
        let stranger = STRANGER.parse().unwrap();
        for i in 0..5 {
            rx.handle_datagram(&packet(i), stranger, t0);
        }
        assert_eq!(rx.handle_datagram(&RR, stranger, t0), Received::Nothing);
        assert_eq!(rx.stats().dropped_foreign_source, 6);
        assert_eq!(rx.stats().packets, 0);
        assert_eq!(
            rx.send_to(),
            "127.0.0.1:4000".parse::<std::net::SocketAddr>().unwrap()
        );
        // The caller speaks, falls silent for 5 s; the stranger still loses.
        rx.handle_datagram(&packet(10), "127.0.0.1:4000".parse().unwrap(), t0);
        let later = t0 + Duration::from_secs(5);
        rx.handle_datagram(&packet(11), stranger, later);
        assert_eq!(
            rx.send_to(),
            "127.0.0.1:4000".parse::<std::net::SocketAddr>().unwrap()
        );
        assert_eq!(rx.stats().dropped_foreign_source, 7);
        assert!(!rx.ip_allowed(stranger.ip()));
    }

    #[test]
    fn a_source_port_of_zero_is_heard_but_never_latched() {
        let t0 = Instant::now();
        let mut rx = receiver(Latch::FirstPacket, t0);
        let sdp = rx.send_to();
        rx.handle_datagram(&packet(1), "127.0.0.1:0".parse().unwrap(), t0);
        assert_eq!(rx.send_to(), sdp, "nothing can be sent to port 0");
        assert_eq!(rx.stats().dropped_foreign_source, 0);
    }

    #[test]
    fn a_natted_caller_latches_once_from_the_signalling_ip() {
        let t0 = Instant::now();
        let mut rx = receiver(Latch::FirstPacket, t0);
        let nat = NAT_PORT.parse().unwrap();
        rx.handle_datagram(&packet(1), nat, t0);
        assert_eq!(rx.send_to(), nat);
        // Fixed for the call: neither the SDP port nor another port moves it.
        let later = t0 + Duration::from_secs(5);
        rx.handle_datagram(&packet(2), "127.0.0.1:4000".parse().unwrap(), later);
        rx.handle_datagram(&packet(3), "127.0.0.1:7000".parse().unwrap(), later);
        assert_eq!(rx.send_to(), nat);
        assert_eq!(rx.stats().dropped_foreign_source, 2);
        assert_eq!(rx.stats().relatches, 0);
    }

    #[test]
    fn after_silence_relatches_only_within_the_allowed_ips() {
        let t0 = Instant::now();
        let mut rx = receiver(Latch::AfterSilence, t0);
        rx.handle_datagram(&packet(1), "127.0.0.1:4000".parse().unwrap(), t0);
        let moved = "127.0.0.1:7000".parse().unwrap();
        rx.handle_datagram(&packet(2), moved, t0 + Duration::from_secs(1));
        assert_eq!(
            rx.send_to(),
            "127.0.0.1:4000".parse::<std::net::SocketAddr>().unwrap(),
            "not yet silent"
        );
        rx.handle_datagram(&packet(3), moved, t0 + Duration::from_secs(3));
        assert_eq!(rx.send_to(), moved);
        assert_eq!(rx.stats().relatches, 1);
        rx.handle_datagram(
            &packet(4),
            STRANGER.parse().unwrap(),
            t0 + Duration::from_secs(9),
        );
        assert_eq!(rx.send_to(), moved);
    }

    #[test]
    fn parser_agrees_with_the_rtp_crate_and_rejects_overruns() {
        let p = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 101,
                sequence_number: 65535,
                timestamp: 0xDEADBEEF,
                ssrc: 42,
                csrc: vec![1, 2],
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[1, 2, 3, 4]),
        };
        let raw = p.marshal().unwrap();
        let v = RtpView::parse(&raw).unwrap();
        assert_eq!(
            (
                v.marker,
                v.payload_type,
                v.seq,
                v.timestamp,
                v.ssrc,
                v.payload
            ),
            (true, 101, 65535, 0xDEADBEEF, 42, &[1u8, 2, 3, 4][..])
        );
        // RFC 3550 extension of one word, then padding of 2.
        let mut raw = vec![
            0xB0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0, 7, 7, 0, 2,
        ];
        let v = RtpView::parse(&raw).unwrap();
        assert_eq!(v.payload, &[7, 7]);
        // The fuzzer's case: extension length running past the datagram.
        raw[15] = 0xFF;
        assert_eq!(RtpView::parse(&raw), None);
        assert_eq!(RtpView::parse(&[0x80, 0, 0]), None);
        assert_eq!(
            RtpView::parse(&[0xA0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9]),
            None,
            "padding longer than payload"
        );
    }
}
