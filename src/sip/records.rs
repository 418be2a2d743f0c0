//! `call_logs` rows for every INVITE that reaches routing, written by one
//! small task per call so the SIP loop never waits on the database and a
//! call's writes land in order (insert, answered, ended). A write the
//! database refuses for good is logged and skipped; one that fails because
//! the database is away is retried until it returns (each call's task holds
//! at most its few writes, so an outage costs bounded memory).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::call::HangupBy;
use crate::metrics::{metrics, CallDirection, RecordQueue};

/// The identity of a call_logs row, known when routing decides.
#[derive(Debug, Clone)]
pub struct CallLogStart {
    pub id: Uuid,
    pub direction: super::call::CallDirection,
    pub workspace_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub phone_number_id: Option<Uuid>,
    pub sip_trunk_id: Option<Uuid>,
    pub sip_call_id: String,
    pub from_number: String,
    pub to_number: String,
    pub node_id: String,
    pub started_at: DateTime<Utc>,
}

/// How a call ended (`status`, `sip_code`, `hangup_by`, `hangup_reason`).
#[derive(Debug, Clone)]
pub struct CallEnd {
    pub status: &'static str,
    pub sip_code: Option<u16>,
    pub hangup_by: Option<HangupBy>,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug)]
enum Op {
    /// The row, possibly already answered and/or ended (writes folded).
    Insert(
        CallLogStart,
        Option<CallEnd>,
        Option<(String, DateTime<Utc>)>,
    ),
    Answered {
        codec: String,
        at: DateTime<Utc>,
    },
    Ended(CallEnd),
}

/// The writer of one call's row. Dropping it lets the task finish its queue.
#[derive(Debug, Clone)]
pub struct CallRecorder {
    id: Uuid,
    tx: mpsc::Sender<Op>,
}

impl CallRecorder {
    /// Inserts the row (`ringing`) and returns the writer for the rest.
    pub fn start(pool: &PgPool, start: CallLogStart) -> CallRecorder {
        Self::spawn(pool, start, None)
    }

    /// One row for a call refused at routing (`rejected`, `busy`, ...).
    pub fn rejected(pool: &PgPool, start: CallLogStart, end: CallEnd) {
        metrics().call_ended(CallDirection::Inbound, end.status);
        Self::spawn(pool, start, Some(end));
    }

    fn spawn(pool: &PgPool, start: CallLogStart, end: Option<CallEnd>) -> CallRecorder {
        let id = start.id;
        // Four writes at most per call; the bound only guards against misuse.
        let (tx, mut rx) = mpsc::channel::<Op>(8);
        if tx.try_send(Op::Insert(start, end, None)).is_ok() {
            metrics().record_queue_changed(RecordQueue::CallLogs, 1);
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let queued = batch.len() as i64;
                for op in fold(batch) {
                    write_with_retry(&pool, id, &op).await;
                }
                metrics().record_queue_changed(RecordQueue::CallLogs, -queued);
            }
        });
        CallRecorder { id, tx }
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn answered(&self, codec: &str, at: DateTime<Utc>) {
        self.push(Op::Answered {
            codec: codec.to_string(),
            at,
        });
    }

    /// Called once per call (the SIP core forgets the call as it ends it).
    pub fn ended(&self, end: CallEnd) {
        metrics().call_ended(CallDirection::Inbound, end.status);
        self.push(Op::Ended(end));
    }

    fn push(&self, op: Op) {
        match self.tx.try_send(op) {
            Ok(()) => metrics().record_queue_changed(RecordQueue::CallLogs, 1),
            Err(e) => {
                metrics().db_write_failed();
                tracing::warn!(call_log_id = %self.id, "call_logs write dropped: {e}");
            }
        }
    }
}

/// When the database lags, a call's writes queue up; an insert followed by
/// its answer and end becomes one insert (fewer round trips under load).
fn fold(ops: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        match (out.last_mut(), op) {
            (Some(Op::Insert(_, end @ None, answered @ None)), Op::Answered { codec, at }) => {
                let _ = end;
                *answered = Some((codec, at));
            }
            (Some(Op::Insert(_, end @ None, _)), Op::Ended(e)) => *end = Some(e),
            (_, op) => out.push(op),
        }
    }
    out
}

/// Longest pause between two tries while the database is away.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

async fn write_with_retry(pool: &PgPool, id: Uuid, op: &Op) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1u64.. {
        match write(pool, id, op).await {
            Ok(()) => return,
            Err(e) if crate::db::is_permanent_error(&e) => {
                metrics().db_write_failed();
                tracing::error!(call_log_id = %id, "call_logs write refused by the database: {e}");
                return;
            }
            Err(e) => {
                metrics().db_write_failed();
                // Logged on the first tries, then now and then.
                if attempt <= 3 || attempt.is_multiple_of(30) {
                    tracing::warn!(call_log_id = %id, attempt, "call_logs write failed, retrying until the database returns: {e}");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

async fn write(pool: &PgPool, id: Uuid, op: &Op) -> Result<(), sqlx::Error> {
    match op {
        Op::Insert(s, end, answered) => {
            let status = match (end, answered) {
                (Some(e), _) => e.status,
                (None, Some(_)) => "in_progress",
                (None, None) => "ringing",
            };
            let sip_code = end
                .as_ref()
                .and_then(|e| e.sip_code)
                .or(answered.as_ref().map(|_| 200));
            sqlx::query(
                "insert into call_logs (id, workspace_id, agent_id, phone_number_id, sip_trunk_id, direction, sip_call_id, \
                 from_number, to_number, status, sip_code, hangup_by, hangup_reason, started_at, answered_at, codec, ended_at, \
                 duration_ms, node_id) \
                 values ($1, $2, $3, $4, $5, $19, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                 on conflict (id) do nothing",
            )
            .bind(s.id)
            .bind(s.workspace_id)
            .bind(s.agent_id)
            .bind(s.phone_number_id)
            .bind(s.sip_trunk_id)
            .bind(&s.sip_call_id)
            .bind(&s.from_number)
            .bind(&s.to_number)
            .bind(status)
            .bind(sip_code.map(i32::from))
            .bind(end.as_ref().and_then(|e| e.hangup_by).map(|b| b.as_str()))
            .bind(end.as_ref().map(|e| e.reason.clone()))
            .bind(s.started_at)
            .bind(answered.as_ref().map(|a| a.1))
            .bind(answered.as_ref().map(|a| a.0.clone()))
            .bind(end.as_ref().map(|e| e.at))
            .bind(end.as_ref().and_then(|e| e.duration_ms))
            .bind(&s.node_id)
            .bind(s.direction.as_str())
            .execute(pool)
            .await?;
        }
        Op::Answered { codec, at } => {
            sqlx::query("update call_logs set status = 'in_progress', answered_at = $2, codec = $3, sip_code = 200 where id = $1")
                .bind(id)
                .bind(at)
                .bind(codec)
                .execute(pool)
                .await?;
        }
        Op::Ended(e) => {
            sqlx::query(
                "update call_logs set status = $2, sip_code = coalesce($3, sip_code), hangup_by = $4, hangup_reason = $5, \
                 ended_at = $6, duration_ms = $7 where id = $1",
            )
            .bind(id)
            .bind(e.status)
            .bind(e.sip_code.map(i32::from))
            .bind(e.hangup_by.map(|b| b.as_str()))
            .bind(&e.reason)
            .bind(e.at)
            .bind(e.duration_ms)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> CallLogStart {
        CallLogStart {
            id: Uuid::new_v4(),
            direction: crate::sip::call::CallDirection::Inbound,
            workspace_id: Uuid::new_v4(),
            agent_id: None,
            phone_number_id: None,
            sip_trunk_id: None,
            sip_call_id: "c".into(),
            from_number: "+1".into(),
            to_number: "+2".into(),
            node_id: "n".into(),
            started_at: Utc::now(),
        }
    }

    fn end() -> CallEnd {
        CallEnd {
            status: "completed",
            sip_code: None,
            hangup_by: Some(HangupBy::Caller),
            reason: "bye".into(),
            at: Utc::now(),
            duration_ms: Some(5),
        }
    }

    #[test]
    fn queued_writes_fold_into_one_insert_in_order() {
        let ops = vec![
            Op::Insert(start(), None, None),
            Op::Answered {
                codec: "PCMU".into(),
                at: Utc::now(),
            },
            Op::Ended(end()),
        ];
        let folded = fold(ops);
        assert_eq!(folded.len(), 1);
        assert!(
            matches!(&folded[0], Op::Insert(_, Some(e), Some((c, _))) if e.status == "completed" && c == "PCMU")
        );
        // Without the insert in the batch, updates stay separate and ordered.
        let folded = fold(vec![
            Op::Answered {
                codec: "PCMA".into(),
                at: Utc::now(),
            },
            Op::Ended(end()),
        ]);
        assert!(matches!(&folded[..], [Op::Answered { .. }, Op::Ended(_)]));
    }
}
