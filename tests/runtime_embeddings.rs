//! Hybrid retrieval on live calls: with an OpenAI-compatible embedder
//! configured (`[embeddings] provider = "openai"`, a mock `/v1/embeddings`
//! started in the test), the knowledge is embedded through it, each caller
//! question is embedded through it during the call and fused with
//! full-text; a slow embedder is skipped after its budget so the answer is
//! not delayed, and the turn says it ran on full-text only.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mock_openai::{ChatMode, MockServer, API_KEY};
use common::node::{demo_agent, node_config, poll, speech_8k, transcribe_wav};
use common::sip_caller::SipCaller;
use switchboard::agent_runtime::embeddings::{
    embed_missing_chunks, embed_query, Embedder, OpenAiEmbeddings,
};
use switchboard::db::testing::TestDb;

const BUDGET_MS: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_embedding_is_bounded_by_its_budget() {
    let mock = MockServer::start(ChatMode::Fail).await;
    let embedder = OpenAiEmbeddings::new(&mock.base_url(), API_KEY, "mock-embed", 256);
    let budget = Duration::from_millis(BUDGET_MS);
    let q = "What time do you open on Saturday?";

    let v = embed_query(&embedder, q, budget).await;
    assert_eq!(
        v,
        Some(common::mock_openai::mock_vector(q)),
        "the service's vector"
    );

    mock.set_embedding_delay(Duration::from_secs(3));
    let t0 = Instant::now();
    assert_eq!(embed_query(&embedder, q, budget).await, None);
    let waited = t0.elapsed();
    assert!(
        waited >= budget && waited < budget + Duration::from_millis(200),
        "a slow embedder cost {waited:?} (budget {budget:?})"
    );

    let wrong_key = OpenAiEmbeddings::new(&mock.base_url(), "sk-wrong", "mock-embed", 256);
    mock.set_embedding_delay(Duration::ZERO);
    assert_eq!(embed_query(&wrong_key, q, budget).await, None);
    assert_eq!(mock.unauthorized(), 1);
}

/// The turns of the call's `call_logs.latency`, once the call has ended.
async fn turns(db: &TestDb, expected: usize) -> Vec<serde_json::Value> {
    poll(Duration::from_secs(15), || async {
        let latency: Option<serde_json::Value> = sqlx::query_scalar(
            "select latency from call_logs where ended_at is not null and latency ? 'turns'",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("call_logs");
        let turns = latency?["turns"].as_array()?.clone();
        (turns.len() >= expected).then_some(turns)
    })
    .await
    .unwrap_or_else(|| panic!("{expected} turns in call_logs.latency"))
}

/// Asks `question`, returns what whisper heard of the answer.
async fn ask_and_hear(
    caller: &SipCaller,
    question: &[i16],
    dir: &std::path::Path,
    name: &str,
) -> String {
    let asked = caller.say_and_wait(question).await;
    let (start, end) = caller
        .wait_agent_speech(asked, Duration::from_millis(1200), Duration::from_secs(25))
        .await
        .unwrap_or_else(|| panic!("no answer to {name}"));
    let wav = dir.join(format!("{name}.wav"));
    caller.write_received(
        &wav,
        start - Duration::from_millis(100),
        end + Duration::from_millis(100),
    );
    transcribe_wav(&wav).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_questions_are_embedded_and_a_slow_embedder_is_skipped() {
    common::node::init_logs();
    let mock = MockServer::start(ChatMode::Fail).await;
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let budget = BUDGET_MS.to_string();
    let base_url = mock.base_url();
    let config = node_config(
        &db.url,
        40400,
        &[
            ("SWITCHBOARD_EMBEDDINGS__PROVIDER", "openai"),
            ("SWITCHBOARD_EMBEDDINGS__BASE_URL", &base_url),
            ("SWITCHBOARD_EMBEDDINGS__API_KEY", API_KEY),
            ("SWITCHBOARD_EMBEDDINGS__MODEL", "mock-embed"),
            ("SWITCHBOARD_EMBEDDINGS__DIMS", "256"),
            ("SWITCHBOARD_EMBEDDINGS__QUERY_BUDGET_MS", &budget),
        ],
    );
    let node = switchboard::serve::start(Arc::new(config), db.pool.clone())
        .await
        .expect("node starts");
    common::node::warmed_up(&node).await;
    let embedder: Arc<dyn Embedder> = node.runtime.providers.embedder.clone();
    assert_eq!(embedder.name(), "mock-embed", "the configured embedder");
    let (_, ws) = demo_agent(&db.pool).await;
    // The node re-embeds at start-up what the configured model did not
    // embed; this does the same, whichever comes first.
    embed_missing_chunks(&db.pool, embedder.as_ref(), ws, 1000)
        .await
        .expect("knowledge embedded through the service");
    let left = poll(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from knowledge_chunks where embedding_model is distinct from 'mock-embed'",
        )
        .fetch_one(&db.pool)
        .await
        .ok()?;
        (n == 0).then_some(n)
    })
    .await;
    assert_eq!(left, Some(0), "every chunk embedded by the service");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_call = mock.embedding_inputs().len();

    let dir = tempfile::tempdir().expect("tmp");
    let hours = speech_8k(dir.path(), "hours", "What time do you open on Saturday?");
    let parking = speech_8k(dir.path(), "parking", "Is there somewhere I can park?");
    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;

    // Turn 1: the embedder answers at once; the question goes through it.
    let heard = ask_and_hear(&caller, &hours, dir.path(), "hours").await;
    assert!(
        heard.contains("saturday") && heard.contains("close"),
        "Saturday hours expected; heard {heard:?}"
    );
    let during_call: Vec<Vec<String>> = mock.embedding_inputs()[before_call..]
        .iter()
        .map(|(_, inputs)| inputs.clone())
        .collect();
    assert!(
        during_call.len() == 1
            && during_call[0].len() == 1
            && during_call[0][0].to_lowercase().contains("saturday"),
        "the caller's transcript was embedded once: {during_call:?}"
    );

    // Turn 2: the embedder now takes 3 s; the answer does not wait for it.
    mock.set_embedding_delay(Duration::from_secs(3));
    let heard = ask_and_hear(&caller, &parking, dir.path(), "parking").await;
    assert!(
        heard.contains("parking"),
        "the parking answer expected from full-text alone; heard {heard:?}"
    );
    assert_eq!(
        mock.embedding_inputs().len() - before_call,
        2,
        "turn 2 asked the embedder"
    );
    assert!(caller.hangup().await, "BYE answered");

    let turns = turns(&db, 2).await;
    println!("turns: {turns:?}");
    assert_eq!(turns[0]["query_embedded"], serde_json::json!(true));
    assert_eq!(turns[1]["query_embedded"], serde_json::json!(false));
    let slow_retrieval = turns[1]["retrieval_ms"].as_u64().expect("retrieval_ms");
    assert!(
        (BUDGET_MS..BUDGET_MS + 450).contains(&slow_retrieval),
        "retrieval with a 3 s embedder took {slow_retrieval} ms (budget {BUDGET_MS} ms)"
    );
    node.stop(Duration::from_secs(1)).await;
}
