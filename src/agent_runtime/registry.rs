//! The live-call registry: the only mutable state shared between the faces.
//! The call task registers itself on start and removes itself on exit; the
//! API lists a workspace's calls and can end one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::transcript::TranscriptFeed;

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
    /// The far end offered RFC 4733 `telephone-event` (digits can be sent).
    #[serde(skip)]
    pub dtmf: bool,
}

/// Requests to a running call from outside it.
#[derive(Debug, Clone)]
pub enum ControlRequest {
    /// End the call (API `DELETE …/calls/live/{id}`, node shutdown).
    Hangup { reason: String },
    /// Send these DTMF digits (RFC 4733), in order.
    Dtmf { digits: String },
}

/// What became of a request to send digits on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSent {
    Queued,
    NoSuchCall,
    /// The far end offered no telephone-event payload type.
    NotOffered,
    /// The call's control queue is full; try again.
    Busy,
}

struct Entry {
    info: LiveCallInfo,
    control: mpsc::Sender<ControlRequest>,
    transcript: TranscriptFeed,
}

#[derive(Clone, Default)]
pub struct Registry {
    calls: Arc<DashMap<Uuid, Entry>>,
}

/// Removes the call from the registry when the call task ends, on every path.
pub struct Registration {
    calls: Arc<DashMap<Uuid, Entry>>,
    id: Uuid,
    transcript: TranscriptFeed,
}

impl Registration {
    /// The call's live transcript, for the call's ledger to publish into.
    pub fn transcript(&self) -> TranscriptFeed {
        self.transcript.clone()
    }
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
        let transcript = TranscriptFeed::new();
        self.calls.insert(
            id,
            Entry {
                info,
                control,
                transcript: transcript.clone(),
            },
        );
        Registration {
            calls: self.calls.clone(),
            id,
            transcript,
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

    /// Queues digits on a call of `workspace_id` (another workspace's call
    /// is "no such call").
    pub fn send_dtmf(&self, workspace_id: Uuid, call_log_id: Uuid, digits: &str) -> DtmfSent {
        match self.calls.get(&call_log_id) {
            Some(entry) if entry.info.workspace_id == workspace_id => {
                if !entry.info.dtmf {
                    return DtmfSent::NotOffered;
                }
                match entry.control.try_send(ControlRequest::Dtmf {
                    digits: digits.to_string(),
                }) {
                    Ok(()) => DtmfSent::Queued,
                    Err(_) => DtmfSent::Busy,
                }
            }
            _ => DtmfSent::NoSuchCall,
        }
    }

    /// The live transcript of a call of `workspace_id` (another workspace's
    /// call is "no such call").
    pub fn transcript(&self, workspace_id: Uuid, call_log_id: Uuid) -> Option<TranscriptFeed> {
        match self.calls.get(&call_log_id) {
            Some(entry) if entry.info.workspace_id == workspace_id => {
                Some(entry.transcript.clone())
            }
            _ => None,
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
            dtmf: true,
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

    #[tokio::test]
    async fn digits_go_only_to_a_call_of_the_workspace_that_offered_them() {
        let reg = Registry::new();
        let ws = Uuid::new_v4();
        let (tx, mut rx) = mpsc::channel(4);
        let call = info(ws);
        let id = call.call_log_id;
        let _guard = reg.register(call, tx);
        assert_eq!(reg.send_dtmf(Uuid::new_v4(), id, "1"), DtmfSent::NoSuchCall);
        assert_eq!(reg.send_dtmf(ws, Uuid::new_v4(), "1"), DtmfSent::NoSuchCall);
        assert_eq!(reg.send_dtmf(ws, id, "12#"), DtmfSent::Queued);
        assert!(
            matches!(rx.recv().await, Some(ControlRequest::Dtmf { digits }) if digits == "12#")
        );
        let mut silent = info(ws);
        silent.dtmf = false;
        let silent_id = silent.call_log_id;
        let (tx2, _rx2) = mpsc::channel(4);
        let _g2 = reg.register(silent, tx2);
        assert_eq!(reg.send_dtmf(ws, silent_id, "1"), DtmfSent::NotOffered);
    }
}
