//! The media clock: a few OS threads that drive the 20 ms schedule of every
//! session in the process, instead of one tokio timer and task wake-up per
//! session per slot. Each thread keeps its sessions in a heap ordered by
//! their next deadline, sleeps until the earliest, and serves everything
//! then due in two passes: first every due packet goes out (the part the
//! far end times), then the rest of each slot's work (the caller's frame,
//! events, RTCP). A busy tokio runtime — speech recognition, VAD, database
//! — cannot delay a send, and 1000 calls cost ≤ 1000 wake-ups a second.
//!
//! Sessions are `Arc<dyn Paced>`; a session leaves its thread by answering
//! `None` (it was closed or dropped).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// One session as the clock sees it.
pub(crate) trait Paced: Send + Sync + 'static {
    /// Sends the packet of the slot due at or before `now`, if any. `false`
    /// once the session is over (it is then dropped from the clock).
    fn send_due(&self, now: Instant) -> bool;
    /// The rest of the slot's work, after every due packet went out; returns
    /// the session's next deadline, or `None` once it is over.
    fn after_send(&self, now: Instant) -> Option<Instant>;
}

/// Deadlines closer together than this share one wake-up: a send is at
/// most this late, and a thread wakes at most 1000 times a second.
const COALESCE: Duration = Duration::from_millis(1);
/// Longest sleep, so a thread notices an empty heap and idles cheaply.
const IDLE: Duration = Duration::from_millis(500);

struct Shard {
    /// Sessions handed over since the thread last looked.
    inbox: Mutex<Vec<Arc<dyn Paced>>>,
    /// Sessions this thread runs (for placing new ones on the lightest).
    sessions: AtomicUsize,
    thread: Thread,
    /// Set when the clock is dropped (the global one never is).
    stop: AtomicBool,
}

/// The process's media clock threads.
pub(crate) struct MediaClock {
    shards: Vec<Arc<Shard>>,
}

impl MediaClock {
    /// The shared clock, started on first use with one thread per core.
    pub(crate) fn global() -> &'static MediaClock {
        static CLOCK: OnceLock<MediaClock> = OnceLock::new();
        CLOCK.get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            MediaClock::start(n.clamp(1, 8))
        })
    }

    fn start(threads: usize) -> MediaClock {
        let shards = (0..threads)
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name(format!("media-clock-{i}"))
                    .spawn(move || {
                        // The shard needs this thread's handle; wait for it.
                        let shard: Arc<Shard> = match rx.recv() {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                        run(&shard);
                    })
                    .map(|handle| {
                        let shard = Arc::new(Shard {
                            inbox: Mutex::new(Vec::new()),
                            sessions: AtomicUsize::new(0),
                            thread: handle.thread().clone(),
                            stop: AtomicBool::new(false),
                        });
                        let _ = tx.send(shard.clone());
                        shard
                    })
            })
            .filter_map(|r| {
                r.map_err(|e| tracing::error!(error = %e, "media clock thread not started"))
                    .ok()
            })
            .collect();
        MediaClock { shards }
    }

    /// Hands a session to the least busy thread; its first slot is served
    /// at once. False if no clock thread could be started.
    pub(crate) fn add(&self, session: Arc<dyn Paced>) -> bool {
        let Some(shard) = self
            .shards
            .iter()
            .min_by_key(|s| s.sessions.load(Ordering::Relaxed))
        else {
            return false;
        };
        shard.sessions.fetch_add(1, Ordering::Relaxed);
        shard
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(session);
        shard.thread.unpark();
        true
    }
}

impl Drop for MediaClock {
    fn drop(&mut self) {
        for s in &self.shards {
            s.stop.store(true, Ordering::Relaxed);
            s.thread.unpark();
        }
    }
}

/// A heap entry: ordered by deadline, then by arrival for a stable order.
struct Entry {
    at: Instant,
    order: u64,
    session: Arc<dyn Paced>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

fn run(shard: &Shard) {
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    let mut due: Vec<Entry> = Vec::new();
    let mut order = 0u64;
    let mut last_wake = Instant::now();
    while !shard.stop.load(Ordering::Relaxed) {
        let arrived = std::mem::take(&mut *shard.inbox.lock().unwrap_or_else(|p| p.into_inner()));
        let now = Instant::now();
        for session in arrived {
            order += 1;
            heap.push(Reverse(Entry {
                at: now,
                order,
                session,
            }));
        }
        while let Some(Reverse(top)) = heap.peek() {
            if top.at > now {
                break;
            }
            if let Some(Reverse(e)) = heap.pop() {
                due.push(e);
            }
        }
        // Pass 1: the packets. Each send reads the clock itself, so the
        // pacer's spacing sees when a packet really left.
        due.retain(|e| e.session.send_due(Instant::now()));
        // Pass 2: everything that is not timed by the far end.
        for e in due.drain(..) {
            match e.session.after_send(Instant::now()) {
                Some(at) => heap.push(Reverse(Entry { at, ..e })),
                None => {
                    shard.sessions.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        let now = Instant::now();
        let wake = match heap.peek() {
            Some(Reverse(e)) => e.at.max(last_wake + COALESCE),
            None => now + IDLE,
        };
        if wake > now {
            // park_timeout may return early (unpark for a new session, or
            // spuriously); the loop just looks again.
            std::thread::park_timeout(wake - now);
        }
        last_wake = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A session that wants a slot every 20 ms for `slots` slots and
    /// records when each send happened.
    struct Fake {
        start: Instant,
        slots: u64,
        next: AtomicU64,
        sends: Mutex<Vec<Instant>>,
    }

    impl Paced for Fake {
        fn send_due(&self, now: Instant) -> bool {
            let k = self.next.load(Ordering::Relaxed);
            if k >= self.slots {
                return false;
            }
            if now >= self.start + Duration::from_millis(20 * k) {
                self.sends.lock().unwrap().push(now);
                self.next.store(k + 1, Ordering::Relaxed);
            }
            true
        }
        fn after_send(&self, _now: Instant) -> Option<Instant> {
            let k = self.next.load(Ordering::Relaxed);
            (k < self.slots).then(|| self.start + Duration::from_millis(20 * k))
        }
    }

    #[test]
    fn every_session_is_served_on_its_own_schedule_then_leaves() {
        let clock = MediaClock::start(2);
        let t0 = Instant::now();
        let fakes: Vec<Arc<Fake>> = (0..50)
            .map(|i| {
                Arc::new(Fake {
                    // Phases spread over the 20 ms period, as real calls are.
                    start: t0 + Duration::from_micros(i * 400),
                    slots: 25,
                    next: AtomicU64::new(0),
                    sends: Mutex::new(Vec::new()),
                })
            })
            .collect();
        for f in &fakes {
            assert!(clock.add(f.clone()));
        }
        std::thread::sleep(Duration::from_millis(700));
        for f in &fakes {
            let sends = f.sends.lock().unwrap();
            assert_eq!(sends.len(), 25);
            for (k, at) in sends.iter().enumerate() {
                let due = f.start + Duration::from_millis(20 * k as u64);
                let late = at.saturating_duration_since(due);
                // Generous for a loaded test machine; the bench measures the
                // real figure.
                assert!(late < Duration::from_millis(15), "slot {k} late by {late:?}");
            }
        }
        // All finished sessions left the clock.
        for _ in 0..50 {
            if clock.shards.iter().all(|s| s.sessions.load(Ordering::Relaxed) == 0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("sessions still registered");
    }
}
