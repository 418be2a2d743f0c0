//! In-dialog life of an answered call: BYE, re-INVITE/UPDATE (media
//! changes, hold, RFC 4028 refreshes in both directions: theirs answered,
//! ours sent as UPDATE when we are the refresher), INFO DTMF, NOTIFY for
//! our REFER, the runtime's commands, the call's timers, and ending the
//! call (BYE, event, call_logs row, slot and port released).

use std::time::Instant;

use chrono::Utc;

use super::call::{CallCommand, CallEvent, HangupBy};
use super::calls::{call_session_id, request_target, response_target, to_media, Phase};
use super::core::{Core, Purpose, Wake, ALLOW};
use super::dialog::{parse_dtmf_relay, AnswerTimer};
use super::message::{Message, Method};
use super::records::CallEnd;
use super::sdp;
use super::session_timer::{Refresher, TimerAction, TimerHeaders};
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
                self.on_bye(key, now);
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
                self.refresh_session(key, &req, &mut resp, now);
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

    /// The far end ended the call. A caller's phone that took a REFER
    /// with Replaces may leave itself (RFC 5589 §7): the caller is with
    /// the person now, and the node waits for the person's phone to end
    /// the replaced call.
    fn on_bye(&mut self, key: &str, now: Instant) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let handed = call
            .transfer
            .as_ref()
            .filter(|t| t.progress.under_way())
            .and_then(|t| t.replacing.as_ref())
            .map(|r| r.person.clone());
        if let Some(person) = handed {
            tracing::info!(call_log_id = %call.log_id, "the caller's phone left during the transfer it took: transferred");
            self.await_replaced_bye(&person, now);
            self.finish(
                key,
                "transferred",
                HangupBy::Caller,
                "the caller's phone took the call to the person (Replaces)",
                None,
            );
            return;
        }
        let reason = if call.replaced.is_some() {
            "the person's phone ended the replaced call"
        } else {
            "caller hung up"
        };
        self.finish(key, "completed", HangupBy::Caller, reason, None);
    }

    /// The caller's phone took the person's call over: the person's phone
    /// ends the node's call with it (RFC 3891 §3); the node waits for
    /// that, bounded.
    fn await_replaced_bye(&mut self, person: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(person) else {
            // Its phone has ended it already.
            return;
        };
        let wait = super::replaces::ReplacedWait::start(now);
        call.replaced = Some(wait);
        self.schedule(Some(wait.deadline()), Wake::Call(person.to_string()));
    }

    /// Whether a hang-up the runtime asks for must wait: the caller's call
    /// while its phone decides on taking the person's call over (carried
    /// out with the outcome), the person's call once taken over (its phone
    /// ends it; the node after `REPLACED_BYE_WAIT`).
    fn hangup_waits(&mut self, key: &str, by: HangupBy, reason: &str) -> bool {
        let Some(call) = self.calls.get_mut(key) else {
            return false;
        };
        if call.replaced.is_some() {
            tracing::debug!(call_log_id = %call.log_id, "the person's phone ends this call (Replaces)");
            return true;
        }
        let log_id = call.log_id;
        match call.transfer.as_mut().and_then(|t| t.replacing.as_mut()) {
            Some(r) => {
                if r.hangup.is_none() {
                    r.hangup = Some((by, reason.to_string()));
                }
                tracing::info!(call_log_id = %log_id, "hang-up held until the caller's phone reports on the transfer");
                true
            }
            None => false,
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
        let srtp_key = call.srtp_key.clone();
        // The leg's media stays as encrypted (or not) as it was set up.
        let was_srtp = call.srtp_in_use;
        let offer = sdp::parse(&req.body).ok();
        let negotiated = offer.as_ref().and_then(|o| {
            sdp::negotiate(o, &call.codecs)
                .ok()
                .filter(|n| n.srtp.is_some() == was_srtp)
                .map(|n| (o.clone(), n))
        });
        let resp = match (&offer, negotiated) {
            (_, Some((o, n))) => {
                let mut r = self.response(req, 200, "OK", None);
                r.add_header("Contact", format!("<{contact}>"));
                r.set_body(
                    "application/sdp",
                    sdp::build_answer(&o, &n, local, sid, version, Some(&srtp_key)).into_bytes(),
                );
                let media = to_media(&n, local, sources, &srtp_key);
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
                    sdp::build_offer(&codecs, local, sid, version, was_srtp.then_some(&srtp_key))
                        .into_bytes(),
                );
                r
            }
            _ => self.response(req, 488, "Not Acceptable Here", None),
        };
        let mut resp = resp;
        if resp.status() == Some(200) {
            self.refresh_session(key, req, &mut resp, now);
        }
        self.respond(tx_key, resp, now);
    }

    /// The far end's re-INVITE or UPDATE refreshed the session (RFC 4028
    /// §10): the timer restarts (with the interval it asks for, within our
    /// Min-SE), and the 2xx says who refreshes from now on: the sender of
    /// this request (`uac`) unless we were the refresher.
    pub(super) fn refresh_session(
        &mut self,
        key: &str,
        req: &Message,
        resp: &mut Message,
        now: Instant,
    ) {
        let min_se = self.env.session_timers.min_se;
        let Some(timer) = self
            .calls
            .get_mut(key)
            .and_then(|c| c.session_timer.as_mut())
        else {
            return;
        };
        let asked = TimerHeaders::read(req);
        let interval = asked.session_expires.map(|se| se.max(min_se));
        let we_refresh = match asked.refresher {
            Some(Refresher::Uac) => Some(false),
            Some(Refresher::Uas) => Some(true),
            None => None,
        };
        timer.refreshed(now, interval, we_refresh);
        let refresher = if timer.we_refresh() { "uas" } else { "uac" };
        resp.add_header(
            "Session-Expires",
            format!("{};refresher={refresher}", timer.interval()),
        );
        if asked.supported {
            resp.add_header("Require", "timer");
        }
        self.schedule_session_timer(key);
    }

    pub(super) fn schedule_session_timer(&mut self, key: &str) {
        let at = self
            .calls
            .get(key)
            .and_then(|c| c.session_timer.as_ref())
            .map(|t| t.next_wake());
        self.schedule(at, Wake::Call(key.to_string()));
    }

    /// We are the refresher and half the interval has passed: an UPDATE
    /// with no body (RFC 4028 §7.4, RFC 3311) carrying the interval.
    fn send_refresh(&mut self, key: &str, now: Instant) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let transport = call.source.transport;
        let via = self.via_sent_by(transport);
        let contact = self.contact(transport);
        let min_se = self.env.session_timers.min_se;
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(interval) = call.session_timer.as_ref().map(|t| t.interval()) else {
            return;
        };
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        let mut req = dialog.request(Method::Update, &via, transport.via_name(), &contact);
        req.add_header("Session-Expires", format!("{interval};refresher=uac"));
        req.add_header("Min-SE", min_se.to_string());
        req.add_header("Supported", "timer");
        let to = request_target(call);
        tracing::debug!(call_log_id = %call.log_id, interval, "refreshing the session (UPDATE)");
        self.send_request(
            req,
            to,
            Purpose::Refresh {
                call: key.to_string(),
            },
            now,
        );
    }

    /// The answer to our refresh: 2xx restarts the timer; 422 asks again
    /// with the far end's Min-SE; 408 and 481 end the call (§10); other
    /// refusals leave the session to expire.
    fn on_refresh_response(&mut self, key: &str, resp: &Message, now: Instant) {
        let code = resp.status().unwrap_or(500);
        let answered = TimerHeaders::read(resp);
        match code {
            200..=299 => {
                if let Some(t) = self
                    .calls
                    .get_mut(key)
                    .and_then(|c| c.session_timer.as_mut())
                {
                    let we_refresh = answered.refresher.map(|r| r == Refresher::Uac);
                    t.refreshed(now, answered.session_expires, we_refresh);
                }
                self.schedule_session_timer(key);
            }
            422 => {
                let asked = answered.min_se.unwrap_or(0);
                if let Some(t) = self
                    .calls
                    .get_mut(key)
                    .and_then(|c| c.session_timer.as_mut())
                {
                    if asked > t.interval() {
                        t.refreshed(now, Some(asked), Some(true));
                        self.send_refresh(key, now);
                    }
                }
            }
            408 | 481 => self.end_call(
                key,
                "completed",
                HangupBy::System,
                &format!("session refresh answered {code}"),
                now,
            ),
            _ => tracing::info!(
                code,
                "session refresh refused; the session expires unless the far end refreshes"
            ),
        }
    }

    /// A NOTIFY in the call: the far end's report on our REFER (RFC 3515
    /// §2.4.4); other event packages are answered and ignored.
    pub(super) fn on_notify(&mut self, key: &str, req: &Message, now: Instant) {
        let is_refer = req
            .header("Event")
            .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("refer"));
        let Some(transfer) = self.calls.get_mut(key).and_then(|c| c.transfer.as_mut()) else {
            return;
        };
        if !is_refer {
            return;
        }
        transfer
            .progress
            .on_notify(&req.body, req.header("Subscription-State"), now);
        tracing::debug!(progress = ?transfer.progress.progress(), "transfer report");
        self.transfer_step(key, now);
    }

    /// After any input to the call's transfer: its outcome when decided
    /// (told to the runtime, written to call_logs, the call ended with BYE
    /// once the target has the caller), else its next deadline.
    pub(super) fn transfer_step(&mut self, key: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let Some(transfer) = call.transfer.as_ref() else {
            return;
        };
        let Some(outcome) = transfer.progress.outcome() else {
            let wake = transfer.progress.next_deadline();
            self.schedule(wake, Wake::Call(key.to_string()));
            return;
        };
        let Some(transfer) = call.transfer.take() else {
            return;
        };
        if let Some(replacing) = transfer.replacing {
            return self.replacing_decided(key, replacing, outcome, now);
        }
        let target = transfer.target;
        tracing::info!(call_log_id = %call.log_id, %target, outcome = outcome.as_str(), sip_code = outcome.sip_code(), "transfer decided");
        if let Some(r) = &call.recorder {
            r.transfer(&target, outcome.as_str(), Some(outcome.sip_code()));
        }
        self.event(
            key,
            CallEvent::TransferResult {
                accepted: outcome.accepted(),
                sip_code: outcome.sip_code(),
            },
        );
        if outcome.accepted() {
            self.end_call(
                key,
                "transferred",
                HangupBy::Agent,
                &format!("transferred to {target}"),
                now,
            );
        }
    }

    /// A warm transfer's completion decided. Success: the node leaves —
    /// it ends the caller's call (`transferred`) and waits for the
    /// person's phone to end the replaced one. Failure: nothing changes
    /// (the bridge goes on), unless the runtime asked to hang up meanwhile.
    fn replacing_decided(
        &mut self,
        key: &str,
        replacing: super::replaces::Replacing,
        outcome: super::refer::TransferOutcome,
        now: Instant,
    ) {
        let log_id = self.calls.get(key).map(|c| c.log_id);
        if outcome.accepted() {
            tracing::info!(call_log_id = ?log_id, sip_code = outcome.sip_code(), "warm transfer completed: the caller's phone took the call to the person (Replaces); the node leaves");
            self.await_replaced_bye(&replacing.person, now);
            self.end_call(
                key,
                "transferred",
                HangupBy::Agent,
                "transferred: the caller's phone took the call to the person (Replaces)",
                now,
            );
            return;
        }
        tracing::info!(call_log_id = ?log_id, outcome = outcome.as_str(), sip_code = outcome.sip_code(), "the caller's phone did not take the call to the person over; the node keeps bridging");
        if let Some((by, reason)) = replacing.hangup {
            self.end_call(key, "completed", by, &reason, now);
        }
    }

    pub fn on_client_response(&mut self, purpose: &Purpose, resp: &Message, now: Instant) {
        match purpose {
            Purpose::Refer { call } => {
                let code = resp.status().unwrap_or(500);
                if let Some(t) = self.calls.get_mut(call).and_then(|c| c.transfer.as_mut()) {
                    t.progress.on_refer_response(code, now);
                }
                self.transfer_step(call, now);
            }
            Purpose::Refresh { call } => self.on_refresh_response(call, resp, now),
            Purpose::Bye => {}
        }
    }

    pub fn on_client_timeout(&mut self, purpose: &Purpose, now: Instant) {
        match purpose {
            Purpose::Refer { call } => {
                if let Some(t) = self.calls.get_mut(call).and_then(|c| c.transfer.as_mut()) {
                    t.progress.on_refer_timeout();
                }
                self.transfer_step(call, now);
            }
            Purpose::Refresh { call } => self.end_call(
                call,
                "completed",
                HangupBy::System,
                "session refresh timed out",
                now,
            ),
            Purpose::Bye => {}
        }
    }

    pub fn on_call_timer(&mut self, key: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.replaced.is_some_and(|w| w.expired(now)) {
            tracing::info!(call_log_id = %call.log_id, "the person's phone did not end the replaced call: the node ends it");
            self.end_call(
                key,
                "completed",
                HangupBy::System,
                "the replaced call was not ended by the person's phone",
                now,
            );
            return;
        }
        if call.answer_at.is_some_and(|at| at <= now) {
            self.answer(key, now);
            return;
        }
        if let Some(t) = call.transfer.as_mut() {
            if t.progress.next_deadline().is_some_and(|at| at <= now) {
                t.progress.on_timer(now);
                self.transfer_step(key, now);
                return;
            }
        }
        match call.session_timer.as_mut().and_then(|t| t.poll(now)) {
            Some(TimerAction::Expire) => {
                tracing::info!(call_log_id = %call.log_id, "session timer expired: no refresh came");
                self.end_call(
                    key,
                    "completed",
                    HangupBy::System,
                    "session timer expired",
                    now,
                );
                return;
            }
            Some(TimerAction::Refresh) => {
                self.send_refresh(key, now);
                self.schedule_session_timer(key);
                return;
            }
            None => {}
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
            CallCommand::Hangup { by, reason } => {
                if !self.hangup_waits(key, by, &reason) {
                    self.end_call(key, "completed", by, &reason, now)
                }
            }
            CallCommand::Transfer { target } => self.transfer(key, &target, now),
            CallCommand::TransferReplacing { person } => self.transfer_replacing(key, person, now),
        }
    }

    pub fn on_commands_closed(&mut self, key: &str, now: Instant) {
        if self.calls.contains_key(key)
            && !self.hangup_waits(key, HangupBy::System, "call handler ended")
        {
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

    /// A blind transfer: REFER to the target as configured.
    pub(super) fn transfer(&mut self, key: &str, target: &str, now: Instant) {
        let Some(remote_target) = self
            .calls
            .get(key)
            .and_then(|c| c.dialog.as_ref())
            .map(|d| d.remote_target.clone())
        else {
            return;
        };
        // The target as configured: a `sip:`/`sips:`/`tel:` URI goes as is
        // (carriers route `tel:` themselves and refuse rewritten forms); a
        // bare number is a user at the far end's host.
        let refer_to = if target.contains(':') {
            target.to_string()
        } else {
            let host = super::message::parse_sip_uri(&remote_target)
                .map(|u| u.host_with_port.to_string())
                .unwrap_or_default();
            format!("sip:{target}@{host}")
        };
        self.send_refer(key, format!("<{refer_to}>"), target.to_string(), None, now);
    }

    /// A warm transfer's completion (RFC 5589 §7): when the caller's phone
    /// (REFER, Replaces) and the person's (Replaces) said they can, a
    /// REFER asking the caller's phone to call the person itself in place
    /// of the node's call with them (the person's call, by call_logs id).
    /// Otherwise nothing: the node keeps bridging.
    pub(super) fn transfer_replacing(&mut self, key: &str, person: uuid::Uuid, now: Instant) {
        let found = self
            .calls
            .iter()
            .find(|(_, c)| c.log_id == person && c.phase == Phase::Confirmed)
            .and_then(|(k, c)| Some((k.clone(), c.peer_caps, c.dialog.clone()?)));
        let Some(caller) = self.calls.get(key) else {
            return;
        };
        let log_id = caller.log_id;
        let Some((person_key, person_caps, person_dialog)) = found else {
            tracing::info!(call_log_id = %log_id, person = %person, "warm transfer: the person's call is not up; the node keeps bridging");
            return;
        };
        match super::replaces::plan(caller.peer_caps, person_caps, &person_dialog) {
            Ok(refer_to) => {
                tracing::info!(call_log_id = %log_id, %refer_to, "warm transfer: asking the caller's phone to take the call to the person over (REFER with Replaces)");
                let replacing = super::replaces::Replacing {
                    person: person_key,
                    hangup: None,
                };
                self.send_refer(key, refer_to.clone(), refer_to, Some(replacing), now);
            }
            Err(why) => {
                tracing::info!(call_log_id = %log_id, why = why.as_str(), "warm transfer: the node stays in the call, bridging")
            }
        }
    }

    /// Sends a REFER in the call's dialog (`refer_to`: the header's value)
    /// and follows its progress; one transfer at a time.
    fn send_refer(
        &mut self,
        key: &str,
        refer_to: String,
        target: String,
        replacing: Option<super::replaces::Replacing>,
        now: Instant,
    ) {
        let Some(transport) = self.calls.get(key).map(|c| c.source.transport) else {
            return;
        };
        let via = self.via_sent_by(transport);
        let contact = self.contact(transport);
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.phase != Phase::Confirmed && call.phase != Phase::Answered {
            return;
        }
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        if call.transfer.is_some() {
            tracing::info!("a transfer is already under way");
            return;
        }
        let mut req = dialog.request(Method::Refer, &via, transport.via_name(), &contact);
        req.add_header("Refer-To", refer_to);
        // RFC 3892: who asks; carriers check it against the call's parties.
        req.add_header("Referred-By", format!("<{}>", dialog.local_uri));
        let progress = super::refer::ReferProgress::start(self.env.refer_timers, now);
        let wake = progress.next_deadline();
        call.transfer = Some(super::refer::Transfer {
            target,
            progress,
            replacing,
        });
        let to = request_target(call);
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
        let Some(transport) = self.calls.get(key).map(|c| c.source.transport) else {
            return;
        };
        let via = self.via_sent_by(transport);
        let contact = self.contact(transport);
        let Some(call) = self.calls.get_mut(key) else {
            return;
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
