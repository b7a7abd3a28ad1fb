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
use schema::keys::BucketKeys;
use schema::keys::span_fields;
use schema::report::{self, Report, code, unique};
use schema::{Event, Grain, Keyspace};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// A hash map with a fast, non-cryptographic hasher: the batch maps are keyed
/// by key names the streamer built itself, and SipHash was a tenth of its
/// work.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How one key is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// `HINCRBY` each field.
    Incr(BTreeMap<String, i64>),
    /// `PFADD` the visitor ids (sent as 16 hex digits, their stored form).
    Union(BTreeSet<u64>),
    /// Keep the lowest / greatest value of each field.
    Min(BTreeMap<String, i64>),
    Max(BTreeMap<String, i64>),
}

/// All deltas of a batch, keyed by Redis key (one entry per key and kind).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deltas {
    /// (key, kind code) -> (delta, ttl seconds)
    pub ops: FastMap<(String, char), (Delta, u64)>,
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
            match m.get_mut(field) {
                Some(v) => *v += by,
                None => {
                    m.insert(field.to_owned(), by);
                }
            }
        }
    }

    fn union(&mut self, key: String, ttl: u64, visitor: u64) {
        let entry = self
            .ops
            .entry((key, 'P'))
            .or_insert_with(|| (Delta::Union(BTreeSet::new()), ttl));
        if let Delta::Union(s) = &mut entry.0 {
            s.insert(visitor);
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

    /// Replace the contribution of a session's stored facts `old` (None: a
    /// session not seen before) to the reports by that of its merged facts
    /// `new`, and add its visitor to the visitors per source of its start
    /// bucket when that start is new (add-only: a later batch with an
    /// earlier event adds the visitor to the corrected bucket too, which
    /// `tally verify` allows for).
    pub fn replace_session(
        &mut self,
        old: Option<&SessionFacts>,
        new: &SessionFacts,
        buckets: &mut BucketCache,
        retention: Retention,
    ) {
        for grain in Grain::ALL {
            let ttl = retention.for_grain(grain);
            if let Some(o) = old {
                for (key, field, v) in o.contribution_in(buckets.get(grain, &o.site, o.start.ts_ms)) {
                    self.incr(key, ttl, &field, -v);
                }
            }
            let keys = buckets.get(grain, &new.site, new.start.ts_ms);
            for (key, field, v) in new.contribution_in(keys) {
                self.incr(key, ttl, &field, v);
            }
            if old.is_none_or(|o| o.start.ts_ms != new.start.ts_ms) {
                self.union(keys.unique(Report::Sources, &new.start.value), ttl, new.visitor_id);
            }
        }
    }
}

/// The keys of the buckets a batch touches, built once per (grain, bucket,
/// site): a batch's events and sessions share few buckets, and building key
/// names was the largest part of the streamer's own work.
pub struct BucketCache {
    ks: Keyspace,
    buckets: FastMap<(Grain, i64), FastMap<String, BucketKeys>>,
}

impl BucketCache {
    pub fn new(ks: Keyspace) -> Self {
        BucketCache {
            ks,
            buckets: FastMap::default(),
        }
    }

    /// The keys of `site`'s bucket of `grain` that holds `ts_ms`.
    pub fn get(&mut self, grain: Grain, site: &str, ts_ms: i64) -> &BucketKeys {
        let b = grain.truncate(ts_ms);
        let ks = self.ks;
        let sites = self.buckets.entry((grain, b)).or_default();
        if !sites.contains_key(site) {
            sites.insert(site.to_owned(), ks.bucket(grain, site, b));
        }
        &sites[site]
    }
}

/// Fold events into deltas for keyspace `ks`.
pub fn aggregate<'a>(events: impl IntoIterator<Item = &'a Event>, ks: Keyspace, retention: Retention) -> Deltas {
    let mut d = Deltas::default();
    let mut cache = BucketCache::new(ks);
    let mut spans: FastMap<&str, String> = FastMap::default();
    for e in events {
        let category = e.category();
        if category == Category::Engagement {
            // Engagement pings only carry time-on-page; they are not events
            // in the counts (Plausible's definition).
            continue;
        }
        let pageview = category == Category::Pageview;
        let visitor = e.visitor_id;
        let path = e.path();
        let pages_field = report::field(code::PAGEVIEWS, path, true);
        let device = device_tuple(e);
        let country = report::tuple(&[e.country.as_str()]);
        let conversion = (!pageview).then(|| {
            let currency = e.revenue.as_ref().map_or("", |r| r.currency.as_str());
            let micros = e.revenue.as_ref().and_then(|r| report::revenue_micros(&r.amount));
            let tuple = report::tuple(&[e.name.as_str(), currency]);
            (
                report::field(code::EVENTS, &tuple, true),
                report::field(code::REVENUE, &tuple, true),
                tuple,
                micros,
            )
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
            let ttl = retention.for_grain(grain);
            let keys = cache.get(grain, &e.site, e.ts_ms);

            let traffic = keys.report(Report::Traffic);
            let traffic_u = keys.unique(Report::Traffic, "");
            let returning_u = returning.map(|variant| keys.unique(Report::Traffic, variant));
            let pages = pageview.then(|| (keys.report(Report::Pages), keys.unique(Report::Pages, path)));
            let devices_u = keys.unique(Report::Devices, &device);
            let locations_u = keys.unique(Report::Locations, &country);
            let conversions = conversion.as_ref().map(|(.., tuple, _)| {
                (
                    keys.report(Report::Conversions),
                    keys.unique(Report::Conversions, tuple),
                )
            });
            let props_key = (!props.is_empty()).then(|| keys.report(Report::EventProps));

            if pageview {
                d.incr(traffic.clone(), ttl, code::PAGEVIEWS, 1);
            }
            d.incr(traffic, ttl, code::EVENTS, 1);
            d.union(traffic_u, ttl, visitor);
            if let Some(k) = returning_u {
                d.union(k, ttl, visitor);
            }
            if let Some((hash, hll)) = pages {
                d.incr(hash, ttl, &pages_field, 1);
                d.union(hll, ttl, visitor);
            }
            d.union(devices_u, ttl, visitor);
            d.union(locations_u, ttl, visitor);
            if let (Some((hash, hll)), Some((events_field, revenue_field, _, micros))) = (conversions, &conversion) {
                if let Some(m) = micros {
                    d.incr(hash.clone(), ttl, revenue_field, *m);
                }
                d.incr(hash, ttl, events_field, 1);
                d.union(hll, ttl, visitor);
            }
            if let Some(key) = props_key {
                for f in &props {
                    d.incr(key.clone(), ttl, f, 1);
                }
            }
        }
        let span = spans.entry(e.site.as_str()).or_insert_with(|| ks.span_key(&e.site));
        d.extreme(span.clone(), span_fields::FIRST_MS, e.ts_ms, false);
        d.extreme(span.clone(), span_fields::LAST_MS, e.ts_ms, true);
        sessions::add_event(&mut d.sessions, e);
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
                s.visitor_id,
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
        assert_eq!(d.ops[&(vk.clone(), 'P')].0, Delta::Union(BTreeSet::from([1, 2])));
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
