//! Each record kind's SQL. A batch is one transaction, applied in order.
//! Every statement is safe to repeat (see `Record`): inserts by the
//! record's own id with `on conflict do nothing`, an answer that cannot
//! overwrite an end, counters that add once per receipt.

use sqlx::{PgConnection, PgPool};

use super::kinds::Record;

/// Writes `batch` in one transaction, in order.
pub async fn apply_batch(pool: &PgPool, batch: &[Record]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for record in batch {
        apply(&mut tx, record).await?;
    }
    tx.commit().await
}

/// Receipts older than this are forgotten at start: no spill file lives
/// that long.
pub async fn prune_receipts(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r =
        sqlx::query("delete from record_receipts where applied_at < now() - interval '30 days'")
            .execute(pool)
            .await?;
    Ok(r.rows_affected())
}

/// True the first time `id` is seen: the counter it guards may add.
async fn first_receipt(c: &mut PgConnection, id: uuid::Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("insert into record_receipts (id) values ($1) on conflict do nothing")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected() == 1)
}

async fn apply(c: &mut PgConnection, record: &Record) -> Result<(), sqlx::Error> {
    match record {
        Record::CallLog { start: s, end } => {
            let status = end.as_ref().map_or("ringing", |e| e.status.as_str());
            sqlx::query(
                "insert into call_logs (id, workspace_id, agent_id, phone_number_id, sip_trunk_id, direction, sip_call_id, \
                 from_number, to_number, status, sip_code, hangup_by, hangup_reason, started_at, ended_at, duration_ms, node_id, diverted_from) \
                 values ($1, $2, $3, $4, $5, $17, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $18) \
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
            .bind(end.as_ref().and_then(|e| e.sip_code).map(i32::from))
            .bind(end.as_ref().and_then(|e| e.hangup_by).map(|b| b.as_str()))
            .bind(end.as_ref().map(|e| e.reason.as_str()))
            .bind(s.started_at)
            .bind(end.as_ref().map(|e| e.at))
            .bind(end.as_ref().and_then(|e| e.duration_ms))
            .bind(&s.node_id)
            .bind(if s.direction.is_empty() { "inbound" } else { s.direction.as_str() })
            .bind(s.diverted_from.as_deref())
            .execute(&mut *c)
            .await?;
        }
        Record::CallAnswered {
            call_log_id,
            codec,
            at,
        } => {
            // `ended_at is null`: a replayed answer never reopens an ended call.
            sqlx::query(
                "update call_logs set status = 'in_progress', answered_at = $2, codec = $3, sip_code = 200 \
                 where id = $1 and ended_at is null",
            )
            .bind(call_log_id)
            .bind(at)
            .bind(codec)
            .execute(&mut *c)
            .await?;
        }
        Record::CallEnded { call_log_id, end } => {
            sqlx::query(
                "update call_logs set status = $2, sip_code = coalesce($3, sip_code), hangup_by = $4, hangup_reason = $5, \
                 ended_at = $6, duration_ms = $7 where id = $1",
            )
            .bind(call_log_id)
            .bind(&end.status)
            .bind(end.sip_code.map(i32::from))
            .bind(end.hangup_by.map(|b| b.as_str()))
            .bind(&end.reason)
            .bind(end.at)
            .bind(end.duration_ms)
            .execute(&mut *c)
            .await?;
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
            sqlx::query(
                "insert into agent_sessions (id, workspace_id, agent_id, channel, status, caller, started_at, metadata)
                 values ($1, $2, $3, $4, 'active', $5, $6, jsonb_build_object('call_log_id', $7::uuid))
                 on conflict (id) do nothing",
            )
            .bind(id)
            .bind(workspace_id)
            .bind(agent_id)
            .bind(channel)
            .bind(caller)
            .bind(at)
            .bind(call_log_id)
            .execute(&mut *c)
            .await?;
            if let Some(call_log_id) = call_log_id {
                sqlx::query("update call_logs set session_id = $1 where id = $2")
                    .bind(id)
                    .bind(call_log_id)
                    .execute(&mut *c)
                    .await?;
            }
        }
        Record::Message(m) => {
            sqlx::query(
                "insert into messages (id, workspace_id, session_id, role, content, interrupted, stt_ms,
                                       llm_first_token_ms, tts_first_byte_ms, tokens_in, tokens_out, created_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) on conflict (id) do nothing",
            )
            .bind(m.id)
            .bind(m.workspace_id)
            .bind(m.session_id)
            .bind(&m.role)
            .bind(&m.content)
            .bind(m.interrupted)
            .bind(m.stt_ms)
            .bind(m.llm_first_token_ms)
            .bind(m.tts_first_byte_ms)
            .bind(m.tokens_in)
            .bind(m.tokens_out)
            .bind(m.at)
            .execute(&mut *c)
            .await?;
        }
        Record::EndSession {
            id,
            status,
            summary,
            at,
        } => {
            sqlx::query(
                "update agent_sessions set status = $2, ended_at = $3, summary = coalesce($4, summary) where id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(at)
            .bind(summary)
            .execute(&mut *c)
            .await?;
        }
        Record::CallTransfer {
            call_log_id,
            target,
            mode,
            outcome,
            sip_code,
        } => {
            sqlx::query(
                "update call_logs set transfer_target = $2, transfer_mode = $3, transfer_outcome = $4, \
                 transfer_sip_code = $5 where id = $1",
            )
            .bind(call_log_id)
            .bind(target)
            .bind(mode)
            .bind(outcome)
            .bind(sip_code.map(i32::from))
            .execute(&mut *c)
            .await?;
        }
        Record::CallFigures {
            call_log_id,
            latency,
            cost,
        } => {
            sqlx::query(
                "update call_logs set latency = $2, cost = $3::float8::numeric where id = $1",
            )
            .bind(call_log_id)
            .bind(latency)
            .bind(cost)
            .execute(&mut *c)
            .await?;
        }
        Record::AmdResult {
            call_log_id,
            result,
            decision_ms,
        } => {
            sqlx::query(
                "update call_logs set amd_result = $2, amd_decision_ms = $3::int8::int4 where id = $1",
            )
            .bind(call_log_id)
            .bind(result)
            .bind((*decision_ms).clamp(0, i64::from(i32::MAX)))
            .execute(&mut *c)
            .await?;
        }
        Record::Usage(u) => {
            sqlx::query(
                "insert into usage_logs (id, workspace_id, session_id, call_log_id, kind, quantity, unit_cost, cost, model)
                 values ($8, $1, $2, $3, $4, $5::float8::numeric, $6::float8::numeric, ($5 * $6)::float8::numeric, $7)
                 on conflict (id) do nothing",
            )
            .bind(u.workspace_id)
            .bind(u.session_id)
            .bind(u.call_log_id)
            .bind(&u.kind)
            .bind(u.quantity)
            .bind(u.unit_cost)
            .bind(&u.model)
            .bind(u.id)
            .execute(&mut *c)
            .await?;
        }
        Record::CountConversation { id, workspace_id } => {
            if first_receipt(c, *id).await? {
                sqlx::query("select increment_conversation_count($1)")
                    .bind(workspace_id)
                    .execute(&mut *c)
                    .await?;
            }
        }
        Record::AddWorkspaceUsage {
            id,
            workspace_id,
            messages,
            tokens,
            call_seconds,
            stt_seconds,
            tts_characters,
        } => {
            if first_receipt(c, *id).await? {
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
                .bind(messages)
                .bind(tokens)
                .bind(call_seconds)
                .bind(stt_seconds)
                .bind(tts_characters)
                .execute(&mut *c)
                .await?;
            }
        }
        Record::Recording {
            id,
            workspace_id,
            call_log_id,
            storage_path,
            duration_ms,
            size_bytes,
        } => {
            sqlx::query(
                "insert into call_recordings (id, workspace_id, call_log_id, storage_path, format, duration_ms, size_bytes)
                 values ($6, $1, $2, $3, 'wav', $4, $5) on conflict (id) do nothing",
            )
            .bind(workspace_id)
            .bind(call_log_id)
            .bind(storage_path)
            .bind(duration_ms)
            .bind(size_bytes)
            .bind(id)
            .execute(&mut *c)
            .await?;
        }
        Record::Lead {
            id,
            workspace_id,
            agent_id,
            session_id,
            name,
            email,
            phone,
            metadata,
        } => {
            sqlx::query(
                "insert into leads (id, workspace_id, agent_id, session_id, name, email, phone, channel, metadata)
                 values ($7, $1, $2, $3, $4, $5, $6, 'phone', $8) on conflict (id) do nothing",
            )
            .bind(workspace_id)
            .bind(agent_id)
            .bind(session_id)
            .bind(name)
            .bind(email)
            .bind(phone)
            .bind(id)
            .bind(metadata)
            .execute(&mut *c)
            .await?;
        }
    }
    Ok(())
}
