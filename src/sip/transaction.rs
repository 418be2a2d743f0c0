//! RFC 3261 §17 transactions as sans-IO state machines: each takes a message
//! or a timer tick with `now` and returns what to send, what to deliver to
//! the transaction user, and (via `next_wake`) when it wants to run again.
//! The 2xx-until-ACK retransmission of an INVITE belongs to the UAS core
//! (§13.3.1.4, see `dialog::AnswerRetransmit`), not to the transaction.

use std::time::{Duration, Instant};

use super::message::{Message, Method, StartLine};

/// Timer base values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: Timers B, F, H, J, L.
    pub fn t64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks of its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum TxOutput {
    /// Send this message to the transaction's peer.
    Send(Message),
    /// Hand this message to the transaction user.
    Deliver(Message),
    /// Timer B/F/H fired: the peer never answered (or never ACKed).
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    /// RFC 6026: a 2xx was sent; retransmitted INVITEs are absorbed.
    Accepted,
    Terminated,
}

/// A server transaction, INVITE or non-INVITE (§17.2.1, §17.2.2).
#[derive(Debug)]
pub struct ServerTx {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ServerState,
    last_response: Option<Message>,
    /// Timer G: next retransmission of the final response and its interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H (INVITE, Completed), I (Confirmed), J (non-INVITE), L (Accepted).
    end_at: Option<Instant>,
    timeout_on_end: bool,
}

impl ServerTx {
    pub fn new(request: &Message, reliable: bool, timers: Timers) -> ServerTx {
        let invite = request.method() == Some(&Method::Invite);
        ServerTx {
            invite,
            reliable,
            timers,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            last_response: None,
            retransmit: None,
            end_at: None,
            timeout_on_end: false,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    pub fn last_response(&self) -> Option<&Message> {
        self.last_response.as_ref()
    }

    /// A request matched this transaction: a retransmission or the ACK.
    pub fn on_request(&mut self, request: &Message, now: Instant) -> Vec<TxOutput> {
        let is_ack = request.method() == Some(&Method::Ack);
        match (self.state, is_ack) {
            (ServerState::Completed, true) if self.invite => {
                self.state = ServerState::Confirmed;
                self.retransmit = None;
                self.timeout_on_end = false;
                // Timer I absorbs ACK retransmissions; zero over TCP.
                if self.reliable {
                    self.state = ServerState::Terminated;
                    self.end_at = None;
                } else {
                    self.end_at = Some(now + self.timers.t4);
                }
                vec![]
            }
            (ServerState::Accepted, true) => vec![TxOutput::Deliver(request.clone())],
            (_, true) => vec![],
            // Retransmitted request: repeat the last response, if any
            // (Proceeding/Completed); absorb otherwise.
            (ServerState::Proceeding | ServerState::Completed, false) => self
                .last_response
                .iter()
                .cloned()
                .map(TxOutput::Send)
                .collect(),
            _ => vec![],
        }
    }

    /// The transaction user answers.
    pub fn respond(&mut self, response: Message, now: Instant) -> Vec<TxOutput> {
        let code = match response.start {
            StartLine::Response { code, .. } => code,
            StartLine::Request { .. } => return vec![],
        };
        if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            return vec![];
        }
        self.last_response = Some(response.clone());
        if code < 200 {
            self.state = ServerState::Proceeding;
        } else if self.invite && code < 300 {
            self.state = ServerState::Accepted;
            self.end_at = Some(now + self.timers.t64());
        } else if self.invite {
            self.state = ServerState::Completed;
            if !self.reliable {
                self.retransmit = Some((now + self.timers.t1, self.timers.t1));
            }
            self.end_at = Some(now + self.timers.t64());
            self.timeout_on_end = true;
        } else if self.reliable {
            self.state = ServerState::Terminated;
        } else {
            self.state = ServerState::Completed;
            self.end_at = Some(now + self.timers.t64());
        }
        vec![TxOutput::Send(response)]
    }

    pub fn next_wake(&self) -> Option<Instant> {
        match (self.retransmit.map(|r| r.0), self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if let Some(end) = self.end_at {
            if now >= end {
                self.end_at = None;
                self.retransmit = None;
                self.state = ServerState::Terminated;
                if self.timeout_on_end {
                    out.push(TxOutput::Timeout);
                }
                return out;
            }
        }
        if let Some((at, interval)) = self.retransmit {
            if now >= at && self.state == ServerState::Completed {
                if let Some(r) = &self.last_response {
                    out.push(TxOutput::Send(r.clone()));
                }
                let next = (interval * 2).min(self.timers.t2);
                self.retransmit = Some((now + next, next));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Proceeding,
    Completed,
    Terminated,
}

/// A client transaction, INVITE or non-INVITE (§17.1.1, §17.1.2).
#[derive(Debug)]
pub struct ClientTx {
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    request: Message,
    /// Timer A (INVITE) or E (non-INVITE): next retransmission and interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B/F (give up) while Calling/Proceeding, D/K once Completed.
    end_at: Option<Instant>,
}

impl ClientTx {
    /// Starts the transaction; the first output sends the request.
    pub fn new(
        request: Message,
        reliable: bool,
        timers: Timers,
        now: Instant,
    ) -> (ClientTx, Vec<TxOutput>) {
        let invite = request.method() == Some(&Method::Invite);
        let tx = ClientTx {
            invite,
            reliable,
            timers,
            state: ClientState::Calling,
            retransmit: (!reliable).then_some((now + timers.t1, timers.t1)),
            end_at: Some(now + timers.t64()),
            request: request.clone(),
        };
        (tx, vec![TxOutput::Send(request)])
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    pub fn request(&self) -> &Message {
        &self.request
    }

    pub fn on_response(&mut self, response: &Message, now: Instant) -> Vec<TxOutput> {
        let Some(code) = response.status() else {
            return vec![];
        };
        match self.state {
            ClientState::Calling | ClientState::Proceeding if code < 200 => {
                self.state = ClientState::Proceeding;
                if self.invite {
                    // Timer B guards Calling only (§17.1.1.2): a phone may
                    // ring longer than 64*T1; the caller's own ring timeout
                    // (and CANCEL) ends that.
                    self.retransmit = None;
                    self.end_at = None;
                } else if let Some((_, _)) = self.retransmit {
                    // Timer E keeps firing at T2 in Proceeding (§17.1.2.2).
                    self.retransmit = Some((now + self.timers.t2, self.timers.t2));
                }
                vec![TxOutput::Deliver(response.clone())]
            }
            ClientState::Calling | ClientState::Proceeding => {
                self.retransmit = None;
                if self.invite && code < 300 {
                    // The ACK for a 2xx is the dialog's job (§13.2.2.4).
                    self.state = ClientState::Terminated;
                    self.end_at = None;
                    return vec![TxOutput::Deliver(response.clone())];
                }
                let mut out = vec![TxOutput::Deliver(response.clone())];
                if self.invite {
                    out.insert(0, TxOutput::Send(self.ack_for(response)));
                }
                let linger = match (self.reliable, self.invite) {
                    (true, _) => None,
                    (false, true) => Some(Duration::from_secs(32)),
                    (false, false) => Some(self.timers.t4),
                };
                match linger {
                    Some(d) => {
                        self.state = ClientState::Completed;
                        self.end_at = Some(now + d);
                    }
                    None => {
                        self.state = ClientState::Terminated;
                        self.end_at = None;
                    }
                }
                out
            }
            // Retransmitted final response: re-ACK (INVITE), absorb otherwise.
            ClientState::Completed if self.invite && code >= 300 => {
                vec![TxOutput::Send(self.ack_for(response))]
            }
            _ => vec![],
        }
    }

    /// ACK for a non-2xx final response (§17.1.1.3).
    fn ack_for(&self, response: &Message) -> Message {
        let uri = self
            .request
            .request_uri()
            .unwrap_or("sip:invalid")
            .to_string();
        let mut headers = Vec::new();
        if let Some(via) = self.request.header_values("Via").first() {
            headers.push(("Via".to_string(), via.to_string()));
        }
        for name in ["Max-Forwards", "From", "Call-ID", "Route"] {
            for (n, v) in &self.request.headers {
                if n.eq_ignore_ascii_case(name) {
                    headers.push((n.clone(), v.clone()));
                }
            }
        }
        if let Some(to) = response.header("To") {
            headers.push(("To".to_string(), to.to_string()));
        }
        let seq = self.request.cseq().map(|c| c.seq).unwrap_or(1);
        headers.push(("CSeq".to_string(), format!("{seq} ACK")));
        Message {
            start: StartLine::Request {
                method: Method::Ack,
                uri,
            },
            headers,
            body: bytes::Bytes::new(),
        }
    }

    pub fn next_wake(&self) -> Option<Instant> {
        match (self.retransmit.map(|r| r.0), self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<TxOutput> {
        if let Some(end) = self.end_at {
            if now >= end {
                let timed_out =
                    matches!(self.state, ClientState::Calling | ClientState::Proceeding);
                self.state = ClientState::Terminated;
                self.end_at = None;
                self.retransmit = None;
                return if timed_out {
                    vec![TxOutput::Timeout]
                } else {
                    vec![]
                };
            }
        }
        match self.retransmit {
            Some((at, interval)) if now >= at => {
                let next = if self.invite {
                    interval * 2
                } else {
                    (interval * 2).min(self.timers.t2)
                };
                self.retransmit = Some((now + next, next));
                vec![TxOutput::Send(self.request.clone())]
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
