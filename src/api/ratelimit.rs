//! Fixed-window counters for login attempts (per source address, and per
//! email from one source), with a lockout that doubles each time a key runs
//! over again. In memory per node; the table is bounded, and a flood of
//! distinct keys evicts the oldest windows rather than refusing everyone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered at once.
const MAX_KEYS: usize = 100_000;
/// Longest lockout, however often a key runs over.
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Instant,
    count: u32,
    /// Times this key has run over; each lockout is twice the last.
    strikes: u32,
    locked_until: Option<Instant>,
}

pub struct RateLimiter {
    limit: Limit,
    max_keys: usize,
    windows: Mutex<HashMap<String, Entry>>,
}

impl RateLimiter {
    pub fn new(limit: Limit) -> RateLimiter {
        RateLimiter::with_capacity(limit, MAX_KEYS)
    }

    /// A limiter remembering at most `max_keys` keys.
    pub fn with_capacity(limit: Limit, max_keys: usize) -> RateLimiter {
        RateLimiter {
            limit,
            max_keys: max_keys.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt for `key` at `now`. `Err(seconds)` when the key is
    /// locked: the seconds until it may try again. Running over the limit
    /// locks the key for one window, then two, four… (at most an hour);
    /// the strikes are forgiven after four quiet windows.
    pub fn hit(&self, key: &str, now: Instant) -> Result<(), u64> {
        let window = self.limit.window;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= self.max_keys && !windows.contains_key(key) {
            self.make_room(&mut windows, now);
        }
        let entry = windows.entry(key.to_string()).or_insert(Entry {
            start: now,
            count: 0,
            strikes: 0,
            locked_until: None,
        });
        if let Some(until) = entry.locked_until.filter(|u| now < *u) {
            return Err(secs_until(now, until));
        }
        // Quiet since the lockout ended, or since the window began; a
        // lockout over, or a window gone by, starts a new window.
        let was_locked = entry.locked_until.is_some();
        let quiet = now.saturating_duration_since(entry.locked_until.take().unwrap_or(entry.start));
        if was_locked || quiet >= window {
            if quiet >= window * 4 {
                entry.strikes = 0;
            }
            entry.start = now;
            entry.count = 0;
        }
        if entry.count >= self.limit.max {
            let lockout = window
                .saturating_mul(1u32 << entry.strikes.min(20))
                .min(MAX_LOCKOUT);
            entry.strikes = entry.strikes.saturating_add(1);
            let until = now + lockout;
            entry.locked_until = Some(until);
            return Err(secs_until(now, until));
        }
        entry.count += 1;
        Ok(())
    }

    /// Forgets `key` (a successful login clears its failures).
    pub fn reset(&self, key: &str) {
        if let Ok(mut windows) = self.windows.lock() {
            windows.remove(key);
        }
    }

    /// Drops expired windows; if the table is still full, the oldest tenth
    /// of it (one sort per tenth of the table's size of new keys).
    fn make_room(&self, windows: &mut HashMap<String, Entry>, now: Instant) {
        let window = self.limit.window;
        windows.retain(|_, e| {
            now.saturating_duration_since(e.start) < window
                || e.locked_until.is_some_and(|u| u > now)
        });
        if windows.len() < self.max_keys {
            return;
        }
        let mut by_age: Vec<(Instant, String)> =
            windows.iter().map(|(k, e)| (e.start, k.clone())).collect();
        by_age.sort_unstable();
        let drop = (self.max_keys / 10).max(1);
        for (_, k) in by_age.into_iter().take(drop) {
            windows.remove(&k);
        }
    }
}

fn secs_until(now: Instant, until: Instant) -> u64 {
    until.saturating_duration_since(now).as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_keys: usize) -> RateLimiter {
        RateLimiter::with_capacity(
            Limit {
                max: 3,
                window: Duration::from_secs(60),
            },
            max_keys,
        )
    }

    #[test]
    fn window_limits_and_resets() {
        let rl = limiter(100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.hit("a", t0).is_ok());
        }
        assert_eq!(rl.hit("a", t0 + Duration::from_secs(10)), Err(60));
        assert!(rl.hit("b", t0).is_ok(), "keys are independent");
        assert!(
            rl.hit("a", t0 + Duration::from_secs(71)).is_ok(),
            "the lockout is over"
        );
        rl.reset("a");
        assert!(rl.hit("a", t0 + Duration::from_secs(72)).is_ok());
    }

    #[test]
    fn each_lockout_is_twice_the_last_and_quiet_forgives() {
        let rl = limiter(100);
        let mut now = Instant::now();
        let mut lockouts = Vec::new();
        for _ in 0..4 {
            for _ in 0..3 {
                assert!(rl.hit("a", now).is_ok());
            }
            let wait = rl.hit("a", now).unwrap_err();
            lockouts.push(wait);
            // Trying while locked changes nothing.
            assert!(rl.hit("a", now + Duration::from_secs(1)).is_err());
            now += Duration::from_secs(wait);
        }
        assert_eq!(lockouts, vec![60, 120, 240, 480]);
        // Four quiet windows later the strikes are forgotten.
        now += Duration::from_secs(240);
        for _ in 0..3 {
            assert!(rl.hit("a", now).is_ok());
        }
        assert_eq!(rl.hit("a", now), Err(60));
        // The longest lockout is an hour.
        let rl = limiter(100);
        let mut now = Instant::now();
        let mut last = 0;
        for _ in 0..12 {
            for _ in 0..3 {
                let _ = rl.hit("z", now);
            }
            last = rl.hit("z", now).unwrap_err();
            now += Duration::from_secs(last);
        }
        assert_eq!(last, 3600);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_keys_instead_of_refusing_everyone() {
        let rl = limiter(100);
        let t0 = Instant::now();
        // A flood of distinct keys, all within one window.
        for i in 0..1000 {
            assert!(
                rl.hit(&format!("flood-{i}"), t0 + Duration::from_millis(i))
                    .is_ok(),
                "key {i} refused"
            );
        }
        assert!(rl.windows.lock().unwrap().len() <= 100);
        // A real user still gets in, and a locked key stays locked.
        for _ in 0..3 {
            assert!(rl.hit("user", t0 + Duration::from_secs(1)).is_ok());
        }
        assert!(rl.hit("user", t0 + Duration::from_secs(1)).is_err());
        for i in 0..50 {
            let _ = rl.hit(&format!("more-{i}"), t0 + Duration::from_secs(2));
        }
        assert!(rl.hit("user", t0 + Duration::from_secs(3)).is_err());
    }
}
