//! Fixed-window counters for login attempts, per email and per source
//! address. In memory per node; the table is bounded so a flood of distinct
//! keys cannot grow it without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered at once; beyond that, expired windows are swept and,
/// if still full, new keys are refused (fail closed under a flood).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

pub struct RateLimiter {
    limit: Limit,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: Limit) -> RateLimiter {
        RateLimiter {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt for `key` at `now`. `Err(seconds)` when the key is
    /// over its limit: the seconds until its window ends.
    pub fn hit(&self, key: &str, now: Instant) -> Result<(), u64> {
        let Ok(mut windows) = self.windows.lock() else {
            return Err(self.limit.window.as_secs());
        };
        if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
            let window = self.limit.window;
            windows.retain(|_, (start, _)| now.duration_since(*start) < window);
            if windows.len() >= MAX_KEYS {
                return Err(window.as_secs());
            }
        }
        let entry = windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.limit.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit.max {
            let left = self
                .limit
                .window
                .saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Forgets `key` (a successful login clears its email's failures).
    pub fn reset(&self, key: &str) {
        if let Ok(mut windows) = self.windows.lock() {
            windows.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits_and_resets() {
        let rl = RateLimiter::new(Limit {
            max: 3,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.hit("a", t0).is_ok());
        }
        let wait = rl.hit("a", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, 50);
        assert!(rl.hit("b", t0).is_ok(), "keys are independent");
        assert!(
            rl.hit("a", t0 + Duration::from_secs(61)).is_ok(),
            "new window"
        );
        rl.reset("a");
        assert!(rl.hit("a", t0 + Duration::from_secs(62)).is_ok());
    }
}
