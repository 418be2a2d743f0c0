//! The SQL of the record kinds `batch` applies one by one (messages,
//! transfers, machine verdicts, recordings, leads). Every statement is safe
//! to repeat (see `Record`): inserts by the record's own id with
//! `on conflict do nothing`, updates of columns only that record writes.

use sqlx::{PgConnection, PgPool};

use super::kinds::Record;

/// Receipts older than this are forgotten at start: no spill file lives
/// that long.
pub async fn prune_receipts(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r =
        sqlx::query("delete from record_receipts where applied_at < now() - interval '30 days'")
            .execute(pool)
            .await?;
    Ok(r.rows_affected())
}

/// Applies one record of a kind `batch` has no grouped statement for.
pub(super) async fn apply(c: &mut PgConnection, record: &Record) -> Result<(), sqlx::Error> {
    match record {
        // Grouped kinds: one statement per batch (see `batch`).
        Record::CallLog { .. }
        | Record::StartSession { .. }
        | Record::CallAnswered { .. }
        | Record::CallEnded { .. }
        | Record::CallFigures { .. }
        | Record::EndSession { .. }
        | Record::Usage(_)
        | Record::CountConversation { .. }
        | Record::AddWorkspaceUsage { .. } => {}
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
