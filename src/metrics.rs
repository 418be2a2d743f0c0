//! The process's Prometheus metrics: one registry, made at first use, that
//! the SIP, media, runtime and API layers record into and `GET /metrics`
//! renders as Prometheus text. A leaf module: it depends on no layer.
//! Label values come from fixed sets (enums, `&'static str` statuses, SIP
//! and HTTP status codes, axum route templates), never from what a peer
//! sends, so the number of series stays bounded.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use ipnet::IpNet;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::records::{CALL_DIRECTIONS as DIRECTIONS, CALL_STATUSES as STATUSES};

/// The content type of [`Metrics::render`]'s output.
pub const TEXT_FORMAT: &str = prometheus::TEXT_FORMAT;

/// Seconds, for the turn stages and the whole turn (fast offline stages
/// take a few milliseconds, a networked model's first token a second or more).
const TURN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];
/// Seconds from INVITE to 200 OK: routing plus the ring delay.
const ANSWER_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Seconds per API request.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A label from a fixed set: `value` if listed, else `other` (so a label
/// never carries an unexpected value).
fn known(value: &str, set: &[&'static str]) -> &'static str {
    set.iter()
        .find(|s| **s == value)
        .copied()
        .unwrap_or("other")
}

/// RTP packets the node sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpDirection {
    Sent,
    Received,
}

/// What became of RTP packets (and, for `Lost` and `Concealed`, of the
/// packets that never came).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpOutcome {
    /// Received in time and played, or sent.
    Ok,
    /// Arrived after their playout time.
    Late,
    /// Expected from the sequence numbers and never received.
    Lost,
    /// 20 ms frames filled by concealment for a missing packet.
    Concealed,
    Duplicate,
    /// From an address other than the call's media source (not latched).
    DroppedForeignSource,
    /// A payload type the call did not negotiate.
    DroppedOtherPt,
    Malformed,
    /// The socket refused the send.
    SendError,
    /// Send slots skipped after a stall of the media clock.
    Skipped,
}

impl RtpOutcome {
    fn label(self) -> &'static str {
        match self {
            RtpOutcome::Ok => "ok",
            RtpOutcome::Late => "late",
            RtpOutcome::Lost => "lost",
            RtpOutcome::Concealed => "concealed",
            RtpOutcome::Duplicate => "duplicate",
            RtpOutcome::DroppedForeignSource => "dropped_foreign_source",
            RtpOutcome::DroppedOtherPt => "dropped_other_pt",
            RtpOutcome::Malformed => "malformed",
            RtpOutcome::SendError => "send_error",
            RtpOutcome::Skipped => "skipped",
        }
    }
}

/// The node's record writer (`crate::records`), the one queue watched.
const RECORD_QUEUE: &str = "records";

/// One answered turn's split, as kept in `call_logs.latency`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnTimes {
    /// End of the caller's speech → first agent audio sent.
    pub voice_to_voice: Option<Duration>,
    pub stt: Option<Duration>,
    pub retrieval: Option<Duration>,
    pub llm_first_token: Option<Duration>,
    pub tts_first_audio: Option<Duration>,
}

pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    calls_active: IntGauge,
    sip_responses: IntCounterVec,
    invite_to_200: Histogram,
    sip_unauthenticated_rejections: IntCounter,
    sip_responses_rate_limited: IntCounter,
    sip_transactions_refused: IntCounter,
    turn_voice_to_voice: Histogram,
    stt: Histogram,
    retrieval: Histogram,
    llm_first_token: Histogram,
    tts_first_audio: Histogram,
    barge_ins: IntCounter,
    rtp_packets: IntCounterVec,
    record_queue_depth: IntGaugeVec,
    db_write_failures: IntCounter,
    http_request: HistogramVec,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("registered once");
    h
}

impl Metrics {
    // The names and help texts are constants: a failure here is a typo
    // caught by the first test that renders, never a peer's doing.
    fn new() -> Metrics {
        let r = Registry::new();
        let calls_active = IntGauge::new(
            "switchboard_calls_active",
            "Calls the SIP layer holds now (routing, ringing or answered).",
        )
        .expect("valid metric");
        r.register(Box::new(calls_active.clone()))
            .expect("registered once");
        let record_queue_depth = IntGaugeVec::new(
            Opts::new(
                "switchboard_record_queue_depth",
                "Record writes queued and not yet committed, per writer.",
            ),
            &["queue"],
        )
        .expect("valid metric");
        r.register(Box::new(record_queue_depth.clone()))
            .expect("registered once");
        record_queue_depth.with_label_values(&[RECORD_QUEUE]).set(0);
        let http_request = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_http_request_seconds",
                "API requests by matched route template and status code.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["route", "status"],
        )
        .expect("valid metric");
        r.register(Box::new(http_request.clone()))
            .expect("registered once");
        Metrics {
            calls: counter_vec(
                &r,
                "switchboard_calls_total",
                "Calls that ended (or were refused with a call_logs row), by direction and call_logs status.",
                &["direction", "status"],
            ),
            calls_active,
            sip_responses: counter_vec(
                &r,
                "switchboard_sip_responses_total",
                "SIP responses the node sent, by status code (retransmissions not counted).",
                &["code"],
            ),
            invite_to_200: histogram(
                &r,
                "switchboard_invite_to_200_seconds",
                "From an INVITE received to its 200 OK sent.",
                ANSWER_BUCKETS,
            ),
            sip_unauthenticated_rejections: counter(
                &r,
                "switchboard_sip_unauthenticated_rejections_total",
                "INVITEs from sources no trunk admits and with no valid digest, refused with 403/404 (no call_logs row).",
            ),
            sip_responses_rate_limited: counter(
                &r,
                "switchboard_sip_responses_rate_limited_total",
                "Answers to unauthenticated sources withheld by their per-source budget.",
            ),
            sip_transactions_refused: counter(
                &r,
                "switchboard_sip_transactions_refused_total",
                "Requests refused because the source's or the node's server transactions were full.",
            ),
            turn_voice_to_voice: histogram(
                &r,
                "switchboard_turn_voice_to_voice_seconds",
                "Per turn: end of the caller's speech to the first agent audio sent.",
                TURN_BUCKETS,
            ),
            stt: histogram(
                &r,
                "switchboard_stt_seconds",
                "Per turn: transcription of the caller's speech.",
                TURN_BUCKETS,
            ),
            retrieval: histogram(
                &r,
                "switchboard_retrieval_seconds",
                "Per turn: knowledge retrieval.",
                TURN_BUCKETS,
            ),
            llm_first_token: histogram(
                &r,
                "switchboard_llm_first_token_seconds",
                "Per turn: reply start to the model's first token.",
                TURN_BUCKETS,
            ),
            tts_first_audio: histogram(
                &r,
                "switchboard_tts_first_audio_seconds",
                "Per turn: speech synthesis of the first sentence to its first audio.",
                TURN_BUCKETS,
            ),
            barge_ins: counter(
                &r,
                "switchboard_barge_ins_total",
                "Agent replies cut off by the caller speaking over them.",
            ),
            rtp_packets: counter_vec(
                &r,
                "switchboard_rtp_packets_total",
                "RTP packets of ended calls by direction and outcome (lost: expected, never came; concealed: frames filled in).",
                &["direction", "outcome"],
            ),
            record_queue_depth,
            db_write_failures: counter(
                &r,
                "switchboard_db_write_failures_total",
                "Record writes that failed: each failed attempt (retried ones count each time), and records dropped from a full queue.",
            ),
            http_request,
            registry: r,
        }
    }

    /// Everything, in Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics could not be encoded: {e}\n"))
    }

    /// A call ended, or was refused and logged, with this `call_logs` status.
    pub fn call_ended(&self, direction: &str, status: &str) {
        self.calls
            .with_label_values(&[known(direction, DIRECTIONS), known(status, STATUSES)])
            .inc();
    }

    /// The SIP layer's calls went from `before` to `after`.
    pub fn calls_active_changed(&self, before: usize, after: usize) {
        self.calls_active.add(after as i64 - before as i64);
    }

    /// A response the node sends (first transmission).
    pub fn sip_response_sent(&self, code: u16) {
        let label = match code {
            100..=699 => code_label(code),
            _ => "other",
        };
        self.sip_responses.with_label_values(&[label]).inc();
    }

    pub fn invite_answered(&self, after: Duration) {
        self.invite_to_200.observe(after.as_secs_f64());
    }

    pub fn sip_unauthenticated_rejection(&self) {
        self.sip_unauthenticated_rejections.inc();
    }

    pub fn sip_response_rate_limited(&self) {
        self.sip_responses_rate_limited.inc();
    }

    pub fn sip_transaction_refused(&self) {
        self.sip_transactions_refused.inc();
    }

    /// One answered turn (at its first agent audio).
    pub fn turn(&self, t: &TurnTimes) {
        let pairs = [
            (&self.turn_voice_to_voice, t.voice_to_voice),
            (&self.stt, t.stt),
            (&self.retrieval, t.retrieval),
            (&self.llm_first_token, t.llm_first_token),
            (&self.tts_first_audio, t.tts_first_audio),
        ];
        for (h, d) in pairs {
            if let Some(d) = d {
                h.observe(d.as_secs_f64());
            }
        }
    }

    pub fn barge_in(&self) {
        self.barge_ins.inc();
    }

    /// Adds a call's packet counts (at the end of its media session, so
    /// the per-packet path stays free of shared counters).
    pub fn rtp_packets(&self, direction: RtpDirection, outcome: RtpOutcome, n: u64) {
        if n == 0 {
            return;
        }
        let direction = match direction {
            RtpDirection::Sent => "sent",
            RtpDirection::Received => "received",
        };
        self.rtp_packets
            .with_label_values(&[direction, outcome.label()])
            .inc_by(n);
    }

    /// Records queued and not yet written (memory and spill file).
    pub fn record_queue_depth(&self, pending: u64) {
        self.record_queue_depth
            .with_label_values(&[RECORD_QUEUE])
            .set(pending.min(i64::MAX as u64) as i64);
    }

    pub fn db_write_failed(&self) {
        self.db_write_failures.inc();
    }

    /// One API request; `route` is the matched route template (or
    /// `"unmatched"`), never the raw path.
    pub fn http_request(&self, route: &str, status: u16, took: Duration) {
        self.http_request
            .with_label_values(&[route, code_label(status)])
            .observe(took.as_secs_f64());
    }
}

/// A status code as a label, without an allocation per call.
fn code_label(code: u16) -> &'static str {
    static LABELS: LazyLock<Vec<String>> =
        LazyLock::new(|| (0..1000u16).map(|c| c.to_string()).collect());
    LABELS
        .get(code as usize)
        .map(String::as_str)
        .unwrap_or("other")
}

/// Who may scrape `/metrics` (`api.metrics_allow`): ranges (`10.0.0.0/8`)
/// and addresses (`::1`). An IPv4 peer seen as IPv4-mapped IPv6 (a
/// dual-stack listener) is matched as IPv4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeAllow {
    ranges: Vec<IpNet>,
}

impl ScrapeAllow {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<ScrapeAllow, String> {
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                ranges.push(net.trunc());
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                ranges.push(IpNet::from(ip));
            } else {
                return Err(format!(
                    "{entry:?} is neither an address nor a range (e.g. \"10.0.0.0/8\")"
                ));
            }
        }
        Ok(ScrapeAllow { ranges })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ranges.iter().any(|r| r.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_its_type() {
        let m = metrics();
        m.call_ended("inbound", "completed");
        m.sip_response_sent(200);
        m.sip_response_sent(9999);
        m.http_request("/healthz", 200, Duration::from_millis(2));
        m.rtp_packets(RtpDirection::Received, RtpOutcome::Late, 3);
        let text = m.render();
        for line in [
            "# TYPE switchboard_calls_total counter",
            "# TYPE switchboard_calls_active gauge",
            "# TYPE switchboard_invite_to_200_seconds histogram",
            "# TYPE switchboard_turn_voice_to_voice_seconds histogram",
            "# TYPE switchboard_barge_ins_total counter",
            "# TYPE switchboard_db_write_failures_total counter",
            "# TYPE switchboard_sip_unauthenticated_rejections_total counter",
            "switchboard_record_queue_depth{queue=\"records\"}",
            "switchboard_sip_responses_total{code=\"other\"}",
            "switchboard_http_request_seconds_count{route=\"/healthz\",status=\"200\"}",
            "switchboard_rtp_packets_total{direction=\"received\",outcome=\"late\"}",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn code_labels_are_the_numbers() {
        assert_eq!(code_label(200), "200");
        assert_eq!(code_label(487), "487");
        assert_eq!(code_label(0), "0");
        assert_eq!(code_label(1000), "other");
    }

    #[test]
    fn the_scrape_allow_list_matches_ranges_and_mapped_addresses() {
        let a = ScrapeAllow::parse(&["127.0.0.1/32", "::1", "10.1.0.0/16"]).unwrap();
        assert!(a.permits("127.0.0.1".parse().unwrap()));
        assert!(a.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(a.permits("::1".parse().unwrap()));
        assert!(a.permits("10.1.200.3".parse().unwrap()));
        assert!(!a.permits("10.2.0.1".parse().unwrap()));
        assert!(!a.permits("127.0.0.2".parse().unwrap()));
        assert!(!ScrapeAllow::parse::<&str>(&[])
            .unwrap()
            .permits("127.0.0.1".parse().unwrap()));
        assert!(ScrapeAllow::parse(&["10.0.0.0/40"]).is_err());
        assert!(ScrapeAllow::parse(&["metrics.internal"]).is_err());
    }
}
