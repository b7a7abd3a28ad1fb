//! In-memory pre-aggregation of one batch into key-map deltas.
//!
//! A batch of a thousand events touches far fewer keys than it has events, so
//! the streamer folds it into per-key deltas first (counter increments,
//! HyperLogLog members, span min/max) and sends those to Redis in one script
//! call. Every delta is an order-independent merge (sum, set union, min, max),
//! so batches may be applied in any order and by any consumer.

use schema::event::Category;
use schema::keys::{Family, span_fields, traffic_fields};
use schema::{Event, Grain, Keyspace};
use std::collections::{BTreeMap, BTreeSet};

/// Retention of aggregate keys, in seconds (0 = keep).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub minute_secs: u64,
    pub hour_secs: u64,
    pub day_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minute_secs: 48 * 3600,
            hour_secs: 0,
            day_secs: 0,
        }
    }
}

impl Retention {
    pub fn for_grain(self, g: Grain) -> u64 {
        match g {
            Grain::Minute => self.minute_secs,
            Grain::Hour => self.hour_secs,
            Grain::Day => self.day_secs,
        }
    }
}

/// How one key is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// `HINCRBY` each field.
    Incr(BTreeMap<String, i64>),
    /// `PFADD` the members.
    Union(BTreeSet<String>),
    /// Keep the lowest / greatest value of each field.
    Min(BTreeMap<String, i64>),
    Max(BTreeMap<String, i64>),
}

/// All deltas of a batch, keyed by Redis key (one entry per key and kind).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deltas {
    /// (key, kind code) -> (delta, ttl seconds)
    pub ops: BTreeMap<(String, char), (Delta, u64)>,
}

impl Deltas {
    fn incr(&mut self, key: String, ttl: u64, field: &str, by: i64) {
        let entry = self
            .ops
            .entry((key, 'H'))
            .or_insert_with(|| (Delta::Incr(BTreeMap::new()), ttl));
        if let Delta::Incr(m) = &mut entry.0 {
            *m.entry(field.to_owned()).or_insert(0) += by;
        }
    }

    fn union(&mut self, key: String, ttl: u64, member: String) {
        let entry = self
            .ops
            .entry((key, 'P'))
            .or_insert_with(|| (Delta::Union(BTreeSet::new()), ttl));
        if let Delta::Union(s) = &mut entry.0 {
            s.insert(member);
        }
    }

    fn extreme(&mut self, key: String, field: &str, value: i64, max: bool) {
        let code = if max { 'G' } else { 'L' };
        let entry = self.ops.entry((key, code)).or_insert_with(|| {
            (
                if max {
                    Delta::Max(BTreeMap::new())
                } else {
                    Delta::Min(BTreeMap::new())
                },
                0,
            )
        });
        match &mut entry.0 {
            Delta::Max(m) => {
                let v = m.entry(field.to_owned()).or_insert(value);
                *v = (*v).max(value);
            }
            Delta::Min(m) => {
                let v = m.entry(field.to_owned()).or_insert(value);
                *v = (*v).min(value);
            }
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Fold events into deltas for keyspace `ks`.
pub fn aggregate<'a>(events: impl IntoIterator<Item = &'a Event>, ks: Keyspace, retention: Retention) -> Deltas {
    let mut d = Deltas::default();
    for e in events {
        let category = e.category();
        if category == Category::Engagement {
            // Engagement pings only carry time-on-page; they are not events
            // in the traffic counts (Plausible's definition).
            continue;
        }
        let pageview = category == Category::Pageview;
        let visitor = format!("{:016x}", e.visitor_id);
        for grain in Grain::ALL {
            let bucket = grain.truncate(e.ts_ms);
            let ttl = retention.for_grain(grain);
            let traffic = ks.bucket_key(Family::Traffic, grain, &e.site, bucket);
            d.incr(traffic.clone(), ttl, traffic_fields::EVENTS, 1);
            if pageview {
                d.incr(traffic, ttl, traffic_fields::PAGEVIEWS, 1);
                d.incr(ks.bucket_key(Family::Pages, grain, &e.site, bucket), ttl, e.path(), 1);
            }
            d.union(
                ks.bucket_key(Family::Visitors, grain, &e.site, bucket),
                ttl,
                visitor.clone(),
            );
        }
        let span = ks.span_key(&e.site);
        d.extreme(span.clone(), span_fields::FIRST_MS, e.ts_ms, false);
        d.extreme(span, span_fields::LAST_MS, e.ts_ms, true);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts_ms: i64, site: &str, name: &str, path: &str, visitor: u64) -> Event {
        let mut e = Event::pageview(ts_ms, site, path, visitor);
        e.name = name.into();
        e
    }

    fn incr(d: &Deltas, key: &str) -> BTreeMap<String, i64> {
        match &d.ops[&(key.to_owned(), 'H')].0 {
            Delta::Incr(m) => m.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn folds_counts_per_bucket_and_path() {
        let ks = Keyspace::default();
        let t0 = 1_795_000_020_000; // within one minute
        let events = vec![
            ev(t0, "a.io", "pageview", "/", 1),
            ev(t0 + 1000, "a.io", "pageview", "/x", 2),
            ev(t0 + 2000, "a.io", "pageview", "/x", 2),
            ev(t0 + 3000, "a.io", "signup", "/x", 2),
            ev(t0 + 4000, "a.io", "engagement", "/x", 2),
            ev(t0 + 3_600_000, "a.io", "pageview", "/", 3),
        ];
        let d = aggregate(&events, ks, Retention::default());
        let m = Grain::Minute.truncate(t0);
        let tk = ks.bucket_key(Family::Traffic, Grain::Minute, "a.io", m);
        assert_eq!(
            incr(&d, &tk),
            BTreeMap::from([("events".into(), 4), ("pageviews".into(), 3)])
        );
        let pk = ks.bucket_key(Family::Pages, Grain::Minute, "a.io", m);
        assert_eq!(incr(&d, &pk), BTreeMap::from([("/".into(), 1), ("/x".into(), 2)]));
        let dk = ks.bucket_key(Family::Traffic, Grain::Day, "a.io", t0);
        assert_eq!(incr(&d, &dk)["pageviews"], 4);
        let vk = ks.bucket_key(Family::Visitors, Grain::Minute, "a.io", m);
        assert_eq!(
            d.ops[&(vk.clone(), 'P')].0,
            Delta::Union(BTreeSet::from([format!("{:016x}", 1), format!("{:016x}", 2)]))
        );
        assert_eq!(d.ops[&(vk, 'P')].1, 48 * 3600, "minute keys expire");
        assert_eq!(d.ops[&(dk, 'H')].1, 0, "day keys are kept");
        let span = ks.span_key("a.io");
        assert_eq!(
            d.ops[&(span.clone(), 'L')].0,
            Delta::Min(BTreeMap::from([("first_ms".into(), t0)]))
        );
        assert_eq!(
            d.ops[&(span, 'G')].0,
            Delta::Max(BTreeMap::from([("last_ms".into(), t0 + 3_600_000)]))
        );
    }

    #[test]
    fn order_of_events_does_not_matter() {
        let ks = Keyspace::default();
        let mut events: Vec<Event> = (0..50)
            .map(|i| {
                ev(
                    1_795_000_000_000 + i * 7_919_000,
                    &format!("s{}.io", i % 3),
                    "pageview",
                    &format!("/{}", i % 4),
                    i as u64 % 5,
                )
            })
            .collect();
        let a = aggregate(&events, ks, Retention::default());
        events.reverse();
        let b = aggregate(&events, ks, Retention::default());
        assert_eq!(a, b);
        // Splitting into two batches and summing gives the same counters.
        let (x, y) = events.split_at(17);
        let (dx, dy) = (
            aggregate(x, ks, Retention::default()),
            aggregate(y, ks, Retention::default()),
        );
        for ((key, kind), (delta, _)) in &a.ops {
            if let Delta::Incr(total) = delta {
                for (f, v) in total {
                    let part = |d: &Deltas| match d.ops.get(&(key.clone(), *kind)) {
                        Some((Delta::Incr(m), _)) => m.get(f).copied().unwrap_or(0),
                        _ => 0,
                    };
                    assert_eq!(part(&dx) + part(&dy), *v, "{key} {f}");
                }
            }
        }
    }
}
