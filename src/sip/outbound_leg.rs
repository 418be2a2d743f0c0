//! Outbound calls in the SIP core: a dial request (from the API, through
//! the server handle) becomes a call_logs row, an RTP port, a trunk slot and
//! an INVITE with our SDP offer to the trunk; the `dial::OutboundInvite`
//! machine's outputs are carried out here. Once the far end answers, the
//! call is an ordinary confirmed call (BYE, re-INVITE, REFER as inbound)
//! handed to the runtime like an inbound one.

use std::net::SocketAddr;
use std::time::Instant;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::call::{CallDirection, HangupBy};
use super::calls::{to_media, Call, Pending, Phase};
use super::core::{Core, Wake, ALLOW, USER_AGENT};
use super::decide::RouteFacts;
use super::dial::{CancelReason, DialOutput, DialSettings, OutboundInvite};
use super::header::host_port;
use super::message::{new_branch, random_token, Message, Method, StartLine};
use super::number::E164;
use super::records::{CallEnd, CallRecorder};
use super::sdp;
use super::transport::{Target, Transport};
use crate::media::Codec;

/// Everything the SIP layer needs to place a call; the caller (the API)
/// has checked the workspace owns the agent, the trunk and the number.
#[derive(Debug, Clone)]
pub struct DialRequest {
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub sip_trunk_id: Uuid,
    /// Our number the call comes from (its row, when it is one of ours).
    pub from: E164,
    pub phone_number_id: Option<Uuid>,
    pub to: E164,
    /// The trunk's resolved `outbound_host:outbound_port`.
    pub target: SocketAddr,
    pub transport: Transport,
    /// The trunk's host as configured (for the Request-URI and To).
    pub host: String,
    pub port: u16,
    /// Host of our From URI (`from_domain`, else the trunk's host).
    pub from_domain: Option<String>,
    /// Outbound username and (decrypted) password.
    pub credentials: Option<(String, String)>,
    /// The trunk's codec preference (limited to what the media engine runs).
    pub codecs: Vec<Codec>,
    /// Offer SRTP (RTP/SAVP with our SDES key): a TLS trunk whose `srtp`
    /// is `required`. The answer must then be SRTP too.
    pub srtp: bool,
    pub max_concurrent_calls: usize,
    /// For the agent's prompt and greeting.
    pub variables: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("the trunk is at its max_concurrent_calls")]
    TrunkBusy,
    #[error("this node takes no more calls right now")]
    NodeBusy,
    #[error("no free RTP port")]
    NoRtpPort,
    #[error("the SIP service is not running")]
    Unavailable,
}

/// A warm transfer's call to the person: answered (the call, to bridge),
/// or not (why).
pub type ConsultResult = Result<super::call::IncomingCall, ConsultFailure>;

/// Why the person was not reached: `busy`, `no_answer` or `failed` (as
/// `call_logs.status` says it), with the SIP code when there was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsultFailure {
    pub status: &'static str,
    pub sip_code: Option<u16>,
}

/// An outbound call as the live-call list shows it.
#[derive(Debug, Clone)]
pub struct OutboundView {
    pub call_log_id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub from: String,
    pub to: String,
    pub started_at: DateTime<Utc>,
    /// `ringing` until answered, then `in_progress`.
    pub state: &'static str,
}

/// An outbound INVITE's machine and where it talks to.
pub struct DialEntry {
    machine: OutboundInvite,
    target: Target,
    /// The call it belongs to (our From tag); gone once the call ended.
    key: String,
}

/// The pieces of our INVITE.
#[derive(Debug, Clone)]
pub struct InviteParts<'a> {
    pub to: &'a E164,
    pub from: &'a E164,
    pub host: &'a str,
    pub port: u16,
    pub transport: Transport,
    pub from_domain: Option<&'a str>,
    /// Our Via sent-by and Contact URI.
    pub via: &'a str,
    pub contact: &'a str,
    pub call_id: &'a str,
    pub local_tag: &'a str,
    pub sdp_offer: String,
    /// RFC 4028: the interval we ask for and our Min-SE (none when 0).
    pub session_timers: super::session_timer::TimerSettings,
}

/// The INVITE to the trunk: `sip:<to>@host:port`, From our number with our
/// tag, CSeq 1, a fresh branch, our SDP offer.
pub fn build_invite(p: &InviteParts) -> Message {
    let hp = host_port(p.host, Some(p.port));
    let uri = match p.transport.uri_param() {
        None => format!("sip:{}@{hp}", p.to),
        Some(t) => format!("sip:{}@{hp};transport={t}", p.to),
    };
    let from_host = host_port(p.from_domain.unwrap_or(p.host), None);
    let headers = vec![
        (
            "Via".to_string(),
            format!(
                "SIP/2.0/{} {};branch={};rport",
                p.transport.via_name(),
                p.via,
                new_branch()
            ),
        ),
        ("Max-Forwards".to_string(), "70".to_string()),
        (
            "From".to_string(),
            format!("<sip:{}@{from_host}>;tag={}", p.from, p.local_tag),
        ),
        (
            "To".to_string(),
            format!("<sip:{}@{}>", p.to, host_port(p.host, None)),
        ),
        ("Call-ID".to_string(), p.call_id.to_string()),
        ("CSeq".to_string(), "1 INVITE".to_string()),
        ("Contact".to_string(), format!("<{}>", p.contact)),
        ("Allow".to_string(), ALLOW.to_string()),
        ("Supported".to_string(), "timer".to_string()),
        ("User-Agent".to_string(), USER_AGENT.to_string()),
    ];
    let mut headers = headers;
    if p.session_timers.session_expires > 0 {
        // The far end (the UAS) chooses who refreshes (RFC 4028 §7.1).
        headers.push((
            "Session-Expires".to_string(),
            p.session_timers.session_expires.to_string(),
        ));
        headers.push(("Min-SE".to_string(), p.session_timers.min_se.to_string()));
    }
    let mut m = Message {
        start: StartLine::Request {
            method: Method::Invite,
            uri,
        },
        headers,
        body: bytes::Bytes::new(),
    };
    m.set_body("application/sdp", p.sdp_offer.clone().into_bytes());
    m
}

impl Core {
    /// Places an outbound call: refuses at once when the node or the trunk
    /// is full, else sends the INVITE and returns the call_logs id. With
    /// `consult` (a warm transfer's call to the person), the answered call
    /// or the failure goes there instead of to the call handler.
    pub fn start_dial(
        &mut self,
        req: DialRequest,
        consult: Option<tokio::sync::oneshot::Sender<ConsultResult>>,
        now: Instant,
    ) -> Result<Uuid, DialError> {
        let draining = self
            .env
            .shared
            .draining
            .load(std::sync::atomic::Ordering::Relaxed);
        if draining || self.calls.len() >= self.env.max_calls {
            return Err(DialError::NodeBusy);
        }
        let slot = self
            .env
            .decider
            .slots
            .try_acquire(req.sip_trunk_id, req.max_concurrent_calls)
            .ok_or(DialError::TrunkBusy)?;
        let (lease, socket) = self
            .env
            .ports
            .allocate(self.env.rtp_bind_ip)
            .map_err(|_| DialError::NoRtpPort)?;
        let log_id = Uuid::new_v4();
        let key = random_token(16);
        let call_id = format!("{}@{}", random_token(20), self.env.advertised_ip);
        let local = SocketAddr::new(self.env.advertised_ip, lease.port());
        let codecs = if req.codecs.is_empty() {
            vec![Codec::Pcmu, Codec::Pcma]
        } else {
            req.codecs.clone()
        };
        let session_id = log_id.as_u64_pair().0 >> 1;
        let via = self.via_sent_by(req.transport);
        let contact = self.contact(req.transport);
        let srtp_key = crate::media::srtp::SrtpKey::random();
        if req.transport == Transport::Tls {
            self.env.transports.expect_tls_name(req.target, &req.host);
        }
        let invite = build_invite(&InviteParts {
            to: &req.to,
            from: &req.from,
            host: &req.host,
            port: req.port,
            transport: req.transport,
            from_domain: req.from_domain.as_deref(),
            via: &via,
            contact: &contact,
            call_id: &call_id,
            local_tag: &key,
            sdp_offer: sdp::build_offer(
                &codecs,
                local,
                session_id,
                1,
                req.srtp.then_some(&srtp_key),
            ),
            session_timers: self.env.session_timers,
        });
        let target = Target {
            transport: req.transport,
            addr: req.target,
            conn: None,
        };
        let facts = RouteFacts {
            workspace_id: req.workspace_id,
            agent_id: Some(req.agent_id),
            phone_number_id: req.phone_number_id,
            sip_trunk_id: Some(req.sip_trunk_id),
            caller: None,
            dialed: None,
            diverted_from: None,
        };
        let started_at = Utc::now();
        let call = Call {
            log_id,
            direction: CallDirection::Outbound,
            invite: invite.clone(),
            invite_key: String::new(),
            merge_key: None,
            source: target,
            origin: target.addr.ip(),
            invite_at: now,
            phase: Phase::Dialing,
            cancelled: false,
            dialog: None,
            facts: Some(facts.clone()),
            codecs,
            from_number: req.from.to_string(),
            to_number: req.to.to_string(),
            started_at,
            recorder: None,
            events: None,
            slot: Some(slot),
            pending: Some(Pending {
                lease,
                socket,
                media: None,
            }),
            answer_at: None,
            answer: None,
            answered_at: None,
            local_port: local.port(),
            sdp_version: 1,
            transfer: None,
            timer_plan: None,
            session_timer: None,
            srtp_key,
            srtp_in_use: false,
            variables: req.variables,
            consult,
            peer_caps: Default::default(),
            replaced: None,
        };
        let recorder = CallRecorder::start(&self.env.records, self.log_start(&call, &facts));
        self.calls.insert(key.clone(), call);
        if let Some(call) = self.calls.get_mut(&key) {
            call.recorder = Some(recorder);
        }
        self.update_live();
        self.env.shared.outbound.insert(
            log_id,
            OutboundView {
                call_log_id: log_id,
                workspace_id: req.workspace_id,
                agent_id: req.agent_id,
                from: req.from.to_string(),
                to: req.to.to_string(),
                started_at,
                state: "ringing",
            },
        );
        let settings = DialSettings {
            timers: self.env.timers,
            reliable: req.transport.reliable(),
            ring_timeout: self.env.ring_timeout,
            credentials: req.credentials,
            via,
            transport: req.transport.via_name(),
        };
        tracing::info!(%call_id, call_log_id = %log_id, to = %req.to, trunk = %req.sip_trunk_id, "dialing out");
        let (machine, out) = OutboundInvite::start(invite, settings, now);
        self.dials.insert(
            call_id.clone(),
            DialEntry {
                machine,
                target,
                key,
            },
        );
        self.apply_dial(&call_id, out, now);
        Ok(log_id)
    }

    pub(super) fn on_dial_response(
        &mut self,
        call_id: &str,
        msg: &Message,
        source: Target,
        now: Instant,
    ) {
        let Some(entry) = self.dials.get_mut(call_id) else {
            return;
        };
        // Over a connection (TCP, TLS), later requests (ACK, CANCEL, BYE)
        // use the one the answers came on.
        if source.transport.reliable() && entry.target.transport == source.transport {
            entry.target.conn = source.conn;
            let key = entry.key.clone();
            if let Some(call) = self.calls.get_mut(&key) {
                call.source.conn = source.conn;
            }
        }
        let Some(entry) = self.dials.get_mut(call_id) else {
            return;
        };
        let out = entry.machine.handle_response(msg, now);
        self.apply_dial(call_id, out, now);
    }

    pub(super) fn on_dial_timer(&mut self, call_id: &str, now: Instant) {
        let Some(entry) = self.dials.get_mut(call_id) else {
            return;
        };
        if entry.machine.next_wake().is_none_or(|at| at > now) {
            return;
        }
        let out = entry.machine.on_timer(now);
        self.apply_dial(call_id, out, now);
    }

    /// Our side hangs up an outbound call (API, drain).
    pub(super) fn hangup_outbound(&mut self, call_log_id: Uuid, now: Instant) {
        let key = self
            .calls
            .iter()
            .find(|(_, c)| c.log_id == call_log_id && c.direction == CallDirection::Outbound)
            .map(|(k, _)| k.clone());
        let Some(key) = key else { return };
        match self.calls.get(&key).map(|c| c.phase) {
            Some(Phase::Dialing) => self.cancel_dial(&key, now),
            Some(_) => self.end_call(&key, "completed", HangupBy::Agent, "ended by API", now),
            None => {}
        }
    }

    /// CANCEL an outbound call that is not answered yet.
    pub(super) fn cancel_dial(&mut self, key: &str, now: Instant) {
        let Some(call_id) = self
            .calls
            .get(key)
            .and_then(|c| c.invite.call_id())
            .map(str::to_string)
        else {
            return;
        };
        let Some(entry) = self.dials.get_mut(&call_id) else {
            return;
        };
        let out = entry.machine.cancel(CancelReason::Hangup, now);
        self.apply_dial(&call_id, out, now);
    }

    fn apply_dial(&mut self, call_id: &str, out: Vec<DialOutput>, now: Instant) {
        for o in out {
            let Some(entry) = self.dials.get(call_id) else {
                return;
            };
            let (target, key) = (entry.target, entry.key.clone());
            match o {
                DialOutput::Send(m) => {
                    // The authorized INVITE replaces the first in the call.
                    if m.method() == Some(&Method::Invite) {
                        if let Some(call) = self.calls.get_mut(&key) {
                            call.invite = m.clone();
                        }
                    }
                    self.env.transports.send(&target, m.to_bytes());
                }
                DialOutput::Progress { code, sdp } => {
                    tracing::debug!(call_log_id = ?self.calls.get(&key).map(|c| c.log_id), code, early_media = sdp.is_some(), "outbound call progressing");
                }
                DialOutput::Answered {
                    dialog,
                    sdp,
                    response,
                } => self.dial_answered(&key, *dialog, sdp, &response, now),
                DialOutput::Failed(f) => {
                    let Some(call) = self.remove_call(&key) else {
                        continue;
                    };
                    let hangup_by = match f.outcome {
                        super::dial::DialOutcome::NoAnswer => Some(HangupBy::System),
                        super::dial::DialOutcome::Cancelled => Some(HangupBy::Agent),
                        _ => None,
                    };
                    tracing::info!(call_log_id = %call.log_id, status = f.outcome.status(), sip_code = ?f.sip_code, reason = %f.reason, "outbound call not answered");
                    if let Some(consult) = call.consult {
                        let _ = consult.send(Err(ConsultFailure {
                            status: f.outcome.status(),
                            sip_code: f.sip_code,
                        }));
                    }
                    if let Some(r) = &call.recorder {
                        r.ended(CallEnd {
                            status: f.outcome.status().into(),
                            sip_code: f.sip_code,
                            hangup_by,
                            reason: f.reason,
                            at: Utc::now(),
                            duration_ms: None,
                        });
                    }
                }
            }
        }
        match self.dials.get(call_id) {
            Some(entry) if entry.machine.is_done() => {
                self.dials.remove(call_id);
            }
            Some(entry) => {
                let at = entry.machine.next_wake();
                self.schedule(at, Wake::Dial(call_id.to_string()));
            }
            None => {}
        }
    }

    fn dial_answered(
        &mut self,
        key: &str,
        dialog: super::dialog::Dialog,
        sdp_answer: Option<bytes::Bytes>,
        response: &Message,
        now: Instant,
    ) {
        let cancelled = self
            .dials
            .values()
            .find(|d| d.key == key)
            .and_then(|d| d.machine.cancel_reason());
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.dialog = Some(dialog);
        call.phase = Phase::Confirmed;
        call.peer_caps = super::replaces::PeerCaps::of(response);
        if let Some(reason) = cancelled {
            // The answer crossed our CANCEL: end it at once.
            let (status, by, why) = match reason {
                CancelReason::RingTimeout => (
                    "no_answer",
                    HangupBy::System,
                    "answered after the ring timeout",
                ),
                CancelReason::Hangup => {
                    ("no_answer", HangupBy::Agent, "cancelled before the answer")
                }
            };
            self.end_call(key, status, by, why, now);
            return;
        }
        // SRTP answered exactly when we offered it (a plain answer to our
        // SAVP offer would send the media in the clear).
        let offered_srtp = call.invite.body.windows(8).any(|w| w == b"RTP/SAVP");
        let negotiated = sdp_answer
            .as_deref()
            .and_then(|b| sdp::parse(b).ok())
            .and_then(|s| sdp::negotiate(&s, &call.codecs).ok())
            .filter(|n| n.srtp.is_some() == offered_srtp);
        let Some(n) = negotiated else {
            self.end_call(key, "failed", HangupBy::System, "no usable SDP answer", now);
            return;
        };
        // RFC 4028 §7.2: the 2xx says whether a timer runs and who
        // refreshes; we are its UAC.
        let timers = super::session_timer::TimerHeaders::read(response);
        if let Some(interval) = timers.session_expires {
            let we_refresh = timers.refresher != Some(super::session_timer::Refresher::Uas);
            call.session_timer = Some(super::session_timer::SessionTimer::new(
                interval.max(self.env.session_timers.min_se),
                we_refresh,
                now,
            ));
        }
        let Some(sources) = self.calls.get(key).map(|c| self.media_sources(c)) else {
            return;
        };
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let local = SocketAddr::new(self.env.advertised_ip, call.local_port);
        let media = to_media(&n, local, sources, &call.srtp_key);
        let at = Utc::now();
        call.answered_at = Some((now, at));
        if let Some(r) = &call.recorder {
            r.answered(media.codec.sdp_name(), at);
        }
        if let Some(p) = call.pending.as_mut() {
            p.media = Some(media);
        }
        if let Some(mut view) = self.env.shared.outbound.get_mut(&call.log_id) {
            view.state = "in_progress";
        }
        self.hand_over(key);
        self.schedule_session_timer(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invite_is_well_formed_for_udp_tcp_and_tls() {
        let to = E164::parse("+15551230000").unwrap();
        let from = E164::parse("+15555550100").unwrap();
        for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            let m = build_invite(&InviteParts {
                to: &to,
                from: &from,
                host: "trunk.example.com",
                port: 5080,
                transport,
                from_domain: Some("example.com"),
                via: "127.0.0.1:5060",
                contact: "sip:switchboard@127.0.0.1:5060",
                call_id: "abc@127.0.0.1",
                local_tag: "ourtag",
                sdp_offer: "v=0\r\n".into(),
                session_timers: Default::default(),
            });
            m.validate_request().unwrap();
            let back = Message::parse(&m.to_bytes()).unwrap();
            assert_eq!(back.from().unwrap().tag(), Some("ourtag"));
            assert_eq!(back.from().unwrap().uri, "sip:+15555550100@example.com");
            assert_eq!(back.to().unwrap().uri, "sip:+15551230000@trunk.example.com");
            assert_eq!(back.cseq().unwrap().seq, 1);
            assert_eq!(back.header("Content-Type"), Some("application/sdp"));
            let uri = back.request_uri().unwrap();
            match transport {
                Transport::Udp => assert_eq!(uri, "sip:+15551230000@trunk.example.com:5080"),
                Transport::Tcp => {
                    assert_eq!(uri, "sip:+15551230000@trunk.example.com:5080;transport=tcp");
                    assert!(back.header("Via").unwrap().starts_with("SIP/2.0/TCP "));
                }
                _ => {
                    assert_eq!(uri, "sip:+15551230000@trunk.example.com:5080;transport=tls");
                    assert!(back.header("Via").unwrap().starts_with("SIP/2.0/TLS "));
                }
            }
            // RFC 4028: we ask for timers and let the far end pick the refresher.
            assert_eq!(back.header("Session-Expires"), Some("1800"));
            assert_eq!(back.header("Min-SE"), Some("90"));
            assert!(back.header_values("Supported").contains(&"timer"));
        }
    }
}
