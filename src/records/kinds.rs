//! What a call writes, as values: one enum of record kinds, each a row to
//! insert or a change to apply, carrying its own ids and timestamps so a
//! retried or replayed record writes the same row at the time it happened.
//! Records serialise as one JSON object each (the spill file's lines).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who ended a call (`call_logs.hangup_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HangupBy {
    Caller,
    Agent,
    System,
}

impl HangupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupBy::Caller => "caller",
            HangupBy::Agent => "agent",
            HangupBy::System => "system",
        }
    }
}

/// `call_logs.direction` values (the schema's check constraint).
pub const CALL_DIRECTIONS: &[&str] = crate::domain::CallDirection::ALL;
/// `call_logs.status` values (the schema's check constraint).
pub const CALL_STATUSES: &[&str] = crate::domain::CallStatus::ALL;

/// A `call_logs` row as routing decides it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallLogStart {
    pub id: Uuid,
    /// `inbound`, `outbound` or `web` (empty in older spill files: inbound).
    #[serde(default)]
    pub direction: String,
    pub workspace_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub phone_number_id: Option<Uuid>,
    pub sip_trunk_id: Option<Uuid>,
    pub sip_call_id: String,
    pub from_number: String,
    pub to_number: String,
    pub node_id: String,
    pub started_at: DateTime<Utc>,
    /// A forwarded call's diverting number (absent in older spill files).
    #[serde(default)]
    pub diverted_from: Option<String>,
}

/// How a call ended (`status`, `sip_code`, `hangup_by`, `hangup_reason`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEnd {
    pub status: String,
    pub sip_code: Option<u16>,
    pub hangup_by: Option<HangupBy>,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub session_id: Uuid,
    pub role: String,
    pub content: String,
    pub interrupted: bool,
    pub stt_ms: Option<i32>,
    pub llm_first_token_ms: Option<i32>,
    pub tts_first_byte_ms: Option<i32>,
    pub tokens_in: Option<i32>,
    pub tokens_out: Option<i32>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Chosen when queued, so a retried insert cannot count twice.
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub session_id: Option<Uuid>,
    pub call_log_id: Option<Uuid>,
    pub kind: String,
    pub quantity: f64,
    pub unit_cost: f64,
    pub model: Option<String>,
}

/// One write. Applying a record twice, even after later records, leaves
/// the same rows as applying it once (`on conflict do nothing`, updates
/// that cannot undo a later state, counters guarded by a receipt): the
/// spill file may hold a record the database already has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The call's `call_logs` row (`ringing`), or the whole row of a call
    /// refused or cancelled before it was answered (`end` given).
    CallLog {
        start: CallLogStart,
        end: Option<CallEnd>,
    },
    CallAnswered {
        call_log_id: Uuid,
        codec: String,
        at: DateTime<Utc>,
    },
    CallEnded {
        call_log_id: Uuid,
        end: CallEnd,
    },
    StartSession {
        id: Uuid,
        workspace_id: Uuid,
        agent_id: Uuid,
        channel: String,
        caller: String,
        call_log_id: Option<Uuid>,
        at: DateTime<Utc>,
    },
    Message(MessageRecord),
    EndSession {
        id: Uuid,
        status: String,
        summary: Option<String>,
        at: DateTime<Utc>,
    },
    /// A transfer's target and outcome onto the call's `call_logs` row
    /// (`transferred`, `refused`, `failed`, `timeout`, `busy`,
    /// `no_answer`), with the SIP code that decided it.
    CallTransfer {
        call_log_id: Uuid,
        target: String,
        /// `blind` (REFER) or `warm` (we call the person, then bridge).
        mode: String,
        outcome: String,
        sip_code: Option<u16>,
    },
    /// Per-turn latency figures and cost onto the call's `call_logs` row.
    CallFigures {
        call_log_id: Uuid,
        latency: serde_json::Value,
        cost: f64,
    },
    /// An outbound call's answering-machine verdict (`human`, `machine`,
    /// `unknown`) and how long after the answer it came.
    AmdResult {
        call_log_id: Uuid,
        result: String,
        decision_ms: i64,
    },
    Usage(UsageRecord),
    /// `increment_conversation_count` for the month of the call; `id` is
    /// the receipt that makes it count once.
    CountConversation {
        id: Uuid,
        workspace_id: Uuid,
    },
    /// Adds to the month's `workspace_usage` row, once per `id`.
    AddWorkspaceUsage {
        id: Uuid,
        workspace_id: Uuid,
        messages: i64,
        tokens: i64,
        call_seconds: i64,
        stt_seconds: f64,
        tts_characters: i64,
    },
    Recording {
        id: Uuid,
        workspace_id: Uuid,
        call_log_id: Uuid,
        storage_path: String,
        duration_ms: i64,
        size_bytes: i64,
    },
    Lead {
        id: Uuid,
        workspace_id: Uuid,
        agent_id: Uuid,
        session_id: Uuid,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        /// Where the lead came from (the call, its transcript).
        metadata: serde_json::Value,
    },
}

impl Record {
    /// The kind's name, as in the spill file (`"record"`), for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::CallLog { .. } => "call_log",
            Record::CallAnswered { .. } => "call_answered",
            Record::CallEnded { .. } => "call_ended",
            Record::StartSession { .. } => "start_session",
            Record::Message(_) => "message",
            Record::EndSession { .. } => "end_session",
            Record::CallTransfer { .. } => "call_transfer",
            Record::CallFigures { .. } => "call_figures",
            Record::AmdResult { .. } => "amd_result",
            Record::Usage(_) => "usage",
            Record::CountConversation { .. } => "count_conversation",
            Record::AddWorkspaceUsage { .. } => "add_workspace_usage",
            Record::Recording { .. } => "recording",
            Record::Lead { .. } => "lead",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_line_and_reads_back_the_same() {
        let at = Utc::now();
        let records = [
            Record::CallLog {
                start: CallLogStart {
                    id: Uuid::new_v4(),
                    direction: "inbound".into(),
                    workspace_id: Uuid::new_v4(),
                    agent_id: None,
                    phone_number_id: Some(Uuid::new_v4()),
                    sip_trunk_id: None,
                    sip_call_id: "a\nb\"c".into(),
                    from_number: "+1".into(),
                    to_number: "+2".into(),
                    node_id: "n".into(),
                    started_at: at,
                    diverted_from: Some("+15550001111".into()),
                },
                end: Some(CallEnd {
                    status: "busy".into(),
                    sip_code: Some(486),
                    hangup_by: Some(HangupBy::System),
                    reason: "Busy Here".into(),
                    at,
                    duration_ms: None,
                }),
            },
            Record::CallTransfer {
                call_log_id: Uuid::new_v4(),
                target: "tel:+15555550199".into(),
                mode: "blind".into(),
                outcome: "refused".into(),
                sip_code: Some(603),
            },
            Record::CallFigures {
                call_log_id: Uuid::new_v4(),
                latency: serde_json::json!({"turns": [{"stt_ms": 12}]}),
                cost: 0.25,
            },
            Record::CountConversation {
                id: Uuid::new_v4(),
                workspace_id: Uuid::new_v4(),
            },
            // A field named like the tag would clash with it.
            Record::Usage(UsageRecord {
                id: Uuid::new_v4(),
                workspace_id: Uuid::new_v4(),
                session_id: None,
                call_log_id: None,
                kind: "call_seconds".into(),
                quantity: 3.0,
                unit_cost: 0.5,
                model: Some("m".into()),
            }),
        ];
        for r in records {
            let line = serde_json::to_string(&r).expect("serialise");
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains(&format!("\"record\":\"{}\"", r.kind())));
            let back: Record = serde_json::from_str(&line).expect("read back");
            assert_eq!(back, r);
        }
    }
}
