//! `agents`: the agent's brain (model, instructions, knowledge) and voice
//! (STT/TTS, barge-in, timeouts, recording, transfer target).

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
        dflt("transfer_mode", Kind::Enum(crate::domain::TransferMode::ALL)),
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
    order: "t.created_at desc",
};
