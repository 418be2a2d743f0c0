//! RFC 4733 telephone-event: parsing and building the 4-byte payload, a
//! detector that reports each digit exactly once (the end packet is sent
//! three times, packets get lost or reordered), and a sender that turns a
//! digit into the packet sequence a trunk expects.

use super::error::MediaError;

/// One RFC 4733 §2.3 event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0–9, 10 = `*`, 11 = `#`, 12–15 = A–D (16 = flash is not a digit).
    pub event: u8,
    pub end: bool,
    /// Power level in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes; trailing redundant blocks (RFC 4733 §2.5.1.5
    /// with several events) are ignored here.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, MediaError> {
        if payload.len() < 4 {
            return Err(MediaError::MalformedTelephoneEvent("shorter than 4 bytes"));
        }
        Ok(TelephoneEvent {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// The character for an event code, if it is a DTMF digit.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The event code of a digit (`0-9 * # A-D`, case-insensitive).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// A detected digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    pub digit: char,
    pub duration_ms: u32,
}

/// Reports each telephone event once. An event is identified by its RTP
/// timestamp (all packets of one event share it, RFC 4733 §2.5.1.2). The
/// digit is reported on the first end packet, or — when every end packet
/// was lost — when a newer event starts or `flush_stale` finds it idle.
#[derive(Debug)]
pub struct DtmfDetector {
    clock_rate: u32,
    /// Timestamp of the event being tracked, whether it was reported, its
    /// digit and longest duration seen.
    current: Option<Tracked>,
    /// Timestamps of the last few reported events, so a late redundant end
    /// packet of an older event is not reported again.
    recent: [Option<u32>; 4],
    recent_next: usize,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    timestamp: u32,
    event: u8,
    duration: u16,
    reported: bool,
    last_seen_ms: u64,
}

impl DtmfDetector {
    pub fn new(clock_rate: u32) -> DtmfDetector {
        DtmfDetector {
            clock_rate: clock_rate.max(1),
            current: None,
            recent: [None; 4],
            recent_next: 0,
        }
    }

    fn to_ms(&self, duration: u16) -> u32 {
        (duration as u64 * 1000 / self.clock_rate as u64) as u32
    }

    fn remember(&mut self, ts: u32) {
        self.recent[self.recent_next] = Some(ts);
        self.recent_next = (self.recent_next + 1) % self.recent.len();
    }

    /// Feeds one telephone-event packet (its RTP timestamp and payload);
    /// `now_ms` is any monotonic millisecond clock. Returns the digits this
    /// packet completes (usually none, at most two), never one event twice.
    pub fn push(
        &mut self,
        rtp_timestamp: u32,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Digit>, MediaError> {
        let ev = TelephoneEvent::parse(payload)?;
        let mut out = Vec::new();
        if self.recent.contains(&Some(rtp_timestamp)) {
            return Ok(out);
        }
        match self.current {
            Some(ref mut t) if t.timestamp == rtp_timestamp => {
                t.duration = t.duration.max(ev.duration);
                t.last_seen_ms = now_ms;
            }
            prev => {
                // A new event: an unreported previous one (all its end
                // packets lost) is reported now.
                if let Some(p) = prev {
                    if !p.reported {
                        out.extend(self.report(p));
                    }
                }
                self.current = Some(Tracked {
                    timestamp: rtp_timestamp,
                    event: ev.event,
                    duration: ev.duration,
                    reported: false,
                    last_seen_ms: now_ms,
                });
            }
        }
        if ev.end {
            if let Some(t) = self.current {
                if !t.reported {
                    out.extend(self.report(t));
                }
            }
        }
        Ok(out)
    }

    fn report(&mut self, t: Tracked) -> Option<Digit> {
        if let Some(c) = self.current.as_mut().filter(|c| c.timestamp == t.timestamp) {
            c.reported = true;
        }
        self.remember(t.timestamp);
        event_to_digit(t.event).map(|digit| Digit {
            digit,
            duration_ms: self.to_ms(t.duration),
        })
    }

    /// Reports an event whose end packets never came, once it has been idle
    /// for `idle_ms` (call it from the 20 ms tick).
    pub fn flush_stale(&mut self, now_ms: u64, idle_ms: u64) -> Option<Digit> {
        let t = self.current?;
        if t.reported || now_ms.saturating_sub(t.last_seen_ms) < idle_ms {
            return None;
        }
        self.report(t)
    }
}

/// One telephone-event packet to send: payload, marker, and the RTP
/// timestamp (constant for the whole event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPacket {
    pub payload: [u8; 4],
    pub marker: bool,
}

/// The packet sequence for one digit at 20 ms spacing: a first packet with
/// the marker bit, updates with growing duration, and the end packet three
/// times (RFC 4733 §2.5.1.4). All carry the event's start timestamp.
pub fn build_digit_packets(
    digit: char,
    duration_ms: u32,
    clock_rate: u32,
) -> Option<Vec<EventPacket>> {
    let event = digit_to_event(digit)?;
    let duration_ms = duration_ms.clamp(40, 5000);
    let step = clock_rate / 50;
    let total = (duration_ms as u64 * clock_rate as u64 / 1000).min(u16::MAX as u64) as u32;
    let mut out = Vec::new();
    let mut d = step;
    while d < total {
        let ev = TelephoneEvent {
            event,
            end: false,
            volume: 10,
            duration: d as u16,
        };
        out.push(EventPacket {
            payload: ev.to_bytes(),
            marker: out.is_empty(),
        });
        d += step;
    }
    let end = TelephoneEvent {
        event,
        end: true,
        volume: 10,
        duration: total as u16,
    };
    for _ in 0..3 {
        out.push(EventPacket {
            payload: end.to_bytes(),
            marker: out.is_empty(),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_build_round_trip() {
        // RFC 4733 figure: digit 5, end, volume 10, duration 800.
        let bytes = [0x05, 0x8A, 0x03, 0x20];
        let ev = TelephoneEvent::parse(&bytes).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(ev.to_bytes(), bytes);
        assert!(TelephoneEvent::parse(&[1, 2, 3]).is_err());
    }

    #[test]
    fn digit_mapping() {
        for (c, e) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('d', 15),
        ] {
            assert_eq!(digit_to_event(c), Some(e));
            assert_eq!(event_to_digit(e), Some(c.to_ascii_uppercase()));
        }
        assert_eq!(event_to_digit(16), None);
        assert_eq!(digit_to_event('x'), None);
    }

    #[test]
    fn sent_digit_is_detected_exactly_once_with_duration() {
        let pkts = build_digit_packets('1', 200, 8000).unwrap();
        assert!(pkts[0].marker);
        assert_eq!(pkts.iter().filter(|p| p.payload[1] & 0x80 != 0).count(), 3);
        let mut det = DtmfDetector::new(8000);
        let mut found = Vec::new();
        for (i, p) in pkts.iter().enumerate() {
            found.extend(det.push(1000, &p.payload, i as u64 * 20).unwrap());
        }
        assert_eq!(
            found,
            vec![Digit {
                digit: '1',
                duration_ms: 200
            }]
        );
        assert_eq!(det.flush_stale(10_000, 100), None);
    }

    #[test]
    fn two_identical_digits_in_a_row_are_two_events() {
        let pkts = build_digit_packets('7', 100, 8000).unwrap();
        let mut det = DtmfDetector::new(8000);
        let mut n = 0;
        for ts in [1000u32, 3000] {
            for p in &pkts {
                n += det.push(ts, &p.payload, 0).unwrap().len();
            }
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn lost_end_packets_are_reported_on_next_event_or_idle() {
        let pkts = build_digit_packets('5', 100, 8000).unwrap();
        let no_end: Vec<_> = pkts.iter().filter(|p| p.payload[1] & 0x80 == 0).collect();
        let mut det = DtmfDetector::new(8000);
        for p in &no_end {
            assert!(det.push(500, &p.payload, 0).unwrap().is_empty());
        }
        assert_eq!(det.flush_stale(50, 200), None);
        let d = det.flush_stale(300, 200).unwrap();
        assert_eq!(d.digit, '5');
        assert_eq!(det.flush_stale(900, 200), None);
        // Late redundant end packets for that event change nothing.
        assert!(det
            .push(500, &pkts[pkts.len() - 1].payload, 950)
            .unwrap()
            .is_empty());

        // Unreported event followed by a complete new one: both reported once.
        let mut det = DtmfDetector::new(8000);
        for p in &no_end {
            det.push(100, &p.payload, 0).unwrap();
        }
        let other = build_digit_packets('9', 100, 8000).unwrap();
        let mut got = Vec::new();
        for p in &other {
            got.extend(
                det.push(2000, &p.payload, 0)
                    .unwrap()
                    .into_iter()
                    .map(|d| d.digit),
            );
        }
        assert_eq!(got, vec!['5', '9']);
    }

    #[test]
    fn reordered_end_before_updates_still_once() {
        let pkts = build_digit_packets('#', 160, 8000).unwrap();
        let mut det = DtmfDetector::new(8000);
        let mut order: Vec<_> = pkts.iter().collect();
        order.reverse();
        let found: Vec<_> = order
            .iter()
            .flat_map(|p| det.push(42, &p.payload, 0).unwrap())
            .collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digit, '#');
        assert_eq!(found[0].duration_ms, 160);
    }
}
