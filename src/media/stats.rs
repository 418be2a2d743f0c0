//! Call media figures for `call_logs` and metrics, gathered from the
//! receiver, the jitter buffer and the pacer into one serialisable value.

use super::jitter::JitterStats;
use super::playout::PacerStats;
use super::receiver::ReceiveStats;

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MediaStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub send_errors: u64,
    /// Expected minus received (RFC 3550 A.3), over all SSRCs.
    pub lost: u64,
    /// Arrived after their playout time.
    pub late: u64,
    pub duplicated: u64,
    /// Frames filled by concealment because a packet was missing.
    pub concealed: u64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Longest silence between two received media packets, ms.
    pub max_gap_ms: u64,
    pub dropped_other_pt: u64,
    pub dropped_foreign_source: u64,
    pub malformed: u64,
    pub rtcp_packets_in: u64,
    pub dtmf_digits: u64,
    pub ssrc_changes: u64,
    pub jitter_depth_ms: u32,
    pub jitter_max_depth_ms: u32,
    pub jitter_target_ms: u32,
    pub jitter_underruns: u64,
    /// Send slots skipped after a stall (each is 20 ms the far end misses).
    pub send_slots_skipped: u64,
    pub max_send_lateness_us: u64,
    /// Shortest and longest interval between two RTP packets we sent.
    pub min_send_interval_us: u64,
    pub max_send_interval_us: u64,
    /// Events the owner's channel had no room for.
    pub events_dropped: u64,
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    /// What the peer reports about our stream (RTCP RR/SR blocks).
    pub remote_fraction_lost: f64,
    pub remote_cumulative_lost: u64,
    pub remote_jitter_ms: f64,
    pub rtt_ms: Option<f64>,
}

/// Counters the session driver keeps for what it sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendCounters {
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
    pub last_at: Option<std::time::Instant>,
    /// Shortest and longest time between two consecutive RTP sends.
    pub min_interval_us: Option<u64>,
    pub max_interval_us: u64,
}

impl MediaStats {
    pub fn gather(
        recv: ReceiveStats,
        jitter: JitterStats,
        pacer: PacerStats,
        sent: SendCounters,
        events_dropped: u64,
    ) -> MediaStats {
        MediaStats {
            packets_in: recv.packets,
            bytes_in: recv.bytes,
            packets_out: sent.packets,
            bytes_out: sent.bytes,
            send_errors: sent.errors,
            lost: jitter.lost,
            late: jitter.late,
            duplicated: jitter.duplicates,
            concealed: jitter.concealed,
            jitter_ms: jitter.jitter_ms,
            max_gap_ms: recv.max_gap_ms,
            dropped_other_pt: recv.dropped_other_pt,
            dropped_foreign_source: recv.dropped_foreign_source,
            malformed: recv.malformed,
            rtcp_packets_in: recv.rtcp_packets,
            dtmf_digits: recv.dtmf_digits,
            ssrc_changes: jitter.ssrc_changes,
            jitter_depth_ms: jitter.depth_ms,
            jitter_max_depth_ms: jitter.max_depth_ms,
            jitter_target_ms: jitter.target_ms,
            jitter_underruns: jitter.underruns,
            send_slots_skipped: pacer.skipped_slots,
            max_send_lateness_us: pacer.max_lateness_us,
            min_send_interval_us: sent.min_interval_us.unwrap_or(0),
            max_send_interval_us: sent.max_interval_us,
            events_dropped,
            ..Default::default()
        }
    }

    /// Adds an ended session's packets to the process's counters (once
    /// per call, so no packet touches a shared counter).
    pub fn add_to_metrics(&self) {
        use crate::metrics::{metrics, RtpDirection, RtpOutcome as O};
        let m = metrics();
        let received_ok = self
            .packets_in
            .saturating_sub(self.late)
            .saturating_sub(self.duplicated);
        for (outcome, n) in [
            (O::Ok, received_ok),
            (O::Late, self.late),
            (O::Lost, self.lost),
            (O::Concealed, self.concealed),
            (O::Duplicate, self.duplicated),
            (O::DroppedForeignSource, self.dropped_foreign_source),
            (O::DroppedOtherPt, self.dropped_other_pt),
            (O::Malformed, self.malformed),
        ] {
            m.rtp_packets(RtpDirection::Received, outcome, n);
        }
        m.rtp_packets(RtpDirection::Sent, O::Ok, self.packets_out);
        m.rtp_packets(RtpDirection::Sent, O::SendError, self.send_errors);
        m.rtp_packets(RtpDirection::Sent, O::Skipped, self.send_slots_skipped);
    }

    /// Adds what RTCP learnt.
    pub fn with_rtcp(mut self, r: super::control::RtcpStats) -> MediaStats {
        self.rtcp_sent = r.sent;
        self.rtcp_received = r.received;
        self.remote_fraction_lost = r.remote_fraction_lost;
        self.remote_cumulative_lost = r.remote_cumulative_lost;
        self.remote_jitter_ms = r.remote_jitter_ms;
        self.rtt_ms = r.rtt_ms;
        self
    }
}
