//! The media clock: a few OS threads that drive the 20 ms schedule of every
//! session in the process, instead of one tokio timer and task wake-up per
//! session per slot. Each thread keeps its sessions in a heap ordered by
//! their next deadline, sleeps until the earliest, and serves everything
//! then due in two passes: first every due packet goes out (the part the
//! far end times), then the rest of each slot's work (the caller's frame,
//! events, RTCP). Deadlines within a millisecond share a wake-up.
//!
//! The threads ask for real-time scheduling (`SCHED_FIFO`, low priority),
//! else a raised nice level, as media servers' timing threads do: on a
//! loaded 2-core machine an ordinary thread is preempted by the very
//! threads its sends and frames wake, and at 1000 calls a pass then takes
//! longer than a slot. Without the privilege they run as ordinary threads.
//! The work per wake-up is bounded (one slot per due session), so they
//! cannot monopolise a core.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
/// `SCHED_FIFO` priority: above every ordinary thread, below the kernel's
/// own real-time threads (1–99).
const RT_PRIORITY: i32 = 10;
/// The fallback when real-time scheduling is refused.
const NICE: i32 = -10;

/// How the media clock runs; set once, before the first session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOptions {
    /// Clock threads; 0 = one per core.
    pub threads: usize,
    /// Ask for real-time (else raised) priority for the clock threads.
    pub realtime: bool,
}

impl Default for ClockOptions {
    fn default() -> Self {
        ClockOptions {
            threads: 0,
            realtime: true,
        }
    }
}

/// What the clock threads obtained from the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ClockScheduling {
    /// `SCHED_FIFO` at this priority.
    Realtime(i32),
    /// An ordinary thread at this nice level.
    Nice(i32),
    /// An ordinary thread.
    Normal,
}

/// The clock's figures, for metrics and the media benchmark.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClockStatus {
    pub threads: usize,
    /// Per thread, as each obtained it (`Normal` until it started).
    pub scheduling: Vec<ClockScheduling>,
    pub sessions: usize,
    pub wakeups: u64,
    /// Worst lateness of a due session when its thread got to it.
    pub max_lateness_us: u64,
}

static OPTIONS: OnceLock<ClockOptions> = OnceLock::new();
static CLOCK: OnceLock<MediaClock> = OnceLock::new();

/// Sets the clock's options. Only the first call counts, and only before
/// the first session starts; returns whether these options are in force.
pub fn configure_clock(options: ClockOptions) -> bool {
    OPTIONS.set(options).is_ok() || OPTIONS.get() == Some(&options)
}

/// The clock's figures (all zero before the first session).
pub fn clock_status() -> ClockStatus {
    match CLOCK.get() {
        Some(c) => c.status(),
        None => ClockStatus {
            threads: 0,
            scheduling: Vec::new(),
            sessions: 0,
            wakeups: 0,
            max_lateness_us: 0,
        },
    }
}

struct Shard {
    /// Sessions handed over since the thread last looked.
    inbox: Mutex<Vec<Arc<dyn Paced>>>,
    /// Sessions this thread runs (for placing new ones on the lightest).
    sessions: AtomicUsize,
    thread: Thread,
    /// Set when the clock is dropped (the global one never is).
    stop: AtomicBool,
    scheduling: Mutex<ClockScheduling>,
    wakeups: AtomicU64,
    max_lateness_us: AtomicU64,
}

/// The process's media clock threads.
pub(crate) struct MediaClock {
    shards: Vec<Arc<Shard>>,
}

impl MediaClock {
    /// The shared clock, started on first use.
    pub(crate) fn global() -> &'static MediaClock {
        CLOCK.get_or_init(|| MediaClock::start(*OPTIONS.get_or_init(ClockOptions::default)))
    }

    fn start(options: ClockOptions) -> MediaClock {
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .clamp(1, 64);
        let shards = (0..threads)
            .filter_map(|i| {
                let (tx, rx) = std::sync::mpsc::channel::<Arc<Shard>>();
                let spawned = std::thread::Builder::new()
                    .name(format!("media-clock-{i}"))
                    .spawn(move || {
                        // The shard needs this thread's handle; wait for it.
                        if let Ok(shard) = rx.recv() {
                            let got = raise_priority(options.realtime);
                            *shard.scheduling.lock().unwrap_or_else(|p| p.into_inner()) = got;
                            run(&shard);
                        }
                    });
                match spawned {
                    Ok(handle) => {
                        let shard = Arc::new(Shard {
                            inbox: Mutex::new(Vec::new()),
                            sessions: AtomicUsize::new(0),
                            thread: handle.thread().clone(),
                            stop: AtomicBool::new(false),
                            scheduling: Mutex::new(ClockScheduling::Normal),
                            wakeups: AtomicU64::new(0),
                            max_lateness_us: AtomicU64::new(0),
                        });
                        let _ = tx.send(shard.clone());
                        Some(shard)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "media clock thread not started");
                        None
                    }
                }
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

    fn status(&self) -> ClockStatus {
        let sum = |f: &dyn Fn(&Shard) -> u64| self.shards.iter().map(|s| f(s)).sum::<u64>();
        ClockStatus {
            threads: self.shards.len(),
            scheduling: self
                .shards
                .iter()
                .map(|s| *s.scheduling.lock().unwrap_or_else(|p| p.into_inner()))
                .collect(),
            sessions: sum(&|s| s.sessions.load(Ordering::Relaxed) as u64) as usize,
            wakeups: sum(&|s| s.wakeups.load(Ordering::Relaxed)),
            max_lateness_us: self
                .shards
                .iter()
                .map(|s| s.max_lateness_us.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0),
        }
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

/// Best effort: `SCHED_FIFO`, else nice −10, else as it is.
fn raise_priority(realtime: bool) -> ClockScheduling {
    if !realtime {
        return ClockScheduling::Normal;
    }
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: RT_PRIORITY,
        };
        // SAFETY: plain libc calls on the calling thread with a valid
        // sched_param; failure only means no privilege.
        if unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) }
            == 0
        {
            return ClockScheduling::Realtime(RT_PRIORITY);
        }
        // SAFETY: as above; on Linux PRIO_PROCESS with a thread id sets
        // that thread's nice level.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICE) } == 0 {
            return ClockScheduling::Nice(NICE);
        }
        tracing::info!("media clock runs at normal priority (no CAP_SYS_NICE)");
    }
    ClockScheduling::Normal
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
        let mut late = Duration::ZERO;
        while heap.peek().is_some_and(|Reverse(top)| top.at <= now) {
            if let Some(Reverse(e)) = heap.pop() {
                late = late.max(now.saturating_duration_since(e.at));
                due.push(e);
            }
        }
        shard
            .max_lateness_us
            .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
        // Pass 1: the packets. Each send reads the clock itself, so the
        // pacer's spacing sees when a packet really left.
        due.retain(|e| {
            let live = e.session.send_due(Instant::now());
            if !live {
                shard.sessions.fetch_sub(1, Ordering::Relaxed);
            }
            live
        });
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
        shard.wakeups.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that wants a slot every 20 ms for `slots` slots and
    /// records when each send happened. It leaves from `after_send`, or,
    /// like a session closed between two slots, from `send_due`.
    struct Fake {
        start: Instant,
        slots: u64,
        next: AtomicU64,
        sends: Mutex<Vec<Instant>>,
        leaves_in_send: bool,
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
            (k < self.slots || self.leaves_in_send)
                .then(|| self.start + Duration::from_millis(20 * k))
        }
    }

    #[test]
    fn every_session_is_served_on_its_own_schedule_then_leaves() {
        let clock = MediaClock::start(ClockOptions {
            threads: 2,
            realtime: false,
        });
        let t0 = Instant::now();
        let fakes: Vec<Arc<Fake>> = (0..50)
            .map(|i| {
                Arc::new(Fake {
                    // Phases spread over the 20 ms period, as real calls are.
                    start: t0 + Duration::from_micros(i * 400),
                    slots: 25,
                    next: AtomicU64::new(0),
                    sends: Mutex::new(Vec::new()),
                    leaves_in_send: i % 2 == 0,
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
                assert!(*at >= due, "slot {k} served early");
                // Generous: the test suite loads the machine, and these
                // threads run at normal priority; bench/media measures the
                // real figure.
                let late = *at - due;
                assert!(
                    late < Duration::from_millis(100),
                    "slot {k} late by {late:?}"
                );
            }
        }
        // Finished sessions leave the clock, by either way; it kept count.
        for _ in 0..50 {
            let st = clock.status();
            if st.sessions == 0 {
                assert_eq!(st.threads, 2);
                assert_eq!(st.scheduling, vec![ClockScheduling::Normal; 2]);
                assert!(st.wakeups > 25 && st.wakeups < 2000, "{st:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("sessions still registered: {:?}", clock.status());
    }
}
