//! The SIP core: one task owns every transaction and call of the node.
//! Received messages are matched to server/client transactions (§17.2.3,
//! §17.1.3) or dialogs; new requests are answered here (OPTIONS, CANCEL,
//! 481/405/400) or handed to the call logic in `calls.rs`. Time comes in as
//! an argument; timers are a heap of wake-ups checked against each state
//! machine's own `next_wake` (stale entries are skipped).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::call::{CallCommand, SharedCallHandler};
use super::calls::Call;
use super::decide::{Decider, Decision};
use super::guard::{Guard, GuardLimits};
use super::message::{Message, Method};
use super::strangers::{stamp_via, udp_response_target};
use super::transaction::{ClientTx, ServerTx, Timers, TxOutput};
use super::transport::{Inbound, Target, Transports};
use crate::media::ports::PortAllocator;

pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE";
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, message/sipfrag";
pub const SUPPORTED: &str = "timer, replaces";
pub const USER_AGENT: &str = "Switchboard";

/// Messages from the node's other tasks to the core.
#[derive(Debug)]
pub enum Internal {
    Routed {
        key: String,
        decision: Box<Decision>,
    },
    Command {
        key: String,
        command: CallCommand,
    },
    CommandsClosed {
        key: String,
    },
    /// End every live call (drain limit reached).
    HangupAll {
        reason: String,
    },
    /// Place an outbound call; the reply carries its call_logs id.
    Dial {
        request: Box<super::outbound_leg::DialRequest>,
        reply: tokio::sync::oneshot::Sender<Result<uuid::Uuid, super::outbound_leg::DialError>>,
        /// A warm transfer's call: where its answer goes.
        consult: Option<tokio::sync::oneshot::Sender<super::outbound_leg::ConsultResult>>,
    },
    /// Hang up an outbound call: CANCEL before the answer, BYE after.
    HangupOutbound {
        call_log_id: uuid::Uuid,
    },
}

/// State shared with the server handle.
#[derive(Debug, Default)]
pub struct Shared {
    pub live_calls: AtomicUsize,
    pub draining: AtomicBool,
    /// Size of the server-transaction map, for the handle.
    pub server_txs: AtomicUsize,
    pub counters: super::guard::Counters,
    /// Outbound calls of this node until they end, for the live-call list
    /// and hang-ups from the API.
    pub outbound: dashmap::DashMap<uuid::Uuid, super::outbound_leg::OutboundView>,
}

/// Everything the core needs from outside, fixed at start.
pub struct Env {
    pub transports: Transports,
    pub decider: Arc<Decider>,
    pub records: crate::records::RecordWriter,
    pub handler: SharedCallHandler,
    pub ports: PortAllocator,
    pub rtp_bind_ip: IpAddr,
    pub advertised_ip: IpAddr,
    pub internal: mpsc::Sender<Internal>,
    pub shared: Arc<Shared>,
    pub timers: Timers,
    pub node_id: String,
    pub max_calls: usize,
    pub answer_delay: Duration,
    pub limits: GuardLimits,
    /// When a call's media may latch to another source (`rtp.latch`).
    pub latch: crate::media::receiver::Latch,
    /// Proxies whose `X-Switchboard-Source` header names the real source.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long an outbound call may ring before we CANCEL.
    pub ring_timeout: Duration,
    /// How long a blind transfer waits for each report (RFC 3515).
    pub refer_timers: super::refer::ReferTimers,
    /// RFC 4028 settings (`sip.session_expires_secs`, `sip.min_se_secs`).
    pub session_timers: super::session_timer::TimerSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wake {
    Server(String),
    Client(String),
    Call(String),
    /// An outbound INVITE's machine, by Call-ID.
    Dial(String),
}

pub struct ServerEntry {
    pub tx: ServerTx,
    pub target: Target,
    pub call: Option<String>,
    /// Call-ID|From-tag|CSeq of an INVITE, to match an ACK that (against
    /// §17.1.1.3) carries a new branch for a non-2xx response.
    pub merge: Option<String>,
    /// The source this transaction is charged to while its request is
    /// not known to be authenticated (see [`Guard`]).
    pub stranger: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub enum Purpose {
    Bye,
    Refer {
        call: String,
    },
    /// Our session refresh (RFC 4028) of a call.
    Refresh {
        call: String,
    },
}

pub struct ClientEntry {
    pub tx: ClientTx,
    pub target: Target,
    pub purpose: Purpose,
}

/// A token bucket, so OPTIONS and 400s cannot be used for amplification.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Room a table keeps however empty it gets.
const KEPT_ROOM: usize = 1024;

/// The room a table of `len` entries in `capacity` slots shrinks to: twice
/// its entries once they fill less than a quarter of it (rarely: only once
/// a burst has drained), never below [`KEPT_ROOM`].
fn shrunk_room(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEPT_ROOM && len < capacity / 4).then(|| (len * 2).max(KEPT_ROOM))
}

fn give_back<V>(map: &mut HashMap<String, V>) {
    if let Some(room) = shrunk_room(map.len(), map.capacity()) {
        map.shrink_to(room);
    }
}

pub struct Core {
    pub env: Env,
    pub server_txs: HashMap<String, ServerEntry>,
    pub client_txs: HashMap<String, ClientEntry>,
    pub calls: HashMap<String, Call>,
    /// Outbound INVITEs by Call-ID; each outlives its call while its
    /// transactions still absorb retransmissions.
    pub dials: HashMap<String, super::outbound_leg::DialEntry>,
    /// Call-ID|From-tag|CSeq of INVITEs in progress, to spot merged
    /// requests (a loop or a fork coming back: 482).
    pub invites: HashMap<String, String>,
    /// The same key → INVITE server transaction, while the transaction lives.
    pub invite_txs: HashMap<String, String>,
    wakeups: BinaryHeap<Reverse<(Instant, Wake)>>,
    bucket: Bucket,
    pub guard: Guard,
}

/// The server transaction key (§17.2.3); ACK maps to its INVITE.
pub fn server_key(msg: &Message) -> Option<String> {
    let via = msg.top_via()?;
    let method = match msg.method()? {
        Method::Ack => "INVITE".to_string(),
        m => m.as_str().to_string(),
    };
    match via.branch() {
        Some(b) if b.starts_with("z9hG4bK") => Some(format!(
            "{b}|{}:{}|{method}",
            via.host,
            via.port.unwrap_or(0)
        )),
        // RFC 2543 peers: no usable branch, fall back to the dialog fields.
        _ => Some(format!(
            "{}|{}|{}|{}|{method}",
            msg.call_id()?,
            msg.cseq()?.seq,
            msg.from()?.tag().unwrap_or(""),
            via.host
        )),
    }
}

/// The client transaction key: our branch and the CSeq method (§17.1.3).
pub fn client_key(msg: &Message) -> Option<String> {
    let via = msg.top_via()?;
    Some(format!("{}|{}", via.branch()?, msg.cseq()?.method.as_str()))
}

impl Core {
    pub fn new(env: Env) -> Core {
        let now = Instant::now();
        let guard = Guard::new(env.limits);
        Core {
            env,
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            calls: HashMap::new(),
            dials: HashMap::new(),
            invites: HashMap::new(),
            invite_txs: HashMap::new(),
            wakeups: BinaryHeap::new(),
            guard,
            bucket: Bucket {
                tokens: 200.0,
                rate: 500.0,
                burst: 1000.0,
                at: now,
            },
        }
    }

    pub fn next_wake(&self) -> Option<Instant> {
        self.wakeups.peek().map(|Reverse((at, _))| *at)
    }

    pub fn schedule(&mut self, at: Option<Instant>, wake: Wake) {
        if let Some(at) = at {
            self.wakeups.push(Reverse((at, wake)));
        }
    }

    pub fn update_live(&self) {
        let now = self.calls.len();
        let before = self.env.shared.live_calls.swap(now, Ordering::Relaxed);
        crate::metrics::metrics().calls_active_changed(before, now);
    }

    /// Runs every state machine whose wake-up time has come.
    pub fn on_timers(&mut self, now: Instant) {
        for _ in 0..10_000 {
            match self.wakeups.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, wake))) = self.wakeups.pop() else {
                break;
            };
            match wake {
                Wake::Server(key) => {
                    let Some(entry) = self.server_txs.get_mut(&key) else {
                        continue;
                    };
                    if entry.tx.next_wake().is_some_and(|at| at <= now) {
                        let out = entry.tx.on_timer(now);
                        self.apply_server(&key, out, now);
                    }
                }
                Wake::Client(key) => {
                    let Some(entry) = self.client_txs.get_mut(&key) else {
                        continue;
                    };
                    if entry.tx.next_wake().is_some_and(|at| at <= now) {
                        let out = entry.tx.on_timer(now);
                        self.apply_client(&key, out, now);
                    }
                }
                Wake::Call(key) => self.on_call_timer(&key, now),
                Wake::Dial(call_id) => self.on_dial_timer(&call_id, now),
            }
        }
        self.give_back_room();
    }

    /// After a burst the tables keep the room its peak needed (a BYE's
    /// transaction lives 32 s: at 1,000 calls/s that is tens of thousands
    /// of entries) long after they empty; a table mostly empty gives it back.
    fn give_back_room(&mut self) {
        give_back(&mut self.server_txs);
        give_back(&mut self.client_txs);
        give_back(&mut self.calls);
        give_back(&mut self.dials);
        give_back(&mut self.invites);
        give_back(&mut self.invite_txs);
        if let Some(room) = shrunk_room(self.wakeups.len(), self.wakeups.capacity()) {
            self.wakeups.shrink_to(room);
        }
    }

    /// Executes a server transaction's outputs and reschedules it.
    pub fn apply_server(&mut self, key: &str, out: Vec<TxOutput>, now: Instant) {
        let Some(entry) = self.server_txs.get(key) else {
            return;
        };
        let target = entry.target;
        let call = entry.call.clone();
        let mut timed_out = false;
        for o in out {
            match o {
                TxOutput::Send(m) => self.env.transports.send(&target, m.to_bytes()),
                TxOutput::Timeout => timed_out = true,
                TxOutput::Deliver(_) => {}
            }
        }
        let Some(entry) = self.server_txs.get(key) else {
            return;
        };
        if entry.tx.is_terminated() {
            self.forget_server_tx(key);
        } else {
            let at = entry.tx.next_wake();
            self.schedule(at, Wake::Server(key.to_string()));
        }
        if timed_out {
            // Timer H: the ACK for our error response never came; nothing
            // more to do than forget the transaction (the row is written).
            tracing::debug!(tx = key, call = ?call, "no ACK for final response");
        }
        let _ = now;
    }

    /// Answers a request through its (new or existing) server transaction.
    pub fn respond(&mut self, key: &str, response: Message, now: Instant) {
        let Some(entry) = self.server_txs.get_mut(key) else {
            return;
        };
        let out = entry.tx.respond(response, now);
        for o in &out {
            if let TxOutput::Send(m) = o {
                crate::metrics::metrics().sip_response_sent(m.status().unwrap_or(0));
            }
        }
        self.apply_server(key, out, now);
    }

    /// A response built for `req` with our usual headers.
    pub fn response(
        &self,
        req: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Message {
        let mut r = Message::response_to(req, code, reason);
        if let Some(tag) = to_tag {
            r.set_to_tag(tag);
        }
        r.add_header("Server", USER_AGENT);
        r
    }

    /// Creates the server transaction for a new request; `None` if it exists.
    pub(super) fn new_server_tx(&mut self, key: &str, req: &Message, source: Target) -> bool {
        if self.server_txs.contains_key(key) {
            return false;
        }
        let target = udp_response_target(req, source);
        let tx = ServerTx::new(req, source.transport.reliable(), self.env.timers);
        let merge = (req.method() == Some(&Method::Invite))
            .then(|| merge_key(req))
            .flatten();
        if let Some(m) = &merge {
            self.invite_txs.insert(m.clone(), key.to_string());
        }
        self.server_txs.insert(
            key.to_string(),
            ServerEntry {
                tx,
                target,
                call: None,
                merge,
                stranger: None,
            },
        );
        self.env
            .shared
            .server_txs
            .store(self.server_txs.len(), Ordering::Relaxed);
        true
    }

    /// Stateless-ish reply to a request outside any call, in a fresh
    /// transaction (absorbs retransmissions) charged to its source; silent
    /// when the source has used its answer budget.
    pub fn reply(
        &mut self,
        to: Asked<'_>,
        code: u16,
        reason: &str,
        headers: Vec<(String, String)>,
        now: Instant,
    ) {
        let Asked { key, req, source } = to;
        let origin = self.origin_of(req, source.addr.ip());
        if self.server_txs.contains_key(key) || !self.stranger_may_hear(origin, now) {
            return;
        }
        if !self.open_stranger_tx(key, req, source, now) {
            return;
        }
        let tag = (req.to().and_then(|t| t.tag().map(str::to_string)).is_none() && code > 100)
            .then(|| super::message::random_token(10));
        let mut resp = self.response(req, code, reason, tag.as_deref());
        for (n, v) in headers {
            resp.add_header(&n, v);
        }
        self.respond(key, resp, now);
    }

    pub fn on_inbound(&mut self, inbound: Inbound, now: Instant) {
        let mut msg = match inbound.message {
            Ok(m) => m,
            Err(e) => {
                tracing::trace!(from = %inbound.source.addr, len = inbound.raw_len, "dropped unparsable message: {e}");
                return;
            }
        };
        if !msg.is_request() {
            self.on_response(msg, inbound.source, now);
            return;
        }
        if let Err(e) = msg.validate_request() {
            // 400 when a response can be routed back at all (§8.2).
            if msg.top_via().is_some()
                && msg.method() != Some(&Method::Ack)
                && self.bucket.take(now)
                && self.stranger_may_hear(inbound.source.addr.ip(), now)
            {
                let resp = Message::response_to(&msg, 400, "Bad Request");
                let target = udp_response_target(&msg, inbound.source);
                self.env.transports.send(&target, resp.to_bytes());
                crate::metrics::metrics().sip_response_sent(400);
            }
            tracing::trace!(from = %inbound.source.addr, "bad request: {e}");
            return;
        }
        stamp_via(&mut msg, inbound.source.addr);
        let Some(key) = server_key(&msg) else { return };
        let method = msg.method().cloned().unwrap_or(Method::Ack);
        // Retransmission, or the ACK of a non-2xx final response.
        if let Some(entry) = self.server_txs.get_mut(&key) {
            if method == Method::Ack
                && entry.tx.state() != super::transaction::ServerState::Completed
            {
                // ACK for a 2xx has its own branch; a same-branch ACK here is
                // stray — let the dialog see it.
            } else {
                let out = entry.tx.on_request(&msg, now);
                self.apply_server(&key, out, now);
                return;
            }
        }
        let to_tag = msg.to().and_then(|t| t.tag().map(str::to_string));
        let asked = Asked {
            key: &key,
            req: &msg,
            source: inbound.source,
        };
        match (&method, to_tag) {
            (Method::Ack, Some(tag)) if self.calls.contains_key(&tag) => {
                self.on_ack(&tag, &msg, now)
            }
            (Method::Ack, Some(_)) => self.on_stray_ack(&msg, now),
            (Method::Ack, None) => {}
            (Method::Cancel, _) => self.on_cancel(&key, &msg, inbound.source, now),
            (_, Some(tag)) => {
                if self.calls.contains_key(&tag) {
                    if self.new_server_tx(&key, &msg, inbound.source) {
                        self.on_in_dialog(&tag, &key, msg, now);
                    }
                } else {
                    self.reply(asked, 481, "Call/Transaction Does Not Exist", vec![], now);
                }
            }
            (Method::Invite, None) => {
                if msg.header("Max-Forwards").is_some_and(|v| v.trim() == "0") {
                    self.reply(asked, 483, "Too Many Hops", vec![], now);
                    return;
                }
                if let Some(value) = msg.header("Replaces") {
                    // RFC 3891: the node takes none of its calls over. A
                    // Replaces naming none of its dialogs is 481, one
                    // naming a dialog it holds is refused (403).
                    let ours = super::replaces::ReplacesId::parse(value).is_some_and(|r| {
                        self.calls
                            .values()
                            .any(|c| c.dialog.as_ref().is_some_and(|d| r.names(d)))
                    });
                    let (code, reason) = if ours {
                        (403, "Forbidden")
                    } else {
                        (481, "Call/Transaction Does Not Exist")
                    };
                    self.reply(asked, code, reason, vec![], now);
                    return;
                }
                let merged = merge_key(&msg);
                if let Some(existing) = merged.as_ref().and_then(|m| self.invites.get(m)) {
                    if existing != &key {
                        self.reply(asked, 482, "Loop Detected", vec![], now);
                        return;
                    }
                }
                if !self.open_stranger_tx(&key, &msg, inbound.source, now) {
                    return;
                }
                let origin = self.origin_of(&msg, inbound.source.addr.ip());
                self.on_invite(&key, merged, msg, inbound.source, origin, now);
            }
            (Method::Options, None) => {
                // A draining node tells its load balancer to send no more
                // (Kamailio's dispatcher probes with OPTIONS).
                if self.env.shared.draining.load(Ordering::Relaxed) {
                    if self.bucket.take(now) {
                        let headers = vec![("Retry-After".to_string(), "30".to_string())];
                        self.reply(asked, 503, "Service Unavailable", headers, now);
                    }
                } else if self.bucket.take(now) {
                    let headers = vec![
                        ("Allow".to_string(), ALLOW.to_string()),
                        ("Accept".to_string(), ACCEPT.to_string()),
                        ("Supported".to_string(), SUPPORTED.to_string()),
                    ];
                    self.reply(asked, 200, "OK", headers, now);
                }
            }
            (
                Method::Bye
                | Method::Info
                | Method::Notify
                | Method::Update
                | Method::Prack
                | Method::Refer,
                None,
            ) => {
                self.reply(asked, 481, "Call/Transaction Does Not Exist", vec![], now);
            }
            (
                Method::Register
                | Method::Subscribe
                | Method::Publish
                | Method::Message
                | Method::Other(_),
                None,
            ) => {
                self.reply(
                    asked,
                    405,
                    "Method Not Allowed",
                    vec![("Allow".into(), ALLOW.into())],
                    now,
                );
            }
        }
    }

    /// An ACK for a non-2xx response sent with a fresh branch (seen in the
    /// wild): match it to the INVITE transaction by Call-ID, From tag and
    /// CSeq so Timer G stops.
    fn on_stray_ack(&mut self, ack: &Message, now: Instant) {
        let Some(merge) = merge_key(ack) else { return };
        let Some(key) = self.invite_txs.get(&merge).cloned() else {
            return;
        };
        if let Some(entry) = self.server_txs.get_mut(&key) {
            if entry.tx.state() == super::transaction::ServerState::Completed {
                let out = entry.tx.on_request(ack, now);
                self.apply_server(&key, out, now);
            }
        }
    }

    fn on_cancel(&mut self, cancel_key: &str, cancel: &Message, source: Target, now: Instant) {
        // The INVITE it cancels has the same branch (§9.2).
        let invite_key = cancel_key
            .rsplit_once('|')
            .map(|(k, _)| format!("{k}|INVITE"))
            .unwrap_or_default();
        let Some(entry) = self.server_txs.get(&invite_key) else {
            self.reply(
                Asked {
                    key: cancel_key,
                    req: cancel,
                    source,
                },
                481,
                "Call/Transaction Does Not Exist",
                vec![],
                now,
            );
            return;
        };
        let call = entry.call.clone();
        let pending = entry.tx.state() == super::transaction::ServerState::Proceeding;
        let tag = call.clone();
        if !self.new_server_tx(cancel_key, cancel, source) {
            return;
        }
        let resp = self.response(cancel, 200, "OK", tag.as_deref());
        self.respond(cancel_key, resp, now);
        if pending {
            if let Some(call) = call {
                self.cancel_call(&call, now);
            }
        }
    }

    pub fn on_response(&mut self, msg: Message, source: Target, now: Instant) {
        let Some(key) = client_key(&msg) else { return };
        let Some(entry) = self.client_txs.get_mut(&key) else {
            // Responses to our outbound INVITEs (and their CANCELs).
            if let Some(call_id) = msg.call_id().map(str::to_string) {
                if self.dials.contains_key(&call_id) {
                    self.on_dial_response(&call_id, &msg, source, now);
                }
            }
            return;
        };
        let out = entry.tx.on_response(&msg, now);
        self.apply_client(&key, out, now);
    }

    fn apply_client(&mut self, key: &str, out: Vec<TxOutput>, now: Instant) {
        let Some(entry) = self.client_txs.get(key) else {
            return;
        };
        let (target, purpose) = (entry.target, entry.purpose.clone());
        for o in out {
            match o {
                TxOutput::Send(m) => self.env.transports.send(&target, m.to_bytes()),
                TxOutput::Deliver(resp) => self.on_client_response(&purpose, &resp, now),
                TxOutput::Timeout => self.on_client_timeout(&purpose, now),
            }
        }
        let Some(entry) = self.client_txs.get(key) else {
            return;
        };
        if entry.tx.is_terminated() {
            self.client_txs.remove(key);
        } else {
            let at = entry.tx.next_wake();
            self.schedule(at, Wake::Client(key.to_string()));
        }
    }

    /// Starts a client transaction for a request we originate.
    pub fn send_request(&mut self, req: Message, target: Target, purpose: Purpose, now: Instant) {
        let Some(key) = client_key(&req) else { return };
        let (tx, out) = ClientTx::new(req, target.transport.reliable(), self.env.timers, now);
        self.client_txs.insert(
            key.clone(),
            ClientEntry {
                tx,
                target,
                purpose,
            },
        );
        self.apply_client(&key, out, now);
    }

    pub fn on_internal(&mut self, ev: Internal, now: Instant) {
        match ev {
            Internal::Routed { key, decision } => self.on_routed(&key, *decision, now),
            Internal::Command { key, command } => self.on_command(&key, command, now),
            Internal::CommandsClosed { key } => self.on_commands_closed(&key, now),
            Internal::Dial {
                request,
                reply,
                consult,
            } => {
                let result = self.start_dial(*request, consult, now);
                let _ = reply.send(result);
            }
            Internal::HangupOutbound { call_log_id } => self.hangup_outbound(call_log_id, now),
            Internal::HangupAll { reason } => {
                let keys: Vec<String> = self.calls.keys().cloned().collect();
                for key in keys {
                    self.hangup_all_one(&key, &reason, now);
                }
            }
        }
    }
}

impl Drop for Core {
    /// Calls still held when the core stops leave the process's count.
    fn drop(&mut self) {
        let before = self.env.shared.live_calls.swap(0, Ordering::Relaxed);
        crate::metrics::metrics().calls_active_changed(before, 0);
    }
}

fn merge_key(msg: &Message) -> Option<String> {
    Some(format!(
        "{}|{}|{}",
        msg.call_id()?,
        msg.from()?.tag().unwrap_or(""),
        msg.cseq()?.seq
    ))
}

#[cfg(test)]
mod room_tests {
    use super::*;

    #[test]
    fn a_drained_table_gives_back_its_room_and_a_full_one_keeps_it() {
        let mut map: HashMap<String, [u8; 64]> = HashMap::new();
        for i in 0..50_000 {
            map.insert(i.to_string(), [0; 64]);
        }
        let peak = map.capacity();
        give_back(&mut map);
        assert_eq!(map.capacity(), peak, "a full table keeps its room");
        map.retain(|k, _| k.len() < 3); // "0" to "99" stay
        give_back(&mut map);
        assert_eq!(map.len(), 100);
        assert!(
            map.capacity() < 4 * KEPT_ROOM,
            "room after draining: {}",
            map.capacity()
        );
        let small = map.capacity();
        give_back(&mut map);
        assert_eq!(map.capacity(), small, "nothing more to give back");
        assert!(map.contains_key("42"));
    }
}

/// The request a reply outside any call answers: its transaction key, the
/// request itself and where it came from.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    pub key: &'a str,
    pub req: &'a Message,
    pub source: Target,
}
