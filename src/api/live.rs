//! What the API needs of the runtime's live-call registry, as a trait so the
//! API does not own call state: list a workspace's calls, end one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::agent_runtime::registry::Registry;

/// A live call as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCallView {
    pub call_log_id: Uuid,
    pub agent_id: Uuid,
    pub from: String,
    pub to: String,
    pub started_at: DateTime<Utc>,
    /// e.g. `in_progress`.
    pub state: String,
    /// The node holding the call (in a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl From<crate::db::cluster::LiveRow> for LiveCallView {
    fn from(r: crate::db::cluster::LiveRow) -> LiveCallView {
        LiveCallView {
            call_log_id: r.call_log_id,
            agent_id: r.agent_id.unwrap_or_default(),
            from: r.from_number,
            to: r.to_number,
            started_at: r.started_at,
            state: "in_progress".into(),
            node_id: Some(r.node_id),
        }
    }
}

pub trait LiveCalls: Send + Sync {
    /// The live calls of one workspace (others' calls are never included).
    fn list(&self, workspace_id: Uuid) -> Vec<LiveCallView>;
    /// Asks a call of `workspace_id` to end; false when there is no such
    /// call in that workspace.
    fn hangup(&self, workspace_id: Uuid, call_id: Uuid) -> bool;
}

/// The runtime's registry serves the API directly.
impl LiveCalls for Registry {
    fn list(&self, workspace_id: Uuid) -> Vec<LiveCallView> {
        Registry::list(self, workspace_id)
            .into_iter()
            .map(|c| LiveCallView {
                call_log_id: c.call_log_id,
                agent_id: c.agent_id,
                from: c.from_number,
                to: c.to_number,
                started_at: c.started_at,
                state: "in_progress".into(),
                node_id: None,
            })
            .collect()
    }

    fn hangup(&self, workspace_id: Uuid, call_id: Uuid) -> bool {
        Registry::hangup(self, workspace_id, call_id, "api")
    }
}
