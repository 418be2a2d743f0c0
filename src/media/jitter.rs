//! Adaptive jitter buffer, sans-IO: `push(packet, now)` on arrival and
//! `pop(now)` once per 20 ms playout tick. It reorders by sequence number,
//! drops duplicates and packets that come after their playout time, reports
//! gaps for concealment, and keeps its depth between 20 and 200 ms from the
//! measured delay variation (peak-hold with decay). Memory is bounded by
//! `capacity` packets; a far jump in sequence or a new SSRC restarts it.
//!
//! One packet is assumed to carry one frame (`frame_ms`, 20 ms on every
//! trunk we know); depth is counted in frames.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct JitterConfig {
    /// RTP clock rate (8000 for G.711 and G.722).
    pub clock_rate: u32,
    pub frame_ms: u32,
    pub min_depth_ms: u32,
    pub max_depth_ms: u32,
    /// Most packets held at once.
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            clock_rate: 8000,
            frame_ms: 20,
            min_depth_ms: 20,
            max_depth_ms: 200,
            capacity: 32,
        }
    }
}

/// A received packet as the buffer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterPacket {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload: bytes::Bytes,
}

impl JitterPacket {
    pub fn new(
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        payload: impl Into<bytes::Bytes>,
    ) -> JitterPacket {
        JitterPacket {
            ssrc,
            seq,
            timestamp,
            payload: payload.into(),
        }
    }
}

/// What one `push` did with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    Duplicate,
    /// Its playout time has passed (the gap was already concealed).
    Late,
}

/// What one `pop` yields for this 20 ms tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Pop {
    /// The next packet in order.
    Frame(JitterPacket),
    /// The packet for this slot is missing while later ones are here:
    /// conceal one frame.
    Lost,
    /// Nothing to play: not started, rebuffering after an underrun, or the
    /// sender is silent (DTX, hold). Play silence.
    Empty,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct JitterStats {
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Gaps concealed at playout.
    pub concealed: u64,
    /// Packets the sender sent that never arrived (RFC 3550 A.3: expected − received).
    pub lost: u64,
    pub underruns: u64,
    /// Packets dropped to shrink the delay after a jitter spike.
    pub dropped_for_latency: u64,
    pub dropped_overflow: u64,
    pub ssrc_changes: u64,
    pub restarts: u64,
    /// RFC 3550 interarrival jitter, in ms.
    pub jitter_ms: f64,
    pub depth_ms: u32,
    pub max_depth_ms: u32,
    pub target_ms: u32,
}

/// What an RTCP receiver report needs about the current sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reception {
    pub ssrc: u32,
    pub extended_highest_seq: u32,
    pub expected: u64,
    pub received: u64,
}

/// Per-SSRC sequence state (RFC 3550 A.1 style extension to 64 bits).
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    first_ext: u64,
    highest_ext: u64,
    received: u64,
    first_arrival: Instant,
    first_ts_ext: i64,
    highest_ts_ext: i64,
    last_transit_ms: Option<f64>,
}

#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    packets: BTreeMap<u64, JitterPacket>,
    stream: Option<Stream>,
    /// Next sequence to play; `None` before the first playout.
    next_play: Option<u64>,
    /// Bit i set = `next_play - 1 - i` was played (duplicate vs late).
    played_bits: u64,
    /// While buffering: when the first packet of this buffering period came.
    buffering_since: Option<Instant>,
    buffering: bool,
    base_transit_ms: Option<f64>,
    peak_excess_ms: f64,
    shrink_cooldown: u32,
    lost_prior_streams: u64,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> JitterBuffer {
        let cfg = JitterConfig {
            capacity: cfg.capacity.clamp(4, 1024),
            min_depth_ms: cfg.min_depth_ms.max(cfg.frame_ms),
            max_depth_ms: cfg.max_depth_ms.max(cfg.min_depth_ms),
            ..cfg
        };
        JitterBuffer {
            cfg,
            packets: BTreeMap::new(),
            stream: None,
            next_play: None,
            played_bits: 0,
            buffering_since: None,
            buffering: true,
            base_transit_ms: None,
            peak_excess_ms: 0.0,
            shrink_cooldown: 0,
            lost_prior_streams: 0,
            stats: JitterStats {
                target_ms: cfg.min_depth_ms.max(cfg.frame_ms) * 2,
                ..Default::default()
            },
        }
    }

    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.lost =
            self.lost_prior_streams + self.stream.map(|st| Self::stream_lost(&st)).unwrap_or(0);
        s.depth_ms = self.depth_ms();
        s
    }

    fn stream_lost(st: &Stream) -> u64 {
        (st.highest_ext - st.first_ext + 1).saturating_sub(st.received)
    }

    /// Sequence figures of the current sender for RTCP reception reports.
    pub fn reception(&self) -> Option<Reception> {
        self.stream.map(|st| Reception {
            ssrc: st.ssrc,
            // RFC 3550: 16-bit cycle count and 16-bit highest sequence.
            extended_highest_seq: (st.highest_ext - (st.first_ext & !0xFFFF)) as u32,
            expected: st.highest_ext - st.first_ext + 1,
            received: st.received,
        })
    }

    /// Packets held now (never more than the configured capacity).
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Current target delay.
    pub fn target_ms(&self) -> u32 {
        self.stats.target_ms
    }

    /// Buffered audio ahead of the playout point, in ms.
    pub fn depth_ms(&self) -> u32 {
        // Audio actually held (holes do not count: a far-ahead packet
        // behind a gap is not buffered delay; the gap is skipped or concealed).
        (self.packets.len() as u32).saturating_mul(self.cfg.frame_ms)
    }

    fn restart(&mut self) {
        if let Some(st) = self.stream.take() {
            self.lost_prior_streams += Self::stream_lost(&st);
        }
        self.packets.clear();
        self.next_play = None;
        self.played_bits = 0;
        self.buffering = true;
        self.buffering_since = None;
        self.base_transit_ms = None;
        self.stats.restarts += 1;
    }

    pub fn push(&mut self, pkt: JitterPacket, now: Instant) -> PushOutcome {
        if self.stream.is_some_and(|s| s.ssrc != pkt.ssrc) {
            self.stats.ssrc_changes += 1;
            self.restart();
        }
        let ts_per_ms = self.cfg.clock_rate as f64 / 1000.0;
        let st = self.stream.get_or_insert(Stream {
            ssrc: pkt.ssrc,
            first_ext: (1u64 << 32) + pkt.seq as u64,
            highest_ext: (1u64 << 32) + pkt.seq as u64,
            received: 0,
            first_arrival: now,
            first_ts_ext: (1i64 << 33) + pkt.timestamp as i64,
            highest_ts_ext: (1i64 << 33) + pkt.timestamp as i64,
            last_transit_ms: None,
        });
        let delta = pkt.seq.wrapping_sub(st.highest_ext as u16) as i16 as i64;
        let ext = (st.highest_ext as i64 + delta) as u64;
        let ts_delta = pkt.timestamp.wrapping_sub(st.highest_ts_ext as u32) as i32 as i64;
        let ts_ext = st.highest_ts_ext + ts_delta;

        // Far outside the window: the sender restarted its sequence.
        if let Some(np) = self.next_play {
            let window = self.cfg.capacity as u64 * 4;
            if ext >= np + window || ext + window < np {
                self.restart();
                return self.push(pkt, now);
            }
        }

        let st = match self.stream.as_mut() {
            Some(st) => st,
            None => return PushOutcome::Late,
        };
        if ext > st.highest_ext {
            st.highest_ext = ext;
        }
        if ts_ext > st.highest_ts_ext {
            st.highest_ts_ext = ts_ext;
        }
        if ext < st.first_ext {
            st.first_ext = ext;
        }

        // Delay variation: transit relative to the stream's first packet.
        let arrival_ms = now
            .saturating_duration_since(st.first_arrival)
            .as_secs_f64()
            * 1000.0;
        let media_ms = (ts_ext - st.first_ts_ext) as f64 / ts_per_ms;
        let transit = arrival_ms - media_ms;
        if let Some(prev) = st.last_transit_ms {
            let d = (transit - prev).abs();
            self.stats.jitter_ms += (d - self.stats.jitter_ms) / 16.0;
        }
        st.last_transit_ms = Some(transit);

        // Duplicate / late checks before counting as received.
        if self.packets.contains_key(&ext) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        if let Some(np) = self.next_play {
            if ext < np {
                let back = np - 1 - ext;
                if back < 64 && self.played_bits & (1 << back) != 0 {
                    self.stats.duplicates += 1;
                    return PushOutcome::Duplicate;
                }
                st.received += 1;
                self.stats.received += 1;
                self.stats.late += 1;
                self.adapt(transit);
                return PushOutcome::Late;
            }
        }
        st.received += 1;
        self.stats.received += 1;
        self.adapt(transit);

        if self.packets.len() >= self.cfg.capacity {
            if let Some((&oldest, _)) = self.packets.iter().next() {
                self.packets.remove(&oldest);
                self.stats.dropped_overflow += 1;
                if let Some(np) = self.next_play.as_mut() {
                    *np = (*np).max(oldest + 1);
                }
            }
        }
        self.packets.insert(ext, pkt);
        if self.buffering && self.buffering_since.is_none() {
            self.buffering_since = Some(now);
        }
        let depth = self.depth_ms();
        self.stats.max_depth_ms = self.stats.max_depth_ms.max(depth);
        PushOutcome::Queued
    }

    /// Updates the target delay from this packet's transit time.
    fn adapt(&mut self, transit: f64) {
        // The base (fastest) transit follows drops at once and creeps up
        // slowly, so sender clock drift is followed rather than read as jitter.
        let base = match self.base_transit_ms {
            Some(b) if transit >= b => b + 0.03,
            _ => transit,
        };
        self.base_transit_ms = Some(base);
        let excess = (transit - base).max(0.0);
        // Peak-hold, decaying with a half-life of ~7 s at 50 packets/s.
        self.peak_excess_ms = excess.max(self.peak_excess_ms * 0.998);
        let want = self.peak_excess_ms + self.cfg.frame_ms as f64;
        self.stats.target_ms =
            (want.ceil() as u32).clamp(self.cfg.min_depth_ms, self.cfg.max_depth_ms);
    }

    /// One playout tick.
    pub fn pop(&mut self, now: Instant) -> Pop {
        if self.buffering {
            let Some(since) = self.buffering_since else {
                return Pop::Empty;
            };
            let waited = now.saturating_duration_since(since);
            let depth = self.depth_ms();
            if waited < Duration::from_millis(self.stats.target_ms as u64)
                && depth < self.stats.target_ms
            {
                return Pop::Empty;
            }
            self.buffering = false;
            self.buffering_since = None;
            let lowest = self.packets.keys().next().copied();
            self.next_play = match (self.next_play, lowest) {
                // Resume in order; a longer gap (packets lost while we
                // waited) is skipped rather than concealed frame by frame.
                (Some(np), Some(lo)) if lo > np + 2 => Some(lo),
                (Some(np), _) => Some(np),
                (None, lo) => lo,
            };
        }
        let Some(np) = self.next_play else {
            return Pop::Empty;
        };

        // Too deep after a spike: skip one frame now and then to catch up.
        let depth = self.depth_ms();
        if self.shrink_cooldown > 0 {
            self.shrink_cooldown -= 1;
        } else if depth > self.stats.target_ms + 2 * self.cfg.frame_ms
            && self.packets.contains_key(&np)
        {
            self.packets.remove(&np);
            self.mark_played(np);
            self.next_play = Some(np + 1);
            self.stats.dropped_for_latency += 1;
            self.shrink_cooldown = 2;
            return self.pop(now);
        }

        if let Some(pkt) = self.packets.remove(&np) {
            self.mark_played(np);
            self.next_play = Some(np + 1);
            return Pop::Frame(pkt);
        }
        if let Some(&lo) = self.packets.keys().next() {
            // A hole longer than the deepest buffer is not worth concealing
            // frame by frame (a sender jump, or a burst far beyond repair):
            // resume at the next packet we have.
            if lo - np > (self.cfg.max_depth_ms / self.cfg.frame_ms.max(1)) as u64 {
                self.played_bits = 0;
                self.next_play = Some(lo);
                self.stats.restarts += 1;
                return self.pop(now);
            }
            self.advance_unplayed(np);
            self.stats.concealed += 1;
            return Pop::Lost;
        }
        // Underrun: nothing at all to play. Rebuffer to the target depth so
        // the next spike does not empty the buffer again.
        self.stats.underruns += 1;
        self.buffering = true;
        self.buffering_since = None;
        Pop::Empty
    }

    fn mark_played(&mut self, seq: u64) {
        if let Some(np) = self.next_play {
            let shift = (seq + 1).saturating_sub(np);
            self.played_bits = if shift >= 64 {
                0
            } else {
                self.played_bits << shift
            };
        }
        self.played_bits |= 1;
    }

    fn advance_unplayed(&mut self, np: u64) {
        self.played_bits <<= 1;
        self.next_play = Some(np + 1);
    }
}

/// Packet-loss concealment on decoded PCM: repeat the last good frame with
/// falling gain (−6 dB per lost frame), then silence after four frames.
#[derive(Debug, Default)]
pub struct Concealer {
    last: Vec<i16>,
    lost_run: u32,
}

impl Concealer {
    pub fn good(&mut self, frame: &[i16]) {
        self.last.clear();
        self.last.extend_from_slice(frame);
        self.lost_run = 0;
    }

    /// Fills `out` (one frame) with the concealment for a missing frame.
    pub fn conceal(&mut self, out: &mut [i16]) {
        self.lost_run += 1;
        if self.lost_run > 4 || self.last.len() != out.len() {
            out.fill(0);
            return;
        }
        let shift = self.lost_run;
        for (o, &s) in out.iter_mut().zip(self.last.iter()) {
            *o = s >> shift;
        }
    }
}

#[cfg(test)]
#[path = "jitter_tests.rs"]
mod tests;
