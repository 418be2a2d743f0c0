//! Conversation benchmark: what callers experience. A SIP caller outside the
//! node's process (this program; the node is `switchboard serve`) calls each
//! benchmark agent once per question, speaking it in a Piper voice, and
//! listens with its own recognizer (whisper base). Printed per knowledge
//! base and overall: heard WER, answer accuracy, intelligibility WER, and
//! voice-to-voice latency at the caller beside the node's inside figures.
//!
//! Run: `bench/conversation/run.sh` (builds release, starts PostgreSQL).
//! `CONVERSATION_MAX_QUESTIONS=N` asks only the first N of each base.

#[path = "../../tests/common/mod.rs"]
mod common;
mod node;
mod score;

use std::time::{Duration, Instant};

use common::caller_voice;
use common::sip_caller::{SipCaller, ONSET_RMS};
use score::Turn;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let kbs = node::load_kbs(&root.join("bench/conversation"));
    let limit: usize = std::env::var("CONVERSATION_MAX_QUESTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    // The caller's voice and ears are ready before the node starts, so the
    // first call is not slowed by loading them.
    for kb in &kbs {
        for q in kb.questions.iter().take(limit) {
            caller_voice::piper_wav(&q.said);
        }
    }
    caller_voice::ears();

    let results = root.join("bench/results");
    std::fs::create_dir_all(&results).expect("bench/results");
    let node_log = std::env::temp_dir().join("switchboard-conversation-node.log");
    eprintln!("node log: {}", node_log.display());
    let node = node::start(&node_log).await;
    let admin = node::Admin::sign_up(&node.api).await;
    admin.set_up(&kbs).await;
    let db = sqlx::PgPool::connect(&node.database_url)
        .await
        .expect("bench database");
    let dir = tempfile::tempdir().expect("tmp");

    // One call before the measured ones: the node's first transcription
    // loads whisper's buffers, and the first caller after a start waits
    // for that (long enough for the turn's STT to time out on this machine).
    let warm_up = node::Question {
        said: "Hello, I have a question.".into(),
        expected: "fallback".into(),
    };
    let w = ask(&node, &db, dir.path(), "warm-up", &kbs[0], &warm_up).await;
    eprintln!(
        "warm-up call (not counted): heard {:?}, inside {}",
        w.heard_by_agent, w.records.latency_turn
    );

    let mut turns: Vec<Turn> = Vec::new();
    for kb in &kbs {
        for (i, q) in kb.questions.iter().take(limit).enumerate() {
            let name = format!("{}-{i}", kb.number.trim_start_matches('+'));
            let turn = ask(&node, &db, dir.path(), &name, kb, q).await;
            eprintln!(
                "{:<26} {:<52} {:<14} {:>6} ms  heard {:?}",
                kb.name,
                q.said,
                format!("{:?}", turn.outcome),
                turn.caller_v2v_ms.map_or("-".into(), |v| format!("{v:.0}")),
                turn.heard_by_agent
            );
            turns.push(turn);
        }
    }
    db.close().await;
    let database = node.database_url.clone();
    drop(node);
    node::drop_database(&database).await;
    let report = score::report(&kbs, &turns);
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(results.join("conversation.json"), format!("{text}\n")).expect("write json");
    println!("{}", score::table(&report));
    println!("(bench/results/conversation.json)");
}

/// One call, one question: dial, wait out the greeting, say the question,
/// listen to the answer, hang up; then read what the node recorded.
async fn ask(
    node: &node::NodeProcess,
    db: &sqlx::PgPool,
    dir: &std::path::Path,
    name: &str,
    kb: &node::KnowledgeBase,
    q: &node::Question,
) -> Turn {
    let wav = caller_voice::speech_wav(dir, name, &q.said, 0, 0);
    let (pcm, _) = common::read_wav(&wav);
    let caller = SipCaller::dial(node.sip, &kb.number).await;
    // The greeting has ended at a pause longer than its comma pauses.
    let greeting = caller
        .wait_agent_speech(
            caller.answered_at,
            Duration::from_millis(1500),
            Duration::from_secs(20),
        )
        .await;
    if greeting.is_none() {
        eprintln!("{name}: no greeting heard within 20 s");
    }
    let start = Instant::now();
    let sent_by = caller.say_and_wait(&pcm).await;
    // End of speech in the caller's own sent audio: the end of its last
    // frame above −50 dBFS.
    let speech_end = {
        let m = caller.media.lock().expect("media log");
        m.sent_voice
            .iter()
            .filter(|(at, r)| *at >= start && *at <= sent_by && *r > ONSET_RMS)
            .map(|(at, _)| *at + Duration::from_millis(20))
            .next_back()
    };
    let answer = match speech_end {
        Some(end) => {
            caller
                .wait_agent_speech(end, Duration::from_millis(1500), Duration::from_secs(20))
                .await
        }
        None => None,
    };
    let _ = caller.hangup().await;
    let first_agent_audio = speech_end.and_then(|end| {
        let m = caller.media.lock().expect("media log");
        m.received
            .iter()
            .find(|p| p.at >= end && p.rms > ONSET_RMS)
            .map(|p| p.at)
    });
    let caller_v2v_ms = match (speech_end, first_agent_audio) {
        (Some(end), Some(first)) => Some(first.duration_since(end).as_secs_f64() * 1000.0),
        _ => None,
    };
    let heard_by_caller = match answer {
        Some((from, to)) => {
            let path = dir.join(format!("{name}-heard.wav"));
            caller.write_received(
                &path,
                from - Duration::from_millis(200),
                to + Duration::from_millis(300),
            );
            let pcm = common::wav_16k(&path);
            match caller_voice::try_hear_16k(&pcm).await {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("{name}: the caller's recognizer failed ({e}); once more");
                    caller_voice::try_hear_16k(&pcm).await.unwrap_or_default()
                }
            }
        }
        None => String::new(),
    };
    let call_id = caller.call_id().to_string();
    drop(caller);
    let records = score::records(db, &call_id).await;
    score::judge(kb, q, records, heard_by_caller, caller_v2v_ms)
}
