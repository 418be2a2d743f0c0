//! Browser calls through WHIP (RFC 9725) with a WebRTC stack we did not
//! write: aiortc (PyPI, in `data/venv`) offers Opus, asks a question in a
//! Piper voice and records the answer, which whisper must understand as the
//! right one; every ICE candidate, pair and datagram stays on 127.0.0.0/8.
//! The call is a call like any other: `call_logs` (`direction = 'web'`),
//! `agent_sessions` (`channel = 'web'`), messages, usage. And the refusals:
//! wrong credential, unknown agent, draft agent, over the plan, bad SDP.
//!
//! Ports: WebRTC ICE 51000–51199, RTP 51200–51400 (this suite's range).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::caller_voice::{hear_16k, speech_16k};
use common::node::{api_key, demo_agent, poll, start_node};
use common::whip::{aiortc_call, webrtc_env, write_wav_16k};
use serde_json::Value;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

const QUESTION: &str = "What time do you open on Saturday?";

/// A fresh database with the demo, a VIEWER key of the demo workspace,
/// and a node whose ICE uses loopback ports from `ice_port_min`.
struct WebNode {
    db: TestDb,
    agent: Uuid,
    key: String,
    node: switchboard::serve::Services,
}

async fn web_node(ice_port_min: u16) -> WebNode {
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let (agent, workspace) = demo_agent(&db.pool).await;
    let key = api_key(&db.pool, workspace, "VIEWER").await;
    let env = webrtc_env(ice_port_min);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = start_node(&db.url, &db.pool, 51200, &env).await;
    WebNode {
        db,
        agent,
        key,
        node,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .flat_map(|x| match x {
                    Value::Array(inner) => inner
                        .iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect(),
                    Value::String(s) => vec![s.clone()],
                    _ => vec![],
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_peer_calls_through_whip_and_hears_the_right_answer() {
    common::node::init_logs();
    let WebNode {
        db,
        agent,
        key,
        node,
    } = web_node(51000).await;

    let dir = tempfile::tempdir().expect("tmp");
    let question = dir.path().join("question-16k.wav");
    let pcm = speech_16k(dir.path(), "question", QUESTION);
    write_wav_16k(&question, &pcm);
    let url = format!("http://{}/v1/agents/{agent}/whip", node.api_addr);
    let report = tokio::task::spawn_blocking({
        let (dir, url, key, q) = (
            dir.path().to_path_buf(),
            url.clone(),
            key.clone(),
            question.clone(),
        );
        move || aiortc_call(&dir, &url, &key, &[&q])
    })
    .await
    .expect("caller ran");

    // WHIP: 201, an SDP answer, a Location under the endpoint; DELETE ended it.
    assert_eq!(report["status"], 201, "{report:#}");
    assert_eq!(report["content_type"], "application/sdp");
    let location = report["location"].as_str().expect("Location");
    assert!(
        location.starts_with(&format!("/v1/agents/{agent}/whip/")),
        "{location}"
    );
    assert_eq!(report["delete_status"], 200, "{report:#}");
    assert_eq!(report["greeting_heard"], true, "{report:#}");

    // Loopback only: the answer's candidates, aiortc's, every pair checked
    // and every address a datagram went to or came from.
    let answer_candidates = strings(&report["answer_candidates"]);
    assert!(!answer_candidates.is_empty(), "no candidates in the answer");
    for (what, hosts) in [
        ("answer candidates", answer_candidates),
        ("local candidates", strings(&report["local_candidates"])),
        ("remote candidates", strings(&report["remote_candidates"])),
        ("ICE pairs", strings(&report["pairs"])),
        ("nominated pair", strings(&report["nominated"])),
        ("datagram peers", strings(&report["peers"])),
    ] {
        assert!(!hosts.is_empty(), "{what}: none");
        for h in &hosts {
            let ip: std::net::IpAddr = h.parse().unwrap_or_else(|_| panic!("{what}: {h}"));
            assert!(ip.is_loopback(), "{what}: {h} is not on 127.0.0.0/8");
        }
    }
    assert_eq!(report["all_loopback"], true);

    // What aiortc heard after its question, as whisper understands it.
    let turn = &report["turns"][0];
    let end_ms = turn["speech_end_ms"].as_f64().expect("speech end");
    let v2v = turn["voice_to_voice_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no answer audio: {report:#}"));
    assert!(v2v > 0.0 && v2v < 10_000.0, "voice-to-voice {v2v} ms");
    let (heard, rate) = common::read_wav(&dir.path().join("heard.wav"));
    assert_eq!(rate, 16000);
    // The recording starts when the first frame arrived (about when ICE
    // connected); the answer follows the question's end.
    let connected_ms = report["connected_ms"].as_f64().unwrap_or(0.0);
    let skip = (((end_ms - connected_ms).max(0.0) * 16.0) as usize).min(heard.len());
    let text = hear_16k(&heard[skip..]).await;
    assert!(
        text.contains("saturday"),
        "the answer did not come back; heard: {text:?} ({report:#})"
    );
    let plain = text.replace('.', "");
    assert!(
        ["9", "nine", "1 pm", "1pm", "one pm"]
            .iter()
            .any(|t| plain.contains(t)),
        "the Saturday hours are missing; heard: {text:?}"
    );

    // The records of a web call.
    // direction, status, hangup_by, session_id, codec
    type CallRow = (String, String, Option<String>, Option<Uuid>, Option<String>);
    let row: Option<CallRow> = poll(Duration::from_secs(10), || async {
        sqlx::query_as(
            "select direction, status, hangup_by, session_id, codec from call_logs \
                 where direction = 'web' and ended_at is not null",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("call_logs")
    })
    .await;
    let (direction, status, hangup_by, session, codec) = row.expect("a finished web call_logs row");
    assert_eq!(direction, "web");
    assert_eq!(status, "completed");
    assert_eq!(
        hangup_by.as_deref(),
        Some("caller"),
        "WHIP DELETE is the caller's"
    );
    assert_eq!(codec.as_deref(), Some("opus"));
    let session = session.expect("call_logs.session_id");
    let (channel, s_status): (String, String) = poll(Duration::from_secs(10), || async {
        sqlx::query_as(
            "select channel, status from agent_sessions where id = $1 and ended_at is not null",
        )
        .bind(session)
        .fetch_optional(&db.pool)
        .await
        .expect("session")
    })
    .await
    .expect("the session ended");
    assert_eq!(channel, "web");
    assert_eq!(s_status, "completed");
    let messages = common::node::session_messages(&db.pool, session).await;
    assert!(
        messages
            .iter()
            .any(|(role, content, _)| role == "user" && content.to_lowercase().contains("saturday")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(role, content, _)| role == "assistant" && content.contains("Saturday")),
        "{messages:?}"
    );
    let usage: i64 = poll(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from usage_logs where session_id = $1")
            .bind(session)
            .fetch_one(&db.pool)
            .await
            .expect("usage");
        (n > 0).then_some(n)
    })
    .await
    .expect("usage rows");
    assert!(usage >= 5, "{usage} usage rows");
    let latency: Option<Value> =
        sqlx::query_scalar("select latency from call_logs where direction = 'web'")
            .fetch_one(&db.pool)
            .await
            .expect("latency");
    let turns = latency
        .as_ref()
        .and_then(|l| l["turns"].as_array().cloned());
    assert!(
        turns.is_some_and(|t| !t.is_empty()),
        "per-turn latency recorded: {latency:?}"
    );
    node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_refuses_bad_credentials_unknown_or_draft_agents_the_plan_limit_and_bad_sdp() {
    let WebNode {
        db,
        agent,
        key,
        node,
    } = web_node(51100).await;
    let http = reqwest::Client::new();
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
    let post = |agent: Uuid, token: Option<&str>, ctype: &str, body: &str| {
        let mut r = http
            .post(format!("http://{}/v1/agents/{agent}/whip", node.api_addr))
            .header("content-type", ctype)
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.expect("POST");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            (status, body)
        }
    };
    let sdp = "application/sdp";
    let code = |body: &str| -> String {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    };

    // Credentials: none, a wrong key, a forged JWT.
    let (s, b) = post(agent, None, sdp, offer).await;
    assert_eq!((s, code(&b).as_str()), (401, "unauthorized"), "{b}");
    let (s, b) = post(
        agent,
        Some("sk_live_not_a_key_at_all_0000000000"),
        sdp,
        offer,
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (401, "unauthorized"), "{b}");
    let (s, _) = post(agent, Some("eyJhbGciOiJIUzI1NiJ9.e30.forged"), sdp, offer).await;
    assert_eq!(s, 401);
    // An unknown agent: 404 with a good key, 401 (not 404) without one.
    let (s, b) = post(Uuid::new_v4(), Some(&key), sdp, offer).await;
    assert_eq!((s, code(&b).as_str()), (404, "not_found"), "{b}");
    let (s, _) = post(Uuid::new_v4(), Some("sk_wrong"), sdp, offer).await;
    assert_eq!(s, 401);
    // Another workspace's key does not reach this agent.
    let other: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug) values ('Other', 'other-whip') returning id",
    )
    .fetch_one(&db.pool)
    .await
    .expect("workspace");
    let other_key = api_key(&db.pool, other, "OWNER").await;
    let (s, _) = post(agent, Some(&other_key), sdp, offer).await;
    assert_eq!(s, 404, "another workspace's agent does not exist for it");
    // Not SDP, and SDP that is not an offer we can answer.
    let (s, _) = post(agent, Some(&key), "application/json", "{}").await;
    assert_eq!(s, 415);
    for bad in [
        "hello",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n",
        // Audio, but no ICE credentials or fingerprint: not a WebRTC offer.
        offer,
    ] {
        let (s, b) = post(agent, Some(&key), sdp, bad).await;
        assert_eq!((s, code(&b).as_str()), (400, "bad_request"), "{bad:?}: {b}");
    }
    let pcma = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 8\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:8 PCMA/8000\r\n";
    let (s, b) = post(agent, Some(&key), sdp, pcma).await;
    assert_eq!((s, code(&b).as_str()), (406, "no_common_codec"), "{b}");
    // Over the plan.
    sqlx::query("update pricing_plans set conversation_limit = 0 where is_default")
        .execute(&db.pool)
        .await
        .expect("plan");
    let (s, b) = post(agent, Some(&key), sdp, offer).await;
    assert_eq!((s, code(&b).as_str()), (402, "usage_limit_reached"), "{b}");
    sqlx::query("update pricing_plans set conversation_limit = null where is_default")
        .execute(&db.pool)
        .await
        .expect("plan");
    // A draft agent.
    sqlx::query("update agents set status = 'draft' where id = $1")
        .bind(agent)
        .execute(&db.pool)
        .await
        .expect("draft");
    let (s, b) = post(agent, Some(&key), sdp, offer).await;
    assert_eq!((s, code(&b).as_str()), (422, "unprocessable"), "{b}");
    assert!(b.contains("draft"), "{b}");
    // DELETE of a session that does not exist.
    let r = http
        .delete(format!(
            "http://{}/v1/agents/{agent}/whip/{}",
            node.api_addr,
            Uuid::new_v4()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 404);
    // Nothing was written for any refusal.
    let web_calls: i64 =
        sqlx::query_scalar("select count(*) from call_logs where direction = 'web'")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(web_calls, 0);
    node.stop(Duration::from_secs(5)).await;
}

/// The benchmark: voice-to-voice at the aiortc peer (end of speech in the
/// audio it sent → first answer audio it received), over sixteen questions
/// in one call, each after the previous answer ended (at least ten must be
/// answered). Writes
/// `bench/results/webrtc_latency.json`. Run:
/// `cargo test --release --test suite -- --ignored webrtc_whip::voice_to_voice --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it on purpose"]
async fn voice_to_voice_at_the_aiortc_peer() {
    const QUESTIONS: [&str; 16] = [
        "What are your opening hours?",
        "Where are you located?",
        "Can I get there by bus?",
        "How much does a check-up and cleaning cost?",
        "How much does teeth whitening cost?",
        "Which dental insurance do you take?",
        "What is your cancellation policy?",
        "Can I pay by card?",
        "How do I book an appointment?",
        "Do you treat children?",
        "What should I do in a dental emergency?",
        "Where are you located?",
        "What time do you open on Saturday?",
        "How much is a cleaning?",
        "Can I cancel my appointment?",
        "What payment methods do you accept?",
    ];
    common::node::init_logs();
    let WebNode {
        db,
        agent,
        key,
        node,
    } = web_node(51000).await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut files = Vec::new();
    for (i, q) in QUESTIONS.iter().enumerate() {
        let path = dir.path().join(format!("q{i}-16k.wav"));
        write_wav_16k(&path, &speech_16k(dir.path(), &format!("q{i}"), q));
        files.push(path);
    }
    let url = format!("http://{}/v1/agents/{agent}/whip", node.api_addr);
    let report = tokio::task::spawn_blocking({
        let (dir, url, key, files) = (dir.path().to_path_buf(), url, key, files.clone());
        move || {
            let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
            aiortc_call(&dir, &url, &key, &refs)
        }
    })
    .await
    .expect("caller ran");
    assert_eq!(report["all_loopback"], true, "{report:#}");
    // A turn whose transcription failed (whisper past its time limit on a
    // loaded machine) gets no answer: what the caller hears next is the
    // reprompt, 8 s of silence later. Such turns are counted, not timed.
    let heard: Vec<f64> = report["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .filter_map(|t| t["voice_to_voice_ms"].as_f64())
        .collect();
    let unanswered =
        heard.iter().filter(|&&v| v >= 7000.0).count() + (QUESTIONS.len() - heard.len());
    let mut v2v: Vec<f64> = heard.into_iter().filter(|&v| v < 7000.0).collect();
    assert!(!v2v.is_empty(), "no turn answered: {report:#}");
    v2v.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let (p50, p95) = (pct(&v2v, 0.5), pct(&v2v, 0.95));
    // The node's own split of the same turns (call_logs.latency): inside
    // voice-to-voice and its speech-to-text part.
    let latency: Option<Value> = poll(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Option<Value>>(
            "select latency from call_logs where direction = 'web' and latency is not null",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("latency")
        .flatten()
    })
    .await;
    let inside = |key: &str| -> Vec<f64> {
        let mut v: Vec<f64> = latency
            .as_ref()
            .and_then(|l| l["turns"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t[key].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (inside_v2v, inside_stt) = (inside("voice_to_voice_ms"), inside("stt_ms"));
    let split = |v: &[f64]| {
        if v.is_empty() {
            serde_json::json!(null)
        } else {
            serde_json::json!({"p50_ms": pct(v, 0.5), "p95_ms": pct(v, 0.95)})
        }
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let result = serde_json::json!({
        "benchmark": "voice-to-voice at the WebRTC peer (aiortc over WHIP, Opus, loopback)",
        "measured": "end of speech in the audio aiortc sent -> first answer audio aiortc received",
        "turns": v2v.len(),
        "unanswered_turns": unanswered,
        "p50_ms": p50.round(),
        "p95_ms": p95.round(),
        "sorted_ms": v2v.iter().map(|v| v.round()).collect::<Vec<_>>(),
        "inside_voice_to_voice": split(&inside_v2v),
        "inside_stt": split(&inside_stt),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "loadavg": load.trim(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("{result:#}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/webrtc_latency.json");
    std::fs::write(&out, format!("{result:#}\n")).expect("write the result");
    node.stop(Duration::from_secs(5)).await;
    assert!(
        v2v.len() >= 10,
        "answered turns: {} of {} (written anyway)",
        v2v.len(),
        QUESTIONS.len()
    );
}
