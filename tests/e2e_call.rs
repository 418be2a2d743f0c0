//! End to end with a real peer: baresip dials the demo number, asks a
//! question out loud (espeak-ng), and whisper must hear the right answer from
//! the knowledge base in what comes back over RTP. Then the records are
//! checked in PostgreSQL.

mod common;

use std::time::Duration;

use switchboard::config::Config;
use switchboard::db::testing::TestDb;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hears_the_answer_from_the_knowledge_base() {
    let db = TestDb::new().await;
    switchboard::db::seed::seed_demo(&db.pool)
        .await
        .expect("seed");
    let node = common::node::start_node(&db.url, &db.pool, 36000, &[]).await;
    let sip_port = node.sip.local_addr().port();

    let dir = tempfile::tempdir().expect("tmp");
    // Silence while the greeting plays, the question, then time to listen.
    let question = common::speech_wav(
        dir.path(),
        "question",
        "What time do you open on Saturday?",
        7000,
        9000,
    );
    let question_path = question.clone();
    let caller_port = common::node::free_port();
    let uri = format!("sip:+15555550100@127.0.0.1:{sip_port}");
    let call = tokio::task::spawn_blocking({
        let dir = dir.path().join("baresip");
        move || common::BaresipCall::dial(&dir, caller_port, &uri, &question, 24)
    })
    .await
    .expect("baresip ran");
    let log = call.log();
    assert!(
        log.contains("Call established"),
        "the call was not answered:\n{log}"
    );

    // What the caller heard after asking, as whisper understands it. The
    // greeting is cut off so whisper spends its attention on the answer.
    let (question_pcm, question_rate) = common::read_wav(&question_path);
    let question_end_ms =
        (question_pcm.len() as u64 * 1000 / question_rate as u64).saturating_sub(9000);
    let heard = common::wav_16k(&call.received_wav());
    let skip = ((question_end_ms * 16) as usize).min(heard.len());
    let stt = switchboard::agent_runtime::stt::WhisperStt::from_config(
        &Config::load_from(None, &[]).expect("cfg").stt,
    )
    .expect("whisper model");
    let text =
        switchboard::agent_runtime::stt::SpeechToText::transcribe(&stt, &heard[skip..], None)
            .await
            .expect("transcribe")
            .text
            .to_lowercase();
    // The seeded answer: "On Saturday we open at 9 am and close at 1 pm."
    // Whisper writes the times as digits or words; either time will do.
    let answer: String = sqlx::query_scalar("select content from knowledge_chunks where content ilike '%saturday%' order by chunk_index limit 1")
        .fetch_one(&db.pool)
        .await
        .expect("saturday chunk");
    assert!(
        answer.contains("9 am") && answer.contains("1 pm"),
        "seed changed: {answer}"
    );
    assert!(
        text.contains("saturday"),
        "the answer did not come back; heard: {text:?}"
    );
    let plain = text.replace('.', "");
    let has_time = ["9", "nine", "1 pm", "1pm", "one pm"]
        .iter()
        .any(|t| plain.contains(t));
    assert!(has_time, "the Saturday hours are missing; heard: {text:?}");

    // Records: the call, the session, the conversation, the usage.
    let (status, duration_ms, session_id, latency): (String, Option<i64>, Option<Uuid>, Option<serde_json::Value>) = wait_for(|| async {
        sqlx::query_as(
            "select status, duration_ms, session_id, latency from call_logs where to_number = '+15555550100' and latency is not null",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("call_logs")
    })
    .await;
    assert_eq!(status, "completed");
    assert!(
        duration_ms.unwrap_or(0) > 10_000,
        "duration {duration_ms:?}"
    );
    let session_id = session_id.expect("call linked to its session");
    let turns = latency.expect("latency")["turns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!turns.is_empty(), "per-turn latency recorded");
    let v2v = turns[0]["voice_to_voice_ms"]
        .as_u64()
        .expect("voice_to_voice_ms");
    assert!(v2v > 0 && v2v < 10_000, "voice-to-voice {v2v} ms");

    let (session_status, caller): (String, Option<String>) =
        sqlx::query_as("select status, caller from agent_sessions where id = $1")
            .bind(session_id)
            .fetch_one(&db.pool)
            .await
            .expect("session");
    assert_eq!(session_status, "completed");
    assert!(caller.is_some());
    let messages: Vec<(String, String, Option<i32>)> = sqlx::query_as(
        "select role, content, stt_ms from messages where session_id = $1 order by created_at",
    )
    .bind(session_id)
    .fetch_all(&db.pool)
    .await
    .expect("messages");
    assert!(
        messages.len() >= 3,
        "greeting, question, answer: {messages:?}"
    );
    let user = messages
        .iter()
        .find(|m| m.0 == "user")
        .expect("the caller's turn");
    assert!(
        user.1.to_lowercase().contains("saturday"),
        "transcript {:?}",
        user.1
    );
    assert!(user.2.unwrap_or(0) > 0, "stt_ms recorded");
    let answer_msg = messages
        .iter()
        .filter(|m| m.0 == "assistant")
        .last()
        .expect("an answer");
    assert!(
        answer_msg.1.to_lowercase().contains("saturday"),
        "answer {:?}",
        answer_msg.1
    );

    let usage: Vec<(String, f64)> =
        sqlx::query_as("select kind, quantity::float8 from usage_logs where session_id = $1")
            .bind(session_id)
            .fetch_all(&db.pool)
            .await
            .expect("usage");
    let quantity = |k: &str| usage.iter().find(|u| u.0 == k).map(|u| u.1).unwrap_or(-1.0);
    assert!(quantity("call_seconds") >= 10.0, "{usage:?}");
    assert!(quantity("stt_seconds") > 1.0, "{usage:?}");
    assert!(quantity("tts_characters") > 50.0, "{usage:?}");
    let conversations: i32 =
        sqlx::query_scalar("select conversations from workspace_usage limit 1")
            .fetch_one(&db.pool)
            .await
            .expect("workspace_usage");
    assert_eq!(conversations, 1);
    node.stop(Duration::from_secs(1)).await;
}

/// Polls `f` until it returns a row, for up to 10 s.
async fn wait_for<T, F, Fut>(f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the records did not arrive within 10 s");
}
