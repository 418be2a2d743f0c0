//! A database outage during a call and during call set-up: the node runs
//! on a throw-away cluster; after call A's greeting the cluster is stopped
//! for 60 s, during which A's caller (a Piper voice) asks several questions,
//! each answered from the agent's in-memory index within 1 s of the end of
//! the question; then call B dials (routing and the agent as last known),
//! asks one question and hangs up. The cluster comes back, A hangs up, and
//! every record of both calls is there exactly once: call_logs, sessions,
//! each question and answer, usage, the month's conversation count.
//!
//! A node stopped (the SIGTERM path) while the database is down puts what it
//! could not write into its spill file; a new node on the same folder, once
//! the database is back, replays it.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::{node_config, poll};
use common::pgcluster::TempCluster;
use common::sip_caller::SipCaller;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use switchboard::db::seed::DEMO_FAQ;
use uuid::Uuid;

/// How long PostgreSQL is down.
const OUTAGE: Duration = Duration::from_secs(60);
/// Longest silence allowed between the end of a question and the answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// `text` in the caller's Piper voice, as 8 kHz samples.
fn piper_8k(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let (pcm, rate) = common::read_wav(&common::caller_voice::speech_wav(dir, name, text, 0, 0));
    assert_eq!(rate, 8000);
    pcm
}

fn faq_answer(prefix: &str) -> &'static str {
    DEMO_FAQ
        .iter()
        .map(|(_, a)| *a)
        .find(|a| a.starts_with(prefix))
        .expect("FAQ entry")
}

/// A private cluster with the schema and the demo seed.
async fn seeded_cluster() -> (TempCluster, String, PgPool) {
    let cluster = TempCluster::start();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.admin_url())
        .await
        .expect("admin");
    sqlx::query("create database sb")
        .execute(&admin)
        .await
        .expect("create db");
    admin.close().await;
    let url = cluster.url("sb");
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .expect("pool");
    switchboard::db::migrate(&pool).await.expect("migrate");
    switchboard::db::seed::seed_demo(&pool).await.expect("seed");
    (cluster, url, pool)
}

/// Files of the spill folder and their lines.
fn spilled(dir: &Path) -> (usize, usize) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .expect("spool dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("records-"))
        .collect();
    let lines = files
        .iter()
        .map(|e| {
            std::fs::read_to_string(e.path())
                .expect("segment")
                .lines()
                .count()
        })
        .sum();
    (files.len(), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_call_and_at_call_set_up_loses_no_record() {
    common::node::init_logs();
    let (cluster, url, pool) = seeded_cluster().await;
    // The callers stay silent for long stretches while the database is down:
    // no reprompt or silence hang-up in the way of the records counted.
    sqlx::query("update agents set silence_timeout_ms = 300000")
        .execute(&pool)
        .await
        .expect("silence timeout");
    let spool = tempfile::tempdir().expect("spool dir");
    let spool_dir = spool.path().display().to_string();
    // This test judges time and runs alone (`.config/nextest.toml`): the
    // node hears on both cores, as a node does by default.
    let config = node_config(
        &url,
        45600,
        &[
            ("SWITCHBOARD_RECORDS__SPOOL_DIR", spool_dir.as_str()),
            ("SWITCHBOARD_STT__THREADS", "2"),
        ],
    );
    let node = switchboard::serve::start(Arc::new(config), pool.clone())
        .await
        .expect("node starts");
    common::node::warmed_up(&node).await;
    let dir = tempfile::tempdir().expect("tmp");
    let questions = [
        (
            "What time do you open on Saturday?",
            faq_answer("On Saturday we open"),
        ),
        (
            "Is there somewhere I can park?",
            faq_answer("Yes, we have free parking"),
        ),
        (
            "Can I pay with a credit card?",
            faq_answer("We accept cash"),
        ),
        (
            "Do you treat children?",
            faq_answer("Yes, we treat patients of all ages"),
        ),
    ];
    let speech: Vec<Vec<i16>> = questions
        .iter()
        .enumerate()
        .map(|(i, (q, _))| piper_8k(dir.path(), &format!("q{i}"), q))
        .collect();
    // The start-up embedding of the seeded knowledge, so the outage finds
    // the index with its vectors (the test is of the outage, not of start-up).
    let embedded = poll(Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from knowledge_chunks where embedding_model is distinct from 'all-mpnet-base-v2-q8'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert!(embedded.is_some(), "the knowledge was embedded at start-up");

    let caller_a = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop();
    let stopped = Instant::now();
    let mut delays = Vec::new();
    for (i, pcm) in speech.iter().enumerate() {
        let asked = caller_a.say_and_wait(pcm).await;
        let (start, _end) = caller_a
            .wait_agent_speech(asked, Duration::from_millis(1200), Duration::from_secs(20))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no reply to {:?} while the database was down",
                    questions[i].0
                )
            });
        let delay = start.saturating_duration_since(asked);
        println!(
            "{:?}: first answer audio {} ms after the question",
            questions[i].0,
            delay.as_millis()
        );
        delays.push(delay);
    }
    // Call B is set up while the database is down: its call_logs insert,
    // session and messages all wait in the writer's queue, in that order.
    let dialled = Instant::now();
    let caller_b = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    println!(
        "call B answered and greeted {:.1} s after the INVITE, database down",
        dialled.elapsed().as_secs_f64()
    );
    let asked = caller_b.say_and_wait(&speech[0]).await;
    assert!(
        caller_b
            .wait_agent_speech(asked, Duration::from_millis(1200), Duration::from_secs(20))
            .await
            .is_some(),
        "call B's question answered while the database was down"
    );
    assert!(caller_b.hangup().await, "call B's BYE answered");
    // Down for at least the outage, and for as long as the calls took (a
    // slow machine speaks and answers no faster).
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    println!(
        "PostgreSQL was down {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    cluster.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(caller_a.hangup().await, "BYE answered: call A was still up");

    // Every record of both calls arrives once the database is back.
    assert!(
        node.runtime.records.flush(Duration::from_secs(30)).await,
        "the writer caught up within 30 s of the database's return"
    );
    let sessions: Vec<(Uuid, String, Option<chrono::DateTime<chrono::Utc>>)> =
        poll(Duration::from_secs(20), || async {
            let rows: Vec<(Uuid, String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
                "select id, status, ended_at from agent_sessions order by started_at",
            )
            .fetch_all(&pool)
            .await
            .ok()?;
            (rows.len() == 2 && rows.iter().all(|r| r.2.is_some())).then_some(rows)
        })
        .await
        .expect("both sessions written and finished");
    let calls: Vec<(String, String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "select sip_call_id, status, session_id, codec from call_logs where ended_at is not null order by started_at",
    )
    .fetch_all(&pool)
    .await
    .expect("call_logs");
    let all_calls: i64 = sqlx::query_scalar("select count(*) from call_logs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(all_calls, 2, "one call_logs row per call: {calls:?}");
    assert_eq!(calls.len(), 2, "both calls ended: {calls:?}");
    assert_eq!(calls[0].0, caller_a.call_id());
    assert_eq!(calls[1].0, caller_b.call_id());
    for (i, (call_id, status, session, codec)) in calls.iter().enumerate() {
        assert_eq!(status, "completed", "{call_id}");
        assert_eq!(codec.as_deref(), Some("PCMU"), "{call_id} answered");
        assert_eq!(
            *session,
            Some(sessions[i].0),
            "{call_id} linked to its session"
        );
        assert_eq!(sessions[i].1, "completed");
    }

    let messages_of = |session: Uuid| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "select role, content from messages where session_id = $1 order by created_at",
            )
            .bind(session)
            .fetch_all(&pool)
            .await
            .expect("messages");
            rows
        }
    };
    let a = messages_of(sessions[0].0).await;
    print!(
        "call A's timeline:\n{}",
        common::node::session_timeline(&pool, sessions[0].0).await
    );
    let roles: Vec<&str> = a.iter().map(|(r, _)| r.as_str()).collect();
    let mut expected_roles = vec!["assistant"];
    for _ in &questions {
        expected_roles.extend(["user", "assistant"]);
    }
    assert_eq!(
        roles, expected_roles,
        "greeting, each question and reply, once: {a:?}"
    );
    for (i, (q, answer)) in questions.iter().enumerate() {
        assert_eq!(
            &a[2 + 2 * i].1,
            answer,
            "the reply to {q:?} (heard as {:?})",
            a[1 + 2 * i].1
        );
    }
    let b = messages_of(sessions[1].0).await;
    let roles: Vec<&str> = b.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["assistant", "user", "assistant"], "call B: {b:?}");
    assert_eq!(b[2].1, questions[0].1, "call B's answer");
    for (id, ..) in &sessions {
        let (rows, kinds): (i64, i64) = sqlx::query_as(
            "select count(*), count(distinct kind) from usage_logs where session_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("usage");
        assert_eq!((rows, kinds), (5, 5), "one usage row of each kind");
    }
    let conversations: i32 =
        sqlx::query_scalar("select sum(conversations)::int4 from workspace_usage")
            .fetch_one(&pool)
            .await
            .expect("workspace_usage");
    assert_eq!(conversations, 2, "each call counted once");
    let stats = node.runtime.records.stats();
    println!("record writer: {stats:?}");
    assert_eq!(stats.dropped(), 0, "no record dropped");
    node.stop(Duration::from_secs(1)).await;
    assert_eq!(spilled(spool.path()), (0, 0), "nothing left to spill");
    // Last, so a slow machine still shows whether the records are right.
    for (i, d) in delays.iter().enumerate() {
        assert!(
            *d <= ANSWER_WITHIN,
            "the answer to {:?} began {} ms after the question (limit {} ms)",
            questions[i].0,
            d.as_millis(),
            ANSWER_WITHIN.as_millis()
        );
    }
}

/// The caller hangs up while the database is down, and the node is stopped
/// (the SIGTERM path) before it returns: the call's records go to the
/// spill file. A new node started on the same folder once the database is
/// back replays them: the call's end, session, messages and usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_during_the_outage_leaves_its_records_to_the_next() {
    common::node::init_logs();
    let (cluster, url, pool) = seeded_cluster().await;
    let spool = tempfile::tempdir().expect("spool dir");
    let spool_dir = spool.path().display().to_string();
    let extra = [
        ("SWITCHBOARD_RECORDS__SPOOL_DIR", spool_dir.as_str()),
        ("SWITCHBOARD_RECORDS__STOP_FLUSH_SECS", "1"),
    ];
    let node = switchboard::serve::start(Arc::new(node_config(&url, 46000, &extra)), pool.clone())
        .await
        .expect("node starts");

    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    cluster.stop();
    assert!(
        caller.hangup().await,
        "BYE answered while the database is down"
    );
    node.stop(Duration::from_secs(1)).await;
    let (files, lines) = spilled(spool.path());
    println!("spilled at stop: {lines} records in {files} file(s)");
    assert!(
        lines >= 8,
        "the call's end, session end, usage... spilled: {lines}"
    );
    cluster.resume();

    let node = switchboard::serve::start(Arc::new(node_config(&url, 46400, &extra)), pool.clone())
        .await
        .expect("a new node starts on the same folder");
    assert!(
        node.runtime.records.flush(Duration::from_secs(30)).await,
        "the spill file was replayed"
    );
    let stats = node.runtime.records.stats();
    println!("record writer after replay: {stats:?}");
    assert_eq!(
        stats.replayed as usize, lines,
        "every spilled record written"
    );
    assert_eq!(stats.dropped(), 0);
    assert_eq!(spilled(spool.path()), (0, 0), "replayed files deleted");
    let (status, ended, session_status): (String, Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as(
            "select c.status, c.ended_at, s.status from call_logs c left join agent_sessions s on s.id = c.session_id",
        )
        .fetch_one(&pool)
        .await
        .expect("the call's row");
    assert_eq!(status, "completed");
    assert!(ended.is_some());
    assert_eq!(session_status.as_deref(), Some("completed"));
    let (usage, kinds): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct kind) from usage_logs")
            .fetch_one(&pool)
            .await
            .expect("usage");
    assert_eq!((usage, kinds), (5, 5), "one usage row of each kind");
    let greeting: i64 =
        sqlx::query_scalar("select count(*) from messages where role = 'assistant'")
            .fetch_one(&pool)
            .await
            .expect("messages");
    assert_eq!(greeting, 1, "the greeting, once");
    let conversations: i32 =
        sqlx::query_scalar("select sum(conversations)::int4 from workspace_usage")
            .fetch_one(&pool)
            .await
            .expect("workspace_usage");
    assert_eq!(conversations, 1);
    node.stop(Duration::from_secs(1)).await;
}
