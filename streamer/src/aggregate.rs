//! In-memory pre-aggregation of one batch into key-map deltas.
//!
//! A batch of a thousand events touches far fewer keys than it has events, so
//! the streamer folds it into per-key deltas first (counter increments,
//! HyperLogLog members, span min/max) and the merged facts of each session it
//! touches, and sends those to Redis in one script call. Every delta is an
//! order-independent merge (sum, set union, min, max; sessions see
//! [`crate::sessions`]), so batches may be applied in any order and by any
//! consumer.

use crate::sessions::{self, SessionFacts};
use schema::event::Category;
use schema::keys::BucketKeys;
use schema::keys::span_fields;
use schema::report::{self, Report, code, unique};
use schema::{Event, Grain, Keyspace};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
        self.union_all(key, ttl, [visitor]);
    }

    fn union_all(&mut self, key: String, ttl: u64, visitors: impl IntoIterator<Item = u64>) {
        let entry = self
            .ops
            .entry((key, 'P'))
            .or_insert_with(|| (Delta::Union(BTreeSet::new()), ttl));
        if let Delta::Union(s) = &mut entry.0 {
            s.extend(visitors);
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

    /// Replace the contribution of each session's stored facts `old` (None:
    /// a session not seen before) to the reports by that of its merged facts
    /// `new`, and add its visitor to the visitors per source of its start
    /// bucket when that start is new (add-only: a later batch with an
    /// earlier event adds the visitor to the corrected bucket too, which
    /// `tally verify` allows for). The sums are kept per bucket with text
    /// borrowed from the facts, and key and field names are built once per
    /// bucket and value: the same counters as
    /// [`SessionFacts::contribution_in`] of `new` minus that of `old`.
    pub fn replace_sessions<'a>(
        &mut self,
        sessions: impl IntoIterator<Item = (Option<&'a SessionFacts>, &'a SessionFacts)>,
        buckets: &mut BucketCache,
        retention: Retention,
    ) {
        let mut sums: FastMap<(Grain, i64, &'a str), SessionSums<'a>> = FastMap::default();
        for (old, new) in sessions {
            for grain in Grain::ALL {
                let bucket = grain.truncate(new.start.ts_ms);
                let at = sums.entry((grain, bucket, new.site.as_str())).or_default();
                match old {
                    Some(o) if grain.truncate(o.start.ts_ms) == bucket => at.change(o, new),
                    _ => {
                        at.add(new, 1);
                        if let Some(o) = old {
                            let from = (grain, grain.truncate(o.start.ts_ms), o.site.as_str());
                            sums.entry(from).or_default().add(o, -1);
                        }
                    }
                }
                if old.is_none_or(|o| o.start.ts_ms != new.start.ts_ms) {
                    let at = sums.entry((grain, bucket, new.site.as_str())).or_default();
                    at.new_starts.entry(&new.start.value).or_default().push(new.visitor_id);
                }
            }
        }
        for ((grain, bucket, site), s) in sums {
            s.emit(buckets.get(grain, site, bucket), retention.for_grain(grain), self);
        }
    }
}

/// What a batch's sessions change in one site's bucket of one grain, keyed
/// by text borrowed from their facts; see [`Deltas::replace_sessions`].
#[derive(Default)]
struct SessionSums<'a> {
    visits: i64,
    bounces: i64,
    duration: i64,
    /// entry page -> visits
    entries: FastMap<&'a str, i64>,
    /// exit page -> visits
    exits: FastMap<&'a str, i64>,
    /// source, device and country tuples -> visits
    sources: FastMap<&'a str, i64>,
    devices: FastMap<&'a str, i64>,
    locations: FastMap<&'a str, i64>,
    /// source tuple -> visitors of the visits that start here anew
    new_starts: FastMap<&'a str, Vec<u64>>,
}

impl<'a> SessionSums<'a> {
    /// Add (`sign` 1) or take away (-1) the whole contribution of `f`.
    fn add(&mut self, f: &'a SessionFacts, sign: i64) {
        self.visits += sign;
        self.bounces += sign * i64::from(f.is_bounce());
        self.duration += sign * f.duration_secs();
        for (map, pick) in [(&mut self.entries, &f.entry), (&mut self.exits, &f.exit)] {
            if let Some(p) = pick {
                *map.entry(p.value.as_str()).or_default() += sign;
            }
        }
        *self.sources.entry(f.start.value.as_str()).or_default() += sign;
        *self.devices.entry(f.device.as_str()).or_default() += sign;
        *self.locations.entry(f.country.as_str()).or_default() += sign;
    }

    /// Replace `old`'s contribution by `new`'s, both starting in this
    /// bucket: only what differs (a visit extended by a batch usually
    /// changes its duration and exit page, nothing else).
    fn change(&mut self, old: &'a SessionFacts, new: &'a SessionFacts) {
        self.bounces += i64::from(new.is_bounce()) - i64::from(old.is_bounce());
        self.duration += new.duration_secs() - old.duration_secs();
        let page = |p: &'a Option<sessions::Pick>| p.as_ref().map(|p| p.value.as_str());
        for (map, was, is) in [
            (&mut self.entries, page(&old.entry), page(&new.entry)),
            (&mut self.exits, page(&old.exit), page(&new.exit)),
        ] {
            if was != is {
                if let Some(v) = was {
                    *map.entry(v).or_default() -= 1;
                }
                if let Some(v) = is {
                    *map.entry(v).or_default() += 1;
                }
            }
        }
        for (map, was, is) in [
            (&mut self.sources, &old.start.value, &new.start.value),
            (&mut self.devices, &old.device, &new.device),
            (&mut self.locations, &old.country, &new.country),
        ] {
            if was != is {
                *map.entry(was.as_str()).or_default() -= 1;
                *map.entry(is.as_str()).or_default() += 1;
            }
        }
    }

    /// Add these sums to `d` under the bucket's keys `keys`, zero sums left
    /// out.
    fn emit(self, keys: &BucketKeys, ttl: u64, d: &mut Deltas) {
        let traffic = [
            (code::VISITS, self.visits),
            (code::BOUNCES, self.bounces),
            (code::DURATION, self.duration),
        ];
        if traffic.iter().any(|(_, v)| *v != 0) {
            let key = keys.report(Report::Traffic);
            for (field, v) in traffic.into_iter().filter(|(_, v)| *v != 0) {
                d.incr(key.clone(), ttl, field, v);
            }
        }
        for (report, counters) in [
            (
                Report::Pages,
                vec![(code::ENTRIES, self.entries), (code::EXITS, self.exits)],
            ),
            (Report::Sources, vec![(code::VISITS, self.sources)]),
            (Report::Devices, vec![(code::VISITS, self.devices)]),
            (Report::Locations, vec![(code::VISITS, self.locations)]),
        ] {
            let mut key = None;
            for (code, values) in counters {
                for (value, v) in values.into_iter().filter(|(_, v)| *v != 0) {
                    let key = key.get_or_insert_with(|| keys.report(report));
                    d.incr(key.clone(), ttl, &report::field(code, value, true), v);
                }
            }
        }
        for (source, visitors) in self.new_starts {
            d.union_all(keys.unique(Report::Sources, source), ttl, visitors);
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

/// A set of visitor ids for the batch's sketches.
type VisitorSet = HashSet<u64, foldhash::fast::RandomState>;

/// What a batch adds to one site's bucket of one grain, keyed by text
/// borrowed from the events: key and field names are built once per bucket
/// and dimension when the batch is turned into [`Deltas`], not once per
/// event (building and hashing them per event was most of `aggregate`).
#[derive(Default)]
struct BucketSums<'a> {
    pageviews: i64,
    events: i64,
    visitors: VisitorSet,
    new_visitors: VisitorSet,
    returning_visitors: VisitorSet,
    /// path -> page views, visitors
    pages: FastMap<&'a str, (i64, VisitorSet)>,
    /// (browser, os, device type) -> visitors
    devices: FastMap<(&'a str, &'a str, &'a str), VisitorSet>,
    /// country -> visitors
    locations: FastMap<&'a str, VisitorSet>,
    /// (event name, currency) -> events, revenue in millionths (None: no
    /// event carried an amount), visitors
    conversions: FastMap<(&'a str, &'a str), (i64, Option<i64>, VisitorSet)>,
    /// (event name, property, value) -> events
    props: FastMap<(&'a str, &'a str, &'a str), i64>,
}

impl<'a> BucketSums<'a> {
    fn add(&mut self, e: &'a Event, path: &'a str, pageview: bool, micros: Option<i64>) {
        let visitor = e.visitor_id;
        self.events += 1;
        self.visitors.insert(visitor);
        match e.returning {
            Some(true) => self.returning_visitors.insert(visitor),
            Some(false) => self.new_visitors.insert(visitor),
            None => false,
        };
        self.devices
            .entry((e.browser.as_str(), e.os.as_str(), e.device.as_str()))
            .or_default()
            .insert(visitor);
        self.locations.entry(e.country.as_str()).or_default().insert(visitor);
        if pageview {
            self.pageviews += 1;
            let page = self.pages.entry(path).or_default();
            page.0 += 1;
            page.1.insert(visitor);
        } else {
            let currency = e.revenue.as_ref().map_or("", |r| r.currency.as_str());
            let c = self.conversions.entry((e.name.as_str(), currency)).or_default();
            c.0 += 1;
            if let Some(m) = micros {
                c.1 = Some(c.1.unwrap_or(0) + m);
            }
            c.2.insert(visitor);
        }
        for (k, v) in &e.props {
            *self.props.entry((e.name.as_str(), k.as_str(), v.as_str())).or_default() += 1;
        }
    }

    /// Add these sums to `d` under the bucket's keys `keys`.
    fn emit(self, keys: &BucketKeys, ttl: u64, d: &mut Deltas) {
        let traffic = keys.report(Report::Traffic);
        if self.pageviews != 0 {
            d.incr(traffic.clone(), ttl, code::PAGEVIEWS, self.pageviews);
        }
        d.incr(traffic, ttl, code::EVENTS, self.events);
        d.union_all(keys.unique(Report::Traffic, ""), ttl, self.visitors);
        for (variant, set) in [
            (unique::NEW, self.new_visitors),
            (unique::RETURNING, self.returning_visitors),
        ] {
            if !set.is_empty() {
                d.union_all(keys.unique(Report::Traffic, variant), ttl, set);
            }
        }
        if !self.pages.is_empty() {
            let hash = keys.report(Report::Pages);
            for (path, (views, visitors)) in self.pages {
                d.incr(hash.clone(), ttl, &report::field(code::PAGEVIEWS, path, true), views);
                d.union_all(keys.unique(Report::Pages, path), ttl, visitors);
            }
        }
        for ((browser, os, device), visitors) in self.devices {
            let tuple = sessions::device_tuple(browser, os, device);
            d.union_all(keys.unique(Report::Devices, &tuple), ttl, visitors);
        }
        for (country, visitors) in self.locations {
            d.union_all(
                keys.unique(Report::Locations, &report::tuple(&[country])),
                ttl,
                visitors,
            );
        }
        if !self.conversions.is_empty() {
            let hash = keys.report(Report::Conversions);
            for ((name, currency), (events, revenue, visitors)) in self.conversions {
                let tuple = report::tuple(&[name, currency]);
                if let Some(m) = revenue {
                    d.incr(hash.clone(), ttl, &report::field(code::REVENUE, &tuple, true), m);
                }
                d.incr(hash.clone(), ttl, &report::field(code::EVENTS, &tuple, true), events);
                d.union_all(keys.unique(Report::Conversions, &tuple), ttl, visitors);
            }
        }
        if !self.props.is_empty() {
            let hash = keys.report(Report::EventProps);
            for ((name, k, v), events) in self.props {
                let field = report::field(code::EVENTS, &report::tuple(&[name, k, v]), true);
                d.incr(hash.clone(), ttl, &field, events);
            }
        }
    }
}

/// Fold events into deltas for keyspace `ks`.
pub fn aggregate<'a>(events: impl IntoIterator<Item = &'a Event>, ks: Keyspace, retention: Retention) -> Deltas {
    let mut d = Deltas::default();
    // (grain, bucket start, site) -> sums; the last bucket of each grain is
    // remembered, since neighbouring events of a stream mostly share it.
    let mut buckets: Vec<((Grain, i64, &'a str), BucketSums<'a>)> = Vec::new();
    let mut index: FastMap<(Grain, i64, &'a str), usize> = FastMap::default();
    let mut last: [Option<(i64, &'a str, usize)>; 3] = [None; 3];
    let mut spans: FastMap<&'a str, (i64, i64)> = FastMap::default();
    // The batch's sessions, keyed without a copy of the site per event.
    let mut sessions = sessions::BatchSessions::default();
    for e in events {
        let category = e.category();
        if category == Category::Engagement {
            // Engagement pings only carry time-on-page; they are not events
            // in the counts (Plausible's definition).
            continue;
        }
        let pageview = category == Category::Pageview;
        let micros = e.revenue.as_ref().and_then(|r| report::revenue_micros(&r.amount));
        let path = e.path();
        for (g, grain) in Grain::ALL.into_iter().enumerate() {
            let b = grain.truncate(e.ts_ms);
            let at = match last[g] {
                Some((lb, ls, i)) if lb == b && ls == e.site => i,
                _ => {
                    let i = *index.entry((grain, b, e.site.as_str())).or_insert_with(|| {
                        buckets.push(((grain, b, e.site.as_str()), BucketSums::default()));
                        buckets.len() - 1
                    });
                    last[g] = Some((b, e.site.as_str(), i));
                    i
                }
            };
            buckets[at].1.add(e, path, pageview, micros);
        }
        let span = spans.entry(e.site.as_str()).or_insert((e.ts_ms, e.ts_ms));
        span.0 = span.0.min(e.ts_ms);
        span.1 = span.1.max(e.ts_ms);
        sessions::add_event(&mut sessions, e);
    }
    d.sessions = sessions
        .into_iter()
        .map(|((site, id), facts)| ((site.to_owned(), id), facts))
        .collect();
    let mut cache = BucketCache::new(ks);
    for ((grain, b, site), sums) in buckets {
        sums.emit(cache.get(grain, site, b), retention.for_grain(grain), &mut d);
    }
    for (site, (first, last)) in spans {
        let key = ks.span_key(site);
        d.extreme(key.clone(), span_fields::FIRST_MS, first, false);
        d.extreme(key, span_fields::LAST_MS, last, true);
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
    fn replacing_sessions_adds_the_new_contributions_minus_the_old() {
        // A visit extended by later page views, a custom event (no longer a
        // bounce), a page view 30 s before its start from a search engine
        // (new entry and source, and a new start minute) and a ping that
        // changes nothing; a second visit seen for the first time.
        let ks = Keyspace::default();
        let t0 = 1_795_000_020_000; // the start of a minute
        let visit = |ts_s: i64, name: &str, path: &str| {
            let mut e = ev(t0 + ts_s * 1000, "a.io", name, path, 9);
            e.session_id = 1;
            e
        };
        let mut from_search = visit(-30, "pageview", "/landing");
        from_search.referrer = "https://www.google.com/".into();
        let events = [
            visit(0, "pageview", "/a"),
            visit(50, "pageview", "/b"),
            visit(70, "signup", "/b"),
            from_search,
            visit(90, "engagement", "/b"),
            visit(90, "pageview", "/b"),
        ];
        let mut other = ev(t0 + 5_000, "a.io", "pageview", "/c", 4);
        other.session_id = 2;
        let facts = |events: &[Event]| sessions::sessions(events).into_values().next().expect("a visit");
        let second = facts(std::slice::from_ref(&other));
        for split in 1..events.len() {
            for more in split + 1..=events.len() {
                let (old, new) = (facts(&events[..split]), facts(&events[..more]));
                let mut d = Deltas::default();
                d.replace_sessions(
                    [(Some(&old), &new), (None, &second)],
                    &mut BucketCache::new(ks),
                    Retention::default(),
                );
                let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
                for (sign, f) in [(1, &new), (-1, &old), (1, &second)] {
                    for (key, field, v) in f.contribution(ks) {
                        *expected.entry((key, field)).or_default() += sign * v;
                    }
                }
                expected.retain(|_, v| *v != 0);
                // A visitor joins the sources sketch of a start that is new.
                let mut started: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
                let new_start = (old.start.ts_ms != new.start.ts_ms).then_some(&new);
                for f in [Some(&second), new_start].into_iter().flatten() {
                    for grain in Grain::ALL {
                        let key = ks.unique_key(Report::Sources, grain, "a.io", f.start.ts_ms, &f.start.value);
                        started.entry(key).or_default().insert(f.visitor_id);
                    }
                }
                let mut got: BTreeMap<(String, String), i64> = BTreeMap::new();
                let mut sketches: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
                for ((key, kind), (delta, _)) in &d.ops {
                    match (kind, delta) {
                        ('H', Delta::Incr(m)) => {
                            for (field, v) in m {
                                assert_ne!(*v, 0, "{key} {field}");
                                got.insert((key.clone(), field.clone()), *v);
                            }
                        }
                        ('P', Delta::Union(visitors)) => {
                            sketches.insert(key.clone(), visitors.clone());
                        }
                        other => panic!("unexpected op {other:?} on {key}"),
                    }
                }
                assert_eq!(got, expected, "events ..{split} then ..{more}");
                assert_eq!(sketches, started, "events ..{split} then ..{more}");
            }
        }
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
