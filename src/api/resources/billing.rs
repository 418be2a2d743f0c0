//! Billing and usage, read-only through the API: subscriptions, the monthly
//! usage rows, the usage ledger and invoices.

use crate::api::resource::{eq, out, Filter, Kind, Op, Resource, READ_ONLY};
use crate::api::types::Role;

const SUB_STATUSES: &[&str] = &[
    "trialing", "active", "past_due", "canceled", "unpaid", "paused",
];
const USAGE_KINDS: &[&str] = &[
    "llm_tokens_in",
    "llm_tokens_out",
    "stt_seconds",
    "tts_characters",
    "call_seconds",
];

pub static SUBSCRIPTIONS: Resource = Resource {
    path: "subscriptions",
    table: "workspace_subscriptions",
    summary: "The workspace's subscriptions (read-only)",
    fields: &[
        out("plan_id", Kind::Id),
        out("stripe_subscription_id", Kind::Text(200)),
        out("status", Kind::Enum(SUB_STATUSES)),
        out("current_period_start", Kind::Time),
        out("current_period_end", Kind::Time),
    ],
    filters: &[eq("status", Kind::Enum(SUB_STATUSES))],
    writes: READ_ONLY,
    write_role: Role::Owner,
    hidden: &[],
    children: &[],
    order: "created_at",
};

pub static USAGE: Resource = Resource {
    path: "usage",
    table: "workspace_usage",
    summary: "Monthly usage totals (read-only)",
    fields: &[
        out("month", Kind::Text(10)),
        out("conversations", Kind::Int(0, i64::MAX)),
        out("messages", Kind::Int(0, i64::MAX)),
        out("tokens_used", Kind::Int(0, i64::MAX)),
        out("call_seconds", Kind::Int(0, i64::MAX)),
        out("stt_seconds", Kind::Num(0.0, f64::MAX)),
        out("tts_characters", Kind::Int(0, i64::MAX)),
    ],
    filters: &[],
    writes: READ_ONLY,
    write_role: Role::Owner,
    hidden: &[],
    children: &[],
    order: "month",
};

pub static USAGE_LOGS: Resource = Resource {
    path: "usage-logs",
    table: "usage_logs",
    summary: "The usage ledger (read-only)",
    fields: &[
        out("session_id", Kind::Id),
        out("call_log_id", Kind::Id),
        out("kind", Kind::Enum(USAGE_KINDS)),
        out("quantity", Kind::Num(0.0, f64::MAX)),
        out("unit_cost", Kind::Num(0.0, f64::MAX)),
        out("cost", Kind::Num(0.0, f64::MAX)),
        out("model", Kind::Text(200)),
    ],
    filters: &[
        eq("kind", Kind::Enum(USAGE_KINDS)),
        eq("call_log_id", Kind::Id),
        eq("session_id", Kind::Id),
        Filter {
            param: "since",
            column: "created_at",
            op: Op::Gte,
            kind: Kind::Time,
        },
        Filter {
            param: "until",
            column: "created_at",
            op: Op::Lt,
            kind: Kind::Time,
        },
    ],
    writes: READ_ONLY,
    write_role: Role::Owner,
    hidden: &[],
    children: &[],
    order: "created_at",
};

pub static INVOICES: Resource = Resource {
    path: "invoices",
    table: "billing_invoices",
    summary: "Invoices (read-only)",
    fields: &[
        out("stripe_invoice_id", Kind::Text(200)),
        out("amount", Kind::Num(0.0, f64::MAX)),
        out("status", Kind::Enum(&["paid", "pending", "failed"])),
        out("invoice_url", Kind::Text(2048)),
    ],
    filters: &[eq("status", Kind::Enum(&["paid", "pending", "failed"]))],
    writes: READ_ONLY,
    write_role: Role::Owner,
    hidden: &[],
    children: &[],
    order: "created_at",
};
