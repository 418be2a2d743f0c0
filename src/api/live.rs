//! What the API needs of the node's calls, as traits so the API does not
//! own call state: list a workspace's live calls and end one
//! ([`LiveCalls`]), place an outbound call ([`Dialer`]). `NodeCalls` serves
//! both from the runtime's registry (answered calls) and the SIP layer
//! (outbound calls still ringing, and their CANCEL).

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use crate::agent_runtime::registry::DtmfSent;
use crate::agent_runtime::registry::Registry;
use crate::agent_runtime::transcript::TranscriptFeed;
use crate::sip::outbound_leg::{DialError, DialRequest};
use crate::sip::SipServerHandle;

/// A live call as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCallView {
    pub call_log_id: Uuid,
    pub agent_id: Uuid,
    pub from: String,
    pub to: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub started_at: DateTime<Utc>,
    /// `ringing` (an outbound call not answered yet) or `in_progress`.
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
            direction: r.direction,
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
    /// Queues RFC 4733 digits on an answered call of `workspace_id`.
    fn send_dtmf(&self, _workspace_id: Uuid, _call_id: Uuid, _digits: &str) -> DtmfSent {
        DtmfSent::NoSuchCall
    }
    /// The live transcript of an answered call of `workspace_id` held by
    /// this node.
    fn transcript(&self, _workspace_id: Uuid, _call_id: Uuid) -> Option<TranscriptFeed> {
        None
    }
}

pub type DialFuture<'a> = Pin<Box<dyn Future<Output = Result<Uuid, DialError>> + Send + 'a>>;

/// Places outbound calls (the SIP layer of this node).
pub trait Dialer: Send + Sync {
    /// Sends the INVITE; resolves to the call's call_logs id.
    fn dial(&self, request: DialRequest) -> DialFuture<'_>;
}

impl Dialer for SipServerHandle {
    fn dial(&self, request: DialRequest) -> DialFuture<'_> {
        Box::pin(SipServerHandle::dial(self, request))
    }
}

fn view(c: crate::agent_runtime::registry::LiveCallInfo) -> LiveCallView {
    LiveCallView {
        call_log_id: c.call_log_id,
        agent_id: c.agent_id,
        from: c.from_number,
        to: c.to_number,
        direction: c.direction.to_string(),
        started_at: c.started_at,
        state: "in_progress".into(),
        node_id: None,
    }
}

/// The runtime's registry alone (answered calls).
impl LiveCalls for Registry {
    fn list(&self, workspace_id: Uuid) -> Vec<LiveCallView> {
        Registry::list(self, workspace_id)
            .into_iter()
            .map(view)
            .collect()
    }

    fn hangup(&self, workspace_id: Uuid, call_id: Uuid) -> bool {
        Registry::hangup(self, workspace_id, call_id, "api")
    }

    fn send_dtmf(&self, workspace_id: Uuid, call_id: Uuid, digits: &str) -> DtmfSent {
        Registry::send_dtmf(self, workspace_id, call_id, digits)
    }

    fn transcript(&self, workspace_id: Uuid, call_id: Uuid) -> Option<TranscriptFeed> {
        Registry::transcript(self, workspace_id, call_id)
    }
}

/// A node's calls: the runtime's answered ones, plus outbound calls the
/// SIP layer is still dialing (or answered and not yet registered).
#[derive(Clone)]
pub struct NodeCalls {
    pub registry: Registry,
    pub sip: SipServerHandle,
}

impl LiveCalls for NodeCalls {
    fn list(&self, workspace_id: Uuid) -> Vec<LiveCallView> {
        let mut calls = LiveCalls::list(&self.registry, workspace_id);
        for o in self.sip.outbound_calls(workspace_id) {
            if calls.iter().all(|c| c.call_log_id != o.call_log_id) {
                calls.push(LiveCallView {
                    call_log_id: o.call_log_id,
                    agent_id: o.agent_id,
                    from: o.from,
                    to: o.to,
                    direction: "outbound".into(),
                    started_at: o.started_at,
                    state: o.state.into(),
                    node_id: None,
                });
            }
        }
        calls.sort_by_key(|c| c.started_at);
        calls
    }

    /// The runtime ends an answered call (its records say "ended by API");
    /// a ringing outbound call is CANCELled by the SIP layer.
    fn hangup(&self, workspace_id: Uuid, call_id: Uuid) -> bool {
        Registry::hangup(&self.registry, workspace_id, call_id, "api")
            || self.sip.hangup_outbound(workspace_id, call_id)
    }

    /// Answered calls only (a ringing call has no media yet).
    fn send_dtmf(&self, workspace_id: Uuid, call_id: Uuid, digits: &str) -> DtmfSent {
        Registry::send_dtmf(&self.registry, workspace_id, call_id, digits)
    }

    fn transcript(&self, workspace_id: Uuid, call_id: Uuid) -> Option<TranscriptFeed> {
        Registry::transcript(&self.registry, workspace_id, call_id)
    }
}
