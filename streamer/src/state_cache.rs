//! The session states this shard loop wrote last, so that a batch need not
//! read them back from Redis before merging into them.
//!
//! Every batch reads the stored state of each of its sessions (an `MGET`)
//! before it merges its events into them, and a visitor's session comes
//! back batch after batch. The apply script compares each state the batch
//! merged with against the stored one and writes nothing if any differs
//! (`apply.lua`), so a state remembered here is only ever a guess: a stale
//! one (another consumer merged into the session since, the key expired)
//! costs one refused call and a fresh read, never a wrong count. That is
//! why only what this loop itself sent is kept, why a batch's new states
//! are remembered as soon as its call is sent (the next batch is merged
//! while that call runs, and must see its states), and why every batch
//! that did not end applied forgets its sessions' states.
//!
//! With several consumers on a shard, a visit's events go to whichever
//! reads them, and a batch holds hundreds of visits: nearly every batch
//! would then merge with some stale state and be refused. So a refusal
//! pauses the cache (everything is read, as without it) for a while; a lone
//! consumer, whose states are never stale, keeps it on.
//!
//! Memory is bounded: two generations of at most `capacity` states each
//! (a state is about 160 bytes, see [`Generations`]), found by a 64-bit
//! fingerprint of the key, so no state is older than the window. Two keys
//! with one fingerprint would only make a wrong guess, which the script
//! refuses like any stale one.

use crate::generations::Generations;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

pub struct StateCache {
    states: Generations<Vec<u8>>,
    hasher: foldhash::fast::RandomState,
    paused_until: Option<Instant>,
}

impl StateCache {
    /// Remember states for at most `window`, at most `2 * capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        StateCache {
            states: Generations::new(window, capacity),
            hasher: foldhash::fast::RandomState::default(),
            paused_until: None,
        }
    }

    /// The remembered state of each of `keys` (None where there is none),
    /// and the positions of the keys without one, which must be read.
    pub fn lookup(&mut self, keys: &[String]) -> (Vec<Option<Vec<u8>>>, Vec<usize>) {
        let now = Instant::now();
        if self.paused(now) {
            metrics::counter!("tally_streamer_session_cache_misses_total").increment(keys.len() as u64);
            return (vec![None; keys.len()], (0..keys.len()).collect());
        }
        self.states.age(now);
        let mut states = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let fingerprint = self.hasher.hash_one(key.as_str());
            let known = self.states.get(fingerprint);
            if known.is_none() {
                missing.push(i);
            }
            states.push(known.cloned());
        }
        metrics::counter!("tally_streamer_session_cache_hits_total").increment((keys.len() - missing.len()) as u64);
        metrics::counter!("tally_streamer_session_cache_misses_total").increment(missing.len() as u64);
        (states, missing)
    }

    /// A batch's call that writes these states was sent.
    pub fn remember<'a>(&mut self, states: impl IntoIterator<Item = (&'a String, Vec<u8>)>) {
        if self.paused(Instant::now()) {
            return;
        }
        for (key, state) in states {
            self.states.insert(self.hasher.hash_one(key.as_str()), state);
        }
    }

    /// These sessions' stored states are not known (a batch touching them
    /// did not end applied, or was applied by the serial path).
    pub fn forget<'a>(&mut self, keys: impl IntoIterator<Item = &'a String>) {
        for key in keys {
            self.states.remove(self.hasher.hash_one(key.as_str()));
        }
    }

    /// A call was refused for a stale state: another consumer merges into
    /// this shard's visits. Forget everything and read all states for `pause`.
    pub fn pause(&mut self, pause: Duration) {
        let now = Instant::now();
        self.states.clear(now);
        self.paused_until = Some(now + pause);
    }

    fn paused(&mut self, now: Instant) -> bool {
        match self.paused_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.paused_until = None;
                self.states.clear(now);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn remembered_states_are_found_and_forgotten() {
        let mut cache = StateCache::new(Duration::from_secs(600), 100);
        let (states, missing) = cache.lookup(&keys(&["a", "b"]));
        assert_eq!(states, vec![None, None]);
        assert_eq!(missing, vec![0, 1], "nothing known: everything is read");

        let (a, b) = ("a".to_string(), "b".to_string());
        cache.remember([(&a, b"1".to_vec()), (&b, b"2".to_vec())]);
        cache.remember([(&a, b"3".to_vec())]);
        let (states, missing) = cache.lookup(&keys(&["c", "a", "b"]));
        assert_eq!(
            states,
            vec![None, Some(b"3".to_vec()), Some(b"2".to_vec())],
            "the last state sent wins"
        );
        assert_eq!(missing, vec![0]);

        cache.forget(&keys(&["a"]));
        let (_, missing) = cache.lookup(&keys(&["a", "b"]));
        assert_eq!(missing, vec![0], "a forgotten state is read again");

        cache.pause(Duration::from_secs(600));
        cache.remember([(&a, b"4".to_vec())]);
        assert_eq!(
            cache.lookup(&keys(&["a", "b"])),
            (vec![None, None], vec![0, 1]),
            "paused: all read"
        );
        cache.pause(Duration::ZERO);
        cache.remember([(&a, b"5".to_vec())]);
        assert_eq!(
            cache.lookup(&keys(&["a", "b"])),
            (vec![Some(b"5".to_vec()), None], vec![1]),
            "on again"
        );
    }

    #[test]
    fn nothing_is_known_past_the_window() {
        let mut cache = StateCache::new(Duration::ZERO, 100);
        cache.remember([(&"a".to_string(), b"1".to_vec())]);
        assert_eq!(cache.lookup(&keys(&["a"])).1, vec![0]);
    }
}
