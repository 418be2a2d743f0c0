//! OpenTelemetry traces per call, exported as OTLP/HTTP protobuf to
//! `[telemetry] otlp_endpoint` (off when empty, the default). Each answered
//! turn is a `turn` span (end of the caller's speech → first agent audio)
//! with one child per stage (`stt`, `retrieval`, `llm_first_token`,
//! `tts_first_audio`), placed on the timeline from the durations the turn
//! measured; a call's spans share one trace whose id is its call_log id, and
//! each carries `sip.call_id` and `call_log_id`. Spans go through a bounded
//! queue to one task that posts them in batches: a collector that is down
//! or slow costs dropped spans, never a call's time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Spans waiting to be posted; past this they are dropped (and counted in
/// the log), so a dead collector holds bounded memory.
const QUEUE: usize = 4096;
/// Spans per request, and the longest a span waits for its batch.
const BATCH: usize = 512;
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// One export request's limit.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// One answered turn, as the call's ledger knows it.
#[derive(Debug, Clone)]
pub struct TurnTrace {
    pub sip_call_id: String,
    pub call_log_id: Uuid,
    pub turn: u64,
    pub speech_ended_at: Instant,
    /// When the reply began (the transcript was in).
    pub reply_started_at: Instant,
    pub first_audio_at: Instant,
    pub stt: Option<Duration>,
    pub retrieval: Option<Duration>,
    /// From the reply's start.
    pub llm_first_token: Option<Duration>,
    pub tts_first_audio: Option<Duration>,
}

/// The exporter's handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Telemetry {
    tx: mpsc::Sender<Span>,
}

impl Telemetry {
    /// Starts the exporter posting to `{endpoint}/v1/traces` (needs a tokio
    /// runtime); `endpoint` is an `http://` or `https://` base URL.
    pub fn start(endpoint: &str, service_name: &str) -> Result<Telemetry, String> {
        let url = traces_url(endpoint)?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .user_agent("switchboard-otlp/0.1")
            .build()
            .map_err(|e| format!("OTLP client: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export(client, url, service_name.to_string(), rx));
        Ok(Telemetry { tx })
    }

    /// Queues the turn's spans; never waits.
    pub fn turn(&self, t: &TurnTrace) {
        for span in turn_spans(t, Instant::now(), SystemTime::now()) {
            if self.tx.try_send(span).is_err() {
                tracing::debug!("telemetry queue full: span dropped");
            }
        }
    }
}

/// `{endpoint}/v1/traces`, checked.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let base = endpoint.trim().trim_end_matches('/');
    let parsed =
        reqwest::Url::parse(base).map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{endpoint:?} must be an http:// or https:// URL"));
    }
    Ok(format!("{base}/v1/traces"))
}

/// The turn's spans, their `Instant`s placed on the wall clock as
/// `(now, wall_now)` reads them.
fn turn_spans(t: &TurnTrace, now: Instant, wall_now: SystemTime) -> Vec<Span> {
    let nanos = |at: Instant| -> u64 {
        let wall = wall_now
            .checked_sub(now.saturating_duration_since(at))
            .unwrap_or(wall_now);
        wall.duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    };
    let trace_id = t.call_log_id.as_bytes().to_vec();
    let attributes = vec![
        string_attr("sip.call_id", &t.sip_call_id),
        string_attr("call_log_id", &t.call_log_id.to_string()),
        KeyValue {
            key: "turn".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(
                    i64::try_from(t.turn).unwrap_or(i64::MAX),
                )),
            }),
            ..Default::default()
        },
    ];
    let parent_id = span_id();
    let span = |name: &str, id: Vec<u8>, parent: Vec<u8>, start: u64, end: u64| Span {
        trace_id: trace_id.clone(),
        span_id: id,
        parent_span_id: parent,
        name: name.to_string(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        attributes: attributes.clone(),
        ..Default::default()
    };
    let started = nanos(t.reply_started_at);
    let ms = |d: Duration| d.as_nanos() as u64;
    let mut out = vec![span(
        "turn",
        parent_id.clone(),
        Vec::new(),
        nanos(t.speech_ended_at),
        nanos(t.first_audio_at),
    )];
    let mut child = |name: &str, start: u64, end: u64| {
        out.push(span(name, span_id(), parent_id.clone(), start, end));
    };
    if let Some(d) = t.stt {
        child("stt", started.saturating_sub(ms(d)), started);
    }
    if let Some(d) = t.retrieval {
        child("retrieval", started, started + ms(d));
    }
    if let Some(d) = t.llm_first_token {
        child("llm_first_token", started, started + ms(d));
    }
    if let Some(d) = t.tts_first_audio {
        let from = started + t.llm_first_token.map(ms).unwrap_or(0);
        child("tts_first_audio", from, from + ms(d));
    }
    out
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn span_id() -> Vec<u8> {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id.to_vec();
        }
    }
}

/// One OTLP request for `spans`.
fn request(service_name: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attr("service.name", service_name)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "switchboard".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

async fn export(
    client: reqwest::Client,
    url: String,
    service_name: String,
    mut rx: mpsc::Receiver<Span>,
) {
    while let Some(first) = rx.recv().await {
        let mut spans = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while spans.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => spans.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = spans.len();
        let body = request(&service_name, spans).encode_to_vec();
        let sent = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(status = %r.status(), spans = n, "OTLP collector refused spans")
            }
            Err(e) => tracing::warn!(error = %e, spans = n, "OTLP export failed; spans dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_is_a_parent_span_with_its_stages_on_one_trace() {
        let t0 = Instant::now();
        let wall0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let id = Uuid::new_v4();
        let t = TurnTrace {
            sip_call_id: "abc@host".into(),
            call_log_id: id,
            turn: 3,
            speech_ended_at: t0,
            reply_started_at: t0 + Duration::from_millis(200),
            first_audio_at: t0 + Duration::from_millis(500),
            stt: Some(Duration::from_millis(150)),
            retrieval: Some(Duration::from_millis(40)),
            llm_first_token: Some(Duration::from_millis(60)),
            tts_first_audio: Some(Duration::from_millis(90)),
        };
        let spans = turn_spans(&t, t0 + Duration::from_secs(1), wall0);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "turn",
                "stt",
                "retrieval",
                "llm_first_token",
                "tts_first_audio"
            ]
        );
        let ns = |ms: u64| (999_000 + ms) * 1_000_000;
        let turn = &spans[0];
        assert_eq!(
            (turn.start_time_unix_nano, turn.end_time_unix_nano),
            (ns(0), ns(500))
        );
        assert!(turn.parent_span_id.is_empty());
        for s in &spans {
            assert_eq!(s.trace_id, id.as_bytes().to_vec());
            assert_eq!(s.span_id.len(), 8);
            assert!(s.attributes.iter().any(|a| a.key == "sip.call_id"));
        }
        for s in &spans[1..] {
            assert_eq!(s.parent_span_id, turn.span_id);
        }
        assert_eq!(
            (spans[1].start_time_unix_nano, spans[1].end_time_unix_nano),
            (ns(50), ns(200))
        );
        assert_eq!(spans[4].start_time_unix_nano, ns(260));
        assert_eq!(spans[4].end_time_unix_nano, ns(350));
        // Encodes and decodes as OTLP.
        let bytes = request("switchboard", spans).encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.resource_spans[0].scope_spans[0].spans.len(), 5);
    }

    #[test]
    fn the_endpoint_must_be_an_http_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert!(traces_url("collector:4318").is_err());
        assert!(traces_url("ftp://x/").is_err());
        assert!(traces_url("").is_err());
    }
}
