//! A batch of records in few statements. One statement per record made
//! the writer round-trip-bound: a short call writes thirteen records, and
//! at 150 calls/s under load the queue fell behind and spilled. Here each
//! kind that recurs in a batch is one statement over arrays (`unnest`),
//! in an order that leaves the same rows as applying the records one by
//! one in queue order:
//!
//! 1. inserts of `call_logs` and `agent_sessions` rows first: a call's
//!    first record is its row, so nothing earlier in the batch needs it
//!    absent, and everything later in the batch needs it present;
//! 2. the records without a grouped form, one by one in queue order
//!    (messages, transfers, machine verdicts, recordings, leads);
//! 3. the lifecycle updates, each kind as one statement, in the order a
//!    call makes them (answered before ended; figures and a session's end
//!    touch columns nothing else writes);
//! 4. usage rows (inserts by their own id) and the counters (additions,
//!    commutative, each guarded by its receipt) last.
//!
//! Every statement stays safe to repeat, so a batch that fails part way
//! is retried whole (and one record at a time when the database refuses
//! it for good, see `sql::apply`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::kinds::{Record, UsageRecord};

/// Writes `batch` in one transaction.
pub async fn apply(pool: &PgPool, batch: &[Record]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    insert_rows(&mut tx, batch).await?;
    // The kinds without a grouped statement, in queue order (the grouped
    // ones are no-ops there).
    for record in batch {
        super::sql::apply(&mut tx, record).await?;
    }
    lifecycle_updates(&mut tx, batch).await?;
    usage_and_counters(&mut tx, batch).await?;
    tx.commit().await
}

/// `call_logs` rows, then `agent_sessions` rows and the call's link to its session.
async fn insert_rows(c: &mut PgConnection, batch: &[Record]) -> Result<(), sqlx::Error> {
    let mut calls = CallRows::default();
    let mut sessions = SessionRows::default();
    for record in batch {
        match record {
            Record::CallLog { start: s, end } => {
                calls.id.push(s.id);
                calls.workspace_id.push(s.workspace_id);
                calls.agent_id.push(s.agent_id);
                calls.phone_number_id.push(s.phone_number_id);
                calls.sip_trunk_id.push(s.sip_trunk_id);
                calls.direction.push(if s.direction.is_empty() {
                    "inbound".to_string()
                } else {
                    s.direction.clone()
                });
                calls.sip_call_id.push(s.sip_call_id.clone());
                calls.from_number.push(s.from_number.clone());
                calls.to_number.push(s.to_number.clone());
                calls.status.push(
                    end.as_ref()
                        .map_or("ringing", |e| e.status.as_str())
                        .to_string(),
                );
                calls
                    .sip_code
                    .push(end.as_ref().and_then(|e| e.sip_code).map(i32::from));
                calls.hangup_by.push(
                    end.as_ref()
                        .and_then(|e| e.hangup_by)
                        .map(|b| b.as_str().to_string()),
                );
                calls
                    .hangup_reason
                    .push(end.as_ref().map(|e| e.reason.clone()));
                calls.started_at.push(s.started_at);
                calls.ended_at.push(end.as_ref().map(|e| e.at));
                calls
                    .duration_ms
                    .push(end.as_ref().and_then(|e| e.duration_ms));
                calls.node_id.push(s.node_id.clone());
                calls.diverted_from.push(s.diverted_from.clone());
            }
            Record::StartSession {
                id,
                workspace_id,
                agent_id,
                channel,
                caller,
                call_log_id,
                at,
            } => {
                sessions.id.push(*id);
                sessions.workspace_id.push(*workspace_id);
                sessions.agent_id.push(*agent_id);
                sessions.channel.push(channel.clone());
                sessions.caller.push(caller.clone());
                sessions.call_log_id.push(*call_log_id);
                sessions.at.push(*at);
            }
            _ => {}
        }
    }
    if !calls.id.is_empty() {
        sqlx::query(
            "insert into call_logs (id, workspace_id, agent_id, phone_number_id, sip_trunk_id, direction, sip_call_id, \
             from_number, to_number, status, sip_code, hangup_by, hangup_reason, started_at, ended_at, duration_ms, node_id, diverted_from) \
             select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], \
               $8::text[], $9::text[], $10::text[], $11::int4[], $12::text[], $13::text[], $14::timestamptz[], \
               $15::timestamptz[], $16::int8[], $17::text[], $18::text[]) \
             on conflict (id) do nothing",
        )
        .bind(&calls.id)
        .bind(&calls.workspace_id)
        .bind(&calls.agent_id)
        .bind(&calls.phone_number_id)
        .bind(&calls.sip_trunk_id)
        .bind(&calls.direction)
        .bind(&calls.sip_call_id)
        .bind(&calls.from_number)
        .bind(&calls.to_number)
        .bind(&calls.status)
        .bind(&calls.sip_code)
        .bind(&calls.hangup_by)
        .bind(&calls.hangup_reason)
        .bind(&calls.started_at)
        .bind(&calls.ended_at)
        .bind(&calls.duration_ms)
        .bind(&calls.node_id)
        .bind(&calls.diverted_from)
        .execute(&mut *c)
        .await?;
    }
    if !sessions.id.is_empty() {
        sqlx::query(
            "insert into agent_sessions (id, workspace_id, agent_id, channel, status, caller, started_at, metadata)
             select s.id, s.workspace_id, s.agent_id, s.channel, 'active', s.caller, s.at,
                    jsonb_build_object('call_log_id', s.call_log_id)
               from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::uuid[])
                    as s(id, workspace_id, agent_id, channel, caller, at, call_log_id)
             on conflict (id) do nothing",
        )
        .bind(&sessions.id)
        .bind(&sessions.workspace_id)
        .bind(&sessions.agent_id)
        .bind(&sessions.channel)
        .bind(&sessions.caller)
        .bind(&sessions.at)
        .bind(&sessions.call_log_id)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "update call_logs c set session_id = s.id
               from unnest($1::uuid[], $2::uuid[]) as s(id, call_log_id)
              where c.id = s.call_log_id",
        )
        .bind(&sessions.id)
        .bind(&sessions.call_log_id)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

#[derive(Default)]
struct CallRows {
    id: Vec<Uuid>,
    workspace_id: Vec<Uuid>,
    agent_id: Vec<Option<Uuid>>,
    phone_number_id: Vec<Option<Uuid>>,
    sip_trunk_id: Vec<Option<Uuid>>,
    direction: Vec<String>,
    sip_call_id: Vec<String>,
    from_number: Vec<String>,
    to_number: Vec<String>,
    status: Vec<String>,
    sip_code: Vec<Option<i32>>,
    hangup_by: Vec<Option<String>>,
    hangup_reason: Vec<Option<String>>,
    started_at: Vec<DateTime<Utc>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
    duration_ms: Vec<Option<i64>>,
    node_id: Vec<String>,
    diverted_from: Vec<Option<String>>,
}

#[derive(Default)]
struct SessionRows {
    id: Vec<Uuid>,
    workspace_id: Vec<Uuid>,
    agent_id: Vec<Uuid>,
    channel: Vec<String>,
    caller: Vec<String>,
    call_log_id: Vec<Option<Uuid>>,
    at: Vec<DateTime<Utc>>,
}

/// Answers, ends, per-call figures and sessions' ends, one statement per kind.
async fn lifecycle_updates(c: &mut PgConnection, batch: &[Record]) -> Result<(), sqlx::Error> {
    let (mut a_id, mut a_at, mut a_codec) = (Vec::new(), Vec::new(), Vec::new());
    let mut ended = EndRows::default();
    let (mut f_id, mut f_latency, mut f_cost) = (Vec::new(), Vec::new(), Vec::new());
    let (mut s_id, mut s_status, mut s_at, mut s_summary) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for record in batch {
        match record {
            Record::CallAnswered {
                call_log_id,
                codec,
                at,
            } => {
                a_id.push(*call_log_id);
                a_at.push(*at);
                a_codec.push(codec.clone());
            }
            Record::CallEnded { call_log_id, end } => {
                ended.id.push(*call_log_id);
                ended.status.push(end.status.clone());
                ended.sip_code.push(end.sip_code.map(i32::from));
                ended
                    .hangup_by
                    .push(end.hangup_by.map(|b| b.as_str().to_string()));
                ended.reason.push(end.reason.clone());
                ended.at.push(end.at);
                ended.duration_ms.push(end.duration_ms);
            }
            Record::CallFigures {
                call_log_id,
                latency,
                cost,
            } => {
                f_id.push(*call_log_id);
                f_latency.push(latency.clone());
                f_cost.push(*cost);
            }
            Record::EndSession {
                id,
                status,
                summary,
                at,
            } => {
                s_id.push(*id);
                s_status.push(status.clone());
                s_at.push(*at);
                s_summary.push(summary.clone());
            }
            _ => {}
        }
    }
    if !a_id.is_empty() {
        // `ended_at is null`: a replayed answer never reopens an ended call.
        sqlx::query(
            "update call_logs c set status = 'in_progress', answered_at = a.at, codec = a.codec, sip_code = 200
               from unnest($1::uuid[], $2::timestamptz[], $3::text[]) as a(id, at, codec)
              where c.id = a.id and c.ended_at is null",
        )
        .bind(&a_id)
        .bind(&a_at)
        .bind(&a_codec)
        .execute(&mut *c)
        .await?;
    }
    if !ended.id.is_empty() {
        sqlx::query(
            "update call_logs c set status = e.status, sip_code = coalesce(e.sip_code, c.sip_code),
                    hangup_by = e.hangup_by, hangup_reason = e.reason, ended_at = e.at, duration_ms = e.duration_ms
               from unnest($1::uuid[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::timestamptz[], $7::int8[])
                    as e(id, status, sip_code, hangup_by, reason, at, duration_ms)
              where c.id = e.id",
        )
        .bind(&ended.id)
        .bind(&ended.status)
        .bind(&ended.sip_code)
        .bind(&ended.hangup_by)
        .bind(&ended.reason)
        .bind(&ended.at)
        .bind(&ended.duration_ms)
        .execute(&mut *c)
        .await?;
    }
    if !f_id.is_empty() {
        sqlx::query(
            "update call_logs c set latency = f.latency, cost = f.cost::numeric
               from unnest($1::uuid[], $2::jsonb[], $3::float8[]) as f(id, latency, cost)
              where c.id = f.id",
        )
        .bind(&f_id)
        .bind(&f_latency)
        .bind(&f_cost)
        .execute(&mut *c)
        .await?;
    }
    if !s_id.is_empty() {
        sqlx::query(
            "update agent_sessions s set status = e.status, ended_at = e.at, summary = coalesce(e.summary, s.summary)
               from unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[]) as e(id, status, at, summary)
              where s.id = e.id",
        )
        .bind(&s_id)
        .bind(&s_status)
        .bind(&s_at)
        .bind(&s_summary)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

#[derive(Default)]
struct EndRows {
    id: Vec<Uuid>,
    status: Vec<String>,
    sip_code: Vec<Option<i32>>,
    hangup_by: Vec<Option<String>>,
    reason: Vec<String>,
    at: Vec<DateTime<Utc>>,
    duration_ms: Vec<Option<i64>>,
}

/// A month's additions to one workspace's `workspace_usage` row.
#[derive(Default)]
struct Additions {
    messages: i64,
    tokens: i64,
    call_seconds: i64,
    stt_seconds: f64,
    tts_characters: i64,
}

/// Usage rows, then the conversation counts and `workspace_usage`
/// additions whose receipts are new (one receipt statement for both).
async fn usage_and_counters(c: &mut PgConnection, batch: &[Record]) -> Result<(), sqlx::Error> {
    let usage: Vec<&UsageRecord> = batch
        .iter()
        .filter_map(|r| match r {
            Record::Usage(u) => Some(u),
            _ => None,
        })
        .collect();
    if !usage.is_empty() {
        let ids: Vec<Uuid> = usage.iter().map(|u| u.id).collect();
        let workspaces: Vec<Uuid> = usage.iter().map(|u| u.workspace_id).collect();
        let sessions: Vec<Option<Uuid>> = usage.iter().map(|u| u.session_id).collect();
        let calls: Vec<Option<Uuid>> = usage.iter().map(|u| u.call_log_id).collect();
        let kinds: Vec<&str> = usage.iter().map(|u| u.kind.as_str()).collect();
        let quantities: Vec<f64> = usage.iter().map(|u| u.quantity).collect();
        let unit_costs: Vec<f64> = usage.iter().map(|u| u.unit_cost).collect();
        let models: Vec<Option<&str>> = usage.iter().map(|u| u.model.as_deref()).collect();
        sqlx::query(
            "insert into usage_logs (id, workspace_id, session_id, call_log_id, kind, quantity, unit_cost, cost, model)
             select u.id, u.workspace_id, u.session_id, u.call_log_id, u.kind, u.quantity::numeric,
                    u.unit_cost::numeric, (u.quantity * u.unit_cost)::numeric, u.model
               from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::float8[], $7::float8[], $8::text[])
                    as u(id, workspace_id, session_id, call_log_id, kind, quantity, unit_cost, model)
             on conflict (id) do nothing",
        )
        .bind(&ids)
        .bind(&workspaces)
        .bind(&sessions)
        .bind(&calls)
        .bind(&kinds)
        .bind(&quantities)
        .bind(&unit_costs)
        .bind(&models)
        .execute(&mut *c)
        .await?;
    }
    let receipts: Vec<Uuid> = batch
        .iter()
        .filter_map(|r| match r {
            Record::CountConversation { id, .. } | Record::AddWorkspaceUsage { id, .. } => {
                Some(*id)
            }
            _ => None,
        })
        .collect();
    if receipts.is_empty() {
        return Ok(());
    }
    let new: Vec<Uuid> = sqlx::query_scalar(
        "insert into record_receipts (id) select unnest($1::uuid[]) on conflict do nothing returning id",
    )
    .bind(&receipts)
    .fetch_all(&mut *c)
    .await?;
    let new: std::collections::HashSet<Uuid> = new.into_iter().collect();
    // Workspaces in first-seen order: the same batch locks rows in the same order.
    let mut conversations: Vec<Uuid> = Vec::new();
    let mut additions: Vec<(Uuid, Additions)> = Vec::new();
    let mut slot: HashMap<Uuid, usize> = HashMap::new();
    for record in batch {
        match record {
            Record::CountConversation { id, workspace_id } if new.contains(id) => {
                conversations.push(*workspace_id);
            }
            Record::AddWorkspaceUsage {
                id,
                workspace_id,
                messages,
                tokens,
                call_seconds,
                stt_seconds,
                tts_characters,
            } if new.contains(id) => {
                let i = *slot.entry(*workspace_id).or_insert_with(|| {
                    additions.push((*workspace_id, Additions::default()));
                    additions.len() - 1
                });
                let a = &mut additions[i].1;
                a.messages += messages;
                a.tokens += tokens;
                a.call_seconds += call_seconds;
                a.stt_seconds += stt_seconds;
                a.tts_characters += tts_characters;
            }
            _ => {}
        }
    }
    if !conversations.is_empty() {
        sqlx::query("select increment_conversation_count(w) from unnest($1::uuid[]) as w")
            .bind(&conversations)
            .execute(&mut *c)
            .await?;
    }
    for (workspace_id, a) in additions {
        sqlx::query(
            "insert into workspace_usage (workspace_id, month, messages, tokens_used, call_seconds, stt_seconds, tts_characters)
             values ($1, current_usage_month(), $2, $3, $4, $5::float8::numeric, $6)
             on conflict (workspace_id, month) do update set
               messages = workspace_usage.messages + excluded.messages,
               tokens_used = workspace_usage.tokens_used + excluded.tokens_used,
               call_seconds = workspace_usage.call_seconds + excluded.call_seconds,
               stt_seconds = workspace_usage.stt_seconds + excluded.stt_seconds,
               tts_characters = workspace_usage.tts_characters + excluded.tts_characters",
        )
        .bind(workspace_id)
        .bind(a.messages)
        .bind(a.tokens)
        .bind(a.call_seconds)
        .bind(a.stt_seconds)
        .bind(a.tts_characters)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
