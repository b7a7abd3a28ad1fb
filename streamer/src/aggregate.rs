//! In-memory pre-aggregation of one batch into key-map deltas.
//!
//! A batch of a thousand events touches far fewer keys than it has events, so
//! the streamer folds it into per-key deltas first (counter increments,
//! HyperLogLog members, span min/max) and the merged facts of each session it
//! touches, and sends those to Redis in one script call. Every delta is an
//! order-independent merge (sum, set union, min, max; sessions see
//! [`crate::sessions`]), so batches may be applied in any order and by any
//! consumer.

use crate::sessions::{self, SessionFacts, device_tuple};
use schema::event::Category;
use schema::keys::span_fields;
use schema::report::{self, Report, code, unique};
use schema::{Event, Grain, Keyspace};
use std::collections::{BTreeMap, BTreeSet};

/// Retention of aggregate keys, in seconds (0 = keep).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub minute_secs: u64,
    pub hour_secs: u64,
    pub day_secs: u64,
    /// Lifetime of a session's merged facts after its last batch. A late
    /// event of a session whose facts expired starts a new visit.
    pub session_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minute_secs: 48 * 3600,
            hour_secs: 0,
            day_secs: 0,
            session_secs: 26 * 3600,
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
    /// The merged facts of each session in the batch, by (site, session).
    pub sessions: BTreeMap<(String, u64), SessionFacts>,
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
        self.ops.is_empty() && self.sessions.is_empty()
    }
}

/// Fold events into deltas for keyspace `ks`.
pub fn aggregate<'a>(events: impl IntoIterator<Item = &'a Event>, ks: Keyspace, retention: Retention) -> Deltas {
    let mut d = Deltas::default();
    for e in events {
        let category = e.category();
        if category == Category::Engagement {
            // Engagement pings only carry time-on-page; they are not events
            // in the counts (Plausible's definition).
            continue;
        }
        let pageview = category == Category::Pageview;
        let visitor = format!("{:016x}", e.visitor_id);
        let path = e.path();
        let device = device_tuple(e);
        let country = report::tuple(&[e.country.as_str()]);
        let conversion = (!pageview).then(|| {
            let currency = e.revenue.as_ref().map_or("", |r| r.currency.as_str());
            let micros = e.revenue.as_ref().and_then(|r| report::revenue_micros(&r.amount));
            (report::tuple(&[e.name.as_str(), currency]), micros)
        });
        let props: Vec<String> = e
            .props
            .iter()
            .map(|(k, v)| report::field(code::EVENTS, &report::tuple(&[e.name.as_str(), k, v]), true))
            .collect();
        let returning = match e.returning {
            Some(true) => Some(unique::RETURNING),
            Some(false) => Some(unique::NEW),
            None => None,
        };
        for grain in Grain::ALL {
            let b = grain.truncate(e.ts_ms);
            let ttl = retention.for_grain(grain);
            let hash = |r: Report| ks.report_key(r, grain, &e.site, b);
            let hll = |r: Report, suffix: &str| ks.unique_key(r, grain, &e.site, b, suffix);

            let traffic = hash(Report::Traffic);
            d.incr(traffic.clone(), ttl, code::EVENTS, 1);
            d.union(hll(Report::Traffic, ""), ttl, visitor.clone());
            if let Some(variant) = returning {
                d.union(hll(Report::Traffic, variant), ttl, visitor.clone());
            }
            if pageview {
                d.incr(traffic, ttl, code::PAGEVIEWS, 1);
                d.incr(hash(Report::Pages), ttl, &report::field(code::PAGEVIEWS, path, true), 1);
                d.union(hll(Report::Pages, path), ttl, visitor.clone());
            }
            d.union(hll(Report::Devices, &device), ttl, visitor.clone());
            d.union(hll(Report::Locations, &country), ttl, visitor.clone());
            if let Some((tuple, micros)) = &conversion {
                let conversions = hash(Report::Conversions);
                d.incr(conversions.clone(), ttl, &report::field(code::EVENTS, tuple, true), 1);
                if let Some(m) = micros {
                    d.incr(conversions, ttl, &report::field(code::REVENUE, tuple, true), *m);
                }
                d.union(hll(Report::Conversions, tuple), ttl, visitor.clone());
            }
            if !props.is_empty() {
                let key = hash(Report::EventProps);
                for f in &props {
                    d.incr(key.clone(), ttl, f, 1);
                }
            }
        }
        let span = ks.span_key(&e.site);
        d.extreme(span.clone(), span_fields::FIRST_MS, e.ts_ms, false);
        d.extreme(span, span_fields::LAST_MS, e.ts_ms, true);
        if let Some(f) = SessionFacts::of_event(e) {
            match d.sessions.get_mut(&(e.site.clone(), e.session_id)) {
                Some(s) => s.merge(&f),
                None => {
                    d.sessions.insert((e.site.clone(), e.session_id), f);
                }
            }
        }
    }
    d
}

/// Everything the key-map should hold for a complete set of events: the
/// batch deltas plus the final contribution of every session (what the
/// apply script's session merges converge to). `tally verify` and the tests
/// compare the key-map with this.
pub fn recompute<'a>(events: impl IntoIterator<Item = &'a Event> + Clone, ks: Keyspace) -> Deltas {
    // Verification compares values only; key lifetimes play no part.
    let mut d = aggregate(events.clone(), ks, Retention::default());
    let all = sessions::sessions(events);
    for ((key, field), v) in sessions::session_counters(all.values(), ks) {
        d.incr(key, 0, &field, v);
    }
    for s in all.values() {
        for grain in Grain::ALL {
            d.union(
                ks.unique_key(Report::Sources, grain, &s.site, s.start.ts_ms, &s.start.value),
                0,
                format!("{:016x}", s.visitor_id),
            );
        }
    }
    d.sessions.clear();
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
        let tk = ks.report_key(Report::Traffic, Grain::Minute, "a.io", m);
        assert_eq!(incr(&d, &tk), BTreeMap::from([("ev".into(), 4), ("pv".into(), 3)]));
        let pk = ks.report_key(Report::Pages, Grain::Minute, "a.io", m);
        assert_eq!(
            incr(&d, &pk),
            BTreeMap::from([("pv\u{1f}/".into(), 1), ("pv\u{1f}/x".into(), 2)])
        );
        let ck = ks.report_key(Report::Conversions, Grain::Minute, "a.io", m);
        assert_eq!(incr(&d, &ck), BTreeMap::from([("ev\u{1f}signup\u{1f}".into(), 1)]));
        let dk = ks.report_key(Report::Traffic, Grain::Day, "a.io", t0);
        assert_eq!(incr(&d, &dk)["pv"], 4);
        let vk = ks.unique_key(Report::Traffic, Grain::Minute, "a.io", m, "");
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
