//! A pool of reusable, costly buffers that lets go of them when nobody has
//! used them for a while. A recognizer's decoding state is tens of
//! megabytes; kept for ever, it is most of a quiet node's memory. Sans-IO:
//! the caller passes the time, so the release is tested with a simulated
//! clock.

use std::time::{Duration, Instant};

/// At most `capacity` items, each dropped once unused for `keep_for`.
#[derive(Debug)]
pub struct IdlePool<T> {
    /// Returned items, the most recently returned last.
    items: Vec<(T, Instant)>,
    capacity: usize,
    keep_for: Duration,
    /// An item is being made for the pool ([`IdlePool::want`] said so).
    making: bool,
}

impl<T> IdlePool<T> {
    pub fn new(capacity: usize, keep_for: Duration) -> IdlePool<T> {
        IdlePool {
            items: Vec::new(),
            capacity,
            keep_for,
            making: false,
        }
    }

    /// The most recently returned item, if any.
    pub fn take(&mut self) -> Option<T> {
        self.items.pop().map(|(item, _)| item)
    }

    /// Gives `item` back at `now`; beyond the capacity it is dropped.
    pub fn put(&mut self, item: T, now: Instant) {
        if self.items.len() < self.capacity {
            self.items.push((item, now));
        }
    }

    /// The items unused since `keep_for` before `now`, taken out of the
    /// pool (the caller drops them, outside any lock it holds).
    pub fn expired(&mut self, now: Instant) -> Vec<T> {
        let keep_for = self.keep_for;
        let (old, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|(_, at)| now.saturating_duration_since(*at) >= keep_for);
        self.items = kept;
        old.into_iter().map(|(item, _)| item).collect()
    }

    /// An item will be wanted soon (a call is starting): the items kept
    /// count as used at `now`. True when the pool is empty and nothing is
    /// being made: the caller makes one and gives it with [`IdlePool::made`]
    /// (or says [`IdlePool::not_made`]); however many calls start at once,
    /// one item is made.
    pub fn want(&mut self, now: Instant) -> bool {
        for (_, at) in &mut self.items {
            *at = now;
        }
        if self.items.is_empty() && !self.making && self.capacity > 0 {
            self.making = true;
            return true;
        }
        false
    }

    /// The item [`IdlePool::want`] asked for, made.
    pub fn made(&mut self, item: T, now: Instant) {
        self.making = false;
        self.put(item, now);
    }

    /// The item [`IdlePool::want`] asked for could not be made.
    pub fn not_made(&mut self) {
        self.making = false;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(30);

    #[test]
    fn items_unused_for_the_grace_period_are_released() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(2, KEEP);
        pool.put("a", t0);
        pool.put("b", t0 + Duration::from_secs(20));
        assert!(pool.expired(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(pool.expired(t0 + Duration::from_secs(30)), vec!["a"]);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.expired(t0 + Duration::from_secs(50)), vec!["b"]);
        assert!(pool.is_empty());
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn use_restarts_the_grace_period_and_the_newest_goes_first() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(2, KEEP);
        pool.put(1, t0);
        pool.put(2, t0 + Duration::from_secs(1));
        let taken = pool.take().expect("an item");
        assert_eq!(taken, 2);
        pool.put(taken, t0 + Duration::from_secs(25));
        assert_eq!(pool.expired(t0 + Duration::from_secs(31)), vec![1]);
        assert_eq!(pool.take(), Some(2));
    }

    #[test]
    fn many_wants_at_once_make_one_item_and_keep_the_pool_alive() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(2, KEEP);
        assert!(pool.want(t0), "an empty pool asks for one item");
        for _ in 0..500 {
            assert!(!pool.want(t0), "one is being made already");
        }
        pool.made("state", t0);
        assert!(!pool.want(t0), "one is kept");
        // Calls starting keep the item from expiring, though none uses it.
        for s in [20, 40, 60] {
            assert!(!pool.want(t0 + Duration::from_secs(s)));
            assert!(pool.expired(t0 + Duration::from_secs(s + 10)).is_empty());
        }
        assert_eq!(pool.expired(t0 + Duration::from_secs(90)), vec!["state"]);
        assert!(pool.want(t0 + Duration::from_secs(91)));
        pool.not_made();
        assert!(
            pool.want(t0 + Duration::from_secs(92)),
            "a failure lets the next try"
        );
    }

    #[test]
    fn the_pool_holds_at_most_its_capacity() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(1, KEEP);
        pool.put(1, t0);
        pool.put(2, t0);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.take(), Some(1));
    }
}
