//! `agent_sessions` with their `messages` folded into the single view. The
//! runtime writes them; staff may edit `summary` and `internal_notes`.

use crate::api::resource::{eq, opt, out, Child, Filter, Kind, Op, Resource, PATCH_ONLY};
use crate::api::types::Role;

const CHANNELS: &[&str] = &["phone", "web", "text", "sms", "whatsapp"];
const STATUSES: &[&str] = &["active", "completed", "escalated", "failed"];

pub static SESSIONS: Resource = Resource {
    path: "sessions",
    table: "agent_sessions",
    summary: "Conversations (agent sessions); GET by id includes the messages",
    fields: &[
        out("agent_id", Kind::Id),
        out("channel", Kind::Enum(CHANNELS)),
        out("status", Kind::Enum(STATUSES)),
        out("caller", Kind::Text(200)),
        out("metadata", Kind::Object),
        opt("summary", Kind::Text(20000)),
        opt("internal_notes", Kind::Text(20000)),
        out("started_at", Kind::Time),
        out("ended_at", Kind::Time),
    ],
    filters: &[
        eq("agent_id", Kind::Id),
        eq("channel", Kind::Enum(CHANNELS)),
        eq("status", Kind::Enum(STATUSES)),
        Filter {
            param: "since",
            column: "started_at",
            op: Op::Gte,
            kind: Kind::Time,
        },
        Filter {
            param: "until",
            column: "started_at",
            op: Op::Lt,
            kind: Kind::Time,
        },
    ],
    writes: PATCH_ONLY,
    write_role: Role::Manager,
    hidden: &[],
    children: &[Child {
        key: "messages",
        table: "messages",
        foreign_key: "session_id",
    }],
    order: "started_at",
};
