//! The calling side of an outbound INVITE (RFC 3261 §13.2, §9.1) as a
//! sans-IO state machine: Calling → Proceeding (1xx) → Early (18x, maybe
//! with early media) → Answered (2xx, ACKed) or Failed. It answers one
//! 401/407 challenge with the trunk's credentials, retries once a 422
//! Session Interval Too Small with the far end's Min-SE (RFC 4028 §6),
//! CANCELs when the ring
//! timeout passes or its owner hangs up, and re-ACKs retransmitted 2xx.
//! Time is an argument; the INVITE and CANCEL client transactions inside
//! (`transaction::ClientTx`) own the retransmission timers.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::dialog::{authorize_retry, next_attempt, Dialog};
use super::message::{Message, Method, StartLine};
use super::transaction::{ClientState, ClientTx, Timers, TxOutput};

/// What the machine needs besides the INVITE.
#[derive(Debug, Clone)]
pub struct DialSettings {
    pub timers: Timers,
    /// TCP: no retransmissions.
    pub reliable: bool,
    /// How long the far end may ring (from the INVITE) before we CANCEL.
    pub ring_timeout: Duration,
    /// The trunk's outbound username and password, for one challenge.
    pub credentials: Option<(String, String)>,
    /// Our Via sent-by (`host:port`) and transport name, for the 2xx ACK.
    pub via: String,
    pub transport: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialState {
    /// INVITE sent, nothing heard yet.
    Calling,
    /// 100 Trying (or another 1xx without a ringing meaning).
    Proceeding,
    /// 18x: ringing or session progress (early media when it had SDP).
    Early,
    /// 2xx received and ACKed.
    Answered,
    Failed,
}

/// Why we CANCEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    RingTimeout,
    /// Our side hung up before the answer (the API, a drain).
    Hangup,
}

/// How an unanswered call ended, as `call_logs.status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy,
    /// Rang until the ring timeout (then CANCELled).
    NoAnswer,
    /// We hung up before the answer.
    Cancelled,
    /// Any other refusal, no response at all, or a challenge we could not
    /// answer.
    Failed,
}

impl DialOutcome {
    pub fn status(self) -> &'static str {
        match self {
            DialOutcome::Busy => "busy",
            DialOutcome::NoAnswer | DialOutcome::Cancelled => "no_answer",
            DialOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DialFailure {
    pub outcome: DialOutcome,
    /// The final response's code; `None` when none came.
    pub sip_code: Option<u16>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DialOutput {
    /// Send to the trunk.
    Send(Message),
    /// A 1xx; `sdp` when it carried early media.
    Progress {
        code: u16,
        sdp: Option<Bytes>,
    },
    /// The 2xx (its ACK is the `Send` just before). `sdp` is the answer:
    /// the 2xx's body, else the early media's. When a CANCEL was already
    /// asked for, the owner must BYE at once (the answer crossed it).
    Answered {
        response: Box<Message>,
        dialog: Box<Dialog>,
        sdp: Option<Bytes>,
    },
    Failed(DialFailure),
}

#[derive(Debug)]
pub struct OutboundInvite {
    settings: DialSettings,
    state: DialState,
    /// The INVITE in flight (the authorized one after a challenge).
    invite: Message,
    tx: ClientTx,
    /// The previous attempt's transaction (challenged, or refused 422),
    /// re-ACKing its retransmitted final response until Timer D.
    challenged_tx: Option<ClientTx>,
    cancel_tx: Option<ClientTx>,
    auth_tried: bool,
    /// A 422 was answered with a longer interval (once only).
    interval_raised: bool,
    ring_deadline: Instant,
    cancel: Option<CancelReason>,
    /// §9.1: no CANCEL before a provisional; it waits for one.
    cancel_waiting: bool,
    /// 64*T1 after the CANCEL, the INVITE is given up (§9.1).
    cancel_deadline: Option<Instant>,
    early_sdp: Option<Bytes>,
    /// The 2xx's ACK, repeated for retransmitted 2xx until `ack_until`.
    ack: Option<(Message, String)>,
    ack_until: Option<Instant>,
}

/// Longest early-media SDP kept (an SDP body is a few hundred bytes).
const MAX_SDP: usize = 8 * 1024;

impl OutboundInvite {
    /// Sends `invite` (Call-ID, From tag, CSeq, Via branch and SDP offer
    /// already in it).
    pub fn start(
        invite: Message,
        settings: DialSettings,
        now: Instant,
    ) -> (OutboundInvite, Vec<DialOutput>) {
        let (tx, out) = ClientTx::new(invite.clone(), settings.reliable, settings.timers, now);
        let machine = OutboundInvite {
            ring_deadline: now + settings.ring_timeout,
            settings,
            state: DialState::Calling,
            invite,
            tx,
            challenged_tx: None,
            cancel_tx: None,
            auth_tried: false,
            interval_raised: false,
            cancel: None,
            cancel_waiting: false,
            cancel_deadline: None,
            early_sdp: None,
            ack: None,
            ack_until: None,
        };
        (machine, sends(out))
    }

    pub fn state(&self) -> DialState {
        self.state
    }

    /// The reason a CANCEL was asked for, if one was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.cancel
    }

    pub fn invite(&self) -> &Message {
        &self.invite
    }

    /// Nothing left to send or absorb: the owner may forget the machine.
    pub fn is_done(&self) -> bool {
        self.next_wake().is_none() && matches!(self.state, DialState::Answered | DialState::Failed)
    }

    pub fn next_wake(&self) -> Option<Instant> {
        let ringing = matches!(
            self.state,
            DialState::Calling | DialState::Proceeding | DialState::Early
        );
        [
            self.tx.next_wake(),
            self.challenged_tx.as_ref().and_then(ClientTx::next_wake),
            self.cancel_tx.as_ref().and_then(ClientTx::next_wake),
            (ringing && self.cancel.is_none()).then_some(self.ring_deadline),
            self.cancel_deadline.filter(|_| ringing),
            self.ack_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Our owner hangs up before the answer: CANCEL (now, or at the first
    /// provisional). After the answer this does nothing (send BYE instead).
    pub fn cancel(&mut self, reason: CancelReason, now: Instant) -> Vec<DialOutput> {
        if self.cancel.is_some()
            || !matches!(
                self.state,
                DialState::Calling | DialState::Proceeding | DialState::Early
            )
        {
            return vec![];
        }
        self.cancel = Some(reason);
        if self.state == DialState::Calling {
            self.cancel_waiting = true;
            return vec![];
        }
        self.send_cancel(now)
    }

    fn send_cancel(&mut self, now: Instant) -> Vec<DialOutput> {
        self.cancel_waiting = false;
        let cancel = cancel_for(&self.invite);
        let (tx, out) = ClientTx::new(cancel, self.settings.reliable, self.settings.timers, now);
        self.cancel_tx = Some(tx);
        self.cancel_deadline = Some(now + self.settings.timers.t64());
        sends(out)
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<DialOutput> {
        let mut out = Vec::new();
        if let Some(tx) = self.cancel_tx.as_mut() {
            if tx.next_wake().is_some_and(|at| at <= now) {
                // A CANCEL that is never answered changes nothing by itself.
                out.extend(sends(tx.on_timer(now)));
            }
            if tx.is_terminated() {
                self.cancel_tx = None;
            }
        }
        if let Some(tx) = self.challenged_tx.as_mut() {
            if tx.next_wake().is_some_and(|at| at <= now) {
                let _ = tx.on_timer(now);
            }
            if tx.is_terminated() {
                self.challenged_tx = None;
            }
        }
        if self.ack_until.is_some_and(|at| at <= now) {
            self.ack_until = None;
            self.ack = None;
        }
        if self.tx.next_wake().is_some_and(|at| at <= now) {
            let tx_out = self.tx.on_timer(now);
            out.extend(self.on_tx_outputs(tx_out, now));
        }
        let ringing = matches!(
            self.state,
            DialState::Calling | DialState::Proceeding | DialState::Early
        );
        if ringing && self.cancel.is_none() && now >= self.ring_deadline {
            out.extend(self.cancel(CancelReason::RingTimeout, now));
        }
        if ringing && self.cancel_deadline.is_some_and(|at| at <= now) {
            // §9.1: no final response 64*T1 after the CANCEL.
            self.cancel_deadline = None;
            out.push(self.fail(self.cancelled_outcome(), None, "no answer to CANCEL"));
        }
        out
    }

    pub fn handle_response(&mut self, response: &Message, now: Instant) -> Vec<DialOutput> {
        let Some(code) = response.status() else {
            return vec![];
        };
        let Some(cseq) = response.cseq() else {
            return vec![];
        };
        let branch = response
            .top_via()
            .and_then(|v| v.branch().map(str::to_string));
        if cseq.method == Method::Cancel {
            if let Some(tx) = self.cancel_tx.as_mut() {
                let _ = tx.on_response(response, now);
                if tx.is_terminated() {
                    self.cancel_tx = None;
                }
            }
            return vec![];
        }
        if cseq.method != Method::Invite {
            return vec![];
        }
        // A retransmitted 2xx (the transaction ended at the first): ACK again.
        if (200..300).contains(&code) && self.state == DialState::Answered {
            let same_dialog = response.to().and_then(|t| t.tag().map(str::to_string));
            return match &self.ack {
                Some((ack, tag)) if same_dialog.as_deref() == Some(tag.as_str()) => {
                    vec![DialOutput::Send(ack.clone())]
                }
                _ => vec![],
            };
        }
        let ours = branch.as_deref() == self.invite.top_via().as_ref().and_then(|v| v.branch());
        if !ours {
            // The challenged INVITE's 401/407 again: its transaction re-ACKs.
            return match self.challenged_tx.as_mut() {
                Some(tx)
                    if branch.as_deref()
                        == tx.request().top_via().as_ref().and_then(|v| v.branch()) =>
                {
                    sends(tx.on_response(response, now))
                }
                _ => vec![],
            };
        }
        let tx_out = self.tx.on_response(response, now);
        self.on_tx_outputs(tx_out, now)
    }

    fn on_tx_outputs(&mut self, tx_out: Vec<TxOutput>, now: Instant) -> Vec<DialOutput> {
        let mut out = Vec::new();
        for o in tx_out {
            match o {
                TxOutput::Send(m) => out.push(DialOutput::Send(m)),
                TxOutput::Deliver(resp) => out.extend(self.on_delivered(&resp, now)),
                TxOutput::Timeout => {
                    if matches!(
                        self.state,
                        DialState::Calling | DialState::Proceeding | DialState::Early
                    ) {
                        let outcome = match self.cancel {
                            Some(_) => self.cancelled_outcome(),
                            None => DialOutcome::Failed,
                        };
                        out.push(self.fail(outcome, Some(408), "no response from the trunk"));
                    }
                }
            }
        }
        out
    }

    fn on_delivered(&mut self, resp: &Message, now: Instant) -> Vec<DialOutput> {
        let Some(code) = resp.status() else {
            return vec![];
        };
        if matches!(self.state, DialState::Answered | DialState::Failed) {
            return vec![];
        }
        match code {
            100..=199 => {
                let sdp = (!resp.body.is_empty() && resp.body.len() <= MAX_SDP && is_sdp(resp))
                    .then(|| resp.body.clone());
                if code >= 180 || sdp.is_some() {
                    self.state = DialState::Early;
                } else if self.state == DialState::Calling {
                    self.state = DialState::Proceeding;
                }
                if sdp.is_some() {
                    self.early_sdp = sdp.clone();
                }
                let mut out = vec![DialOutput::Progress { code, sdp }];
                if self.cancel_waiting {
                    out.extend(self.send_cancel(now));
                }
                out
            }
            200..=299 => {
                let Some(dialog) = Dialog::uac(&self.invite, resp) else {
                    // No To tag or Contact: no dialog to ACK into.
                    return vec![self.fail(DialOutcome::Failed, Some(code), "unusable 2xx")];
                };
                let seq = self.invite.cseq().map(|c| c.seq).unwrap_or(1);
                let ack = dialog.ack_for_2xx(seq, &self.settings.via, self.settings.transport);
                self.state = DialState::Answered;
                self.cancel_waiting = false;
                self.cancel_deadline = None;
                self.ack = Some((ack.clone(), dialog.remote_tag.clone()));
                self.ack_until = Some(now + self.settings.timers.t64());
                let sdp = if !resp.body.is_empty() && is_sdp(resp) {
                    Some(resp.body.clone())
                } else {
                    self.early_sdp.clone()
                };
                vec![
                    DialOutput::Send(ack),
                    DialOutput::Answered {
                        response: Box::new(resp.clone()),
                        dialog: Box::new(dialog),
                        sdp,
                    },
                ]
            }
            401 | 407 if !self.auth_tried && self.cancel.is_none() => {
                self.auth_tried = true;
                let retry = self
                    .settings
                    .credentials
                    .as_ref()
                    .and_then(|(user, pw)| authorize_retry(&self.invite, resp, user, pw));
                let Some(retry) = retry else {
                    return vec![self.fail(
                        DialOutcome::Failed,
                        Some(code),
                        "trunk asked for credentials we do not have",
                    )];
                };
                self.retry(retry, now)
            }
            422 if !self.interval_raised && self.cancel.is_none() => {
                self.interval_raised = true;
                let min_se = super::session_timer::TimerHeaders::read(resp).min_se;
                let Some(retry) = min_se.and_then(|m| with_interval(&self.invite, m)) else {
                    return vec![self.fail(
                        DialOutcome::Failed,
                        Some(code),
                        "Session Interval Too Small without a usable Min-SE",
                    )];
                };
                self.retry(retry, now)
            }
            _ => {
                let outcome = match (self.cancel, code) {
                    (Some(_), _) => self.cancelled_outcome(),
                    (None, 486 | 600) => DialOutcome::Busy,
                    (None, 401 | 407) => {
                        return vec![self.fail(
                            DialOutcome::Failed,
                            Some(code),
                            "trunk refused our credentials",
                        )]
                    }
                    (None, _) => DialOutcome::Failed,
                };
                let reason = match &resp.start {
                    StartLine::Response { reason, .. } if !reason.is_empty() => {
                        reason.chars().take(200).collect()
                    }
                    _ => format!("SIP {code}"),
                };
                vec![self.fail(outcome, Some(code), &reason)]
            }
        }
    }

    /// Sends `retry` as the INVITE's next attempt.
    fn retry(&mut self, retry: Message, now: Instant) -> Vec<DialOutput> {
        let (tx, out) = ClientTx::new(
            retry.clone(),
            self.settings.reliable,
            self.settings.timers,
            now,
        );
        self.invite = retry;
        self.challenged_tx = Some(std::mem::replace(&mut self.tx, tx));
        self.state = DialState::Calling;
        sends(out)
    }

    fn cancelled_outcome(&self) -> DialOutcome {
        match self.cancel {
            Some(CancelReason::RingTimeout) => DialOutcome::NoAnswer,
            _ => DialOutcome::Cancelled,
        }
    }

    fn fail(&mut self, outcome: DialOutcome, sip_code: Option<u16>, reason: &str) -> DialOutput {
        self.state = DialState::Failed;
        self.cancel_waiting = false;
        self.cancel_deadline = None;
        let reason = match (outcome, self.cancel) {
            (DialOutcome::NoAnswer, _) => "no answer before the ring timeout".to_string(),
            (DialOutcome::Cancelled, _) => "cancelled before the answer".to_string(),
            _ => reason.to_string(),
        };
        DialOutput::Failed(DialFailure {
            outcome,
            sip_code,
            reason,
        })
    }

    /// Whether the INVITE transaction still absorbs retransmissions.
    pub fn invite_tx_state(&self) -> ClientState {
        self.tx.state()
    }
}

/// RFC 4028 §6: the INVITE again with `Session-Expires` and `Min-SE` at
/// the far end's Min-SE (never below what we asked for).
fn with_interval(invite: &Message, min_se: u32) -> Option<Message> {
    let asked = invite
        .header("Session-Expires")
        .and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let interval = min_se.max(asked);
    let mut retry = next_attempt(invite)?;
    retry.set_header("Session-Expires", interval.to_string());
    retry.set_header("Min-SE", interval.to_string());
    Some(retry)
}

fn sends(out: Vec<TxOutput>) -> Vec<DialOutput> {
    out.into_iter()
        .filter_map(|o| match o {
            TxOutput::Send(m) => Some(DialOutput::Send(m)),
            _ => None,
        })
        .collect()
}

fn is_sdp(m: &Message) -> bool {
    m.header("Content-Type")
        .is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

/// The CANCEL for `invite` (§9.1): the same Request-URI, top Via (branch),
/// Call-ID, From, To, Route and CSeq number.
pub fn cancel_for(invite: &Message) -> Message {
    let uri = invite.request_uri().unwrap_or("sip:invalid").to_string();
    let mut headers = Vec::new();
    if let Some(via) = invite.header_values("Via").first() {
        headers.push(("Via".to_string(), via.to_string()));
    }
    for name in ["Max-Forwards", "From", "To", "Call-ID", "Route"] {
        for (n, v) in &invite.headers {
            if n.eq_ignore_ascii_case(name) {
                headers.push((n.clone(), v.clone()));
            }
        }
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    headers.push(("CSeq".to_string(), format!("{seq} CANCEL")));
    Message {
        start: StartLine::Request {
            method: Method::Cancel,
            uri,
        },
        headers,
        body: Bytes::new(),
    }
}

#[cfg(test)]
#[path = "dial_tests.rs"]
mod tests;
