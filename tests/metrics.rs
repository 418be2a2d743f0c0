//! `GET /metrics` on a whole node, read as a scraper would: over HTTP,
//! parsed as Prometheus text (every line must parse). Between two scrapes
//! the test places real calls — a SIPp call, a SIPp INVITE for a number
//! nobody holds (404, a `rejected` row), a SIPp INVITE from a source no
//! trunk admits (403, counted by the SIP guard), a caller that asks a
//! question in a Piper voice and hears the answer (transcribed by an
//! OpenAI-compatible mock) — and a few API requests, and checks the
//! counters moved by exactly that. The node also traces that turn to an
//! OTLP/HTTP collector started here (protobuf decoded with the official
//! OTLP types): one span per stage under a `turn` span, on the call's
//! trace, with its Call-ID and call_log id. A scraper outside
//! `api.metrics_allow` gets 403.
//!
//! The registry is the process's, shared by the tests of this file: they
//! take turns (`SERIAL`) so one's calls do not show in the other's figures.

use crate::common;
use crate::sip_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mock_openai::{ChatMode, MockServer, ALLOW_LOOPBACK, API_KEY as MOCK_KEY};
use common::node::{demo_agent, node_config, poll, speech_8k, start_node};
use common::sip_caller::SipCaller;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prom_text_format_parser::{Scrape, Type, ValueType};
use prost::Message;
use sip_support::sipp;
use switchboard::db::testing::TestDb;

const DEMO: &str = "+15555550100";
const QUESTION: &str = "What time do you open on Saturday?";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One scrape: each sample's value by `name{sorted labels}`; histograms
/// as their `_count` and `_sum` samples.
#[derive(Debug)]
struct Figures(HashMap<String, f64>);

impl Figures {
    /// The sample `name` with exactly these labels (0 when absent: a
    /// labelled series appears at its first increment).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0.get(&key(name, labels)).copied().unwrap_or(0.0)
    }

    /// Every sample of `name`, with its labels.
    fn series(&self, name: &str) -> Vec<(&str, f64)> {
        self.0
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// Parses Prometheus text (the parser refuses any line it cannot read)
/// and checks every metric of the node is there, typed and described.
fn parse(text: &str) -> Figures {
    let scrape = Scrape::parse(text)
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e:?}\n{text}"));
    let mut out = HashMap::new();
    for metric in &scrape.metrics {
        for sample in &metric.samples {
            let suffix = match (metric.kind, sample.value.value_type) {
                (Type::Histogram, ValueType::Sample) => "_bucket",
                (Type::Histogram, ValueType::Sum) => "_sum",
                (Type::Histogram, ValueType::Count) => "_count",
                _ => "",
            };
            let labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|l| (l.key.as_str(), l.value.as_str()))
                .collect();
            let v = sample.value.value.as_f64();
            assert!(v.is_finite() && v >= 0.0, "{} = {v}", metric.name);
            out.insert(key(&format!("{}{suffix}", metric.name), &labels), v);
        }
    }
    for (name, kind) in [
        ("switchboard_calls_total", Type::Counter),
        ("switchboard_calls_active", Type::Gauge),
        ("switchboard_sip_responses_total", Type::Counter),
        ("switchboard_invite_to_200_seconds", Type::Histogram),
        ("switchboard_turn_voice_to_voice_seconds", Type::Histogram),
        ("switchboard_stt_seconds", Type::Histogram),
        ("switchboard_retrieval_seconds", Type::Histogram),
        ("switchboard_llm_first_token_seconds", Type::Histogram),
        ("switchboard_tts_first_audio_seconds", Type::Histogram),
        ("switchboard_barge_ins_total", Type::Counter),
        ("switchboard_rtp_packets_total", Type::Counter),
        ("switchboard_record_queue_depth", Type::Gauge),
        ("switchboard_db_write_failures_total", Type::Counter),
        ("switchboard_http_request_seconds", Type::Histogram),
        (
            "switchboard_sip_unauthenticated_rejections_total",
            Type::Counter,
        ),
    ] {
        let m = scrape.metrics.iter().find(|m| m.name == name);
        // A labelled family appears once it has a series.
        let Some(m) = m else {
            assert!(
                !text.contains(&format!("\n{name}")),
                "{name} is in the text but was not parsed"
            );
            continue;
        };
        assert_eq!(m.kind, kind, "{name}");
        assert!(m.help_desc.is_some(), "{name} is not described");
    }
    Figures(out)
}

/// An OTLP/HTTP collector: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, decoded and kept.
struct Collector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Seen = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn collect(
    axum::extract::State(seen): axum::extract::State<Seen>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, Vec<u8>) {
    let protobuf = headers
        .get("content-type")
        .is_some_and(|v| v == "application/x-protobuf");
    match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(req) if protobuf => {
            seen.lock().expect("seen").push(req);
            (
                axum::http::StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        _ => (axum::http::StatusCode::BAD_REQUEST, Vec::new()),
    }
}

impl Collector {
    async fn start() -> Collector {
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(collect))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("collector listener");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { addr, seen, task }
    }

    fn spans(&self) -> Vec<Span> {
        let seen = self.seen.lock().expect("seen");
        seen.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    /// The `service.name` of every request's resource.
    fn services(&self) -> Vec<String> {
        let seen = self.seen.lock().expect("seen");
        let mut names: Vec<String> = seen
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter_map(|r| r.resource.as_ref())
            .flat_map(|r| &r.attributes)
            .filter(|a| a.key == "service.name")
            .filter_map(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect();
        names.dedup();
        names
    }
}

async fn scrape(http: &reqwest::Client, api: SocketAddr) -> Figures {
    let r = http
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_real_calls_turns_and_api_requests() {
    let _serial = SERIAL.lock().await;
    common::node::init_logs();
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    // Only 127.0.0.1 is a trunk's: 127.0.0.2 is a stranger.
    sqlx::query("update sip_trunks set inbound_cidrs = '{127.0.0.1/32}'")
        .execute(&db.pool)
        .await
        .expect("trunk range");
    let (agent, workspace) = demo_agent(&db.pool).await;
    let (api_key, prefix, hash) = switchboard::api::auth::generate_api_key();
    sqlx::query(
        "insert into api_keys (workspace_id, name, prefix, key_hash, role) values ($1, 'metrics', $2, $3, 'MANAGER')",
    )
    .bind(workspace)
    .bind(&prefix)
    .bind(&hash)
    .execute(&db.pool)
    .await
    .expect("api key");
    // The agent transcribes through an OpenAI-compatible service (a mock in
    // this process, answering the question asked): whisper on this shared
    // 2-core machine has run past its time limit under other builds' load,
    // and this test is about the figures, not the recognizer.
    let mock = MockServer::start_with_transcript(ChatMode::Fail, QUESTION).await;
    let collector = Collector::start().await;
    let endpoint = format!("http://{}", collector.addr);
    let config = node_config(
        &db.url,
        43000,
        &[
            ALLOW_LOOPBACK,
            ("SWITCHBOARD_TELEMETRY__OTLP_ENDPOINT", &endpoint),
        ],
    );
    let sealed = switchboard::api::secrets::encrypt(&config.encryption_key_bytes(), MOCK_KEY);
    sqlx::query(
        "insert into workspace_llm_config (workspace_id, provider, base_url, api_key) values ($1, 'openai', $2, $3)",
    )
    .bind(workspace)
    .bind(mock.base_url())
    .bind(sealed)
    .execute(&db.pool)
    .await
    .expect("workspace_llm_config");
    sqlx::query("update agents set stt_provider = 'openai' where id = $1")
        .bind(agent)
        .execute(&db.pool)
        .await
        .expect("stt provider");
    let node = switchboard::serve::start(Arc::new(config), db.pool.clone())
        .await
        .expect("node starts");
    common::node::warmed_up(&node).await;
    let sip = node.sip.local_addr();
    let http = reqwest::Client::new();
    let before = scrape(&http, node.api_addr).await;
    assert_eq!(before.get("switchboard_calls_active", &[]), 0.0);

    // A call the agent answers; SIPp hangs up after a second.
    sipp(sip, "uac_call.xml", DEMO, &["-d", "1000"])
        .await
        .assert_ok();
    // A number nobody holds: 404 and a `rejected` row.
    sipp(sip, "uac_expect_404.xml", "+15555559999", &[])
        .await
        .assert_ok();
    // A source no trunk admits: 403, no row, counted by the guard.
    sipp(sip, "uac_expect_403.xml", DEMO, &["-i", "127.0.0.2"])
        .await
        .assert_ok();

    // API requests: three on one route, one with an id in its path, one
    // on no route at all.
    for _ in 0..3 {
        let r = http
            .get(format!("http://{}/healthz", node.api_addr))
            .send()
            .await
            .expect("healthz");
        assert_eq!(r.status(), 200);
    }
    let r = http
        .get(format!(
            "http://{}/v1/workspaces/{workspace}/calls/live",
            node.api_addr
        ))
        .header("x-api-key", &api_key)
        .send()
        .await
        .expect("live calls");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("http://{}/no/such/page-4711", node.api_addr))
        .send()
        .await
        .expect("unknown path");
    assert_eq!(r.status(), 404);

    // A caller who asks a question and hears the answer: one turn.
    let dir = tempfile::tempdir().expect("tmp");
    let question = speech_8k(dir.path(), "question", QUESTION);
    let caller = SipCaller::dial_after_greeting(sip, DEMO).await;
    // The turn is counted when its answer starts to play.
    let asked = caller.say_and_wait(&question).await;
    let turns = "switchboard_turn_voice_to_voice_seconds_count";
    let during = poll(Duration::from_secs(30), || async {
        let f = scrape(&http, node.api_addr).await;
        (f.get(turns, &[]) > before.get(turns, &[])).then_some(f)
    })
    .await
    .expect("no turn counted within 30 s of the question");
    assert_eq!(during.get("switchboard_calls_active", &[]), 1.0);
    caller
        .wait_agent_voice(asked, Duration::from_secs(5))
        .await
        .expect("the answer is heard");
    assert!(caller.hangup().await, "BYE answered 200");
    let call_id = caller.call_id().to_string();

    // Both calls over and their records written: nothing active, both
    // queues empty.
    let Some(after) = poll(Duration::from_secs(15), || async {
        let f = scrape(&http, node.api_addr).await;
        let idle = f.get("switchboard_calls_active", &[]) == 0.0
            && f.get("switchboard_record_queue_depth", &[("queue", "records")]) == 0.0;
        idle.then_some(f)
    })
    .await
    else {
        let f = scrape(&http, node.api_addr).await;
        panic!(
            "15 s after the calls: calls_active {}, records queued {}",
            f.get("switchboard_calls_active", &[]),
            f.get("switchboard_record_queue_depth", &[("queue", "records")]),
        );
    };
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);

    let inbound = |status| [("direction", "inbound"), ("status", status)];
    assert_eq!(
        delta("switchboard_calls_total", &inbound("completed")),
        2.0,
        "{:?}",
        after.series("switchboard_calls_total")
    );
    assert_eq!(delta("switchboard_calls_total", &inbound("rejected")), 1.0);
    assert_eq!(delta("switchboard_invite_to_200_seconds_count", &[]), 2.0);
    assert!(delta("switchboard_invite_to_200_seconds_sum", &[]) > 0.0);
    // Two INVITEs answered and two BYEs acknowledged, at least.
    assert!(delta("switchboard_sip_responses_total", &[("code", "200")]) >= 4.0);
    assert_eq!(
        delta("switchboard_sip_responses_total", &[("code", "404")]),
        1.0
    );
    assert_eq!(
        delta("switchboard_sip_responses_total", &[("code", "403")]),
        1.0
    );
    assert_eq!(
        delta("switchboard_sip_unauthenticated_rejections_total", &[]),
        1.0
    );
    assert_eq!(after.get("switchboard_calls_active", &[]), 0.0);

    // The API, by route template.
    let route = |route, status| [("route", route), ("status", status)];
    assert_eq!(
        delta(
            "switchboard_http_request_seconds_count",
            &route("/healthz", "200")
        ),
        3.0
    );
    assert_eq!(
        delta(
            "switchboard_http_request_seconds_count",
            &route("/v1/workspaces/{workspace_id}/calls/live", "200")
        ),
        1.0
    );
    assert_eq!(
        delta(
            "switchboard_http_request_seconds_count",
            &route("unmatched", "404")
        ),
        1.0
    );
    let http_series = after.series("switchboard_http_request_seconds_count");
    assert!(
        http_series
            .iter()
            .all(|(k, _)| !k.contains("4711") && !k.contains(&workspace.to_string())),
        "a raw path became a label: {http_series:?}"
    );

    // The turn: each stage of the answered question.
    for stage in [
        "switchboard_turn_voice_to_voice_seconds",
        "switchboard_stt_seconds",
        "switchboard_retrieval_seconds",
        "switchboard_llm_first_token_seconds",
        "switchboard_tts_first_audio_seconds",
    ] {
        let n = delta(&format!("{stage}_count"), &[]);
        let sum = delta(&format!("{stage}_sum"), &[]);
        println!("{stage}: {n} turns, mean {:.3} s", sum / n.max(1.0));
        assert!(n >= 1.0, "{stage}: {n} turns");
    }
    let v2v = delta("switchboard_turn_voice_to_voice_seconds_sum", &[])
        / delta("switchboard_turn_voice_to_voice_seconds_count", &[]);
    assert!(v2v > 0.0 && v2v < 10.0, "voice to voice {v2v} s");

    // Media of both answered calls.
    let rtp = |direction, outcome| [("direction", direction), ("outcome", outcome)];
    let sent = delta("switchboard_rtp_packets_total", &rtp("sent", "ok"));
    let received = delta("switchboard_rtp_packets_total", &rtp("received", "ok"));
    assert!(
        sent >= 100.0,
        "{sent} packets sent (2 s of greeting at least)"
    );
    assert!(received >= 100.0, "{received} packets received");
    assert_eq!(delta("switchboard_db_write_failures_total", &[]), 0.0);
    assert!(
        !mock.transcriptions().is_empty(),
        "the question was transcribed"
    );

    // The turn's trace, as the OTLP/HTTP collector received it.
    let call_log_id: uuid::Uuid =
        sqlx::query_scalar("select id from call_logs where sip_call_id = $1")
            .bind(&call_id)
            .fetch_one(&db.pool)
            .await
            .expect("the spoken call's row");
    let spans = poll(Duration::from_secs(10), || async {
        let spans = collector.spans();
        spans
            .iter()
            .any(|s| s.name == "tts_first_audio")
            .then_some(spans)
    })
    .await
    .unwrap_or_else(|| panic!("no turn trace within 10 s: {:?}", collector.spans()));
    let attr = |s: &Span, key: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
    };
    let turn = spans
        .iter()
        .find(|s| s.name == "turn")
        .expect("a turn span");
    assert_eq!(
        turn.trace_id,
        call_log_id.as_bytes().to_vec(),
        "one trace per call"
    );
    assert!(turn.parent_span_id.is_empty());
    assert!(turn.end_time_unix_nano > turn.start_time_unix_nano);
    for stage in ["stt", "retrieval", "llm_first_token", "tts_first_audio"] {
        let s = spans
            .iter()
            .find(|s| s.name == stage)
            .unwrap_or_else(|| panic!("no {stage} span: {spans:?}"));
        assert_eq!(
            s.parent_span_id, turn.span_id,
            "{stage} is a child of the turn"
        );
        assert_eq!(s.trace_id, turn.trace_id);
    }
    for s in &spans {
        assert_eq!(attr(s, "sip.call_id").as_deref(), Some(call_id.as_str()));
        assert_eq!(
            attr(s, "call_log_id").as_deref(),
            Some(call_log_id.to_string().as_str())
        );
    }
    assert_eq!(collector.services(), vec!["switchboard".to_string()]);
    println!(
        "calls {:?}\nturn v2v mean {:.3} s; RTP sent {sent}, received {received}",
        after.series("switchboard_calls_total"),
        v2v
    );
    node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_addresses_may_scrape() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    // 127.0.0.2 may scrape; 127.0.0.1 (the test's usual address) may not.
    let node = start_node(
        &db.url,
        &db.pool,
        43400,
        &[("SWITCHBOARD_API__METRICS_ALLOW", r#"["127.0.0.2/32"]"#)],
    )
    .await;
    let url = format!("http://{}/metrics", node.api_addr);
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
            .build()
            .expect("client")
    };
    let refused = from("127.0.0.1").get(&url).send().await.expect("GET");
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.expect("body");
    assert!(!body.contains("switchboard_"), "{body}");
    let allowed = from("127.0.0.2").get(&url).send().await.expect("GET");
    assert_eq!(allowed.status(), 200);
    let figures = parse(&allowed.text().await.expect("body"));
    // The refusal itself is timed under the route.
    assert!(
        figures.get(
            "switchboard_http_request_seconds_count",
            &[("route", "/metrics"), ("status", "403")]
        ) >= 1.0
    );
    // The rest of the API is as before for 127.0.0.1.
    let health = from("127.0.0.1")
        .get(format!("http://{}/healthz", node.api_addr))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    node.stop(Duration::from_secs(5)).await;
}
