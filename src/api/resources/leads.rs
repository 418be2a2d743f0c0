//! `leads`: contacts captured by agents (or entered by staff).

use crate::api::resource::{dflt, eq, opt, Kind, Resource, READ_WRITE};
use crate::api::types::Role;

pub static LEADS: Resource = Resource {
    path: "leads",
    table: "leads",
    summary: "Leads captured by agents",
    fields: &[
        opt("agent_id", Kind::Ref("agents")),
        opt("session_id", Kind::Ref("agent_sessions")),
        opt("name", Kind::Text(200)),
        opt("email", Kind::Text(320)),
        opt("phone", Kind::Text(32)),
        opt("channel", Kind::Text(20)),
        dflt("metadata", Kind::Object),
    ],
    filters: &[
        eq("agent_id", Kind::Ref("agents")),
        eq("session_id", Kind::Ref("agent_sessions")),
    ],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};
