//! `workspace_llm_config`: credentials for networked providers. The API key
//! is encrypted at rest and write-only (`api_key_set` in responses).

use crate::api::resource::{dflt, eq, opt, req, Kind, Resource, READ_WRITE};
use crate::api::types::Role;

pub const PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "groq",
    "elevenlabs",
    "deepgram",
    "piper",
    "ollama",
    "vllm",
    "llamacpp",
    "custom",
];

pub static PROVIDER_CONFIGS: Resource = Resource {
    path: "provider-configs",
    table: "workspace_llm_config",
    summary: "Provider credentials (LLM, STT, TTS, embeddings); api_key is write-only",
    fields: &[
        req("provider", Kind::Enum(PROVIDERS)),
        opt("base_url", Kind::Url),
        opt("api_key", Kind::Secret),
        dflt("is_active", Kind::Bool),
    ],
    filters: &[
        eq("provider", Kind::Enum(PROVIDERS)),
        eq("is_active", Kind::Bool),
    ],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};
