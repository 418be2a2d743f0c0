//! The record writer bridges a database outage: PostgreSQL is stopped while
//! records are queued, restarted, and every row arrives exactly once. With
//! a small queue the rest spills to the file; a writer stopped while the
//! database is down leaves everything in the file, and the next writer on
//! the folder replays it — twice over changes nothing.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use switchboard::config::RecordsConfig;
use switchboard::records::{
    CallEnd, CallLogStart, HangupBy, MessageRecord, Record, RecordWriter, UsageRecord,
};
use uuid::Uuid;

fn records_config(spool_dir: &Path, queue_capacity: usize) -> RecordsConfig {
    RecordsConfig {
        queue_capacity,
        spool_dir: spool_dir.to_path_buf(),
        spool_max_mb: 16,
        stop_flush_secs: 1,
    }
}

async fn cluster_with_schema() -> (common::pgcluster::TempCluster, PgPool) {
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
    (cluster, pool)
}

async fn workspace_and_agent(pool: &PgPool) -> (Uuid, Uuid) {
    let workspace_id: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug) values ('Outage', 'outage') returning id",
    )
    .fetch_one(pool)
    .await
    .expect("workspace");
    let agent_id: Uuid = sqlx::query_scalar(
        "insert into agents (workspace_id, name, status) values ($1, 'Desk', 'live') returning id",
    )
    .bind(workspace_id)
    .fetch_one(pool)
    .await
    .expect("agent");
    (workspace_id, agent_id)
}

fn message(workspace_id: Uuid, session_id: Uuid, i: usize) -> Record {
    Record::Message(MessageRecord {
        id: Uuid::new_v4(),
        workspace_id,
        session_id,
        role: if i.is_multiple_of(2) {
            "user"
        } else {
            "assistant"
        }
        .into(),
        content: format!("message {i}"),
        interrupted: false,
        stt_ms: Some(300),
        llm_first_token_ms: None,
        tts_first_byte_ms: None,
        tokens_in: None,
        tokens_out: None,
        at: Utc::now(),
    })
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count")
}

fn spill_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("spool dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("records-"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .expect("segment")
                .lines()
                .count()
        })
        .sum()
}

/// The records a call opens with: its row, its answer, its session and
/// the month's conversation count.
fn call_opening(
    workspace_id: Uuid,
    agent_id: Uuid,
    call_log_id: Uuid,
    session_id: Uuid,
    sip_call_id: &str,
) -> Vec<Record> {
    let now = Utc::now();
    vec![
        Record::CallLog {
            start: CallLogStart {
                direction: "inbound".into(),
                id: call_log_id,
                workspace_id,
                agent_id: Some(agent_id),
                phone_number_id: None,
                sip_trunk_id: None,
                sip_call_id: sip_call_id.into(),
                from_number: "+15550001111".into(),
                to_number: "+15555550100".into(),
                node_id: "test".into(),
                started_at: now,
                diverted_from: None,
            },
            end: None,
        },
        Record::CallAnswered {
            call_log_id,
            codec: "PCMU".into(),
            at: now,
        },
        Record::StartSession {
            id: session_id,
            workspace_id,
            agent_id,
            channel: "phone".into(),
            caller: "+15550001111".into(),
            call_log_id: Some(call_log_id),
            at: now,
        },
        Record::CountConversation {
            id: Uuid::new_v4(),
            workspace_id,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_database_outage() {
    common::node::init_logs();
    let (cluster, pool) = cluster_with_schema().await;
    let (workspace_id, agent_id) = workspace_and_agent(&pool).await;
    let spool = tempfile::tempdir().expect("tmp");
    let writer = RecordWriter::start(pool.clone(), &records_config(spool.path(), 1000));
    let session_id = Uuid::new_v4();
    writer.submit(Record::StartSession {
        id: session_id,
        workspace_id,
        agent_id,
        channel: "phone".into(),
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
        writer.submit(message(workspace_id, session_id, i));
    }
    writer.submit(Record::Usage(UsageRecord {
        id: Uuid::new_v4(),
        workspace_id,
        session_id: Some(session_id),
        call_log_id: None,
        kind: "call_seconds".into(),
        quantity: 42.0,
        unit_cost: 0.0,
        model: None,
    }));
    writer.submit(Record::EndSession {
        id: session_id,
        status: "completed".into(),
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
    assert_eq!(spill_lines(spool.path()), 0, "the queue had room: no spill");

    cluster.resume();
    assert!(
        writer.flush(Duration::from_secs(30)).await,
        "queued writes land after the database returns"
    );
    assert_eq!(writer.dropped(), 0);
    let messages = count(
        &pool,
        "select count(*) from messages where session_id = $1",
        session_id,
    )
    .await;
    assert_eq!(messages, 20);
    let status: String = sqlx::query_scalar("select status from agent_sessions where id = $1")
        .bind(session_id)
        .fetch_one(&pool)
        .await
        .expect("session");
    assert_eq!(status, "completed");
    let usage = count(
        &pool,
        "select count(*) from usage_logs where session_id = $1",
        session_id,
    )
    .await;
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

/// A whole call's records with the database down: a queue of 4 takes the
/// head, the rest spills; the writer is stopped (the node's SIGTERM path)
/// and puts its queue in the file too. A new writer on the folder, with the
/// database back, writes it all in order; the same files replayed again
/// (as after a crash before they were deleted) add nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilled_records_are_replayed_by_the_next_writer_once() {
    common::node::init_logs();
    let (cluster, pool) = cluster_with_schema().await;
    let (workspace_id, agent_id) = workspace_and_agent(&pool).await;
    let spool = tempfile::tempdir().expect("tmp");
    let config = records_config(spool.path(), 4);

    cluster.stop();
    let writer = RecordWriter::start(pool.clone(), &config);
    let call_log_id = Uuid::new_v4();
    let session_id = Uuid::new_v4();
    let now = Utc::now();
    let mut records = call_opening(
        workspace_id,
        agent_id,
        call_log_id,
        session_id,
        "spill-test",
    );
    records.extend((0..10).map(|i| message(workspace_id, session_id, i)));
    records.push(Record::Usage(UsageRecord {
        id: Uuid::new_v4(),
        workspace_id,
        session_id: Some(session_id),
        call_log_id: Some(call_log_id),
        kind: "call_seconds".into(),
        quantity: 12.0,
        unit_cost: 0.0,
        model: None,
    }));
    records.push(Record::AddWorkspaceUsage {
        id: Uuid::new_v4(),
        workspace_id,
        messages: 10,
        tokens: 0,
        call_seconds: 12,
        stt_seconds: 3.5,
        tts_characters: 100,
    });
    records.push(Record::EndSession {
        id: session_id,
        status: "completed".into(),
        summary: None,
        at: now,
    });
    records.push(caller_hung_up(call_log_id, now, 12_000));
    let total = records.len();
    for r in records {
        writer.submit(r);
    }
    let stats = writer.stats();
    assert_eq!(stats.spilled as usize, total - 4, "past the queue of 4");
    assert_eq!(spill_lines(spool.path()), total - 4);
    let closed = writer.close(Duration::from_millis(500)).await;
    assert!(!closed.flushed);
    assert_eq!((closed.spilled, closed.lost), (4, 0));
    assert_eq!(
        spill_lines(spool.path()),
        total,
        "everything is in the file"
    );
    assert_eq!(writer.stats().dropped(), 0);
    let copy = tempfile::tempdir().expect("tmp");
    for e in std::fs::read_dir(spool.path()).expect("dir").flatten() {
        std::fs::copy(e.path(), copy.path().join(e.file_name())).expect("copy");
    }

    cluster.resume();
    let check = |pass: &'static str| {
        let pool = pool.clone();
        async move {
            let calls: Vec<(String, Option<String>, Option<Uuid>)> =
                sqlx::query_as("select status, codec, session_id from call_logs")
                    .fetch_all(&pool)
                    .await
                    .expect("call_logs");
            assert_eq!(
                calls,
                [("completed".into(), Some("PCMU".into()), Some(session_id))],
                "{pass}: one call, ended, answered, linked"
            );
            let messages: Vec<String> = sqlx::query_scalar(
                "select content from messages where session_id = $1 order by created_at, content",
            )
            .bind(session_id)
            .fetch_all(&pool)
            .await
            .expect("messages");
            assert_eq!(messages.len(), 10, "{pass}: {messages:?}");
            let (conversations, call_seconds): (i32, i64) = sqlx::query_as(
                "select conversations, call_seconds::int8 from workspace_usage where workspace_id = $1",
            )
            .bind(workspace_id)
            .fetch_one(&pool)
            .await
            .expect("workspace_usage");
            assert_eq!(
                (conversations, call_seconds),
                (1, 12),
                "{pass}: counted once"
            );
            let usage = count(
                &pool,
                "select count(*) from usage_logs where session_id = $1",
                session_id,
            )
            .await;
            assert_eq!(usage, 1, "{pass}");
            let status: String =
                sqlx::query_scalar("select status from agent_sessions where id = $1")
                    .bind(session_id)
                    .fetch_one(&pool)
                    .await
                    .expect("session");
            assert_eq!(status, "completed", "{pass}");
        }
    };

    let next = RecordWriter::start(pool.clone(), &config);
    assert!(
        next.flush(Duration::from_secs(30)).await,
        "the spill file is replayed once the database is back"
    );
    assert_eq!(next.stats().replayed as usize, total);
    assert_eq!(next.dropped(), 0);
    assert_eq!(spill_lines(spool.path()), 0, "replayed files are deleted");
    check("first replay").await;
    next.close(Duration::from_secs(1)).await;

    // The same files again, as if the node had died before deleting them.
    let again = RecordWriter::start(pool.clone(), &records_config(copy.path(), 4));
    assert!(again.flush(Duration::from_secs(30)).await);
    assert_eq!(again.dropped(), 0);
    check("second replay").await;
}

/// Every record of one short call, as the node queues them.
fn call_records(workspace_id: Uuid, agent_id: Uuid, n: usize) -> Vec<Record> {
    let (call_log_id, session_id) = (Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now();
    let usage = |kind: &str, quantity: f64| {
        Record::Usage(UsageRecord {
            id: Uuid::new_v4(),
            workspace_id,
            session_id: Some(session_id),
            call_log_id: Some(call_log_id),
            kind: kind.into(),
            quantity,
            unit_cost: 0.01,
            model: None,
        })
    };
    let mut records = call_opening(
        workspace_id,
        agent_id,
        call_log_id,
        session_id,
        &format!("batch-{n}"),
    );
    if n % 5 == 4 {
        // Refused before an answer: the whole row in one record.
        records.truncate(1);
        if let Record::CallLog { end, .. } = &mut records[0] {
            *end = Some(CallEnd {
                status: "failed".into(),
                sip_code: Some(486),
                hangup_by: Some(HangupBy::System),
                reason: "busy".into(),
                at: now,
                duration_ms: None,
            });
        }
        return records;
    }
    records.extend([
        message(workspace_id, session_id, 1),
        caller_hung_up(call_log_id, now, 1_000),
        Record::EndSession {
            id: session_id,
            status: "completed".into(),
            summary: Some(format!("call {n}")),
            at: now,
        },
        Record::CallFigures {
            call_log_id,
            latency: serde_json::json!({"turns": [], "n": n}),
            cost: 0.25,
        },
        usage("call_seconds", 1.0),
        usage("stt_seconds", 0.5),
        usage("tts_characters", 40.0),
        Record::AddWorkspaceUsage {
            id: Uuid::new_v4(),
            workspace_id,
            messages: 1,
            tokens: 3,
            call_seconds: 1,
            stt_seconds: 0.5,
            tts_characters: 40,
        },
    ]);
    records
}

/// The rows `call_records` leave, in a comparable form.
async fn call_rows(pool: &PgPool, workspace_id: Uuid) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "select concat_ws('|', c.sip_call_id, c.status, c.sip_code, c.hangup_by, c.hangup_reason, c.codec,
                c.answered_at is not null, c.ended_at is not null, c.duration_ms, c.latency::text, c.cost,
                s.status, s.summary, s.ended_at is not null,
                (select count(*) from messages m where m.session_id = s.id),
                (select string_agg(u.kind || '=' || u.quantity || '@' || u.cost, ',' order by u.kind)
                   from usage_logs u where u.call_log_id = c.id))
           from call_logs c left join agent_sessions s on s.id = c.session_id
          where c.workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_all(pool)
    .await
    .expect("rows");
    rows.sort();
    let totals: String = sqlx::query_scalar(
        "select concat_ws('|', u.messages, u.tokens_used, u.call_seconds, u.stt_seconds, u.tts_characters, u.conversations)
           from workspace_usage u where u.workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_one(pool)
    .await
    .expect("usage");
    rows.push(totals);
    rows
}

/// Thirty calls' records written in batches (one statement per kind and
/// batch) leave the same rows as the same calls written one record per
/// transaction, and writing them all again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_leave_the_rows_records_one_by_one_leave() {
    common::node::init_logs();
    let (_cluster, pool) = cluster_with_schema().await;
    let (batched_ws, batched_agent) = workspace_and_agent(&pool).await;
    let one_ws: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug) values ('One', 'one') returning id",
    )
    .fetch_one(&pool)
    .await
    .expect("workspace");
    let one_agent: Uuid = sqlx::query_scalar(
        "insert into agents (workspace_id, name, status) values ($1, 'Desk', 'live') returning id",
    )
    .bind(one_ws)
    .fetch_one(&pool)
    .await
    .expect("agent");
    let spool = tempfile::tempdir().expect("tmp");
    let writer = RecordWriter::start(pool.clone(), &records_config(spool.path(), 10_000));
    let mut batched = Vec::new();
    for n in 0..30 {
        batched.extend(call_records(batched_ws, batched_agent, n));
    }
    let total = batched.len();
    for r in batched.iter().cloned() {
        writer.submit(r);
    }
    assert!(writer.flush(Duration::from_secs(30)).await, "batches land");
    // The same calls one record at a time: each waits for the last.
    for n in 0..30 {
        for r in call_records(one_ws, one_agent, n) {
            writer.submit(r);
            assert!(writer.flush(Duration::from_secs(10)).await);
        }
    }
    assert_eq!(writer.dropped(), 0);
    let rows = call_rows(&pool, batched_ws).await;
    assert_eq!(rows.len(), 31, "30 calls and the month's usage");
    assert!(
        rows.iter()
            .filter(|r| r.contains("|completed|200|caller|caller hung up|PCMU|t|t|1000|"))
            .count()
            == 24,
        "24 answered and ended calls: {rows:#?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.ends_with("|failed|486|system|busy|f|t|f|0"))
            .count(),
        6,
        "6 refused calls: {rows:#?}"
    );
    assert_eq!(
        rows[30], "24|72|24|12.000|960|24",
        "the month's usage and conversations"
    );
    assert_eq!(rows, call_rows(&pool, one_ws).await, "batched = one by one");
    // Replayed (a spill file applied again): nothing changes, nothing counts twice.
    for r in batched {
        writer.submit(r);
    }
    assert!(writer.flush(Duration::from_secs(30)).await);
    assert_eq!(call_rows(&pool, batched_ws).await, rows);
    assert_eq!(total, 24 * 12 + 6, "more than one batch");
}

/// The end of a call the caller hung up after `duration_ms`.
fn caller_hung_up(call_log_id: Uuid, at: DateTime<Utc>, duration_ms: i64) -> Record {
    Record::CallEnded {
        call_log_id,
        end: CallEnd {
            status: "completed".into(),
            sip_code: None,
            hangup_by: Some(HangupBy::Caller),
            reason: "caller hung up".into(),
            at,
            duration_ms: Some(duration_ms),
        },
    }
}
