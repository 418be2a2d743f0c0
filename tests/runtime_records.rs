//! The record writer bridges a database outage: PostgreSQL is stopped while
//! records are queued, restarted, and every row arrives exactly once.

mod common;

use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::PgPoolOptions;
use switchboard::agent_runtime::records::{MessageRecord, RecordOp, RecordWriter, UsageRecord};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_database_outage() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("switchboard=debug")
        .try_init();
    let cluster = common::pgcluster::TempCluster::start();
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
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&cluster.url("sb"))
        .await
        .expect("pool");
    switchboard::db::migrate(&pool).await.expect("migrate");
    let workspace_id: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug) values ('Outage', 'outage') returning id",
    )
    .fetch_one(&pool)
    .await
    .expect("workspace");
    let agent_id: Uuid = sqlx::query_scalar(
        "insert into agents (workspace_id, name, status) values ($1, 'Desk', 'live') returning id",
    )
    .bind(workspace_id)
    .fetch_one(&pool)
    .await
    .expect("agent");

    let writer = RecordWriter::start(pool.clone(), 1000);
    let session_id = Uuid::new_v4();
    writer.submit(RecordOp::StartSession {
        id: session_id,
        workspace_id,
        agent_id,
        channel: "phone",
        caller: "+15550001111".into(),
        call_log_id: None,
        at: Utc::now(),
    });
    assert!(
        writer.flush(Duration::from_secs(10)).await,
        "first write must land"
    );

    cluster.stop();
    for i in 0..20 {
        writer.submit(RecordOp::Message(MessageRecord {
            id: Uuid::new_v4(),
            workspace_id,
            session_id,
            role: if i % 2 == 0 { "user" } else { "assistant" },
            content: format!("message {i}"),
            interrupted: false,
            stt_ms: Some(300),
            llm_first_token_ms: None,
            tts_first_byte_ms: None,
            tokens_in: None,
            tokens_out: None,
            at: Utc::now(),
        }));
    }
    writer.submit(RecordOp::Usage(UsageRecord {
        id: Uuid::new_v4(),
        workspace_id,
        session_id: Some(session_id),
        call_log_id: None,
        kind: "call_seconds",
        quantity: 42.0,
        unit_cost: 0.0,
        model: None,
    }));
    writer.submit(RecordOp::EndSession {
        id: session_id,
        status: "completed",
        summary: None,
        at: Utc::now(),
    });
    // While the database is away nothing is lost: it is all still queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        writer.pending(),
        22,
        "20 messages, the usage row and the session end wait for the database"
    );

    cluster.resume();
    assert!(
        writer.flush(Duration::from_secs(30)).await,
        "queued writes land after the database returns"
    );
    assert_eq!(writer.dropped(), 0);
    let messages: i64 = sqlx::query_scalar("select count(*) from messages where session_id = $1")
        .bind(session_id)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(messages, 20);
    let status: String = sqlx::query_scalar("select status from agent_sessions where id = $1")
        .bind(session_id)
        .fetch_one(&pool)
        .await
        .expect("session");
    assert_eq!(status, "completed");
    let usage: i64 = sqlx::query_scalar("select count(*) from usage_logs where session_id = $1")
        .bind(session_id)
        .fetch_one(&pool)
        .await
        .expect("usage");
    assert_eq!(usage, 1);
    // Order is kept: messages were created in the order queued.
    let contents: Vec<String> = sqlx::query_scalar(
        "select content from messages where session_id = $1 order by created_at",
    )
    .bind(session_id)
    .fetch_all(&pool)
    .await
    .expect("contents");
    assert_eq!(contents.first().map(String::as_str), Some("message 0"));
    assert_eq!(contents.last().map(String::as_str), Some("message 19"));
}
