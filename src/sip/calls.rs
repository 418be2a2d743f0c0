//! A call's life in the SIP core: INVITE → routing task → 180 → 200 with
//! the SDP answer → ACK → handed to the runtime; then BYE from either side,
//! CANCEL, ACK timeout (Timer H for the 2xx), re-INVITE, INFO DTMF and blind
//! transfer by REFER. Every path that ends a call ends its call_logs row,
//! releases its trunk slot and (by dropping the lease) its RTP port.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::call::{CallCommand, CallDirection, CallEvent, HangupBy, IncomingCall, NegotiatedMedia};
use super::core::{Core, Internal, Wake, ACCEPT, ALLOW, SUPPORTED};
use super::decide::{status_for, Decision, InviteFacts, RouteFacts};
use super::dialog::{AnswerRetransmit, Dialog};
use super::message::{host_port, random_token, uri_user, Message};
use super::number::{self, NumberingPlan};
use super::records::{CallEnd, CallLogStart, CallRecorder};
use super::routing::TrunkSlot;
use super::sdp::{self, Negotiated, SessionDescription};
use super::session_timer::{self, Refresher, SessionTimer, TimerHeaders, UasTimer};
use super::transport::{Target, Transport};
use crate::media::ports::PortLease;
use crate::media::receiver::SourcePolicy;
use crate::media::srtp::{SrtpKey, SrtpKeys};
use crate::media::Codec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Outbound: our INVITE is out, no final answer yet.
    Dialing,
    Routing,
    Ringing,
    /// 200 sent, waiting for the ACK.
    Answered,
    Confirmed,
}

/// Media set up before the answer, handed over with the call.
pub struct Pending {
    pub(super) lease: PortLease,
    pub(super) socket: std::net::UdpSocket,
    pub(super) media: Option<NegotiatedMedia>,
}

pub struct Call {
    pub log_id: Uuid,
    pub direction: CallDirection,
    /// Inbound: the INVITE received. Outbound: the INVITE we sent (the
    /// authorized one after a challenge).
    pub invite: Message,
    pub invite_key: String,
    pub merge_key: Option<String>,
    pub source: Target,
    /// The caller's address (`source`, or what a trusted proxy vouches for).
    pub origin: std::net::IpAddr,
    pub phase: Phase,
    pub cancelled: bool,
    pub dialog: Option<Dialog>,
    pub facts: Option<RouteFacts>,
    pub codecs: Vec<Codec>,
    pub from_number: String,
    pub to_number: String,
    pub started_at: DateTime<Utc>,
    /// When the INVITE arrived (for the INVITE-to-200 figure).
    pub invite_at: Instant,
    pub recorder: Option<CallRecorder>,
    pub events: Option<mpsc::Sender<CallEvent>>,
    pub slot: Option<TrunkSlot>,
    pub pending: Option<Pending>,
    pub answer_at: Option<Instant>,
    pub answer: Option<(AnswerRetransmit, Message)>,
    pub answered_at: Option<(Instant, DateTime<Utc>)>,
    pub local_port: u16,
    pub sdp_version: u64,
    /// Our REFER under way (one at a time).
    pub transfer: Option<super::refer::Transfer>,
    /// RFC 4028 as agreed in the INVITE transaction (interval, refresher,
    /// `Require: timer`), and the running timer once answered.
    pub timer_plan: Option<(u32, Refresher, bool)>,
    pub session_timer: Option<SessionTimer>,
    /// Our SDES key for this call's SRTP (used only if the SDP says so),
    /// and whether the media handed over is SRTP.
    pub srtp_key: SrtpKey,
    pub srtp_in_use: bool,
    /// Outbound calls: the API's variables, handed to the runtime.
    pub variables: Vec<(String, String)>,
    /// A warm transfer's call to the person: its answer (or failure)
    /// goes back to the transferring call instead of to a new agent call.
    pub consult: Option<tokio::sync::oneshot::Sender<super::outbound_leg::ConsultResult>>,
    /// What the far end advertised (REFER, Replaces): in its INVITE, or in
    /// its 2xx to ours.
    pub peer_caps: super::replaces::PeerCaps,
    /// The person's call of a warm transfer the caller's phone took over
    /// (Replaces): the person's phone ends it; the node waits, bounded.
    pub replaced: Option<super::replaces::ReplacedWait>,
}

/// The identity a trunk asserts for the caller: the first
/// P-Asserted-Identity (RFC 3325), else Remote-Party-ID, as a URI.
pub(super) fn asserted_identity(invite: &Message) -> Option<String> {
    ["P-Asserted-Identity", "Remote-Party-ID"]
        .iter()
        .find_map(|h| {
            invite
                .header_values(h)
                .into_iter()
                .find_map(|v| super::message::NameAddr::parse(v).map(|na| na.uri))
        })
        .map(|uri| uri.chars().take(256).collect())
}

/// The number a forwarded call was diverted from: the first Diversion
/// header (RFC 5806), as a URI.
pub(super) fn diversion_uri(invite: &Message) -> Option<String> {
    invite
        .header_values("Diversion")
        .into_iter()
        .find_map(|v| super::message::NameAddr::parse(v).map(|na| na.uri))
        .map(|uri| uri.chars().take(256).collect())
}

pub(super) fn raw_number(uri: &str) -> String {
    let plan = NumberingPlan::default();
    number::from_uri(uri, &plan)
        .map(|e| e.to_string())
        .or_else(|| uri_user(uri))
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect()
}

impl Core {
    pub(super) fn contact(&self, transport: Transport) -> String {
        let local = self.env.transports.local_addr_for(transport);
        let hp = host_port(&self.env.advertised_ip.to_string(), Some(local.port()));
        match transport.uri_param() {
            None => format!("sip:switchboard@{hp}"),
            Some(t) => format!("sip:switchboard@{hp};transport={t}"),
        }
    }

    /// Media may latch only to the IP the call's signalling came from.
    pub(super) fn media_sources(&self, call: &Call) -> SourcePolicy {
        SourcePolicy {
            signalling_ip: Some(call.origin),
            latch: self.env.latch,
        }
    }

    /// Our Via sent-by for requests over `transport` (its listener's port).
    pub(super) fn via_sent_by(&self, transport: Transport) -> String {
        host_port(
            &self.env.advertised_ip.to_string(),
            Some(self.env.transports.local_addr_for(transport).port()),
        )
    }

    pub fn on_invite(
        &mut self,
        key: &str,
        merge_key: Option<String>,
        invite: Message,
        source: Target,
        origin: std::net::IpAddr,
        now: Instant,
    ) {
        let draining = self
            .env
            .shared
            .draining
            .load(std::sync::atomic::Ordering::Relaxed);
        if draining || self.calls.len() >= self.env.max_calls {
            let resp = {
                let mut r =
                    self.response(&invite, 503, "Service Unavailable", Some(&random_token(10)));
                let retry = if draining {
                    super::server::DRAIN_RETRY_AFTER_SECS
                } else {
                    5
                };
                r.add_header("Retry-After", retry.to_string());
                r
            };
            self.respond(key, resp, now);
            return;
        }
        // RFC 4028 §9: an interval below our Min-SE is refused at once.
        let timer_plan = match session_timer::answer_invite(
            &TimerHeaders::read(&invite),
            self.env.session_timers,
        ) {
            UasTimer::TooSmall { min_se } => {
                if self.stranger_may_hear(origin, now) {
                    let mut r = self.response(
                        &invite,
                        422,
                        "Session Interval Too Small",
                        Some(&random_token(10)),
                    );
                    r.add_header("Min-SE", min_se.to_string());
                    self.respond(key, r, now);
                }
                return;
            }
            UasTimer::Off => None,
            UasTimer::On {
                interval,
                refresher,
                require,
            } => Some((interval, refresher, require)),
        };
        // Optional (§8.2.6.1), and a stranger's flood must not buy answers.
        if self.stranger_may_hear(origin, now) {
            let trying = self.response(&invite, 100, "Trying", None);
            self.respond(key, trying, now);
        }
        let tag = random_token(16);
        let to_uri = invite.to().map(|t| t.uri).unwrap_or_default();
        let from_number = raw_number(&invite.from().map(|f| f.uri).unwrap_or_default());
        let to_number = {
            let n = raw_number(invite.request_uri().unwrap_or_default());
            if n.is_empty() {
                raw_number(&to_uri)
            } else {
                n
            }
        };
        let log_id = Uuid::new_v4();
        let facts = InviteFacts {
            source_ip: origin,
            call_log_id: log_id,
            from_number: from_number.clone(),
            to_number: to_number.clone(),
            from_uri: invite.from().map(|f| f.uri).unwrap_or_default(),
            asserted: asserted_identity(&invite),
            diversion: diversion_uri(&invite),
            request_uri: invite.request_uri().unwrap_or_default().to_string(),
            to_uri: to_uri.clone(),
            authorization: invite.header("Authorization").map(str::to_string),
            sdp: (!invite.body.is_empty()).then(|| invite.body.to_vec()),
            now_unix: chrono::Utc::now().timestamp().max(0) as u64,
            secure: source.transport.secure(),
        };
        if let Some(e) = self.server_txs.get_mut(key) {
            e.call = Some(tag.clone());
        }
        if let Some(m) = &merge_key {
            self.invites.insert(m.clone(), key.to_string());
        }
        let peer_caps = super::replaces::PeerCaps::of(&invite);
        let call = Call {
            log_id,
            direction: CallDirection::Inbound,
            invite,
            invite_key: key.to_string(),
            merge_key,
            source,
            origin,
            phase: Phase::Routing,
            cancelled: false,
            dialog: None,
            facts: None,
            codecs: Vec::new(),
            from_number,
            to_number,
            started_at: Utc::now(),
            invite_at: now,
            recorder: None,
            events: None,
            slot: None,
            pending: None,
            answer_at: None,
            answer: None,
            answered_at: None,
            local_port: 0,
            sdp_version: 1,
            transfer: None,
            timer_plan,
            session_timer: None,
            srtp_key: SrtpKey::random(),
            srtp_in_use: false,
            variables: Vec::new(),
            consult: None,
            peer_caps,
            replaced: None,
        };
        self.calls.insert(tag.clone(), call);
        self.update_live();
        let decider = self.env.decider.clone();
        let internal = self.env.internal.clone();
        tokio::spawn(async move {
            // A database that hangs must not leave the caller ringing forever.
            let decision = match tokio::time::timeout(
                std::time::Duration::from_secs(8),
                decider.decide(facts),
            )
            .await
            {
                Ok(d) => d,
                Err(_) => Decision::Reject {
                    code: 503,
                    reason: "Service Unavailable",
                    headers: vec![("Retry-After".into(), "5".into())],
                    facts: None,
                    trusted: true,
                },
            };
            let _ = internal
                .send(Internal::Routed {
                    key: tag,
                    decision: Box::new(decision),
                })
                .await;
        });
    }

    pub(super) fn log_start(&self, call: &Call, facts: &RouteFacts) -> CallLogStart {
        CallLogStart {
            id: call.log_id,
            direction: call.direction.as_str().into(),
            workspace_id: facts.workspace_id,
            agent_id: facts.agent_id,
            phone_number_id: facts.phone_number_id,
            sip_trunk_id: facts.sip_trunk_id,
            sip_call_id: call
                .invite
                .call_id()
                .unwrap_or_default()
                .chars()
                .take(256)
                .collect(),
            from_number: call.from_number.clone(),
            to_number: call.to_number.clone(),
            node_id: self.env.node_id.clone(),
            started_at: call.started_at,
            diverted_from: facts.diverted_from.clone(),
        }
    }

    /// Forgets a call: indexes, live count. Its slot and lease drop with it.
    pub(super) fn remove_call(&mut self, key: &str) -> Option<Call> {
        let call = self.calls.remove(key)?;
        if let Some(m) = &call.merge_key {
            self.invites.remove(m);
        }
        if call.direction == CallDirection::Outbound {
            self.env.shared.outbound.remove(&call.log_id);
        }
        self.update_live();
        Some(call)
    }

    pub fn on_routed(&mut self, key: &str, decision: Decision, now: Instant) {
        // The numbers as the admitting trunk gives them.
        let facts = match &decision {
            Decision::Accept { facts, .. } => Some(facts),
            Decision::Reject { facts, .. } => facts.as_ref(),
        };
        let (caller, dialed) = facts
            .map(|f| (f.caller.clone(), f.dialed.clone()))
            .unwrap_or_default();
        if let Some(call) = self.calls.get_mut(key) {
            if let Some(number) = caller {
                call.from_number = number;
            }
            if let Some(number) = dialed {
                call.to_number = number;
            }
        }
        let Some(call) = self.calls.get(key) else {
            return;
        };
        if call.cancelled {
            let facts = match &decision {
                Decision::Reject { facts, .. } => facts.clone(),
                Decision::Accept { facts, .. } => Some(facts.clone()),
            };
            if let Some(f) = facts {
                let end = CallEnd {
                    status: "no_answer".into(),
                    sip_code: Some(487),
                    hangup_by: Some(HangupBy::Caller),
                    reason: "cancelled".into(),
                    at: Utc::now(),
                    duration_ms: None,
                };
                CallRecorder::rejected(&self.env.records, self.log_start(call, &f), end);
            }
            self.remove_call(key);
            return;
        }
        let invite_key = call.invite_key.clone();
        match decision {
            Decision::Reject {
                code,
                reason,
                headers,
                facts,
                trusted,
            } => {
                if !trusted && !self.answer_stranger_rejection(key, code, now) {
                    return;
                }
                let Some(call) = self.calls.get(key) else {
                    return;
                };
                if let Some(f) = &facts {
                    let end = CallEnd {
                        status: status_for(code).into(),
                        sip_code: Some(code),
                        hangup_by: None,
                        reason: reason.to_string(),
                        at: Utc::now(),
                        duration_ms: None,
                    };
                    CallRecorder::rejected(&self.env.records, self.log_start(call, f), end);
                }
                let mut resp = self.response(&call.invite, code, reason, Some(key));
                for (n, v) in headers {
                    resp.add_header(&n, v);
                }
                self.respond(&invite_key, resp, now);
                self.remove_call(key);
            }
            Decision::Accept {
                facts,
                slot,
                codecs,
                offer,
                offer_srtp,
            } => {
                self.trust_server_tx(&invite_key);
                self.accept(key, facts, slot, codecs, (offer, offer_srtp), now)
            }
        }
    }

    /// A call routing accepted that the node cannot take now: 503 with
    /// Retry-After, recorded `failed`.
    fn refuse_accepted(
        &mut self,
        key: &str,
        start: CallLogStart,
        reason: &str,
        retry_after_secs: u32,
        now: Instant,
    ) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let end = CallEnd {
            status: "failed".into(),
            sip_code: Some(503),
            hangup_by: Some(HangupBy::System),
            reason: reason.into(),
            at: Utc::now(),
            duration_ms: None,
        };
        CallRecorder::rejected(&self.env.records, start, end);
        let mut resp = self.response(&call.invite, 503, "Service Unavailable", Some(key));
        resp.add_header("Retry-After", retry_after_secs.to_string());
        let invite_key = call.invite_key.clone();
        self.respond(&invite_key, resp, now);
        self.remove_call(key);
    }

    pub(super) fn accept(
        &mut self,
        key: &str,
        facts: RouteFacts,
        slot: TrunkSlot,
        codecs: Vec<Codec>,
        (offer, offer_srtp): (Option<(SessionDescription, Negotiated)>, bool),
        now: Instant,
    ) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        // The node takes the call only if it can serve it now.
        if let Err(busy) = self.env.handler.admits() {
            let start = self.log_start(call, &facts);
            tracing::info!(reason = busy.reason, "call refused: 503");
            self.refuse_accepted(key, start, busy.reason, busy.retry_after_secs, now);
            return;
        }
        let allocated = self.env.ports.allocate(self.env.rtp_bind_ip);
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let start = self.log_start(call, &facts);
        let Ok((lease, socket)) = allocated else {
            tracing::warn!("no free RTP port");
            self.refuse_accepted(key, start, "no RTP port", 5, now);
            return;
        };
        let recorder = CallRecorder::start(&self.env.records, start);
        let local = std::net::SocketAddr::new(self.env.advertised_ip, lease.port());
        let key_ours = &call.srtp_key;
        let (media, answer_sdp) = match &offer {
            Some((parsed, n)) => (
                Some(to_media(n, local, self.media_sources(call), key_ours)),
                sdp::build_answer(parsed, n, local, call_session_id(call), 1, Some(key_ours)),
            ),
            None => (
                None,
                sdp::build_offer(
                    &codecs,
                    local,
                    call_session_id(call),
                    1,
                    offer_srtp.then_some(key_ours),
                ),
            ),
        };
        let contact = self.contact(call.source.transport);
        // Dialog-creating answers carry the INVITE's Record-Route (§12.1.1),
        // so the caller's in-dialog requests pass the proxies that asked.
        let mut ringing = self.response(&call.invite, 180, "Ringing", Some(key));
        ringing.copy_record_route(&call.invite);
        ringing.add_header("Contact", format!("<{contact}>"));
        let mut ok = self.response(&call.invite, 200, "OK", Some(key));
        ok.copy_record_route(&call.invite);
        ok.add_header("Contact", format!("<{contact}>"));
        ok.add_header("Allow", ALLOW);
        ok.add_header("Accept", ACCEPT);
        ok.add_header("Supported", SUPPORTED);
        if let Some((interval, refresher, require)) = call.timer_plan {
            ok.add_header(
                "Session-Expires",
                format!("{interval};refresher={}", refresher.as_str()),
            );
            if require {
                ok.add_header("Require", "timer");
            }
        }
        ok.set_body("application/sdp", answer_sdp.into_bytes());
        let invite_key = call.invite_key.clone();
        let dialog = Dialog::uas(&call.invite, key);
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.facts = Some(facts);
        call.codecs = codecs;
        call.recorder = Some(recorder);
        call.slot = Some(slot);
        call.local_port = lease.port();
        call.pending = Some(Pending {
            lease,
            socket,
            media,
        });
        call.dialog = dialog;
        call.phase = Phase::Ringing;
        call.answer = Some((AnswerRetransmit::new(now, self.env.timers, true), ok));
        call.answer_at = Some(now + self.env.answer_delay);
        let at = call.answer_at;
        self.respond(&invite_key, ringing, now);
        self.schedule(at, Wake::Call(key.to_string()));
    }

    /// Sends the 200 (after the ring delay) and hands the call over when the
    /// offer came in the INVITE; an offerless call waits for the ACK's answer.
    pub(super) fn answer(&mut self, key: &str, now: Instant) {
        let reliable;
        let ok;
        let invite_key;
        {
            let Some(call) = self.calls.get_mut(key) else {
                return;
            };
            call.answer_at = None;
            let Some((_, msg)) = call.answer.take() else {
                return;
            };
            reliable = call.source.transport.reliable();
            ok = msg;
            invite_key = call.invite_key.clone();
            call.phase = Phase::Answered;
            // We are the UAS: we refresh when the plan says `uas`.
            call.session_timer = call.timer_plan.map(|(interval, refresher, _)| {
                SessionTimer::new(interval, refresher == Refresher::Uas, now)
            });
            let at = Utc::now();
            call.answered_at = Some((now, at));
            crate::metrics::metrics()
                .invite_answered(now.saturating_duration_since(call.invite_at));
            let codec = call
                .pending
                .as_ref()
                .and_then(|p| p.media.as_ref())
                .map(|m| m.codec.sdp_name())
                .unwrap_or("");
            if let Some(r) = &call.recorder {
                r.answered(codec, at);
            }
            call.answer = Some((
                AnswerRetransmit::new(now, self.env.timers, reliable),
                ok.clone(),
            ));
            let wake = call.answer.as_ref().and_then(|(a, _)| a.next_wake());
            self.schedule(wake, Wake::Call(key.to_string()));
        }
        self.respond(&invite_key, ok, now);
        self.schedule_session_timer(key);
        let has_media = self
            .calls
            .get(key)
            .and_then(|c| c.pending.as_ref())
            .is_some_and(|p| p.media.is_some());
        if has_media {
            self.hand_over(key);
        }
    }

    pub(super) fn hand_over(&mut self, key: &str) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        tracing::info!(
            call_id = call.invite.call_id().unwrap_or_default(),
            call_log_id = %call.log_id,
            from = %call.from_number,
            to = %call.to_number,
            "call answered and handed to the runtime"
        );
        let Some(Pending {
            lease,
            socket,
            media: Some(media),
        }) = call.pending.take()
        else {
            return;
        };
        let Some(facts) = call.facts.clone() else {
            return;
        };
        call.srtp_in_use = media.srtp.is_some();
        let (events_tx, events_rx) = mpsc::channel(32);
        let (commands_tx, mut commands_rx) = mpsc::channel::<CallCommand>(16);
        call.events = Some(events_tx);
        let incoming = IncomingCall {
            call_log_id: call.log_id,
            direction: call.direction,
            variables: std::mem::take(&mut call.variables),
            sip_call_id: call.invite.call_id().unwrap_or_default().to_string(),
            workspace_id: facts.workspace_id,
            agent_id: facts.agent_id.unwrap_or_default(),
            phone_number_id: facts.phone_number_id,
            sip_trunk_id: facts.sip_trunk_id,
            from_number: call.from_number.clone(),
            to_number: call.to_number.clone(),
            media,
            rtp_socket: socket,
            rtp_port: lease,
            events: events_rx,
            commands: commands_tx,
        };
        let internal = self.env.internal.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            while let Some(command) = commands_rx.recv().await {
                if internal
                    .send(Internal::Command {
                        key: key.clone(),
                        command,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = internal.send(Internal::CommandsClosed { key }).await;
        });
        match call.consult.take() {
            Some(consult) => {
                if let Err(Ok(unused)) = consult.send(Ok(incoming)) {
                    // The transferring call is gone: nobody takes this one.
                    let _ = unused.commands.try_send(CallCommand::Hangup {
                        by: HangupBy::Agent,
                        reason: "transfer abandoned".into(),
                    });
                }
            }
            None => self.env.handler.on_call(incoming),
        }
    }

    pub fn cancel_call(&mut self, key: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if !matches!(call.phase, Phase::Routing | Phase::Ringing) {
            // Outbound calls are cancelled through their dial machine.
            return;
        }
        let resp = {
            let mut r =
                super::message::Message::response_to(&call.invite, 487, "Request Terminated");
            r.set_to_tag(key);
            r
        };
        let invite_key = call.invite_key.clone();
        if call.phase == Phase::Routing {
            // The routing task will report back; the row is written then.
            call.cancelled = true;
        } else if let Some(r) = &call.recorder {
            r.ended(CallEnd {
                status: "no_answer".into(),
                sip_code: Some(487),
                hangup_by: Some(HangupBy::Caller),
                reason: "cancelled".into(),
                at: Utc::now(),
                duration_ms: None,
            });
        }
        let done = call.phase == Phase::Ringing;
        self.respond(&invite_key, resp, now);
        if done {
            self.remove_call(key);
        }
    }

    pub fn on_ack(&mut self, key: &str, ack: &Message, now: Instant) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.phase != Phase::Answered {
            return;
        }
        call.phase = Phase::Confirmed;
        if let Some((a, _)) = call.answer.as_mut() {
            a.acked();
        }
        // Our 200 carried the offer when the INVITE had none: SRTP is
        // what it offered.
        let offered_srtp = call
            .answer
            .as_ref()
            .is_some_and(|(_, ok)| ok.body.windows(8).any(|w| w == b"RTP/SAVP"));
        call.answer = None;
        let sources = SourcePolicy {
            signalling_ip: Some(call.origin),
            latch: self.env.latch,
        };
        // Offerless INVITE: the ACK carries the answer to our offer (SRTP
        // exactly when we offered it).
        let needs_answer = call.pending.as_ref().is_some_and(|p| p.media.is_none());
        if needs_answer {
            let local = std::net::SocketAddr::new(self.env.advertised_ip, call.local_port);
            let negotiated = sdp::parse(&ack.body)
                .ok()
                .and_then(|s| sdp::negotiate(&s, &call.codecs).ok())
                .filter(|n| n.srtp.is_some() == offered_srtp);
            match negotiated {
                Some(n) => {
                    let media = to_media(&n, local, sources, &call.srtp_key);
                    if let Some(p) = call.pending.as_mut() {
                        p.media = Some(media);
                    }
                    self.hand_over(key);
                }
                None => self.end_call(
                    key,
                    "failed",
                    HangupBy::System,
                    "no usable answer in ACK",
                    now,
                ),
            }
        }
    }
}

pub(super) fn call_session_id(call: &Call) -> u64 {
    call.log_id.as_u64_pair().0 >> 1
}

/// The media a negotiation agreed; on RTP/SAVP with `ours` (our SDES key)
/// and the peer's key.
pub(super) fn to_media(
    n: &Negotiated,
    local: std::net::SocketAddr,
    sources: SourcePolicy,
    ours: &SrtpKey,
) -> NegotiatedMedia {
    NegotiatedMedia {
        sources,
        local_addr: local,
        remote_addr: n.remote,
        codec: n.codec,
        payload_type: n.payload_type,
        telephone_event_pt: n.telephone_event_pt,
        ptime_ms: n.ptime_ms,
        srtp: n.srtp.as_ref().map(|theirs| SrtpKeys {
            local: ours.clone(),
            remote: theirs.key.clone(),
        }),
    }
}

/// Where our in-dialog requests go: over a connection (TCP, TLS,
/// WebSocket) the caller's, over UDP the Contact address when it is an IP
/// literal, else the source.
pub(super) fn request_target(call: &Call) -> Target {
    if call.source.transport.reliable() {
        return call.source;
    }
    let contact = call
        .dialog
        .as_ref()
        .map(|d| d.next_hop_uri())
        .unwrap_or_default();
    let addr = super::message::parse_sip_uri(&contact).and_then(|u| {
        let ip: std::net::IpAddr = u
            .host_with_port
            .host
            .to_string()
            .trim_matches(['[', ']'])
            .parse()
            .ok()?;
        let port = u.host_with_port.port.map(|p| *p.value()).unwrap_or(5060);
        Some(std::net::SocketAddr::new(ip, port))
    });
    Target {
        addr: addr.unwrap_or(call.source.addr),
        ..call.source
    }
}

pub(super) fn response_target(call: &Call) -> Target {
    match (call.source.transport, call.invite.top_via()) {
        (Transport::Udp, Some(via)) => Target {
            addr: super::transport::response_addr(&via, call.source.addr),
            ..call.source
        },
        _ => call.source,
    }
}
