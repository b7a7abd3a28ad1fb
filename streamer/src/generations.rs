//! A map from 64-bit fingerprints that forgets: what the shard loops'
//! caches ([`crate::member_cache`], [`crate::state_cache`]) remember.
//!
//! Entries live in two generations of at most `capacity` each. The current
//! one is retired (becomes the previous one, whose entries are dropped)
//! when full or once it is half the window old, and both are dropped once
//! the current one is a whole window old; so memory stays bounded and no
//! entry outlives the window, without a timestamp per entry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

type Map<V> = HashMap<u64, V, foldhash::fast::RandomState>;

pub struct Generations<V> {
    current: Map<V>,
    previous: Map<V>,
    started: Instant,
    window: Duration,
    capacity: usize,
}

impl<V> Generations<V> {
    /// Keep entries for at most `window`, at most `2 * capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Generations {
            current: Map::default(),
            previous: Map::default(),
            started: Instant::now(),
            window,
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, fingerprint: u64) -> Option<&V> {
        self.current
            .get(&fingerprint)
            .or_else(|| self.previous.get(&fingerprint))
    }

    pub fn contains(&self, fingerprint: u64) -> bool {
        self.get(fingerprint).is_some()
    }

    /// Keep `value` under `fingerprint` (replacing what was there).
    pub fn insert(&mut self, fingerprint: u64, value: V) {
        if self.current.len() >= self.capacity {
            self.retire(Instant::now());
        }
        self.previous.remove(&fingerprint);
        self.current.insert(fingerprint, value);
    }

    pub fn remove(&mut self, fingerprint: u64) {
        self.current.remove(&fingerprint);
        self.previous.remove(&fingerprint);
    }

    /// Forget everything; the window starts again at `now`.
    pub fn clear(&mut self, now: Instant) {
        self.current.clear();
        self.previous.clear();
        self.started = now;
    }

    /// Retire what the window's passing at `now` retires.
    pub fn age(&mut self, now: Instant) {
        let age = now.duration_since(self.started);
        if age >= self.window {
            self.clear(now);
        } else if age >= self.window / 2 {
            self.retire(now);
        }
    }

    fn retire(&mut self, now: Instant) {
        self.previous = std::mem::take(&mut self.current);
        self.started = now;
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_and_the_capacity_bound_it() {
        let mut g = Generations::new(Duration::from_secs(600), 2);
        for i in 0..5 {
            g.insert(i, i * 10);
        }
        assert!(g.len() <= 4, "two generations of at most two");
        assert_eq!(
            (g.get(4), g.get(3), g.get(0)),
            (Some(&40), Some(&30), None),
            "the oldest went first"
        );
        g.insert(3, 31);
        assert_eq!(g.get(3), Some(&31), "the last value wins");
        g.remove(3);
        assert!(!g.contains(3), "not kept, stale, in the previous generation either");

        let mut expired = Generations::new(Duration::ZERO, 100);
        expired.insert(1, ());
        expired.age(Instant::now());
        assert!(expired.is_empty(), "past the window nothing is kept");

        let mut half = Generations::new(Duration::from_secs(600), 100);
        half.insert(1, ());
        half.age(Instant::now() + Duration::from_secs(301));
        half.insert(2, ());
        assert!(
            half.contains(1) && half.contains(2),
            "half a window: retired, still known"
        );
        half.age(Instant::now() + Duration::from_secs(602));
        assert!(!half.contains(1) && half.contains(2), "the older generation went");
    }
}
