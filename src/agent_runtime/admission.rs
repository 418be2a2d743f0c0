//! Admission control on measured load: a node takes a new call only while
//! the calls it has are served in time. The measure is how long a
//! transcription waits for the CPU (whisper's pool): the first thing to
//! grow when a 2-core node holds more conversations than it can hear, long
//! before anything is dropped. Beyond the limit, new calls get 503 with
//! Retry-After instead of slowing every caller already talking. Sans-IO:
//! the runtime feeds waits with their time, SIP asks before answering.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Waits older than this no longer count.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Waits remembered at most (the newest).
const MAX_SAMPLES: usize = 512;
/// Fewer recent waits than this say nothing about load.
const MIN_SAMPLES: usize = 4;

/// The limits, from `[admission]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Calls held at most (0: no fixed cap).
    pub max_calls: usize,
    /// Refuse while the 90th percentile of recent transcription waits is
    /// above this (zero: never on load).
    pub max_stt_wait: Duration,
    /// Retry-After of a refusal, in seconds.
    pub retry_after_secs: u32,
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_calls` calls are live.
    Full,
    /// Transcriptions wait too long for the CPU.
    Overloaded,
}

#[derive(Debug)]
pub struct LoadGauge {
    waits: VecDeque<(Instant, Duration)>,
    /// Refusing on load: until the waits fall to half the limit
    /// (hysteresis, so admission does not flap at the edge).
    overloaded: bool,
}

impl Default for LoadGauge {
    fn default() -> Self {
        LoadGauge {
            waits: VecDeque::with_capacity(MAX_SAMPLES),
            overloaded: false,
        }
    }
}

impl LoadGauge {
    /// A transcription that waited `wait` for the CPU, at `now`.
    pub fn record_wait(&mut self, now: Instant, wait: Duration) {
        if self.waits.len() == MAX_SAMPLES {
            self.waits.pop_front();
        }
        self.waits.push_back((now, wait));
    }

    /// The 90th percentile of the waits in the window, if there are enough.
    pub fn recent_p90(&mut self, now: Instant) -> Option<Duration> {
        while let Some((at, _)) = self.waits.front() {
            if now.saturating_duration_since(*at) > WINDOW {
                self.waits.pop_front();
            } else {
                break;
            }
        }
        if self.waits.len() < MIN_SAMPLES {
            return None;
        }
        let mut w: Vec<Duration> = self.waits.iter().map(|(_, d)| *d).collect();
        w.sort_unstable();
        let i = ((w.len() * 9).div_ceil(10)).saturating_sub(1);
        Some(w[i.min(w.len() - 1)])
    }

    /// May a new call be taken with `live` calls up?
    pub fn admits(&mut self, now: Instant, live: usize, limits: &Limits) -> Result<(), Refusal> {
        if limits.max_calls > 0 && live >= limits.max_calls {
            return Err(Refusal::Full);
        }
        if limits.max_stt_wait.is_zero() {
            return Ok(());
        }
        let p90 = self.recent_p90(now).unwrap_or_default();
        if self.overloaded {
            if p90 <= limits.max_stt_wait / 2 {
                self.overloaded = false;
            }
        } else if p90 > limits.max_stt_wait {
            self.overloaded = true;
        }
        if self.overloaded {
            Err(Refusal::Overloaded)
        } else {
            Ok(())
        }
    }
}

/// The process's gauge: whisper's CPU budget is process-wide, and so is
/// what waiting for it says.
pub fn gauge() -> &'static Mutex<LoadGauge> {
    static GAUGE: OnceLock<Mutex<LoadGauge>> = OnceLock::new();
    GAUGE.get_or_init(|| Mutex::new(LoadGauge::default()))
}

/// Records a transcription's wait in the process's gauge.
pub fn record_stt_wait(wait: Duration) {
    if let Ok(mut g) = gauge().lock() {
        g.record_wait(Instant::now(), wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_calls: usize, wait_ms: u64) -> Limits {
        Limits {
            max_calls,
            max_stt_wait: Duration::from_millis(wait_ms),
            retry_after_secs: 5,
        }
    }

    #[test]
    fn a_fixed_cap_refuses_at_the_cap() {
        let mut g = LoadGauge::default();
        let t = Instant::now();
        assert_eq!(g.admits(t, 2, &limits(3, 0)), Ok(()));
        assert_eq!(g.admits(t, 3, &limits(3, 0)), Err(Refusal::Full));
        assert_eq!(g.admits(t, 1_000, &limits(0, 0)), Ok(()));
    }

    #[test]
    fn long_waits_refuse_until_they_fall_to_half_the_limit() {
        let mut g = LoadGauge::default();
        let l = limits(0, 400);
        let t0 = Instant::now();
        // A few waits say nothing yet; short ones admit.
        for i in 0..3 {
            g.record_wait(t0 + Duration::from_millis(i), Duration::from_millis(900));
        }
        assert_eq!(g.admits(t0, 10, &l), Ok(()));
        for i in 0..30 {
            g.record_wait(
                t0 + Duration::from_millis(10 + i),
                Duration::from_millis(100),
            );
        }
        assert_eq!(g.admits(t0 + Duration::from_millis(50), 10, &l), Ok(()));
        // The CPU falls behind: most waits over the limit.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..60 {
            g.record_wait(t1 + Duration::from_millis(i), Duration::from_millis(700));
        }
        assert_eq!(
            g.admits(t1 + Duration::from_millis(50), 10, &l),
            Err(Refusal::Overloaded)
        );
        // Waits at 300 ms (under the limit, over half of it): still refusing.
        let t2 = t1 + Duration::from_secs(11);
        for i in 0..20 {
            g.record_wait(t2 + Duration::from_millis(i), Duration::from_millis(300));
        }
        assert_eq!(
            g.admits(t2 + Duration::from_millis(50), 10, &l),
            Err(Refusal::Overloaded)
        );
        // Then at 150 ms, once the old waits left the window: admitting.
        let t3 = t2 + Duration::from_secs(11);
        for i in 0..20 {
            g.record_wait(t3 + Duration::from_millis(i), Duration::from_millis(150));
        }
        assert_eq!(g.admits(t3 + Duration::from_millis(50), 10, &l), Ok(()));
    }

    #[test]
    fn an_idle_node_forgets_its_load() {
        let mut g = LoadGauge::default();
        let l = limits(0, 400);
        let t0 = Instant::now();
        for i in 0..20 {
            g.record_wait(t0 + Duration::from_millis(i), Duration::from_secs(2));
        }
        assert_eq!(
            g.admits(t0 + Duration::from_millis(30), 1, &l),
            Err(Refusal::Overloaded)
        );
        assert_eq!(g.admits(t0 + WINDOW * 2, 1, &l), Ok(()));
    }

    #[test]
    fn memory_is_bounded() {
        let mut g = LoadGauge::default();
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            g.record_wait(t0 + Duration::from_micros(i), Duration::from_millis(1));
        }
        assert!(g.waits.len() <= MAX_SAMPLES);
    }
}
