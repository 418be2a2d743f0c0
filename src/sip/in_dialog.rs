//! In-dialog life of an answered call: BYE, re-INVITE/UPDATE (media
//! changes, hold, RFC 4028 refreshes), INFO DTMF, NOTIFY for our REFER,
//! the runtime's commands, the call's timers, and ending the call (BYE,
//! event, call_logs row, slot and port released).

use std::time::Instant;

use chrono::Utc;

use super::call::{CallCommand, CallEvent, HangupBy};
use super::calls::{call_session_id, request_target, response_target, to_media, Phase};
use super::core::{Core, Purpose, Wake, ALLOW};
use super::dialog::{parse_dtmf_relay, AnswerTimer};
use super::message::{host_port, Message, Method};
use super::records::CallEnd;
use super::sdp;
use super::transport::Transport;

impl Core {
    pub fn on_in_dialog(&mut self, key: &str, tx_key: &str, req: Message, now: Instant) {
        if let Some(e) = self.server_txs.get_mut(tx_key) {
            e.call = Some(key.to_string());
        }
        let method = req.method().cloned().unwrap_or(Method::Ack);
        let in_order = self
            .calls
            .get_mut(key)
            .and_then(|c| c.dialog.as_mut())
            .map(|d| d.accept_remote_cseq(&req))
            .unwrap_or(true);
        if !in_order {
            let resp = self.response(&req, 500, "Server Internal Error", None);
            self.respond(tx_key, resp, now);
            return;
        }
        match method {
            Method::Bye => {
                let resp = self.response(&req, 200, "OK", None);
                self.respond(tx_key, resp, now);
                self.finish(key, "completed", HangupBy::Caller, "caller hung up", None);
            }
            Method::Invite => self.on_reinvite(key, tx_key, &req, now),
            Method::Info => {
                let is_dtmf = req
                    .header("Content-Type")
                    .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/dtmf-relay"));
                if let (true, Some((digit, duration_ms))) = (is_dtmf, parse_dtmf_relay(&req.body)) {
                    self.event(key, CallEvent::Dtmf { digit, duration_ms });
                }
                let resp = self.response(&req, 200, "OK", None);
                self.respond(tx_key, resp, now);
            }
            Method::Notify => {
                let resp = self.response(&req, 200, "OK", None);
                self.respond(tx_key, resp, now);
                self.on_notify(key, &req, now);
            }
            Method::Options => {
                let mut resp = self.response(&req, 200, "OK", None);
                resp.add_header("Allow", ALLOW);
                self.respond(tx_key, resp, now);
            }
            // UPDATE: a session refresh (RFC 4028) or, with SDP, a media change.
            Method::Update if !req.body.is_empty() => self.on_reinvite(key, tx_key, &req, now),
            Method::Update => {
                let mut resp = self.response(&req, 200, "OK", None);
                if let Some(se) = self.refresh_session(key, now) {
                    resp.add_header("Session-Expires", format!("{se};refresher=uac"));
                }
                self.respond(tx_key, resp, now);
            }
            // We never send reliable provisionals (no 100rel), so no PRACK fits.
            Method::Prack => {
                let mut resp = self.response(&req, 501, "Not Implemented", None);
                resp.add_header("Allow", ALLOW);
                self.respond(tx_key, resp, now);
            }
            _ => {
                let mut resp = self.response(&req, 405, "Method Not Allowed", None);
                resp.add_header("Allow", ALLOW);
                self.respond(tx_key, resp, now);
            }
        }
    }

    pub(super) fn on_reinvite(&mut self, key: &str, tx_key: &str, req: &Message, now: Instant) {
        let transport = self
            .calls
            .get(key)
            .map(|c| c.source.transport)
            .unwrap_or(Transport::Udp);
        let contact = self.contact(transport);
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let local = std::net::SocketAddr::new(self.env.advertised_ip, call.local_port);
        let sources = crate::media::receiver::SourcePolicy {
            signalling_ip: Some(call.origin),
            latch: self.env.latch,
        };
        call.sdp_version += 1;
        let (sid, version) = (call_session_id(call), call.sdp_version);
        let refreshed = call.session_timer.as_mut().map(|(se, deadline)| {
            *deadline = Some(now + std::time::Duration::from_secs(u64::from(*se)));
            *se
        });
        let offer = sdp::parse(&req.body).ok();
        let negotiated = offer
            .as_ref()
            .and_then(|o| sdp::negotiate(o, &call.codecs).ok().map(|n| (o.clone(), n)));
        let resp = match (&offer, negotiated) {
            (_, Some((o, n))) => {
                let mut r = self.response(req, 200, "OK", None);
                r.add_header("Contact", format!("<{contact}>"));
                r.set_body(
                    "application/sdp",
                    sdp::build_answer(&o, &n, local, sid, version).into_bytes(),
                );
                let media = to_media(&n, local, sources);
                self.event(
                    key,
                    CallEvent::MediaChanged {
                        media,
                        on_hold: n.on_hold,
                    },
                );
                r
            }
            (None, None) if req.body.is_empty() => {
                let codecs = self
                    .calls
                    .get(key)
                    .map(|c| c.codecs.clone())
                    .unwrap_or_default();
                let mut r = self.response(req, 200, "OK", None);
                r.add_header("Contact", format!("<{contact}>"));
                r.set_body(
                    "application/sdp",
                    sdp::build_offer(&codecs, local, sid, version).into_bytes(),
                );
                r
            }
            _ => self.response(req, 488, "Not Acceptable Here", None),
        };
        let mut resp = resp;
        if let (Some(se), Some(200)) = (refreshed, resp.status()) {
            resp.add_header("Session-Expires", format!("{se};refresher=uac"));
            resp.add_header("Require", "timer");
        }
        self.respond(tx_key, resp, now);
        self.schedule_session_timer(key);
    }

    /// Pushes the session expiry out by its interval; returns the interval.
    pub(super) fn refresh_session(&mut self, key: &str, now: Instant) -> Option<u32> {
        let call = self.calls.get_mut(key)?;
        let (se, deadline) = call.session_timer.as_mut()?;
        *deadline = Some(now + std::time::Duration::from_secs(u64::from(*se)));
        let se = *se;
        self.schedule_session_timer(key);
        Some(se)
    }

    pub(super) fn schedule_session_timer(&mut self, key: &str) {
        let at = self
            .calls
            .get(key)
            .and_then(|c| c.session_timer)
            .and_then(|(_, d)| d);
        self.schedule(at, Wake::Call(key.to_string()));
    }

    pub(super) fn on_notify(&mut self, key: &str, req: &Message, now: Instant) {
        let is_refer = req
            .header("Event")
            .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("refer"));
        let Some(call) = self.calls.get(key) else {
            return;
        };
        if !is_refer || call.transfer_deadline.is_none() {
            return;
        }
        // message/sipfrag: "SIP/2.0 200 OK"
        let code = std::str::from_utf8(&req.body)
            .ok()
            .and_then(|b| b.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok());
        let Some(code) = code.filter(|c| *c >= 200) else {
            return;
        };
        self.transfer_done(key, code, now);
    }

    pub(super) fn transfer_done(&mut self, key: &str, code: u16, now: Instant) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        call.transfer_deadline = None;
        let accepted = (200..300).contains(&code);
        let target = call.transfer_target.take().unwrap_or_default();
        self.event(
            key,
            CallEvent::TransferResult {
                accepted,
                sip_code: code,
            },
        );
        if accepted {
            self.end_call(
                key,
                "transferred",
                HangupBy::Agent,
                &format!("transferred to {target}"),
                now,
            );
        }
    }

    pub fn on_client_response(&mut self, purpose: &Purpose, resp: &Message, now: Instant) {
        if let Purpose::Refer { call } = purpose {
            let code = resp.status().unwrap_or(500);
            if code >= 300 {
                self.transfer_done(call, code, now);
            }
        }
    }

    pub fn on_client_timeout(&mut self, purpose: &Purpose, now: Instant) {
        if let Purpose::Refer { call } = purpose {
            self.transfer_done(call, 408, now);
        }
    }

    pub fn on_call_timer(&mut self, key: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.answer_at.is_some_and(|at| at <= now) {
            self.answer(key, now);
            return;
        }
        if call.transfer_deadline.is_some_and(|at| at <= now) {
            self.transfer_done(key, 408, now);
            return;
        }
        if call
            .session_timer
            .and_then(|(_, d)| d)
            .is_some_and(|at| at <= now)
        {
            self.end_call(key, "completed", HangupBy::System, "session expired", now);
            return;
        }
        if call.phase != Phase::Answered {
            return;
        }
        let Some((timer, msg)) = call.answer.as_mut() else {
            return;
        };
        match timer.on_timer(now) {
            AnswerTimer::Retransmit => {
                let bytes = msg.to_bytes();
                let wake = timer.next_wake();
                if let Some(entry) = self.server_txs.get(&call.invite_key) {
                    self.env.transports.send(&entry.target, bytes);
                } else {
                    let target = response_target(call);
                    self.env.transports.send(&target, bytes);
                }
                self.schedule(wake, Wake::Call(key.to_string()));
            }
            AnswerTimer::AckTimeout => {
                self.end_call(key, "failed", HangupBy::System, "ack timeout", now)
            }
            AnswerTimer::Idle => {
                let wake = timer.next_wake();
                self.schedule(wake, Wake::Call(key.to_string()));
            }
        }
    }

    pub fn on_command(&mut self, key: &str, command: CallCommand, now: Instant) {
        match command {
            CallCommand::Hangup { by, reason } => self.end_call(key, "completed", by, &reason, now),
            CallCommand::Transfer { target } => self.transfer(key, &target, now),
        }
    }

    pub fn on_commands_closed(&mut self, key: &str, now: Instant) {
        if self.calls.contains_key(key) {
            self.end_call(
                key,
                "completed",
                HangupBy::System,
                "call handler ended",
                now,
            );
        }
    }

    pub fn hangup_all_one(&mut self, key: &str, reason: &str, now: Instant) {
        let phase = self.calls.get(key).map(|c| c.phase);
        match phase {
            Some(Phase::Answered | Phase::Confirmed) => {
                self.end_call(key, "completed", HangupBy::System, reason, now)
            }
            Some(Phase::Dialing) => self.cancel_dial(key, now),
            Some(_) => self.cancel_call(key, now),
            None => {}
        }
    }

    pub(super) fn transfer(&mut self, key: &str, target: &str, now: Instant) {
        let via = self.via_sent_by();
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.phase != Phase::Confirmed && call.phase != Phase::Answered {
            return;
        }
        let transport = call.source.transport;
        let contact = {
            let hp = host_port(
                &self.env.advertised_ip.to_string(),
                Some(self.env.transports.local_addr().port()),
            );
            format!("sip:switchboard@{hp}")
        };
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        let refer_to = if target.contains(':') {
            target.to_string()
        } else {
            let host = super::message::parse_sip_uri(&dialog.remote_target)
                .map(|u| u.host_with_port.to_string())
                .unwrap_or_default();
            format!("sip:{target}@{host}")
        };
        let mut req = dialog.request(Method::Refer, &via, transport.via_name(), &contact);
        req.add_header("Refer-To", format!("<{refer_to}>"));
        req.add_header("Referred-By", format!("<{}>", dialog.local_uri));
        call.transfer_deadline = Some(now + self.env.timers.t64());
        call.transfer_target = Some(target.to_string());
        let to = request_target(call);
        let wake = call.transfer_deadline;
        self.send_request(
            req,
            to,
            Purpose::Refer {
                call: key.to_string(),
            },
            now,
        );
        self.schedule(wake, Wake::Call(key.to_string()));
    }

    /// We end an answered call: BYE, event, row, release.
    pub fn end_call(
        &mut self,
        key: &str,
        status: &'static str,
        by: HangupBy,
        reason: &str,
        now: Instant,
    ) {
        let via = self.via_sent_by();
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let transport = call.source.transport;
        let contact = {
            let hp = host_port(
                &self.env.advertised_ip.to_string(),
                Some(self.env.transports.local_addr().port()),
            );
            format!("sip:switchboard@{hp}")
        };
        let target = request_target(call);
        let bye = call.dialog.as_mut().map(|d| {
            let mut b = d.request(Method::Bye, &via, transport.via_name(), &contact);
            b.add_header(
                "Reason",
                format!("SIP;cause=200;text=\"{}\"", reason.replace('"', "'")),
            );
            b
        });
        if let Some(bye) = bye {
            self.send_request(bye, target, Purpose::Bye, now);
        }
        self.finish(key, status, by, reason, None);
    }

    /// Records the end, tells the runtime, forgets the call.
    pub(super) fn finish(
        &mut self,
        key: &str,
        status: &'static str,
        by: HangupBy,
        reason: &str,
        sip_code: Option<u16>,
    ) {
        let Some(call) = self.remove_call(key) else {
            return;
        };
        let at = Utc::now();
        let duration_ms = call
            .answered_at
            .map(|(_, t)| (at - t).num_milliseconds().max(0));
        if let Some(r) = &call.recorder {
            r.ended(CallEnd {
                status: status.into(),
                sip_code,
                hangup_by: Some(by),
                reason: reason.to_string(),
                at,
                duration_ms,
            });
        }
        if let Some(events) = &call.events {
            let _ = events.try_send(CallEvent::Hangup {
                by,
                reason: reason.to_string(),
            });
        }
        tracing::info!(call_log_id = %call.log_id, status, reason, "call ended");
    }

    pub(super) fn event(&self, key: &str, ev: CallEvent) {
        if let Some(events) = self.calls.get(key).and_then(|c| c.events.as_ref()) {
            if events.try_send(ev).is_err() {
                tracing::debug!("call event dropped: runtime queue full");
            }
        }
    }
}
