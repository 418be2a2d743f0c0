//! `call_logs` and `call_recordings`: written by the runtime, read here.
//! The recording's audio is downloaded by `api::calls`.

use crate::api::resource::{eq, out, Filter, Kind, Op, Resource, READ_ONLY};
use crate::api::types::Role;

use crate::records::{CALL_DIRECTIONS as DIRECTIONS, CALL_STATUSES as STATUSES};

const AMD_RESULTS: &[&str] = &["human", "machine", "unknown"];

pub static CALL_LOGS: Resource = Resource {
    path: "call-logs",
    table: "call_logs",
    summary: "Call logs (filter by agent, number, status, direction, date range)",
    fields: &[
        out("agent_id", Kind::Id),
        out("phone_number_id", Kind::Id),
        out("sip_trunk_id", Kind::Id),
        out("session_id", Kind::Id),
        out("direction", Kind::Enum(DIRECTIONS)),
        out("sip_call_id", Kind::Text(500)),
        out("from_number", Kind::Text(64)),
        out("to_number", Kind::Text(64)),
        out("status", Kind::Enum(STATUSES)),
        out("sip_code", Kind::Int(100, 699)),
        out("hangup_by", Kind::Text(20)),
        out("hangup_reason", Kind::Text(500)),
        out("codec", Kind::Text(20)),
        out("started_at", Kind::Time),
        out("answered_at", Kind::Time),
        out("ended_at", Kind::Time),
        out("duration_ms", Kind::Int(0, i64::MAX)),
        out("latency", Kind::Object),
        out("cost", Kind::Num(0.0, f64::MAX)),
        out("node_id", Kind::Text(200)),
        // Answering-machine detection on outbound calls: human, machine or
        // unknown, decided this many ms after the answer.
        out("amd_result", Kind::Enum(AMD_RESULTS)),
        out("amd_decision_ms", Kind::Int(0, i64::MAX)),
        // A forwarded call's diverting number (the Diversion header).
        out("diverted_from", Kind::Text(64)),
    ],
    filters: &[
        eq("agent_id", Kind::Id),
        eq("phone_number_id", Kind::Id),
        eq("sip_trunk_id", Kind::Id),
        eq("status", Kind::Enum(STATUSES)),
        eq("direction", Kind::Enum(DIRECTIONS)),
        eq("from_number", Kind::Text(64)),
        eq("to_number", Kind::Text(64)),
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
    writes: READ_ONLY,
    write_role: Role::Owner,
    hidden: &[],
    children: &[],
    order: "started_at",
};

pub static CALL_RECORDINGS: Resource = Resource {
    path: "call-recordings",
    table: "call_recordings",
    summary: "Call recordings (metadata; GET …/call-recordings/{id}/audio downloads the WAV)",
    fields: &[
        out("call_log_id", Kind::Id),
        out("format", Kind::Text(20)),
        out("duration_ms", Kind::Int(0, i64::MAX)),
        out("size_bytes", Kind::Int(0, i64::MAX)),
    ],
    filters: &[eq("call_log_id", Kind::Id)],
    writes: READ_ONLY,
    write_role: Role::Owner,
    hidden: &["storage_path"],
    children: &[],
    order: "created_at",
};
