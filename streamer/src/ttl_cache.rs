//! Which sketches' lifetimes this shard loop set recently, so that a batch
//! does not send them again.
//!
//! Minute keys expire 48 h after their first write: every op carries its
//! key's lifetime as `EXPIRE key ttl NX`, which sets it on a key that has
//! none (a new key, or a counter hash deleted because its fields returned
//! to zero and written anew) and is otherwise a lookup that Redis neither
//! writes nor propagates. A HyperLogLog key is never deleted by the
//! streamer and never shrinks, so once its lifetime was set it cannot
//! vanish within a window much shorter than that lifetime; within the
//! window the key's ops carry no lifetime, which saves the call itself
//! (sketches are added outside the script, one command per call). Counter
//! hashes are not skipped: one may be deleted and created again.

use crate::aggregate::{Delta, Deltas};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lifetimes shorter than this are always sent: such a key could expire
/// within the window and be created again without one.
pub(crate) const MIN_LIFETIME: Duration = Duration::from_secs(3600);

pub struct TtlCache {
    set_at: HashMap<String, Instant>,
    window: Duration,
    capacity: usize,
}

impl TtlCache {
    /// Remember keys for `window` (which must be far below the lifetimes),
    /// at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        TtlCache {
            set_at: HashMap::new(),
            window,
            capacity,
        }
    }

    /// Drop the lifetime of the sketches whose lifetime was set within the
    /// window; the keys whose lifetime the batch still sets.
    pub fn strip(&self, deltas: &mut Deltas) -> Vec<String> {
        let now = Instant::now();
        let mut sent = Vec::new();
        for ((key, _), (delta, ttl)) in deltas.ops.iter_mut() {
            // An emptied sketch op (see `member_cache`) is not sent at all.
            let sketch = matches!(delta, Delta::Union(members) if !members.is_empty());
            if !sketch || *ttl == 0 || Duration::from_secs(*ttl) < MIN_LIFETIME {
                continue;
            }
            match self.set_at.get(key) {
                Some(at) if now.duration_since(*at) < self.window => *ttl = 0,
                _ => sent.push(key.clone()),
            }
        }
        sent
    }

    /// The batch that set these keys' lifetimes was applied.
    pub fn record(&mut self, keys: Vec<String>) {
        let now = Instant::now();
        if self.set_at.len() + keys.len() > self.capacity {
            let window = self.window;
            self.set_at.retain(|_, at| now.duration_since(*at) < window);
            if self.set_at.len() + keys.len() > self.capacity {
                self.set_at.clear();
            }
        }
        for k in keys {
            self.set_at.insert(k, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Retention, aggregate};
    use schema::{Event, Keyspace};

    fn ttls(d: &Deltas) -> Vec<(String, char, u64)> {
        let mut v: Vec<_> = d.ops.iter().map(|((k, c), (_, t))| (k.clone(), *c, *t)).collect();
        v.sort();
        v
    }

    #[test]
    fn sketches_renewed_once_per_window_counters_always() {
        let events = [Event::pageview(1_795_000_000_000, "a.io", "/", 1)];
        let fresh = || aggregate(&events, Keyspace::default(), Retention::default());
        let mut cache = TtlCache::new(Duration::from_secs(600), 1000);

        let mut first = fresh();
        let sent = cache.strip(&mut first);
        assert_eq!(first, fresh(), "nothing known yet: every lifetime is sent");
        let minute_sketches = first.ops.iter().filter(|((_, c), (_, t))| *c == 'P' && *t > 0).count();
        assert_eq!(sent.len(), minute_sketches);
        assert!(minute_sketches >= 3, "{:?}", ttls(&first));

        // Not applied: nothing is remembered.
        let mut again = fresh();
        assert_eq!(cache.strip(&mut again).len(), minute_sketches);

        cache.record(sent);
        let mut later = fresh();
        assert!(cache.strip(&mut later).is_empty());
        for ((key, kind), (_, ttl)) in &later.ops {
            let before = fresh().ops[&(key.clone(), *kind)].1;
            let want = if *kind == 'P' { 0 } else { before };
            assert_eq!(*ttl, want, "{key} {kind}");
        }
        assert!(
            later.ops.iter().any(|((_, c), (_, t))| *c == 'H' && *t > 0),
            "counters keep theirs"
        );
    }

    #[test]
    fn the_window_and_the_capacity_bound_it() {
        let events = [Event::pageview(1_795_000_000_000, "a.io", "/", 1)];
        let mut d = aggregate(&events, Keyspace::default(), Retention::default());
        let mut cache = TtlCache::new(Duration::ZERO, 1000);
        let sent = cache.strip(&mut d);
        cache.record(sent.clone());
        let mut d2 = aggregate(&events, Keyspace::default(), Retention::default());
        assert_eq!(cache.strip(&mut d2).len(), sent.len(), "an expired window renews");

        let mut small = TtlCache::new(Duration::from_secs(600), 2);
        small.record(vec!["a".into(), "b".into()]);
        small.record(vec!["c".into()]);
        assert!(small.set_at.len() <= 2);
    }
}
