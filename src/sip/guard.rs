//! What strangers may cost the node, sans-IO (time is an argument): a token
//! bucket per source for answers to unauthenticated requests, per-source
//! and global caps on the server transactions they open, and counters plus
//! a sampled log of unauthenticated rejections (no call_logs row each).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sources whose answer budget is tracked at once. A source whose bucket
/// is full again costs nothing to forget, so a flood of spoofed addresses
/// cannot grow the table: when it is full of busy sources, new ones get no
/// answer until some refill (fail closed).
const MAX_TRACKED_SOURCES: usize = 16_384;
/// At most one log line about unauthenticated rejections per interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Live counters, shared between the SIP core and the handle.
#[derive(Debug, Default)]
pub struct Counters {
    pub unauthenticated_rejections: AtomicU64,
    pub responses_rate_limited: AtomicU64,
    pub transactions_refused: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SipCounters {
    /// 403/404 answers to sources no trunk admits by address and that
    /// passed no digest (counted instead of written as call_logs rows).
    pub unauthenticated_rejections: u64,
    /// Answers to strangers withheld by the per-source rate limit.
    pub responses_rate_limited: u64,
    /// Requests refused (503) because the transaction map was full for
    /// their source or for the node.
    pub transactions_refused: u64,
}

impl Counters {
    // Each also counts in the process's metrics (several nodes may share
    // one process in tests; these stay per node).
    pub fn unauthenticated_rejection(&self) {
        self.unauthenticated_rejections
            .fetch_add(1, Ordering::Relaxed);
        crate::metrics::metrics().sip_unauthenticated_rejection();
    }

    pub fn response_rate_limited(&self) {
        self.responses_rate_limited.fetch_add(1, Ordering::Relaxed);
        crate::metrics::metrics().sip_response_rate_limited();
    }

    pub fn transaction_refused(&self) {
        self.transactions_refused.fetch_add(1, Ordering::Relaxed);
        crate::metrics::metrics().sip_transaction_refused();
    }

    pub fn snapshot(&self) -> SipCounters {
        SipCounters {
            unauthenticated_rejections: self.unauthenticated_rejections.load(Ordering::Relaxed),
            responses_rate_limited: self.responses_rate_limited.load(Ordering::Relaxed),
            transactions_refused: self.transactions_refused.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    pub per_source_txs: usize,
    pub max_txs: usize,
    pub answers_per_sec: f64,
    pub answer_burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a request may not open a server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SourceFull,
    NodeFull,
}

#[derive(Debug)]
pub struct Guard {
    limits: GuardLimits,
    buckets: HashMap<IpAddr, Bucket>,
    /// Stranger transactions held per source (entries vanish at zero, so
    /// the map is no larger than the transaction map).
    held: HashMap<IpAddr, usize>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Guard {
    pub fn new(limits: GuardLimits) -> Guard {
        Guard {
            limits,
            buckets: HashMap::new(),
            held: HashMap::new(),
            last_log: None,
            unlogged: 0,
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.limits.answers_per_sec).min(self.limits.answer_burst);
        b.at = now;
    }

    /// Takes one answer from `ip`'s budget; `false` means stay silent.
    pub fn allow_answer(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED_SOURCES {
            let (rate, burst) = (self.limits.answers_per_sec, self.limits.answer_burst);
            self.buckets.retain(|_, b| {
                let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens + elapsed * rate < burst
            });
            if self.buckets.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
        }
        let mut b = self.buckets.get(&ip).copied().unwrap_or(Bucket {
            tokens: self.limits.answer_burst,
            at: now,
        });
        self.refill(&mut b, now);
        let ok = b.tokens >= 1.0;
        if ok {
            b.tokens -= 1.0;
        }
        self.buckets.insert(ip, b);
        ok
    }

    /// May `ip` open one more stranger transaction, with `total` held?
    pub fn may_open(&self, ip: IpAddr, total: usize) -> Result<(), Refusal> {
        if total >= self.limits.max_txs {
            return Err(Refusal::NodeFull);
        }
        if self.held.get(&ip).copied().unwrap_or(0) >= self.limits.per_source_txs {
            return Err(Refusal::SourceFull);
        }
        Ok(())
    }

    pub fn opened(&mut self, ip: IpAddr) {
        *self.held.entry(ip).or_insert(0) += 1;
    }

    /// A charged transaction ended, or its request turned out authenticated.
    pub fn closed(&mut self, ip: IpAddr) {
        if let Some(n) = self.held.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&ip);
            }
        }
    }

    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.held.get(&ip).copied().unwrap_or(0)
    }

    /// Notes one unauthenticated rejection; returns how many to report in a
    /// log line now (this one included), or `None` to stay quiet.
    pub fn note_rejection(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(GuardLimits {
            per_source_txs: 3,
            max_txs: 5,
            answers_per_sec: 10.0,
            answer_burst: 20.0,
        })
    }

    #[test]
    fn answers_are_budgeted_per_source_and_refill_with_time() {
        let mut g = guard();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let granted = (0..100).filter(|_| g.allow_answer(a, t0)).count();
        assert_eq!(granted, 20, "the burst, then silence");
        assert!(g.allow_answer(b, t0), "another source has its own budget");
        assert!(!g.allow_answer(a, t0 + Duration::from_millis(50)));
        let later = t0 + Duration::from_secs(1);
        let refilled = (0..100).filter(|_| g.allow_answer(a, later)).count();
        assert_eq!(refilled, 10, "one second at 10/s");
    }

    #[test]
    fn the_source_table_stays_bounded_under_spoofed_floods() {
        let mut g = guard();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000u32 + i));
            // Each takes its whole burst, so none can be forgotten at once.
            for _ in 0..20 {
                g.allow_answer(ip, t0);
            }
        }
        assert!(g.buckets.len() <= MAX_TRACKED_SOURCES);
        // Once they have refilled, a new source is tracked again.
        let fresh: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(g.allow_answer(fresh, t0 + Duration::from_secs(3)));
    }

    #[test]
    fn transactions_are_capped_per_source_and_in_total() {
        let mut g = guard();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(g.may_open(a, 0), Ok(()));
            g.opened(a);
        }
        assert_eq!(g.may_open(a, 3), Err(Refusal::SourceFull));
        assert_eq!(g.may_open(b, 3), Ok(()));
        assert_eq!(g.may_open(b, 5), Err(Refusal::NodeFull));
        g.closed(a);
        assert_eq!(g.may_open(a, 2), Ok(()));
        for _ in 0..5 {
            g.closed(a);
        }
        assert_eq!(g.held_by(a), 0);
        assert!(g.held.is_empty());
    }

    #[test]
    fn rejections_are_logged_at_most_once_per_interval() {
        let mut g = guard();
        let t0 = Instant::now();
        assert_eq!(g.note_rejection(t0), Some(1));
        for i in 1..100 {
            assert_eq!(g.note_rejection(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(g.note_rejection(t0 + LOG_EVERY), Some(100));
    }
}
