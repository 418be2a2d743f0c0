//! RTCP for one session, sans-IO (packets via the `rtcp` crate): reads the
//! peer's SR/RR/BYE, and every ~5 s builds our compound report — SR while
//! we send (we always do: silence is sent too), one reception report block
//! about the peer (fraction lost, cumulative lost, jitter per RFC 3550 A.3
//! and A.8, LSR/DLSR) and an SDES CNAME. Round-trip time comes from the
//! peer's report blocks about us.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::rtcp::goodbye::Goodbye;
use ::rtcp::packet::Packet as RtcpPacket;
use ::rtcp::receiver_report::ReceiverReport;
use ::rtcp::reception_report::ReceptionReport;
use ::rtcp::sender_report::SenderReport;
use ::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};

use super::error::MediaError;
use super::jitter::Reception;

/// Seconds between 1900 (NTP era) and 1970 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// What we have sent so far (for the SR sender info).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sending {
    pub packets: u64,
    pub octets: u64,
    /// RTP timestamp that corresponds to `now`.
    pub rtp_time: u32,
}

/// What the peer's RTCP told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RtcpStats {
    pub sent: u64,
    pub received: u64,
    pub malformed: u64,
    /// Latest fraction of our packets the peer lost, 0..1.
    pub remote_fraction_lost: f64,
    pub remote_cumulative_lost: u64,
    pub remote_jitter_ms: f64,
    pub rtt_ms: Option<f64>,
    pub bye_received: bool,
}

/// What one incoming RTCP datagram meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcpInput {
    pub bye: bool,
}

#[derive(Debug)]
pub struct RtcpSession {
    ssrc: u32,
    cname: String,
    clock_rate: u32,
    /// Wall clock at `epoch`, so NTP times follow the monotonic clock.
    epoch: Instant,
    epoch_ntp: u64,
    next_report: Instant,
    prior_expected: u64,
    prior_received: u64,
    /// Middle 32 bits of the peer's last SR NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
    stats: RtcpStats,
}

fn ntp_from_unix(d: Duration) -> u64 {
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

impl RtcpSession {
    pub fn new(ssrc: u32, cname: String, clock_rate: u32, now: Instant) -> RtcpSession {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        RtcpSession {
            ssrc,
            cname,
            clock_rate: clock_rate.max(1),
            epoch: now,
            epoch_ntp: ntp_from_unix(wall),
            // First report soon after media starts (RFC 3550 allows half the interval).
            next_report: now + REPORT_INTERVAL / 2,
            prior_expected: 0,
            prior_received: 0,
            last_sr: None,
            stats: RtcpStats::default(),
        }
    }

    pub fn stats(&self) -> RtcpStats {
        self.stats
    }

    pub fn next_deadline(&self) -> Instant {
        self.next_report
    }

    fn ntp(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        let add = (d.as_secs() << 32) | (((d.subsec_nanos() as u64) << 32) / 1_000_000_000);
        self.epoch_ntp.wrapping_add(add)
    }

    fn ntp_mid(&self, now: Instant) -> u32 {
        (self.ntp(now) >> 16) as u32
    }

    /// Handles one RTCP datagram (possibly compound).
    pub fn handle(&mut self, data: &[u8], now: Instant) -> Result<RtcpInput, MediaError> {
        // The `rtcp` crate (0.17) panics on some malformed input (found by
        // the rtcp_parse fuzz target), so only packets we have checked
        // ourselves reach it: SR, RR and BYE whose counts fit their length.
        let Some(checked) = checked_rtcp(data) else {
            self.stats.malformed += 1;
            return Err(MediaError::MalformedRtcp("bad compound framing".into()));
        };
        let mut packets = Vec::new();
        for part in checked {
            let parsed = std::panic::catch_unwind(|| ::rtcp::packet::unmarshal(&mut &part[..]));
            match parsed {
                Ok(Ok(p)) => packets.extend(p),
                _ => {
                    self.stats.malformed += 1;
                    return Err(MediaError::MalformedRtcp("bad RTCP packet".into()));
                }
            }
        }
        self.stats.received += 1;
        let mut input = RtcpInput::default();
        for p in packets {
            let any = p.as_any();
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                self.last_sr = Some(((sr.ntp_time >> 16) as u32, now));
                self.take_blocks(&sr.reports, now);
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                self.take_blocks(&rr.reports, now);
            } else if any.downcast_ref::<Goodbye>().is_some() {
                self.stats.bye_received = true;
                input.bye = true;
            }
        }
        Ok(input)
    }

    fn take_blocks(&mut self, blocks: &[ReceptionReport], now: Instant) {
        for b in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
            self.stats.remote_fraction_lost = b.fraction_lost as f64 / 256.0;
            self.stats.remote_cumulative_lost = b.total_lost as u64;
            self.stats.remote_jitter_ms = b.jitter as f64 * 1000.0 / self.clock_rate as f64;
            if b.last_sender_report != 0 {
                // RFC 3550 6.4.1: RTT = A − LSR − DLSR, in 1/65536 s.
                let a = self.ntp_mid(now);
                let rtt = a.wrapping_sub(b.last_sender_report).wrapping_sub(b.delay);
                if rtt < 65536 * 10 {
                    self.stats.rtt_ms = Some(rtt as f64 * 1000.0 / 65536.0);
                }
            }
        }
    }

    /// Our compound report when it is due: SR + a block about the peer
    /// (when it sends) + SDES CNAME.
    pub fn poll(
        &mut self,
        now: Instant,
        sending: Sending,
        reception: Option<Reception>,
        jitter_ms: f64,
    ) -> Option<Vec<u8>> {
        if now < self.next_report {
            return None;
        }
        // Spread reports over 0.5–1.5 × the interval (RFC 3550 6.3.1).
        let spread = 0.5 + rand::random::<f64>();
        self.next_report = now + REPORT_INTERVAL.mul_f64(spread);
        let mut reports = Vec::new();
        if let Some(r) = reception {
            let expected_interval = r.expected.saturating_sub(self.prior_expected);
            let received_interval = r.received.saturating_sub(self.prior_received);
            self.prior_expected = r.expected;
            self.prior_received = r.received;
            let lost_interval = expected_interval.saturating_sub(received_interval);
            let fraction = (lost_interval << 8)
                .checked_div(expected_interval)
                .map_or(0, |f| f.min(255) as u8);
            let (lsr, dlsr) = match self.last_sr {
                Some((mid, at)) => {
                    let d = now.saturating_duration_since(at);
                    (mid, (d.as_secs_f64() * 65536.0) as u32)
                }
                None => (0, 0),
            };
            reports.push(ReceptionReport {
                ssrc: r.ssrc,
                fraction_lost: fraction,
                total_lost: r.expected.saturating_sub(r.received).min(0x7F_FFFF) as u32,
                last_sequence_number: r.extended_highest_seq,
                jitter: (jitter_ms * self.clock_rate as f64 / 1000.0) as u32,
                last_sender_report: lsr,
                delay: dlsr,
            });
        }
        let sr = SenderReport {
            ssrc: self.ssrc,
            ntp_time: self.ntp(now),
            rtp_time: sending.rtp_time,
            packet_count: sending.packets as u32,
            octet_count: sending.octets as u32,
            reports,
            profile_extensions: bytes::Bytes::new(),
        };
        let sdes = SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: bytes::Bytes::from(self.cname.clone()),
                }],
            }],
        };
        let packets: Vec<Box<dyn RtcpPacket + Send + Sync>> = vec![Box::new(sr), Box::new(sdes)];
        match ::rtcp::packet::marshal(&packets) {
            Ok(b) => {
                self.stats.sent += 1;
                Some(b.to_vec())
            }
            Err(e) => {
                tracing::warn!(error = %e, "RTCP marshal failed");
                None
            }
        }
    }

    /// A BYE for when we hang up.
    pub fn bye(&self) -> Option<Vec<u8>> {
        let bye = Goodbye {
            sources: vec![self.ssrc],
            reason: bytes::Bytes::new(),
        };
        let packets: Vec<Box<dyn RtcpPacket + Send + Sync>> = vec![Box::new(bye)];
        ::rtcp::packet::marshal(&packets).ok().map(|b| b.to_vec())
    }
}

/// Splits a compound RTCP datagram into its packets, keeping SR (200),
/// RR (201) and BYE (203) whose report/source counts fit their declared
/// length; other types are skipped. `None` if the framing is broken.
fn checked_rtcp(data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = data;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        if rest.len() < 4 || rest[0] >> 6 != 2 {
            return None;
        }
        let count = (rest[0] & 0x1F) as usize;
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        if len > rest.len() {
            return None;
        }
        let (pkt, tail) = rest.split_at(len);
        let ok = match pkt[1] {
            200 => len >= 28 + 24 * count,
            201 => len >= 8 + 24 * count,
            203 => {
                let sources_end = 4 + 4 * count;
                // An optional reason: one length byte and the text.
                sources_end <= len
                    && (sources_end == len || pkt[sources_end] as usize + 1 + sources_end <= len)
            }
            _ => false,
        };
        if ok {
            out.push(pkt);
        }
        rest = tail;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RtcpSession, RtcpSession, Instant) {
        let t0 = Instant::now();
        (
            RtcpSession::new(1111, "a@switchboard".into(), 8000, t0),
            RtcpSession::new(2222, "b@peer".into(), 8000, t0),
            t0,
        )
    }

    #[test]
    fn reports_are_due_every_few_seconds_and_carry_loss_and_jitter() {
        let (mut a, mut b, t0) = pair();
        assert!(a.poll(t0, Sending::default(), None, 0.0).is_none());
        let t = t0 + REPORT_INTERVAL;
        // a received 95 of 100 packets from b with 3 ms jitter.
        let rec = Reception {
            ssrc: 2222,
            extended_highest_seq: 65_600,
            expected: 100,
            received: 95,
        };
        let pkt = a
            .poll(
                t,
                Sending {
                    packets: 250,
                    octets: 40_000,
                    rtp_time: 123,
                },
                Some(rec),
                3.0,
            )
            .expect("due");
        assert!(
            a.poll(t, Sending::default(), None, 0.0).is_none(),
            "not twice"
        );
        assert!(
            a.next_deadline() >= t + REPORT_INTERVAL / 2
                && a.next_deadline() <= t + REPORT_INTERVAL * 3 / 2
        );

        let parsed = ::rtcp::packet::unmarshal(&mut &pkt[..]).unwrap();
        let sr = parsed[0]
            .as_any()
            .downcast_ref::<SenderReport>()
            .expect("SR first");
        assert_eq!(
            (sr.ssrc, sr.packet_count, sr.octet_count, sr.rtp_time),
            (1111, 250, 40_000, 123)
        );
        let block = &sr.reports[0];
        assert_eq!(block.ssrc, 2222);
        assert_eq!(block.fraction_lost, (5 * 256 / 100) as u8);
        assert_eq!(block.total_lost, 5);
        assert_eq!(block.last_sequence_number, 65_600);
        assert_eq!(block.jitter, 24);
        assert!(
            parsed[1]
                .as_any()
                .downcast_ref::<SourceDescription>()
                .is_some(),
            "SDES CNAME follows"
        );

        // b learns how its stream fares at a.
        b.handle(&pkt, t + Duration::from_millis(1)).unwrap();
        let s = b.stats();
        assert!((s.remote_fraction_lost - 0.0469).abs() < 0.01);
        assert_eq!(s.remote_cumulative_lost, 5);
        assert!((s.remote_jitter_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        let (mut a, mut b, t0) = pair();
        let t1 = t0 + REPORT_INTERVAL;
        let sr_a = a.poll(t1, Sending::default(), None, 0.0).unwrap();
        // 40 ms one way; b holds it 100 ms before reporting.
        b.handle(&sr_a, t1 + Duration::from_millis(40)).unwrap();
        let rec = Reception {
            ssrc: 1111,
            extended_highest_seq: 10,
            expected: 10,
            received: 10,
        };
        let rr_b = b.poll(
            t1 + Duration::from_millis(140),
            Sending::default(),
            Some(rec),
            0.0,
        );
        let rr_b = rr_b.unwrap_or_else(|| {
            // b's first report was not due yet: force its schedule.
            b.next_report = t1;
            b.poll(
                t1 + Duration::from_millis(140),
                Sending::default(),
                Some(rec),
                0.0,
            )
            .unwrap()
        });
        a.handle(&rr_b, t1 + Duration::from_millis(180)).unwrap();
        let rtt = a.stats().rtt_ms.expect("rtt");
        assert!((rtt - 80.0).abs() < 1.0, "rtt {rtt}");
    }

    #[test]
    fn bye_and_garbage() {
        let (a, mut b, t0) = pair();
        let bye = a.bye().unwrap();
        assert!(b.handle(&bye, t0).unwrap().bye);
        assert!(b.stats().bye_received);
        assert!(b.handle(&[0x80, 200, 0, 50, 1, 2], t0).is_err());
        assert!(b.handle(&[], t0).is_err());
        assert_eq!(b.stats().malformed, 2);
    }
}
