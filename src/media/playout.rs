//! Paced playout, sans-IO. The agent's audio (already at the codec's PCM
//! rate) is queued per utterance; `poll(now)` yields one RTP packet per
//! 20 ms slot on a schedule computed from the start instant (slot k is due
//! at `start + k·20 ms`, so there is no drift and no burst), with encoded
//! silence between utterances so the trunk never sees a gap. `flush` drops
//! everything queued at once (barge-in); the next slot carries silence.
//! Events say when each utterance really started and finished going out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::codec::Encoder;
use super::dtmf::{build_digit_packets, EventPacket};
use super::error::MediaError;
use super::Codec;

pub const FRAME_MS: u32 = 20;
const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);
/// Behind schedule by more than this many slots (200 ms), skip them
/// (timestamps jump, the receiver hears a gap) rather than take seconds to
/// catch up; below it, lost time is won back at `MIN_SPACING`, 2 ms a slot,
/// with no gap and no burst.
const MAX_CATCH_UP_SLOTS: u64 = 10;
/// The closest two packets may follow each other.
pub const MIN_SPACING: Duration = Duration::from_millis(18);

#[derive(Debug, Clone, Copy)]
pub struct PacerConfig {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    pub ssrc: u32,
    pub initial_seq: u16,
    pub initial_timestamp: u32,
    /// Most audio that may wait in the queue (bounds memory).
    pub max_queued_ms: u32,
}

/// One RTP packet to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPacket {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
    /// The slot's deadline (when it should have gone out).
    pub due: Instant,
}

/// The header fields of one RTP packet to send now; `poll_into` wrote its
/// payload into the caller's buffer (a driver reuses one buffer per call
/// instead of allocating a payload every 20 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    /// The slot's deadline (when it should have gone out).
    pub due: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayoutEvent {
    /// The first packet of the utterance was handed out at `at`.
    Started { id: u64, at: Instant },
    /// The last packet of the utterance was handed out at `at`.
    Finished { id: u64, at: Instant },
    /// Dropped by a flush after `played_ms` of it went out (0 = never started).
    Flushed { id: u64, played_ms: u32 },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PacerStats {
    pub packets: u64,
    pub audio_packets: u64,
    pub dtmf_packets: u64,
    /// Slots skipped after a stall (each one is 20 ms the receiver misses).
    pub skipped_slots: u64,
    /// Worst lateness of a send behind its deadline, as seen by `poll`.
    pub max_lateness_us: u64,
}

#[derive(Debug)]
struct Utterance {
    id: u64,
    pcm: Vec<i16>,
    pos: usize,
}

#[derive(Debug)]
struct DtmfInProgress {
    packets: VecDeque<EventPacket>,
    timestamp: u32,
}

#[derive(Debug)]
pub struct Pacer {
    cfg: PacerConfig,
    encoder: Encoder,
    start: Instant,
    slot: u64,
    seq: u16,
    frame_samples: usize,
    rtp_units: u32,
    queue: VecDeque<Utterance>,
    queued_samples: usize,
    talking: bool,
    /// Holding the queue: slots carry silence until `resume` or `flush`.
    paused: bool,
    events: VecDeque<PlayoutEvent>,
    digits: VecDeque<(char, u32)>,
    dtmf: Option<DtmfInProgress>,
    last_pcm: Vec<i16>,
    last_sent: Option<Instant>,
    stats: PacerStats,
}

impl Pacer {
    pub fn new(cfg: PacerConfig, start: Instant) -> Result<Pacer, MediaError> {
        Ok(Pacer {
            encoder: Encoder::new(cfg.codec)?,
            start,
            slot: 0,
            seq: cfg.initial_seq,
            frame_samples: cfg.codec.samples_per_frame(FRAME_MS),
            rtp_units: cfg.codec.rtp_units_per_frame(FRAME_MS),
            queue: VecDeque::new(),
            queued_samples: 0,
            talking: false,
            paused: false,
            events: VecDeque::new(),
            digits: VecDeque::new(),
            dtmf: None,
            last_pcm: Vec::new(),
            last_sent: None,
            stats: PacerStats::default(),
            cfg,
        })
    }

    pub fn codec(&self) -> Codec {
        self.cfg.codec
    }

    /// Index of the next 20 ms slot since the start.
    pub fn slot(&self) -> u64 {
        self.slot
    }

    pub fn ssrc(&self) -> u32 {
        self.cfg.ssrc
    }

    pub fn stats(&self) -> PacerStats {
        self.stats
    }

    /// Deadline of the next slot.
    /// When the next packet may go: its slot's deadline, but never less
    /// than `MIN_SPACING` after the previous packet (a late wake-up is
    /// absorbed over the next slots instead of sending two packets close
    /// together).
    pub fn next_deadline(&self) -> Instant {
        let slot = self.slot_deadline();
        match self.last_sent {
            Some(prev) => slot.max(prev + MIN_SPACING),
            None => slot,
        }
    }

    /// The driver reports when the packet really left (after the send
    /// call), so spacing holds even if the thread was preempted between
    /// `poll` and the send.
    pub fn mark_sent(&mut self, at: Instant) {
        self.last_sent = Some(self.last_sent.map_or(at, |p| p.max(at)));
    }

    fn slot_deadline(&self) -> Instant {
        self.start + FRAME * self.slot as u32
    }

    /// RTP timestamp of the next slot (for RTCP sender reports).
    pub fn next_timestamp(&self) -> u32 {
        self.cfg
            .initial_timestamp
            .wrapping_add((self.slot as u32).wrapping_mul(self.rtp_units))
    }

    /// Audio waiting to be sent, in ms.
    pub fn queued_ms(&self) -> u64 {
        self.queued_samples as u64 * 1000 / self.cfg.codec.pcm_rate() as u64
    }

    /// True while utterance audio is queued or going out.
    pub fn is_playing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The PCM (codec rate) of the last packet produced: silence is zeros.
    /// For recording the agent's side.
    pub fn last_frame_pcm(&self) -> &[i16] {
        &self.last_pcm
    }

    /// Queues an utterance of PCM at the codec's rate.
    pub fn enqueue(&mut self, id: u64, pcm: Vec<i16>) -> Result<(), MediaError> {
        let limit = self.cfg.max_queued_ms as usize * self.cfg.codec.pcm_rate() as usize / 1000;
        if self.queued_samples + pcm.len() > limit {
            return Err(MediaError::PlayoutQueueFull {
                queued_ms: self.queued_ms(),
            });
        }
        self.queued_samples += pcm.len();
        self.queue.push_back(Utterance { id, pcm, pos: 0 });
        Ok(())
    }

    /// Holds the queued audio where it is: from the next slot on, silence
    /// goes out until `resume` (carry on from the same sample) or `flush`.
    /// Barge-in pauses at the caller's first syllable, before it knows if
    /// the caller is interrupting or only saying "mm-hm".
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Plays on from where `pause` stopped.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Drops all queued audio now; the next slot is silence. Clears a pause.
    pub fn flush(&mut self) {
        self.paused = false;
        let rate = self.cfg.codec.pcm_rate() as u64;
        for u in self.queue.drain(..) {
            let played_ms = (u.pos as u64 * 1000 / rate) as u32;
            self.events.push_back(PlayoutEvent::Flushed {
                id: u.id,
                played_ms,
            });
        }
        self.queued_samples = 0;
    }

    /// Queues an RFC 4733 digit (sent when the current slot is free).
    pub fn send_digit(&mut self, digit: char, duration_ms: u32) -> Result<(), MediaError> {
        if self.cfg.telephone_event_pt.is_none() {
            return Err(MediaError::MalformedTelephoneEvent(
                "no telephone-event payload type negotiated",
            ));
        }
        if super::dtmf::digit_to_event(digit).is_none() {
            return Err(MediaError::MalformedTelephoneEvent("not a DTMF digit"));
        }
        if self.digits.len() >= 32 {
            return Err(MediaError::MalformedTelephoneEvent(
                "too many digits queued",
            ));
        }
        self.digits.push_back((digit, duration_ms));
        Ok(())
    }

    pub fn poll_event(&mut self) -> Option<PlayoutEvent> {
        self.events.pop_front()
    }

    /// The packet for the current slot if its deadline has come.
    pub fn poll(&mut self, now: Instant) -> Option<OutgoingPacket> {
        let mut payload = Vec::new();
        let h = self.poll_into(now, &mut payload)?;
        Some(OutgoingPacket {
            payload_type: h.payload_type,
            seq: h.seq,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            marker: h.marker,
            payload,
            due: h.due,
        })
    }

    /// `poll`, with the payload written into `payload` (cleared first).
    pub fn poll_into(&mut self, now: Instant, payload: &mut Vec<u8>) -> Option<PacketHeader> {
        payload.clear();
        if now < self.next_deadline() {
            return None;
        }
        let due = self.slot_deadline();
        let behind =
            now.saturating_duration_since(due).as_micros() as u64 / FRAME.as_micros() as u64;
        if behind > MAX_CATCH_UP_SLOTS {
            // A stall (CPU starvation, suspended VM): jump to the present
            // slot. Timestamps keep counting so the receiver sees real time.
            self.slot += behind;
            self.stats.skipped_slots += behind;
        }
        let due = self.slot_deadline();
        self.last_sent = Some(now);
        self.stats.max_lateness_us = self
            .stats
            .max_lateness_us
            .max(now.saturating_duration_since(due).as_micros() as u64);
        let timestamp = self
            .cfg
            .initial_timestamp
            .wrapping_add((self.slot as u32).wrapping_mul(self.rtp_units));
        self.slot += 1;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.stats.packets += 1;

        if let Some(pkt) = self.next_dtmf_packet(timestamp) {
            self.stats.dtmf_packets += 1;
            self.last_pcm.clear();
            self.last_pcm.resize(self.frame_samples, 0);
            payload.extend_from_slice(&pkt.0.payload);
            return Some(PacketHeader {
                payload_type: self.cfg.telephone_event_pt.unwrap_or(101),
                seq,
                timestamp: pkt.1,
                ssrc: self.cfg.ssrc,
                marker: pkt.0.marker,
                due,
            });
        }

        let had_audio = self.fill_frame(now);
        let marker = had_audio && !self.talking;
        self.talking = had_audio;
        if had_audio {
            self.stats.audio_packets += 1;
        }
        self.encoder.encode(&self.last_pcm, payload);
        Some(PacketHeader {
            payload_type: self.cfg.payload_type,
            seq,
            timestamp,
            ssrc: self.cfg.ssrc,
            marker,
            due,
        })
    }

    /// Fills `last_pcm` with the next frame of queued audio (zeros where
    /// there is none) and emits start/finish events. True if any audio.
    fn fill_frame(&mut self, now: Instant) -> bool {
        self.last_pcm.clear();
        let mut had_audio = false;
        while !self.paused && self.last_pcm.len() < self.frame_samples {
            let Some(u) = self.queue.front_mut() else {
                break;
            };
            if u.pos == 0 {
                self.events
                    .push_back(PlayoutEvent::Started { id: u.id, at: now });
            }
            let take = (self.frame_samples - self.last_pcm.len()).min(u.pcm.len() - u.pos);
            self.last_pcm.extend_from_slice(&u.pcm[u.pos..u.pos + take]);
            u.pos += take;
            self.queued_samples -= take;
            had_audio |= take > 0;
            if u.pos >= u.pcm.len() {
                let id = u.id;
                self.queue.pop_front();
                self.events
                    .push_back(PlayoutEvent::Finished { id, at: now });
            }
        }
        self.last_pcm.resize(self.frame_samples, 0);
        had_audio
    }

    /// The next telephone-event packet and its timestamp, if a digit is
    /// being sent or waiting.
    fn next_dtmf_packet(&mut self, slot_timestamp: u32) -> Option<(EventPacket, u32)> {
        if self.dtmf.is_none() {
            let (digit, ms) = self.digits.pop_front()?;
            let packets = build_digit_packets(digit, ms, self.cfg.codec.rtp_clock_rate())?;
            self.dtmf = Some(DtmfInProgress {
                packets: packets.into(),
                timestamp: slot_timestamp,
            });
        }
        let d = self.dtmf.as_mut()?;
        let pkt = d.packets.pop_front()?;
        let ts = d.timestamp;
        if d.packets.is_empty() {
            self.dtmf = None;
        }
        Some((pkt, ts))
    }
}

#[cfg(test)]
#[path = "playout_tests.rs"]
mod tests;
