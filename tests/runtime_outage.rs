//! A database outage during a call: the node runs on a throw-away cluster;
//! after the greeting the cluster is stopped for at least 30 s, during which the
//! caller (a Piper voice) asks several questions; each gets its real FAQ
//! answer (retrieval runs from the agent's in-memory index), its first audio
//! within 1 s of the end of the question. Then the cluster comes back, the
//! caller hangs up, and every record of the call is there: session, each
//! question and answer, usage, call_logs completed.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::{node_config, poll};
use common::pgcluster::TempCluster;
use common::sip_caller::SipCaller;
use sqlx::postgres::PgPoolOptions;
use switchboard::db::seed::DEMO_FAQ;
use uuid::Uuid;

/// How long PostgreSQL is down.
const OUTAGE: Duration = Duration::from_secs(30);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_call_still_answers_every_question_and_loses_no_record() {
    common::node::init_logs();
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
    let config = node_config(&url, 45600, &[]);
    let node = switchboard::serve::start(Arc::new(config), pool.clone())
        .await
        .expect("node starts");
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
            "select count(*) from knowledge_chunks where embedding_model is distinct from 'all-mpnet-base-v2'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert!(embedded.is_some(), "the knowledge was embedded at start-up");

    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop();
    let stopped = Instant::now();
    let mut delays = Vec::new();
    for (i, pcm) in speech.iter().enumerate() {
        let asked = caller.say_and_wait(pcm).await;
        let (start, end) = caller
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
        let _ = end;
    }
    // Down for at least the outage, and for as long as the questions took
    // (a slow machine speaks and answers no faster).
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    println!(
        "PostgreSQL was down {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    cluster.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(caller.hangup().await, "BYE answered: the call was still up");

    // Every record arrives once the database is back.
    let session: Uuid = poll(Duration::from_secs(20), || async {
        sqlx::query_scalar("select id from agent_sessions where ended_at is not null")
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("the session was finished");
    let (status, ended): (String, Option<chrono::DateTime<chrono::Utc>>) =
        poll(Duration::from_secs(20), || async {
            sqlx::query_as("select status, ended_at from call_logs where session_id = $1")
                .bind(session)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
        })
        .await
        .expect("call_logs row linked to the session");
    assert_eq!(status, "completed", "call_logs status");
    assert!(ended.is_some(), "call_logs ended_at");
    let messages: Vec<(String, String)> = poll(Duration::from_secs(10), || async {
        let r: Vec<(String, String)> = sqlx::query_as(
            "select role, content from messages where session_id = $1 order by created_at",
        )
        .bind(session)
        .fetch_all(&pool)
        .await
        .ok()?;
        (r.len() > 2 * questions.len()).then_some(r)
    })
    .await
    .expect("greeting, every question and every reply stored");
    println!("messages: {messages:#?}");
    let roles: Vec<&str> = messages.iter().map(|(r, _)| r.as_str()).collect();
    let mut expected_roles = vec!["assistant"];
    for _ in &questions {
        expected_roles.extend(["user", "assistant"]);
    }
    assert_eq!(
        &roles[..expected_roles.len()],
        expected_roles,
        "{messages:?}"
    );
    for (i, (q, answer)) in questions.iter().enumerate() {
        let said = &messages[2 + 2 * i].1;
        assert_eq!(
            said,
            answer,
            "the reply to {q:?} (heard as {:?})",
            messages[1 + 2 * i].1
        );
    }
    for (i, d) in delays.iter().enumerate() {
        assert!(
            *d <= ANSWER_WITHIN,
            "the answer to {:?} began {} ms after the question (limit {} ms)",
            questions[i].0,
            d.as_millis(),
            ANSWER_WITHIN.as_millis()
        );
    }
    let usage: i64 = poll(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from usage_logs where session_id = $1")
            .bind(session)
            .fetch_one(&pool)
            .await
            .ok()?;
        (n >= 5).then_some(n)
    })
    .await
    .expect("usage rows");
    assert!(usage >= 5);
    assert_eq!(node.runtime.records.dropped(), 0, "no record dropped");
    node.stop(Duration::from_secs(1)).await;
}

/// The caller hangs up while the database is down: the call's end (the SIP
/// layer's call_logs update and the runtime's records) must still be
/// written when PostgreSQL returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_during_the_outage_is_recorded_when_the_database_returns() {
    common::node::init_logs();
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
    let config = node_config(&url, 46000, &[]);
    let node = switchboard::serve::start(Arc::new(config), pool.clone())
        .await
        .expect("node starts");

    let caller = SipCaller::dial_after_greeting(node.sip.local_addr(), "+15555550100").await;
    cluster.stop();
    assert!(
        caller.hangup().await,
        "BYE answered while the database is down"
    );
    // Longer than any give-up: the writers retry until the database returns.
    tokio::time::sleep(OUTAGE).await;
    cluster.resume();

    let row: Option<(
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
    )> = poll(Duration::from_secs(20), || async {
        let r: Option<(
            String,
            Option<chrono::DateTime<chrono::Utc>>,
            Option<String>,
        )> = sqlx::query_as(
            "select c.status, c.ended_at, s.status from call_logs c
                     left join agent_sessions s on s.id = c.session_id",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten();
        r.filter(|r| r.0 != "in_progress" && r.1.is_some() && r.2.as_deref() != Some("active"))
    })
    .await;
    let now: Vec<(String, Option<chrono::DateTime<chrono::Utc>>, Option<String>)> = sqlx::query_as(
        "select c.status, c.ended_at, s.status from call_logs c left join agent_sessions s on s.id = c.session_id",
    )
    .fetch_all(&pool)
    .await
    .expect("call_logs");
    let (status, _, session_status) =
        row.unwrap_or_else(|| panic!("the call's end was not recorded after the outage: {now:?}"));
    assert_eq!(status, "completed");
    assert_eq!(session_status.as_deref(), Some("completed"));
    let usage: i64 = sqlx::query_scalar("select count(*) from usage_logs")
        .fetch_one(&pool)
        .await
        .expect("usage");
    assert!(usage >= 5, "usage rows: {usage}");
    node.stop(Duration::from_secs(1)).await;
}
