//! What the call driver needs of a leg — the SIP call or the WebRTC peer —
//! and nothing more: who is on it, its events (caller audio as 16 kHz
//! frames, digits, playout progress, its end), a [`Playout`] for the agent's
//! audio, transfer where the leg can, hang-up and close. A leg is set up in
//! two steps because its media records only when the agent says so, which
//! is known once the agent is loaded.

use std::path::PathBuf;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::CallDirection;
use crate::media::session::{MediaEvent, MediaSession, Playout, SessionConfig, SessionReport};
use crate::records::HangupBy;
use crate::sip::call::{CallCommand, CallEvent, IncomingCall};

/// Who is on a call, as the records and the live-call registry show it.
#[derive(Debug, Clone)]
pub struct LegInfo {
    pub call_log_id: Uuid,
    pub direction: CallDirection,
    /// The SIP Call-ID, or the WHIP session's id.
    pub call_ref: String,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub from_number: String,
    pub to_number: String,
    /// `{{name}}` values for the agent's prompt and greeting.
    pub variables: Vec<(String, String)>,
    /// Digits can be sent to the far end (RFC 4733 negotiated).
    pub dtmf: bool,
    /// The leg can hand the caller to someone else (a SIP REFER); a
    /// browser call cannot.
    pub can_transfer: bool,
}

impl LegInfo {
    /// The person on the line: who called us, or whom we called.
    pub fn caller(&self) -> &str {
        match self.direction {
            CallDirection::Outbound => &self.to_number,
            CallDirection::Inbound | CallDirection::Web => &self.from_number,
        }
    }
}

/// What a leg tells the call.
#[derive(Debug)]
pub enum LegEvent {
    /// 20 ms of caller audio at 16 kHz.
    Audio(Vec<i16>),
    Dtmf(char),
    PlayoutStarted {
        id: u64,
        at: Instant,
    },
    PlayoutFinished {
        id: u64,
    },
    PlayoutFlushed {
        id: u64,
        played_ms: u32,
    },
    TransferResult {
        accepted: bool,
    },
    /// The leg is over; nothing more will come.
    Ended {
        by: HangupBy,
        reason: String,
    },
}

/// A leg whose media has not started yet.
pub trait LegSetup: Send {
    fn info(&self) -> &LegInfo;
    /// Starts the media, recording both sides to `record` when given.
    fn start(self: Box<Self>, record: Option<PathBuf>) -> Result<Box<dyn CallLeg>, String>;
    /// The call cannot be served (its agent could not be loaded).
    fn refuse(self: Box<Self>, reason: &str);
}

/// A running leg.
#[async_trait]
pub trait CallLeg: Send {
    /// The next event; `Ended` (then `None`) once the leg is gone.
    async fn next_event(&mut self) -> Option<LegEvent>;
    fn playout(&self) -> Playout;
    /// Asks the far end to take the caller to `target`; false when this
    /// leg cannot transfer (the answer comes as `TransferResult`).
    async fn transfer(&mut self, target: String) -> bool;
    /// A warm transfer's completion: this leg is bridged to the person's
    /// call (`person`, its call_logs id); the far ends take the call over
    /// between themselves where they can (SIP: REFER with Replaces), and
    /// the leg ends when they have. False when this leg cannot ask.
    async fn complete_transfer(&mut self, _person: Uuid) -> bool {
        false
    }
    /// Ends the call from our side.
    async fn hang_up(&mut self, by: HangupBy, reason: String);
    /// Stops the media; the figures and the recording.
    async fn close(self: Box<Self>) -> SessionReport;
}

/// Translates the media session's events (shared by every leg whose media
/// runs in a [`MediaSession`]).
pub fn media_event(ev: MediaEvent) -> Option<LegEvent> {
    Some(match ev {
        MediaEvent::Audio(frame) => LegEvent::Audio(frame.samples),
        MediaEvent::Dtmf { digit, .. } => LegEvent::Dtmf(digit),
        MediaEvent::PlayoutStarted { id, at } => LegEvent::PlayoutStarted { id, at },
        MediaEvent::PlayoutFinished { id, .. } => LegEvent::PlayoutFinished { id },
        MediaEvent::PlayoutFlushed { id, played_ms } => LegEvent::PlayoutFlushed { id, played_ms },
        // The peer's RTCP BYE is advisory; signalling ends the call.
        MediaEvent::RtcpBye => {
            tracing::debug!("RTCP BYE from the caller");
            return None;
        }
    })
}

/// The SIP layer's answered call, before its media starts.
pub struct SipLegSetup {
    info: LegInfo,
    call: IncomingCall,
}

impl SipLegSetup {
    pub fn new(call: IncomingCall) -> SipLegSetup {
        SipLegSetup {
            info: LegInfo {
                call_log_id: call.call_log_id,
                direction: call.direction,
                call_ref: call.sip_call_id.clone(),
                workspace_id: call.workspace_id,
                agent_id: call.agent_id,
                from_number: call.from_number.clone(),
                to_number: call.to_number.clone(),
                variables: call.variables.clone(),
                dtmf: call.media.telephone_event_pt.is_some(),
                can_transfer: true,
            },
            call,
        }
    }
}

impl LegSetup for SipLegSetup {
    fn info(&self) -> &LegInfo {
        &self.info
    }

    fn start(self: Box<Self>, record: Option<PathBuf>) -> Result<Box<dyn CallLeg>, String> {
        let call = self.call;
        let media = call.media;
        let mut cfg = SessionConfig::new(
            media.remote_addr,
            media.codec,
            media.payload_type,
            media.telephone_event_pt,
        );
        cfg.record_path = record;
        cfg.sources = media.sources;
        cfg.srtp = media.srtp;
        match MediaSession::start(call.rtp_socket, cfg) {
            Ok((session, media_rx)) => Ok(Box::new(SipLeg {
                session,
                media_rx,
                events: call.events,
                commands: call.commands,
                _rtp_port: call.rtp_port,
            })),
            Err(err) => {
                let _ = call.commands.try_send(CallCommand::Hangup {
                    by: HangupBy::System,
                    reason: "media failure".into(),
                });
                Err(err.to_string())
            }
        }
    }

    fn refuse(self: Box<Self>, reason: &str) {
        let _ = self.call.commands.try_send(CallCommand::Hangup {
            by: HangupBy::System,
            reason: reason.into(),
        });
    }
}

/// A SIP call's running leg: RTP through the media session, signalling
/// through the SIP layer's channels.
struct SipLeg {
    session: MediaSession,
    media_rx: mpsc::Receiver<MediaEvent>,
    events: mpsc::Receiver<CallEvent>,
    commands: mpsc::Sender<CallCommand>,
    /// Held until the call ends; dropping it frees the port.
    _rtp_port: crate::media::ports::PortLease,
}

#[async_trait]
impl CallLeg for SipLeg {
    async fn next_event(&mut self) -> Option<LegEvent> {
        loop {
            tokio::select! {
                ev = self.media_rx.recv() => match ev {
                    Some(ev) => if let Some(ev) = media_event(ev) { return Some(ev) },
                    None => return Some(LegEvent::Ended { by: HangupBy::System, reason: "media stopped".into() }),
                },
                ev = self.events.recv() => match ev {
                    Some(CallEvent::Hangup { by, reason }) => return Some(LegEvent::Ended { by, reason }),
                    Some(CallEvent::Dtmf { digit, .. }) => return Some(LegEvent::Dtmf(digit)),
                    Some(CallEvent::MediaChanged { media, .. }) => {
                        self.session.update_remote(media.remote_addr, media.codec, media.payload_type)
                    }
                    Some(CallEvent::TransferResult { accepted, sip_code }) => {
                        tracing::info!(accepted, sip_code, "transfer result");
                        return Some(LegEvent::TransferResult { accepted });
                    }
                    None => return Some(LegEvent::Ended { by: HangupBy::System, reason: "signalling gone".into() }),
                },
            }
        }
    }

    fn playout(&self) -> Playout {
        self.session.playout()
    }

    async fn transfer(&mut self, target: String) -> bool {
        self.commands
            .send(CallCommand::Transfer { target })
            .await
            .is_ok()
    }

    async fn complete_transfer(&mut self, person: Uuid) -> bool {
        self.commands
            .send(CallCommand::TransferReplacing { person })
            .await
            .is_ok()
    }

    async fn hang_up(&mut self, by: HangupBy, reason: String) {
        let _ = self.commands.send(CallCommand::Hangup { by, reason }).await;
    }

    async fn close(self: Box<Self>) -> SessionReport {
        let SipLeg {
            session, _rtp_port, ..
        } = *self;
        let report = session.close().await;
        drop(_rtp_port);
        report
    }
}
