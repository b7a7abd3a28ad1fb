//! Which visitors this shard loop recently added to which sketches, so that
//! a batch does not add them again.
//!
//! A visitor comes back batch after batch, and each of its events adds it to
//! about fifteen sketches (traffic, page, device, country, ... at minute,
//! hour and day grain). `PFADD` of a member a sketch already holds changes
//! nothing, yet Redis still scans the sketch's sparse encoding to find that
//! out: `hllSparseSet` was a quarter of Redis's instructions in an in-order
//! drain. A sketch never loses a member while it exists, and it exists for
//! far longer than the window kept here (the same argument as
//! [`crate::ttl_cache`]'s), so a member that an applied batch added within
//! the window is left out of later batches. Only applied batches are
//! remembered; a restarted process simply adds its members again (`PFADD`
//! is idempotent), so counts stay exact.
//!
//! Memory is bounded: the cache holds 64-bit fingerprints of (key, member)
//! in two generations of at most `capacity` each. A generation is retired
//! after half the window (or when full), so no entry outlives the window.
//! A false match of two fingerprints would leave one visitor out of one
//! sketch; at 2⁻⁶⁴ per pair that is far below the sketch's own error.

use crate::aggregate::{Delta, Deltas};
use crate::ttl_cache::MIN_LIFETIME;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

type Fingerprints = HashSet<u64, foldhash::fast::RandomState>;

pub struct MemberCache {
    current: Fingerprints,
    previous: Fingerprints,
    started: Instant,
    window: Duration,
    capacity: usize,
    hasher: foldhash::fast::RandomState,
}

impl MemberCache {
    /// Remember members for at most `window` (which must be far below the
    /// sketches' lifetimes), at most `2 * capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        MemberCache {
            current: Fingerprints::default(),
            previous: Fingerprints::default(),
            started: Instant::now(),
            window,
            capacity,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn known(&self, fingerprint: u64) -> bool {
        self.current.contains(&fingerprint) || self.previous.contains(&fingerprint)
    }

    /// Drop from the batch's sketch ops the members added within the window;
    /// the fingerprints of the members the batch still adds.
    pub fn strip(&mut self, deltas: &mut Deltas) -> Vec<u64> {
        self.retire_if_due(Instant::now());
        let mut sent = Vec::new();
        for ((key, _), (delta, ttl)) in deltas.ops.iter_mut() {
            let Delta::Union(members) = delta else { continue };
            if *ttl != 0 && Duration::from_secs(*ttl) < MIN_LIFETIME {
                continue;
            }
            // The key is hashed once, not once per member.
            let key_hash = self.hasher.hash_one(key.as_str());
            members.retain(|visitor| {
                let fingerprint = self.hasher.hash_one((key_hash, *visitor));
                let keep = !self.known(fingerprint);
                if keep {
                    sent.push(fingerprint);
                }
                keep
            });
        }
        sent
    }

    /// The batch that added these members was applied.
    pub fn record(&mut self, sent: Vec<u64>) {
        for fingerprint in sent {
            if self.current.len() >= self.capacity {
                self.retire(Instant::now());
            }
            self.current.insert(fingerprint);
        }
    }

    fn retire_if_due(&mut self, now: Instant) {
        if now.duration_since(self.started) >= self.window / 2 {
            // Both generations are past half the window: the older one is
            // past the window as a whole.
            if now.duration_since(self.started) >= self.window {
                self.previous.clear();
                self.current.clear();
                self.started = now;
            } else {
                self.retire(now);
            }
        }
    }

    fn retire(&mut self, now: Instant) {
        self.previous = std::mem::take(&mut self.current);
        self.started = now;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Retention, aggregate};
    use schema::{Event, Keyspace};
    use std::collections::BTreeSet;

    fn members(d: &Deltas) -> BTreeSet<(String, u64)> {
        d.ops
            .iter()
            .filter_map(|((k, _), (delta, _))| match delta {
                Delta::Union(s) => Some(s.iter().map(move |v| (k.clone(), *v))),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn batch(visitors: &[u64]) -> Deltas {
        let events: Vec<Event> = visitors
            .iter()
            .map(|v| Event::pageview(1_795_000_000_000, "a.io", "/", *v))
            .collect();
        aggregate(&events, Keyspace::default(), Retention::default())
    }

    #[test]
    fn applied_members_are_left_out_of_later_batches() {
        let mut cache = MemberCache::new(Duration::from_secs(600), 1000);
        let mut first = batch(&[1, 2]);
        let sent = cache.strip(&mut first);
        assert_eq!(first, batch(&[1, 2]), "nothing known yet: every member is sent");
        assert_eq!(sent.len(), members(&first).len());

        // Not applied: nothing is remembered.
        let mut again = batch(&[1, 2]);
        assert_eq!(cache.strip(&mut again).len(), sent.len());

        cache.record(sent);
        let mut later = batch(&[1, 2, 3]);
        let sent = cache.strip(&mut later);
        let left: BTreeSet<u64> = members(&later).into_iter().map(|(_, v)| v).collect();
        assert_eq!(left, BTreeSet::from([3]), "only the new visitor is added");
        assert_eq!(sent.len(), members(&later).len());
        let counters = |d: &Deltas| {
            d.ops
                .iter()
                .filter(|(_, (delta, _))| !matches!(delta, Delta::Union(_)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(counters(&later), counters(&batch(&[1, 2, 3])), "counters untouched");
    }

    #[test]
    fn short_lived_sketches_are_never_skipped() {
        let events = [Event::pageview(1_795_000_000_000, "a.io", "/", 1)];
        let retention = Retention {
            minute_secs: 600,
            ..Retention::default()
        };
        let fresh = || aggregate(&events, Keyspace::default(), retention);
        let mut cache = MemberCache::new(Duration::from_secs(600), 1000);
        let mut d = fresh();
        let sent = cache.strip(&mut d);
        cache.record(sent);
        let mut d = fresh();
        cache.strip(&mut d);
        let short = d
            .ops
            .values()
            .filter(|(delta, ttl)| *ttl == 600 && matches!(delta, Delta::Union(s) if !s.is_empty()))
            .count();
        assert!(short >= 3, "the 10-minute sketches keep their members");
        assert!(
            d.ops
                .values()
                .all(|(delta, ttl)| *ttl == 600 || !matches!(delta, Delta::Union(s) if !s.is_empty())),
            "the others are skipped"
        );
    }

    #[test]
    fn the_window_and_the_capacity_bound_it() {
        let mut cache = MemberCache::new(Duration::ZERO, 1000);
        let mut d = batch(&[1]);
        let sent = cache.strip(&mut d);
        let n = sent.len();
        cache.record(sent);
        let mut d = batch(&[1]);
        assert_eq!(cache.strip(&mut d).len(), n, "an expired window adds again");

        let mut small = MemberCache::new(Duration::from_secs(600), 2);
        small.record(vec![1, 2, 3, 4, 5]);
        assert!(small.len() <= 4, "two generations of at most two");
        assert!(small.known(5) && small.known(4) && !small.known(1));
    }
}
