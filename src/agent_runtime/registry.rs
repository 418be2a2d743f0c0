//! The live-call registry: the only mutable state shared between the faces.
//! The call task registers itself on start and removes itself on exit; the
//! API lists a workspace's calls and can end one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

/// What the API sees of a live call.
#[derive(Debug, Clone, Serialize)]
pub struct LiveCallInfo {
    pub call_log_id: Uuid,
    pub session_id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub sip_call_id: String,
    pub from_number: String,
    pub to_number: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    pub started_at: DateTime<Utc>,
}

/// Requests to a running call from outside it.
#[derive(Debug, Clone)]
pub enum ControlRequest {
    /// End the call (API `DELETE …/calls/live/{id}`, node shutdown).
    Hangup { reason: String },
}

struct Entry {
    info: LiveCallInfo,
    control: mpsc::Sender<ControlRequest>,
}

#[derive(Clone, Default)]
pub struct Registry {
    calls: Arc<DashMap<Uuid, Entry>>,
}

/// Removes the call from the registry when the call task ends, on every path.
pub struct Registration {
    calls: Arc<DashMap<Uuid, Entry>>,
    id: Uuid,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.calls.remove(&self.id);
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(
        &self,
        info: LiveCallInfo,
        control: mpsc::Sender<ControlRequest>,
    ) -> Registration {
        let id = info.call_log_id;
        self.calls.insert(id, Entry { info, control });
        Registration {
            calls: self.calls.clone(),
            id,
        }
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The live calls of one workspace, oldest first.
    pub fn list(&self, workspace_id: Uuid) -> Vec<LiveCallInfo> {
        let mut calls: Vec<LiveCallInfo> = self
            .calls
            .iter()
            .filter(|e| e.info.workspace_id == workspace_id)
            .map(|e| e.info.clone())
            .collect();
        calls.sort_by_key(|c| c.started_at);
        calls
    }

    /// Asks a call of `workspace_id` to end. False when there is no such call
    /// (another workspace's call is "no such call" too).
    pub fn hangup(&self, workspace_id: Uuid, call_log_id: Uuid, reason: &str) -> bool {
        match self.calls.get(&call_log_id) {
            Some(entry) if entry.info.workspace_id == workspace_id => entry
                .control
                .try_send(ControlRequest::Hangup {
                    reason: reason.to_string(),
                })
                .is_ok(),
            _ => false,
        }
    }

    /// Asks every call to end (used at the end of a drain).
    pub fn hangup_all(&self, reason: &str) {
        for entry in self.calls.iter() {
            let _ = entry.control.try_send(ControlRequest::Hangup {
                reason: reason.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ws: Uuid) -> LiveCallInfo {
        LiveCallInfo {
            call_log_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            workspace_id: ws,
            agent_id: Uuid::new_v4(),
            sip_call_id: "abc".into(),
            from_number: "+15550001".into(),
            to_number: "+15555550100".into(),
            direction: "inbound",
            started_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn lists_per_workspace_and_hangs_up_only_its_own() {
        let reg = Registry::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (tx, mut rx) = mpsc::channel(4);
        let call_a = info(a);
        let id_a = call_a.call_log_id;
        let guard = reg.register(call_a, tx);
        assert_eq!(reg.list(a).len(), 1);
        assert!(reg.list(b).is_empty());
        assert!(
            !reg.hangup(b, id_a, "x"),
            "another workspace cannot end the call"
        );
        assert!(reg.hangup(a, id_a, "api"));
        assert!(matches!(
            rx.recv().await,
            Some(ControlRequest::Hangup { .. })
        ));
        drop(guard);
        assert!(reg.is_empty());
    }
}
