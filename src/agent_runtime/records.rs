//! The call's records, written through one bounded per-process queue with
//! retry: a database outage during a call never blocks or drops the call,
//! and what could not be written is written when the database returns.
//! Operations carry their own ids and timestamps, so a retry writes the
//! same row at the same time it happened, in the order it was queued.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::metrics::{metrics, RecordQueue};

/// One write. Each is idempotent where the schema allows (`on conflict do nothing`).
#[derive(Debug, Clone)]
pub enum RecordOp {
    StartSession {
        id: Uuid,
        workspace_id: Uuid,
        agent_id: Uuid,
        channel: &'static str,
        caller: String,
        call_log_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    Message(MessageRecord),
    EndSession {
        id: Uuid,
        status: &'static str,
        summary: Option<String>,
        at: DateTime<Utc>,
    },
    /// Per-turn latency figures and cost onto the call's `call_logs` row.
    CallFigures {
        call_log_id: Uuid,
        latency: serde_json::Value,
        cost: f64,
    },
    Usage(UsageRecord),
    /// `increment_conversation_count` for the month of the call.
    CountConversation {
        workspace_id: Uuid,
    },
    /// Adds to the month's `workspace_usage` row.
    AddWorkspaceUsage {
        workspace_id: Uuid,
        messages: i64,
        tokens: i64,
        call_seconds: i64,
        stt_seconds: f64,
        tts_characters: i64,
    },
    Recording {
        id: Uuid,
        workspace_id: Uuid,
        call_log_id: Uuid,
        storage_path: String,
        duration_ms: i64,
        size_bytes: i64,
    },
    Lead {
        id: Uuid,
        workspace_id: Uuid,
        agent_id: Uuid,
        session_id: Uuid,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        /// Where the lead came from (the call, its transcript).
        metadata: serde_json::Value,
    },
}

#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub session_id: Uuid,
    pub role: &'static str,
    pub content: String,
    pub interrupted: bool,
    pub stt_ms: Option<i32>,
    pub llm_first_token_ms: Option<i32>,
    pub tts_first_byte_ms: Option<i32>,
    pub tokens_in: Option<i32>,
    pub tokens_out: Option<i32>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// Chosen when queued, so a retried insert cannot count twice.
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub session_id: Option<Uuid>,
    pub call_log_id: Option<Uuid>,
    pub kind: &'static str,
    pub quantity: f64,
    pub unit_cost: f64,
    pub model: Option<String>,
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct RecordWriter {
    tx: mpsc::Sender<RecordOp>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl RecordWriter {
    /// Starts the writer on `pool` with room for `capacity` queued writes.
    pub fn start(pool: PgPool, capacity: usize) -> RecordWriter {
        let (tx, rx) = mpsc::channel(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(pool, rx, pending.clone()));
        RecordWriter {
            tx,
            pending,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues a write; never waits. Only a full queue (the database down
    /// for a long time under heavy load) loses a record, and says so.
    pub fn submit(&self, op: RecordOp) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        metrics().record_queue_changed(RecordQueue::Runtime, 1);
        if let Err(err) = self.tx.try_send(op) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            metrics().record_queue_changed(RecordQueue::Runtime, -1);
            metrics().db_write_failed();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, "record queue full or closed: a record was not written");
        }
    }

    /// Writes queued and not yet committed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued so far is written, or `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// How long a write whose referred row is missing (`call_logs`, written by
/// the SIP layer's own writer) is retried before it is taken as permanent:
/// after an outage both writers resume at once, and the referred row may
/// land a moment after the row that refers to it.
const MISSING_PARENT_RETRY: Duration = Duration::from_secs(15);

async fn run(pool: PgPool, mut rx: mpsc::Receiver<RecordOp>, pending: Arc<AtomicUsize>) {
    while let Some(op) = rx.recv().await {
        let mut backoff = Duration::from_millis(100);
        let mut parent_missing_since: Option<tokio::time::Instant> = None;
        loop {
            match apply(&pool, &op).await {
                Ok(()) => break,
                Err(err)
                    if crate::db::is_foreign_key_violation(&err)
                        && parent_missing_since
                            .get_or_insert_with(tokio::time::Instant::now)
                            .elapsed()
                            < MISSING_PARENT_RETRY =>
                {
                    // Not a failure yet: the row it refers to is on its way.
                    tracing::debug!(error = %err, "record waits for the row it refers to");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) if crate::db::is_permanent_error(&err) => {
                    metrics().db_write_failed();
                    tracing::error!(error = %err, ?op, "record rejected by the database; skipped");
                    break;
                }
                Err(err) => {
                    metrics().db_write_failed();
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "database unavailable; record kept for retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
        metrics().record_queue_changed(RecordQueue::Runtime, -1);
    }
}

async fn apply(pool: &PgPool, op: &RecordOp) -> Result<(), sqlx::Error> {
    match op {
        RecordOp::StartSession { id, workspace_id, agent_id, channel, caller, call_log_id, at } => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "insert into agent_sessions (id, workspace_id, agent_id, channel, status, caller, started_at, metadata)
                 values ($1, $2, $3, $4, 'active', $5, $6, jsonb_build_object('call_log_id', $7::uuid))
                 on conflict (id) do nothing",
            )
            .bind(id).bind(workspace_id).bind(agent_id).bind(channel).bind(caller).bind(at).bind(call_log_id)
            .execute(&mut *tx)
            .await?;
            if let Some(call_log_id) = call_log_id {
                sqlx::query("update call_logs set session_id = $1 where id = $2")
                    .bind(id).bind(call_log_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        RecordOp::Message(m) => sqlx::query(
            "insert into messages (id, workspace_id, session_id, role, content, interrupted, stt_ms,
                                   llm_first_token_ms, tts_first_byte_ms, tokens_in, tokens_out, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) on conflict (id) do nothing",
        )
        .bind(m.id).bind(m.workspace_id).bind(m.session_id).bind(m.role).bind(&m.content).bind(m.interrupted)
        .bind(m.stt_ms).bind(m.llm_first_token_ms).bind(m.tts_first_byte_ms).bind(m.tokens_in).bind(m.tokens_out).bind(m.at)
        .execute(pool)
        .await
        .map(drop),
        RecordOp::EndSession { id, status, summary, at } => sqlx::query(
            "update agent_sessions set status = $2, ended_at = $3, summary = coalesce($4, summary) where id = $1",
        )
        .bind(id).bind(status).bind(at).bind(summary)
        .execute(pool)
        .await
        .map(drop),
        RecordOp::CallFigures { call_log_id, latency, cost } => {
            sqlx::query("update call_logs set latency = $2, cost = $3::float8::numeric where id = $1")
                .bind(call_log_id).bind(latency).bind(cost)
                .execute(pool)
                .await
                .map(drop)
        }
        RecordOp::Usage(u) => sqlx::query(
            "insert into usage_logs (id, workspace_id, session_id, call_log_id, kind, quantity, unit_cost, cost, model)
             values ($8, $1, $2, $3, $4, $5::float8::numeric, $6::float8::numeric, ($5 * $6)::float8::numeric, $7)
             on conflict (id) do nothing",
        )
        .bind(u.workspace_id).bind(u.session_id).bind(u.call_log_id).bind(u.kind).bind(u.quantity).bind(u.unit_cost).bind(&u.model).bind(u.id)
        .execute(pool)
        .await
        .map(drop),
        RecordOp::CountConversation { workspace_id } => sqlx::query("select increment_conversation_count($1)")
            .bind(workspace_id)
            .execute(pool)
            .await
            .map(drop),
        RecordOp::AddWorkspaceUsage { workspace_id, messages, tokens, call_seconds, stt_seconds, tts_characters } => sqlx::query(
            "insert into workspace_usage (workspace_id, month, messages, tokens_used, call_seconds, stt_seconds, tts_characters)
             values ($1, current_usage_month(), $2, $3, $4, $5::float8::numeric, $6)
             on conflict (workspace_id, month) do update set
               messages = workspace_usage.messages + excluded.messages,
               tokens_used = workspace_usage.tokens_used + excluded.tokens_used,
               call_seconds = workspace_usage.call_seconds + excluded.call_seconds,
               stt_seconds = workspace_usage.stt_seconds + excluded.stt_seconds,
               tts_characters = workspace_usage.tts_characters + excluded.tts_characters",
        )
        .bind(workspace_id).bind(messages).bind(tokens).bind(call_seconds).bind(stt_seconds).bind(tts_characters)
        .execute(pool)
        .await
        .map(drop),
        RecordOp::Recording { id, workspace_id, call_log_id, storage_path, duration_ms, size_bytes } => sqlx::query(
            "insert into call_recordings (id, workspace_id, call_log_id, storage_path, format, duration_ms, size_bytes)
             values ($6, $1, $2, $3, 'wav', $4, $5) on conflict (id) do nothing",
        )
        .bind(workspace_id).bind(call_log_id).bind(storage_path).bind(duration_ms).bind(size_bytes).bind(id)
        .execute(pool)
        .await
        .map(drop),
        RecordOp::Lead { id, workspace_id, agent_id, session_id, name, email, phone, metadata } => sqlx::query(
            "insert into leads (id, workspace_id, agent_id, session_id, name, email, phone, channel, metadata)
             values ($7, $1, $2, $3, $4, $5, $6, 'phone', $8) on conflict (id) do nothing",
        )
        .bind(workspace_id).bind(agent_id).bind(session_id).bind(name).bind(email).bind(phone).bind(id).bind(metadata)
        .execute(pool)
        .await
        .map(drop),
    }
}
