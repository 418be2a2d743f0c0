//! Browser calls: a WHIP offer becomes a call like any other. The peer is
//! answered at once (the HTTP reply carries the SDP answer), the call's
//! `call_logs` row (`direction = 'web'`) is written, and once ICE and DTLS
//! are up the call runs through the same driver and [`CallMachine`] as a
//! SIP call. `DELETE` on the WHIP session — or the peer going away — ends it.
//!
//! [`CallMachine`]: super::call_machine::CallMachine

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use dashmap::DashMap;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::leg::{media_event, CallLeg, LegEvent, LegInfo, LegSetup};
use super::Runtime;
use crate::config::WebRtcConfig;
use crate::domain::{CallDirection, CallStatus};
use crate::media::session::{MediaEvent, MediaSession, Playout, SessionReport};
use crate::media::webrtc::{IceSettings, PeerState, WebRtcEngine, WebRtcError, WebRtcPeer};
use crate::records::{CallEnd, CallLogStart, HangupBy, Record};

/// How long ICE and DTLS may take after the answer before the call is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Who is calling, and whom.
#[derive(Debug, Clone)]
pub struct WebCallRequest {
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    /// How the caller identified itself (`call_logs.from_number`,
    /// `agent_sessions.caller`): `web:user:<id>`, `web:key:<id>`…
    pub caller: String,
    pub offer: String,
}

/// The WHIP answer.
#[derive(Debug, Clone)]
pub struct WebCallAnswer {
    pub session_id: Uuid,
    pub call_log_id: Uuid,
    pub answer_sdp: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WebCallError {
    #[error(transparent)]
    Peer(#[from] WebRtcError),
    /// `webrtc.max_sessions` calls are up, or the node refuses new calls.
    #[error("{0}")]
    Busy(&'static str),
}

struct Session {
    workspace_id: Uuid,
    /// The agent called: a WHIP `DELETE` names it in its path, and a
    /// credential for one agent (a widget key) ends only that agent's calls.
    agent_id: Uuid,
    hangup: mpsc::Sender<HangupBy>,
}

/// The node's browser calls: the ICE set-up and the live WHIP sessions.
pub struct WebCalls {
    engine: WebRtcEngine,
    sessions: DashMap<Uuid, Session>,
    max_sessions: usize,
}

impl WebCalls {
    pub fn new(cfg: &WebRtcConfig) -> Result<Arc<WebCalls>, WebRtcError> {
        let allowed = cfg
            .ice_ips
            .iter()
            .filter_map(|s| {
                s.parse::<ipnet::IpNet>()
                    .ok()
                    .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
            })
            .collect();
        let engine = WebRtcEngine::new(IceSettings {
            allowed,
            include_loopback: cfg.include_loopback,
            public_ips: cfg.public_ips.clone(),
            stun_servers: cfg.stun_servers.clone(),
            port_min: cfg.port_min,
            port_max: cfg.port_max,
        })?;
        Ok(Arc::new(WebCalls {
            engine,
            sessions: DashMap::new(),
            max_sessions: cfg.max_sessions,
        }))
    }

    /// Answers the offer and starts the call; the caller has been
    /// authenticated and the agent found live, within its plan.
    pub async fn start(
        self: &Arc<Self>,
        rt: Arc<Runtime>,
        req: WebCallRequest,
    ) -> Result<WebCallAnswer, WebCallError> {
        if self.sessions.len() >= self.max_sessions {
            return Err(WebCallError::Busy("node full"));
        }
        let mut peer = self.engine.answer(&req.offer).await?;
        let session_id = Uuid::new_v4();
        let call_log_id = Uuid::new_v4();
        let info = LegInfo {
            call_log_id,
            direction: CallDirection::Web,
            call_ref: format!("whip-{session_id}"),
            workspace_id: req.workspace_id,
            agent_id: req.agent_id,
            from_number: req.caller,
            to_number: format!("agent:{}", req.agent_id),
            variables: Vec::new(),
            // Digits come from the browser (RFC 4733) but are not sent to it.
            dtmf: false,
            can_transfer: false,
        };
        let started_at = Utc::now();
        rt.records.submit(Record::CallLog {
            start: CallLogStart {
                id: call_log_id,
                direction: CallDirection::Web.as_str().into(),
                workspace_id: info.workspace_id,
                agent_id: Some(info.agent_id),
                phone_number_id: None,
                sip_trunk_id: None,
                sip_call_id: info.call_ref.clone(),
                from_number: info.from_number.clone(),
                to_number: info.to_number.clone(),
                node_id: rt.config.node_id.clone(),
                started_at,
                diverted_from: None,
            },
            end: None,
        });
        let (hangup_tx, hangup_rx) = mpsc::channel(1);
        self.sessions.insert(
            session_id,
            Session {
                workspace_id: info.workspace_id,
                agent_id: info.agent_id,
                hangup: hangup_tx,
            },
        );
        let answer = WebCallAnswer {
            session_id,
            call_log_id,
            answer_sdp: peer.answer_sdp.clone(),
        };
        let calls = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("whip", %session_id, %call_log_id);
            let run = async {
                let started = Instant::now();
                match peer.connected(CONNECT_TIMEOUT).await {
                    PeerState::Connected => {
                        if let Some((local, remote)) = peer.selected_pair().await {
                            tracing::info!(%local, %remote, "ICE connected");
                        }
                        rt.records.submit(Record::CallAnswered {
                            call_log_id,
                            codec: peer.codec.sdp_name().to_ascii_lowercase(),
                            at: Utc::now(),
                        });
                        let setup = WebLegSetup {
                            info,
                            peer,
                            hangup: hangup_rx,
                            rt: rt.clone(),
                            started,
                        };
                        super::call::run_leg(rt, Box::new(setup)).await;
                    }
                    PeerState::Gone => {
                        tracing::info!("the peer never connected");
                        peer.close().await;
                        end_record(
                            &rt,
                            call_log_id,
                            CallStatus::Failed,
                            HangupBy::System,
                            "ICE/DTLS did not connect",
                            started,
                        );
                    }
                }
            };
            tracing::Instrument::instrument(run, span).await;
            calls.sessions.remove(&session_id);
        });
        Ok(answer)
    }

    /// WHIP `DELETE`: ends the session if it is this workspace's call to
    /// this agent.
    pub fn end(&self, workspace_id: Uuid, agent_id: Uuid, session_id: Uuid) -> bool {
        match self.sessions.get(&session_id) {
            Some(s) if s.workspace_id == workspace_id && s.agent_id == agent_id => {
                let _ = s.hangup.try_send(HangupBy::Caller);
                true
            }
            _ => false,
        }
    }

    /// Ends every session (the end of a drain): `hangup_by = system`.
    pub fn hang_up_all(&self) {
        for s in self.sessions.iter() {
            let _ = s.hangup.try_send(HangupBy::System);
        }
    }

    /// The workspace a live session belongs to.
    pub fn workspace_of(&self, session_id: Uuid) -> Option<Uuid> {
        self.sessions.get(&session_id).map(|s| s.workspace_id)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

fn end_record(
    rt: &Runtime,
    call_log_id: Uuid,
    status: CallStatus,
    by: HangupBy,
    reason: &str,
    started: Instant,
) {
    crate::metrics::metrics().call_ended(CallDirection::Web.as_str(), status.as_str());
    rt.records.submit(Record::CallEnded {
        call_log_id,
        end: CallEnd {
            status: status.as_str().into(),
            sip_code: None,
            hangup_by: Some(by),
            reason: reason.into(),
            at: Utc::now(),
            duration_ms: Some(started.elapsed().as_millis() as i64),
        },
    });
}

/// A connected peer whose media has not started.
struct WebLegSetup {
    info: LegInfo,
    peer: WebRtcPeer,
    hangup: mpsc::Receiver<HangupBy>,
    rt: Arc<Runtime>,
    started: Instant,
}

impl LegSetup for WebLegSetup {
    fn info(&self) -> &LegInfo {
        &self.info
    }

    fn start(self: Box<Self>, record: Option<PathBuf>) -> Result<Box<dyn CallLeg>, String> {
        let mut s = *self;
        match s.peer.start_media(record) {
            Ok((session, media_rx)) => Ok(Box::new(WebLeg {
                session,
                media_rx,
                peer: s.peer,
                hangup: s.hangup,
                rt: s.rt,
                call_log_id: s.info.call_log_id,
                started: s.started,
                ended: None,
            })),
            Err(e) => {
                let peer = s.peer;
                tokio::spawn(async move { peer.close().await });
                end_record(
                    &s.rt,
                    s.info.call_log_id,
                    CallStatus::Failed,
                    HangupBy::System,
                    "media failure",
                    s.started,
                );
                Err(e.to_string())
            }
        }
    }

    fn refuse(self: Box<Self>, reason: &str) {
        let s = *self;
        end_record(
            &s.rt,
            s.info.call_log_id,
            CallStatus::Failed,
            HangupBy::System,
            reason,
            s.started,
        );
        tokio::spawn(async move { s.peer.close().await });
    }
}

/// A browser call's running leg.
struct WebLeg {
    session: MediaSession,
    media_rx: mpsc::Receiver<MediaEvent>,
    peer: WebRtcPeer,
    hangup: mpsc::Receiver<HangupBy>,
    rt: Arc<Runtime>,
    call_log_id: Uuid,
    started: Instant,
    /// How it ended, once it has (for its `call_logs` row).
    ended: Option<(HangupBy, String)>,
}

#[async_trait]
impl CallLeg for WebLeg {
    async fn next_event(&mut self) -> Option<LegEvent> {
        if self.ended.is_some() {
            return None;
        }
        let (by, reason) = loop {
            tokio::select! {
                ev = self.media_rx.recv() => match ev {
                    Some(ev) => if let Some(ev) = media_event(ev) { return Some(ev) },
                    None => break (HangupBy::System, "media stopped".to_string()),
                },
                by = self.hangup.recv() => break match by {
                    Some(HangupBy::System) => (HangupBy::System, "node shutting down".to_string()),
                    _ => (HangupBy::Caller, "WHIP DELETE".to_string()),
                },
                why = self.peer.gone() => break (HangupBy::Caller, why.to_string()),
            }
        };
        self.ended = Some((by, reason.clone()));
        Some(LegEvent::Ended { by, reason })
    }

    fn playout(&self) -> Playout {
        self.session.playout()
    }

    async fn transfer(&mut self, _target: String) -> bool {
        // A browser has no one to hand the call to (its profile offers no
        // transfer: `AgentProfile::without_transfer`).
        false
    }

    async fn hang_up(&mut self, by: HangupBy, reason: String) {
        self.ended.get_or_insert((by, reason));
    }

    async fn close(self: Box<Self>) -> SessionReport {
        let leg = *self;
        let report = leg.session.close().await;
        leg.peer.close().await;
        let (by, reason) = leg.ended.unwrap_or((HangupBy::System, "call ended".into()));
        let status = match by {
            HangupBy::System => CallStatus::Failed,
            _ => CallStatus::Completed,
        };
        end_record(&leg.rt, leg.call_log_id, status, by, &reason, leg.started);
        report
    }
}
