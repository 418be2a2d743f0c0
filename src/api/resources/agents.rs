//! `agents`: the agent's brain (model, instructions, knowledge) and voice
//! (STT/TTS, barge-in, timeouts, recording, transfer target).

use serde_json::{Map, Value};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::resource::{dflt, eq, opt, req, Kind, Resource, READ_WRITE};
use crate::api::types::Role;

pub const DOMAINS: &[&str] = &[
    "healthcare",
    "retail",
    "finance",
    "realestate",
    "hospitality",
    "other",
];
pub const STATUSES: &[&str] = &["draft", "live"];
/// What the agent does when an answering machine picks up.
pub const AMD_ACTIONS: &[&str] = &["hangup", "voicemail"];

/// Refuses an agent that would leave a voicemail with nothing to say (on
/// create, or after a patch of row `id`).
pub async fn check_voicemail(
    tx: &mut Transaction<'static, Postgres>,
    ws: Uuid,
    id: Option<Uuid>,
    values: &Map<String, Value>,
) -> Result<(), ApiError> {
    let (mut action, mut message) = ("hangup".to_string(), None::<String>);
    if let Some(id) = id {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "select amd_action, voicemail_message from agents where workspace_id = $1 and id = $2",
        )
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            (action, message) = row;
        }
    }
    if let Some(v) = values.get("amd_action").and_then(Value::as_str) {
        action = v.to_string();
    }
    if let Some(v) = values.get("voicemail_message") {
        message = v.as_str().map(str::to_string);
    }
    if action == "voicemail" && message.as_deref().is_none_or(|m| m.trim().is_empty()) {
        return Err(ApiError::Unprocessable {
            message:
                "amd_action voicemail needs a voicemail_message: the words left after the beep"
                    .into(),
            field: Some("voicemail_message".into()),
        });
    }
    Ok(())
}

pub static AGENTS: Resource = Resource {
    path: "agents",
    table: "agents",
    summary: "Agents with their LLM and voice settings",
    fields: &[
        req("name", Kind::Text(200)),
        opt("description", Kind::Text(2000)),
        dflt("domain", Kind::Enum(DOMAINS)),
        dflt("status", Kind::Enum(STATUSES)),
        opt("persona_id", Kind::Ref("personas")),
        dflt("goals", Kind::TextList(50, 500)),
        dflt("channels", Kind::TextList(8, 20)),
        opt("llm_model_id", Kind::GlobalRef("llm_models")),
        opt("instructions", Kind::Text(20000)),
        dflt("temperature", Kind::Num(0.0, 2.0)),
        dflt("max_tokens", Kind::Int(1, 32768)),
        dflt("context_window_size", Kind::Int(256, 2_000_000)),
        dflt("stt_provider", Kind::Text(50)),
        opt("stt_language", Kind::Text(20)),
        dflt("tts_provider", Kind::Text(50)),
        opt("tts_voice", Kind::Text(100)),
        dflt("tts_speed", Kind::Num(0.25, 4.0)),
        dflt("interruptible", Kind::Bool),
        dflt("silence_timeout_ms", Kind::Int(500, 600_000)),
        dflt("max_call_seconds", Kind::Int(10, 86_400)),
        dflt("recording_enabled", Kind::Bool),
        opt("transfer_to", Kind::TransferTarget),
        // Answering-machine detection on outbound calls: on a machine,
        // hang up or leave `voicemail_message` after the beep.
        dflt("amd_enabled", Kind::Bool),
        dflt("amd_action", Kind::Enum(AMD_ACTIONS)),
        opt("voicemail_message", Kind::Text(2000)),
        dflt(
            "transfer_mode",
            Kind::Enum(crate::domain::TransferMode::ALL),
        ),
        opt("transfer_failed_message", Kind::Text(1000)),
        dflt("config", Kind::Object),
    ],
    filters: &[
        eq("status", Kind::Enum(STATUSES)),
        eq("domain", Kind::Enum(DOMAINS)),
        eq("persona_id", Kind::Ref("personas")),
    ],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};
