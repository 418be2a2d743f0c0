//! WHIP sessions under pressure, with a real WebRTC peer (aiortc) on the
//! line: a widget key of one agent cannot end another agent's browser call
//! in the same workspace, and a draining node (SIGTERM) refuses new offers
//! with 503 and `Retry-After` as its SIP side does, while the browser call
//! already up goes on to its end.
//!
//! Ports (53000–53999): ICE 53000–53099 and RTP 53200–53400 (first test),
//! ICE 53100–53199 and RTP 53500–53700 (second).

use crate::common;

use std::time::Duration;

use common::node::{api_key, demo_agent, poll, start_node};
use common::whip::{aiortc_call, question_wav, webrtc_env};
use serde_json::Value;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

const QUESTION: &str = "What time do you open on Saturday?";
const ORIGIN: &str = "http://127.0.0.1:53999";

struct Node {
    db: TestDb,
    workspace: Uuid,
    /// The demo agent (the one called).
    agent: Uuid,
    key: String,
    node: switchboard::serve::Services,
}

async fn node(ice: u16, rtp: u16) -> Node {
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let (agent, workspace) = demo_agent(&db.pool).await;
    let key = api_key(&db.pool, workspace, "VIEWER").await;
    let env = webrtc_env(ice);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = start_node(&db.url, &db.pool, rtp, &env).await;
    Node {
        db,
        workspace,
        agent,
        key,
        node,
    }
}

/// The aiortc caller asking `QUESTION`, in the background; its report.
fn call_in_background(
    dir: &std::path::Path,
    url: String,
    key: String,
) -> tokio::task::JoinHandle<Value> {
    let question = question_wav(dir, "question", QUESTION);
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || aiortc_call(&dir, &url, &key, &[&question]))
}

/// The web call once ICE/DTLS connected: (call_logs id, WHIP session id).
async fn connected_call(pool: &sqlx::PgPool) -> (Uuid, Uuid) {
    let (id, call_ref): (Uuid, String) = poll(Duration::from_secs(60), || async {
        sqlx::query_as(
            "select id, sip_call_id from call_logs where direction = 'web' and answered_at is not null",
        )
        .fetch_optional(pool)
        .await
        .expect("call_logs")
    })
    .await
    .expect("the aiortc call connected");
    let session = call_ref
        .strip_prefix("whip-")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("sip_call_id {call_ref}"));
    (id, session)
}

async fn is_live(pool: &sqlx::PgPool, call_log: Uuid) -> bool {
    let ended: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select ended_at from call_logs where id = $1")
            .bind(call_log)
            .fetch_one(pool)
            .await
            .expect("call_logs");
    ended.is_none()
}

/// The call ran to the caller's own hang-up, with the question answered.
async fn finished_by_the_caller(pool: &sqlx::PgPool, call_log: Uuid, report: &Value) {
    assert_eq!(report["delete_status"], 200, "{report:#}");
    assert!(
        report["turns"][0]["voice_to_voice_ms"].as_f64().is_some(),
        "no answer after the question: {report:#}"
    );
    // status, hangup_by, session
    let (status, by, session): (String, Option<String>, Option<Uuid>) =
        poll(Duration::from_secs(20), || async {
            sqlx::query_as(
                "select status, hangup_by, session_id from call_logs where id = $1 and ended_at is not null",
            )
            .bind(call_log)
            .fetch_optional(pool)
            .await
            .expect("call_logs")
        })
        .await
        .expect("the call ended");
    assert_eq!(
        (status.as_str(), by.as_deref()),
        ("completed", Some("caller"))
    );
    let messages = common::node::session_messages(pool, session.expect("session")).await;
    assert!(
        messages
            .iter()
            .any(|(role, text, _)| role == "assistant" && text.contains("Saturday")),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widget_key_of_one_agent_cannot_end_another_agents_browser_call() {
    common::node::init_logs();
    let n = node(53000, 53200).await;
    // Agent A of the same workspace, with a widget on ORIGIN.
    let agent_a: Uuid = sqlx::query_scalar(
        "insert into agents (workspace_id, name, status) values ($1, 'Sales', 'live') returning id",
    )
    .bind(n.workspace)
    .fetch_one(&n.db.pool)
    .await
    .expect("agent A");
    let key_a: String = sqlx::query_scalar(
        "insert into agent_web_widget_config (workspace_id, agent_id, allowed_domains) \
         values ($1, $2, $3) returning public_key",
    )
    .bind(n.workspace)
    .bind(agent_a)
    .bind(vec![ORIGIN.to_string()])
    .fetch_one(&n.db.pool)
    .await
    .expect("widget of agent A");

    // A browser call to agent B (the demo agent).
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("http://{}/v1/agents/{}/whip", n.node.api_addr, n.agent);
    let caller = call_in_background(dir.path(), url, n.key.clone());
    let (call_log, session) = connected_call(&n.db.pool).await;

    let http = reqwest::Client::new();
    let delete = |agent: Uuid| {
        http.delete(format!(
            "http://{}/v1/agents/{agent}/whip/{session}",
            n.node.api_addr
        ))
        .bearer_auth(&key_a)
        .header("origin", ORIGIN)
        .send()
    };
    // A's key under A's path: B's session is no session of A's.
    let r = delete(agent_a).await.expect("DELETE");
    assert_eq!(r.status(), 404, "{:?}", r.text().await);
    // A's key under B's path: not a credential for B.
    let r = delete(n.agent).await.expect("DELETE");
    assert_eq!(r.status(), 401, "{:?}", r.text().await);
    // B's call keeps going: still live a second later, still listed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(is_live(&n.db.pool, call_log).await, "B's call was ended");
    let live: Value = http
        .get(format!(
            "http://{}/v1/workspaces/{}/calls/live",
            n.node.api_addr, n.workspace
        ))
        .bearer_auth(&n.key)
        .send()
        .await
        .expect("live calls")
        .json()
        .await
        .expect("JSON");
    assert!(
        live["items"].as_array().is_some_and(|calls| calls
            .iter()
            .any(|c| c["call_log_id"] == call_log.to_string())),
        "{live:#}"
    );
    // …and the caller asks its question, hears the answer and hangs up.
    let report = caller.await.expect("caller ran");
    finished_by_the_caller(&n.db.pool, call_log, &report).await;
    n.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_refuses_whip_offers_with_503_and_lets_live_browser_calls_finish() {
    common::node::init_logs();
    let n = node(53100, 53500).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("http://{}/v1/agents/{}/whip", n.node.api_addr, n.agent);
    let caller = call_in_background(dir.path(), url.clone(), n.key.clone());
    let (call_log, _) = connected_call(&n.db.pool).await;

    // SIGTERM's path: `serve` stops the node with its drain limit.
    let stopping = tokio::spawn(n.node.stop(Duration::from_secs(90)));
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
    let http = reqwest::Client::new();
    let refused = poll(Duration::from_secs(10), || async {
        let r = http
            .post(&url)
            .bearer_auth(&n.key)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(r)
    })
    .await
    .expect("a WHIP offer to a draining node gets 503");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30"),
        "Retry-After as the SIP side's"
    );
    let body: Value = refused.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("draining")),
        "{body}"
    );
    // The drain does not cut the call that was up.
    assert!(is_live(&n.db.pool, call_log).await, "the live call was cut");
    let report = caller.await.expect("caller ran");
    finished_by_the_caller(&n.db.pool, call_log, &report).await;
    // With its last call over the node stops well before the limit.
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("the drain ended with the last call")
        .expect("stop");
    let web_calls: i64 =
        sqlx::query_scalar("select count(*) from call_logs where direction = 'web'")
            .fetch_one(&n.db.pool)
            .await
            .expect("count");
    assert_eq!(web_calls, 1, "the refused offer wrote no call_logs row");
}
