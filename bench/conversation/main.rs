//! Conversation benchmark: what callers experience. A SIP caller outside the
//! node's process (this program; the node is `switchboard serve`) calls each
//! benchmark agent once per question, speaking it in a Piper voice, and
//! listens with its own recognizer (whisper base). Printed per knowledge
//! base and overall: heard WER, answer accuracy, intelligibility WER, and
//! voice-to-voice latency at the caller beside the node's inside figures.
//!
//! Run: `bench/conversation/run.sh` (builds release, starts PostgreSQL).
//! `CONVERSATION_MAX_QUESTIONS=N` asks only the first N of each base.
//!
//! Conversations per node: `bench/conversation/run.sh -- --concurrency 1,10,20`
//! (`--rounds R`, default 4) runs, for each level N, R rounds of N callers
//! dialling at the same moment, each asking one question (the benchmark's
//! questions in turn), and prints per level the calls refused (503 with
//! Retry-After when the node's admission control is full), the questions
//! left without an answer, the accuracy and the latency at the caller.
//! The callers' own recognizer runs after each round, not beside the
//! calls. Writes `bench/results/conversation_concurrency.json`.

#[path = "../../tests/common/mod.rs"]
mod common;
mod node;
mod score;

use std::time::{Duration, Instant};

use common::caller_voice;
use common::sip_caller::{Refused, SipCaller, ONSET_RMS};
use score::Turn;

/// How long the caller listens for the end of an answer (its last word
/// followed by 1.5 s of silence) after its own last word.
const ANSWER_PATIENCE: Duration = Duration::from_secs(60);

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
    // More calls than the default plan's 100 conversations a month (it
    // answers 480 after them): the workspace goes on the plan without
    // usage limits, as an operator would put a busy customer.
    for sql in [
        "insert into workspace_subscriptions (workspace_id, plan_id)
         select w.id, p.id from workspaces w, pricing_plans p
         where w.name = 'Conversation bench' and p.name = 'Enterprise'
           and not exists (select 1 from workspace_subscriptions s where s.workspace_id = w.id
                           and s.status in ('trialing', 'active', 'past_due'))",
        "update workspace_subscriptions s set plan_id = p.id from workspaces w, pricing_plans p
         where w.name = 'Conversation bench' and p.name = 'Enterprise' and s.workspace_id = w.id
           and s.status in ('trialing', 'active', 'past_due')",
    ] {
        sqlx::query(sql)
            .execute(&db)
            .await
            .expect("the bench workspace's plan");
    }
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

    let levels = levels();
    if !levels.is_empty() {
        let rounds = arg_value("--rounds").unwrap_or(4);
        let questions: Vec<(&node::KnowledgeBase, &node::Question)> = kbs
            .iter()
            .flat_map(|kb| kb.questions.iter().take(limit).map(move |q| (kb, q)))
            .collect();
        let mut out = Vec::new();
        for n in levels {
            let level = concurrent(&node, &db, dir.path(), &questions, n, rounds).await;
            eprintln!("{}", score::level_line(&level));
            out.push(level);
        }
        db.close().await;
        let database = node.database_url.clone();
        drop(node);
        node::drop_database(&database).await;
        let report = score::concurrency_report(out);
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(
            results.join("conversation_concurrency.json"),
            format!("{text}\n"),
        )
        .expect("write json");
        println!("{text}\n(bench/results/conversation_concurrency.json)");
        return;
    }

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

/// The value after `flag` on the command line.
fn arg_value<T: std::str::FromStr>(flag: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.parse().ok()
}

/// `--concurrency 1,10,20`: the levels to run (none: the sequential run).
fn levels() -> Vec<usize> {
    arg_value::<String>("--concurrency")
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|n| *n > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// `rounds` rounds of `n` callers at once, each asking the next question.
async fn concurrent(
    node: &node::NodeProcess,
    db: &sqlx::PgPool,
    dir: &std::path::Path,
    questions: &[(&node::KnowledgeBase, &node::Question)],
    n: usize,
    rounds: usize,
) -> score::Level {
    let mut level = score::Level::new(n, rounds);
    for round in 0..rounds {
        let calls = (0..n).map(|i| {
            let (kb, q) = questions[(round * n + i) % questions.len()];
            let name = format!("c{n}-r{round}-{i}");
            async move { (kb, q, call(node, dir, &name, kb, q).await) }
        });
        // All dial together; the recognizer on the callers' side runs
        // after the round, so it does not compete with the calls.
        for (kb, q, outcome) in futures::future::join_all(calls).await {
            match outcome {
                Ok(c) => level.turns.push(finish(db, kb, q, c).await),
                Err(r) => level.refused.push(r),
            }
        }
    }
    level
}

/// One call, one question, judged at once.
async fn ask(
    node: &node::NodeProcess,
    db: &sqlx::PgPool,
    dir: &std::path::Path,
    name: &str,
    kb: &node::KnowledgeBase,
    q: &node::Question,
) -> Turn {
    match call(node, dir, name, kb, q).await {
        Ok(c) => finish(db, kb, q, c).await,
        Err(r) => panic!("{name}: call refused with {}:\n{}", r.code, r.message),
    }
}

/// What one call left to judge: the answer as the caller recorded it.
struct Called {
    call_id: String,
    heard_wav: Option<std::path::PathBuf>,
    caller_v2v_ms: Option<f64>,
}

/// The recognizer on the caller's side, the node's records, the verdict.
async fn finish(
    db: &sqlx::PgPool,
    kb: &node::KnowledgeBase,
    q: &node::Question,
    c: Called,
) -> Turn {
    let heard_by_caller = match &c.heard_wav {
        Some(path) => {
            let pcm = common::wav_16k(path);
            match caller_voice::try_hear_16k(&pcm).await {
                Ok(text) => text,
                Err(e) => {
                    eprintln!(
                        "{}: the caller's recognizer failed ({e}); once more",
                        c.call_id
                    );
                    caller_voice::try_hear_16k(&pcm).await.unwrap_or_default()
                }
            }
        }
        None => String::new(),
    };
    let records = score::records(db, &c.call_id).await;
    score::judge(kb, q, records, heard_by_caller, c.caller_v2v_ms)
}

/// One call, one question: dial, wait out the greeting, say the question,
/// listen to the answer, keep it, hang up.
async fn call(
    node: &node::NodeProcess,
    dir: &std::path::Path,
    name: &str,
    kb: &node::KnowledgeBase,
    q: &node::Question,
) -> Result<Called, Refused> {
    let wav = caller_voice::speech_wav(dir, name, &q.said, 0, 0);
    let (pcm, _) = common::read_wav(&wav);
    let caller = SipCaller::try_dial(node.sip, &kb.number).await?;
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
    // The caller listens to the whole answer: the longest FAQ answers run
    // near 20 s, and an answer cut off by the caller's own patience would
    // count as unheard.
    let answer = match speech_end {
        Some(end) => {
            caller
                .wait_agent_speech(end, Duration::from_millis(1500), ANSWER_PATIENCE)
                .await
        }
        None => None,
    };
    if speech_end.is_some() && answer.is_none() {
        eprintln!("{name}: no complete answer within {ANSWER_PATIENCE:?}");
    }
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
    let heard_wav = answer.map(|(from, to)| {
        let path = dir.join(format!("{name}-heard.wav"));
        caller.write_received(
            &path,
            from - Duration::from_millis(200),
            to + Duration::from_millis(300),
        );
        path
    });
    let call_id = caller.call_id().to_string();
    drop(caller);
    Ok(Called {
        call_id,
        heard_wav,
        caller_v2v_ms,
    })
}
