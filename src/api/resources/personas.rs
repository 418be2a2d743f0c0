//! `personas`: tone, greeting, fallback and escalation policy of agents.

use crate::api::resource::{dflt, eq, opt, req, Kind, Resource, READ_WRITE};
use crate::api::types::Role;

const TONES: &[&str] = &["professional", "friendly", "casual", "formal"];
const POLICIES: &[&str] = crate::domain::EscalationPolicy::ALL;

pub static PERSONAS: Resource = Resource {
    path: "personas",
    table: "personas",
    summary: "Personas: tone, greeting, fallback message and escalation policy",
    fields: &[
        req("name", Kind::Text(200)),
        dflt("tone", Kind::Enum(TONES)),
        opt("greeting", Kind::Text(2000)),
        opt("fallback_message", Kind::Text(2000)),
        dflt("escalation_policy", Kind::Enum(POLICIES)),
        opt("instructions", Kind::Text(20000)),
    ],
    filters: &[eq("tone", Kind::Enum(TONES))],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};
