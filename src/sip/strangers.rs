//! The SIP core's rules for requests not (yet) known to be authenticated:
//! where answers go (RFC 3261 §18.2.1-2 and RFC 3581: `received` is ours to
//! set, `rport` only names the port the request came from, so no answer
//! leaves for another host), what answers a source may get (its budget in
//! [`super::guard::Guard`]) and how many transactions it may hold.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::core::Core;
use super::message::{split_list, Message, Method};
use super::transport::{response_addr, Target};

/// The header a trusted proxy (`sip.trusted_proxies`) sets to the address
/// a request came from.
pub const SOURCE_HEADER: &str = "X-Switchboard-Source";

impl Core {
    /// The address a request is accounted to: its source, or, from a
    /// trusted proxy, the address the proxy names in [`SOURCE_HEADER`].
    pub fn origin_of(&self, msg: &Message, source: IpAddr) -> IpAddr {
        if !self.env.trusted_proxies.iter().any(|n| n.contains(&source)) {
            return source;
        }
        msg.header(SOURCE_HEADER)
            .and_then(|v| v.trim().trim_matches(['[', ']']).parse::<IpAddr>().ok())
            .unwrap_or(source)
    }

    /// Drops a server transaction and what it was charged to.
    pub fn forget_server_tx(&mut self, key: &str) {
        if let Some(e) = self.server_txs.remove(key) {
            if let Some(m) = e.merge {
                self.invite_txs.remove(&m);
            }
            if let Some(ip) = e.stranger {
                self.guard.closed(ip);
            }
        }
        self.env
            .shared
            .server_txs
            .store(self.server_txs.len(), Ordering::Relaxed);
    }

    /// The request of this transaction proved to be a trunk's: it no longer
    /// counts against its source's share.
    pub fn trust_server_tx(&mut self, key: &str) {
        if let Some(ip) = self.server_txs.get_mut(key).and_then(|e| e.stranger.take()) {
            self.guard.closed(ip);
        }
    }

    /// One answer from `ip`'s budget for unauthenticated requests.
    pub fn stranger_may_hear(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ok = self.guard.allow_answer(ip, now);
        if !ok {
            self.env.shared.counters.response_rate_limited();
        }
        ok
    }

    /// A server transaction for a request not (yet) known to be
    /// authenticated, charged to its source. When the source's share or the
    /// node's map is full: a stateless 503 with Retry-After (itself rate
    /// limited) and `false`, as for an existing transaction.
    pub fn open_stranger_tx(
        &mut self,
        key: &str,
        req: &Message,
        source: Target,
        now: Instant,
    ) -> bool {
        if self.server_txs.contains_key(key) {
            return false;
        }
        let ip = self.origin_of(req, source.addr.ip());
        if let Err(why) = self.guard.may_open(ip, self.server_txs.len()) {
            self.env.shared.counters.transaction_refused();
            tracing::debug!(%ip, ?why, "server transactions full; 503");
            if req.method() != Some(&Method::Ack) && self.stranger_may_hear(ip, now) {
                let mut resp = self.response(req, 503, "Service Unavailable", None);
                resp.add_header("Retry-After", "10");
                let target = udp_response_target(req, source);
                self.env.transports.send(&target, resp.to_bytes());
                crate::metrics::metrics().sip_response_sent(503);
            }
            return false;
        }
        if !self.new_server_tx(key, req, source) {
            return false;
        }
        if let Some(e) = self.server_txs.get_mut(key) {
            e.stranger = Some(ip);
        }
        self.guard.opened(ip);
        true
    }

    /// A refusal for a source that passed no check: counted (with a
    /// sampled log) instead of a call_logs row, and answered only within
    /// the source's budget. `false`: withheld, the call and its
    /// transaction are already gone.
    pub(super) fn answer_stranger_rejection(&mut self, key: &str, code: u16, now: Instant) -> bool {
        let Some(call) = self.calls.get(key) else {
            return false;
        };
        let (ip, invite_key) = (call.origin, call.invite_key.clone());
        if matches!(code, 403 | 404) {
            self.env.shared.counters.unauthenticated_rejection();
            if let Some(n) = self.guard.note_rejection(now) {
                tracing::info!(%ip, code, since_last_log = n, "unauthenticated INVITEs refused");
            }
        }
        if self.stranger_may_hear(ip, now) {
            return true;
        }
        self.forget_server_tx(&invite_key);
        self.remove_call(key);
        false
    }
}

/// RFC 3261 §18.2.1 + RFC 3581: note where the request really came from.
/// `received` is ours to write: always the real source IP, replacing
/// whatever the client put there (a client-chosen `received` would aim our
/// responses at a third party). `rport`, when asked for or already filled
/// in, becomes the port the datagram came from.
pub(super) fn stamp_via(msg: &mut Message, source: std::net::SocketAddr) {
    let Some(pos) = msg
        .headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case("Via"))
    else {
        return;
    };
    let values: Vec<String> = split_list(&msg.headers[pos].1)
        .into_iter()
        .map(str::to_string)
        .collect();
    let Some(mut via) = values.first().and_then(|v| super::message::Via::parse(v)) else {
        return;
    };
    let wants_rport = via.rport().is_some();
    via.params.retain(|(n, _)| n != "received" && n != "rport");
    via.params
        .push(("received".to_string(), Some(source.ip().to_string())));
    if wants_rport {
        via.params
            .push(("rport".to_string(), Some(source.port().to_string())));
    }
    let mut all = vec![via.to_header()];
    all.extend(values.into_iter().skip(1));
    msg.headers[pos].1 = all.join(", ");
}

/// Where responses to `req` go: over UDP the request's source IP (see
/// [`response_addr`]), over TCP the connection it came on.
pub(super) fn udp_response_target(req: &Message, source: Target) -> Target {
    match (source.transport, req.top_via()) {
        (super::transport::Transport::Udp, Some(via)) => Target {
            addr: response_addr(&via, source.addr),
            ..source
        },
        _ => source,
    }
}
