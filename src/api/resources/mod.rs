//! The workspace resources served by the generic CRUD in `resource.rs`, one
//! module per resource (group), each a static description of its table.

pub mod agents;
pub mod billing;
pub mod calls;
pub mod channels;
pub mod leads;
pub mod personas;
pub mod providers;
pub mod sessions;
pub mod telephony;

use super::resource::Resource;

/// Rules that span fields of one row, checked in the write's transaction
/// before it runs (`id` is the patched row's).
pub async fn check_row_rules(
    r: &Resource,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ws: uuid::Uuid,
    id: Option<uuid::Uuid>,
    values: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), super::error::ApiError> {
    if r.table == telephony::SIP_TRUNKS.table {
        telephony::check_trunk_credentials(tx, ws, id, values).await?;
    }
    if r.table == agents::AGENTS.table {
        agents::check_voicemail(tx, ws, id, values).await?;
    }
    if r.table == telephony::PHONE_NUMBERS.table {
        telephony::check_number_free(tx, ws, id, values).await?;
    }
    Ok(())
}

/// Values a new row takes from a preset when its body left them out.
pub fn fill_presets(r: &Resource, values: &mut serde_json::Map<String, serde_json::Value>) {
    if r.table == telephony::SIP_TRUNKS.table {
        telephony::fill_provider_presets(values);
    }
}

/// Every generic resource, in the order the OpenAPI document lists them.
pub static ALL: &[&Resource] = &[
    &personas::PERSONAS,
    &agents::AGENTS,
    &channels::CHANNEL_CONFIGS,
    &channels::WEB_WIDGETS,
    &providers::PROVIDER_CONFIGS,
    &telephony::SIP_TRUNKS,
    &telephony::PHONE_NUMBERS,
    &leads::LEADS,
    &calls::CALL_LOGS,
    &calls::CALL_RECORDINGS,
    &sessions::SESSIONS,
    &billing::SUBSCRIPTIONS,
    &billing::USAGE,
    &billing::USAGE_LOGS,
    &billing::INVOICES,
];

/// Table names, longest first, for turning constraint names into fields.
pub const TABLES: &[&str] = &[
    "agent_web_widget_config",
    "workspace_subscriptions",
    "workspace_llm_config",
    "knowledge_sources",
    "knowledge_chunks",
    "billing_invoices",
    "channel_configs",
    "call_recordings",
    "workspace_usage",
    "agent_sessions",
    "phone_numbers",
    "pricing_plans",
    "user_roles",
    "sip_trunks",
    "llm_models",
    "usage_logs",
    "workspaces",
    "call_logs",
    "api_keys",
    "personas",
    "messages",
    "profiles",
    "agents",
    "leads",
];
