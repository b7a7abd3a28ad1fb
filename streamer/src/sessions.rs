//! Session-level figures: visits, bounces, durations, entry and exit pages,
//! and the source, device and country of each visit.
//!
//! A session's figures depend on all of its events (a bounce is a session
//! with exactly one page view), and its events may be processed by different
//! consumers, in different batches, in any order. So the facts of a session
//! are kept as an order-independent merge — start = min, end = max, counts
//! summed, entry = the page view with the lowest (time, tie), exit = the one
//! with the highest, source = that of the earliest event — in a Redis string
//! per session. A batch that touches a session replaces the session's old
//! contribution to the reports by its new one, and writes the merged facts
//! only if the stored ones are still those it merged with (see `apply.rs`).
//! The final counters then depend only on the set of events.
//!
//! This module computes the facts of a batch, their stored form, and the
//! contribution of facts to the reports (used by the apply and, for final
//! facts, by `tally verify` and the tests to recompute the same counters
//! independently of the key-map).

use schema::event::Category;
use schema::keys::BucketKeys;
use schema::report::{self, Report, code};
use schema::{Event, Grain, Keyspace};
use std::collections::{BTreeMap, HashMap};

/// A point of an order-independent choice: the earliest (or latest) event
/// wins, and equal times are broken by a hash of the value so that every
/// order of arrival picks the same one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pick {
    pub ts_ms: i64,
    pub tie: u32,
    pub value: String,
}

impl Pick {
    fn new(ts_ms: i64, value: String) -> Pick {
        Pick {
            ts_ms,
            tie: fnv32(&value),
            value,
        }
    }
}

fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// What a set of events says about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    pub site: String,
    pub session_id: u64,
    pub visitor_id: u64,
    /// Earliest event; its value is the source tuple of the visit.
    pub start: Pick,
    pub end_ms: i64,
    pub pageviews: i64,
    /// Custom and e-commerce events (they make a visit not a bounce).
    pub interactive: i64,
    /// First page view; value = path.
    pub entry: Option<Pick>,
    /// Last page view; value = path.
    pub exit: Option<Pick>,
    /// Device tuple (browser, os, device type) and country: the same for
    /// every event of a visitor.
    pub device: String,
    pub country: String,
}

/// The source dimension tuple of an event (see [`Report::Sources`]).
pub fn source_tuple(e: &Event) -> String {
    let (src, utm) = e.source_and_utm();
    report::tuple(&[
        src.channel.as_str(),
        src.name.as_str(),
        src.referrer_host.as_str(),
        utm.source.as_str(),
        utm.medium.as_str(),
        utm.campaign.as_str(),
    ])
}

/// The device dimension tuple (see [`Report::Devices`]) of an event with
/// this browser, OS and device type.
pub fn device_tuple(browser: &str, os: &str, device: &str) -> String {
    report::tuple(&[browser, os, device])
}

impl SessionFacts {
    /// The facts of one event, if it belongs to a session (engagement pings
    /// and records without a session id do not).
    pub fn of_event(e: &Event) -> Option<SessionFacts> {
        let category = e.category();
        if e.session_id == 0 || category == Category::Engagement {
            return None;
        }
        let pageview = category == Category::Pageview;
        let page = pageview.then(|| Pick::new(e.ts_ms, e.path().to_owned()));
        Some(SessionFacts {
            site: e.site.clone(),
            session_id: e.session_id,
            visitor_id: e.visitor_id,
            start: Pick::new(e.ts_ms, source_tuple(e)),
            end_ms: e.ts_ms,
            pageviews: i64::from(pageview),
            interactive: i64::from(!pageview && e.interactive),
            entry: page.clone(),
            exit: page,
            device: device_tuple(&e.browser, &e.os, e.device.as_str()),
            country: report::tuple(&[e.country.as_str()]),
        })
    }

    /// Merge one more event of the same session into these facts. Equivalent
    /// to `merge(&SessionFacts::of_event(e))`, but the event's source tuple
    /// (a parse of its URL and referrer) is built only when the event could
    /// be the session's start: most events of a session come after it.
    pub fn merge_event(&mut self, e: &Event) {
        let category = e.category();
        if e.session_id == 0 || category == Category::Engagement {
            return;
        }
        if e.ts_ms <= self.start.ts_ms {
            let start = Pick::new(e.ts_ms, source_tuple(e));
            if start < self.start {
                self.start = start;
            }
        }
        self.end_ms = self.end_ms.max(e.ts_ms);
        let pageview = category == Category::Pageview;
        self.pageviews += i64::from(pageview);
        self.interactive += i64::from(!pageview && e.interactive);
        if pageview {
            let later_than_entry = self.entry.as_ref().is_some_and(|p| e.ts_ms > p.ts_ms);
            let earlier_than_exit = self.exit.as_ref().is_some_and(|p| e.ts_ms < p.ts_ms);
            if !(later_than_entry && earlier_than_exit) {
                let page = Pick::new(e.ts_ms, e.path().to_owned());
                if self.entry.as_ref().is_none_or(|s| &page < s) {
                    self.entry = Some(page.clone());
                }
                if self.exit.as_ref().is_none_or(|s| &page > s) {
                    self.exit = Some(page);
                }
            }
        }
    }

    /// Merge the facts of more events of the same session.
    pub fn merge(&mut self, other: &SessionFacts) {
        if other.start < self.start {
            self.start = other.start.clone();
        }
        self.end_ms = self.end_ms.max(other.end_ms);
        self.pageviews += other.pageviews;
        self.interactive += other.interactive;
        if let Some(o) = &other.entry
            && self.entry.as_ref().is_none_or(|s| o < s)
        {
            self.entry = Some(o.clone());
        }
        if let Some(o) = &other.exit
            && self.exit.as_ref().is_none_or(|s| o > s)
        {
            self.exit = Some(o.clone());
        }
    }

    pub fn is_bounce(&self) -> bool {
        self.pageviews == 1 && self.interactive == 0
    }

    pub fn duration_secs(&self) -> i64 {
        (self.end_ms - self.start.ts_ms).div_euclid(1000)
    }

    /// The counters these (final) facts add to the reports, at the bucket
    /// of the session's start in every grain: (key, field) -> value.
    pub fn contribution(&self, ks: Keyspace) -> Vec<(String, String, i64)> {
        Grain::ALL
            .into_iter()
            .flat_map(|grain| self.contribution_in(&ks.bucket(grain, &self.site, self.start.ts_ms)))
            .collect()
    }

    /// The part of [`SessionFacts::contribution`] in one grain, given the
    /// keys of the start's bucket in it.
    pub fn contribution_in(&self, keys: &BucketKeys) -> Vec<(String, String, i64)> {
        let mut out = Vec::with_capacity(8);
        let traffic = keys.report(Report::Traffic);
        out.push((traffic.clone(), code::VISITS.to_owned(), 1));
        if self.is_bounce() {
            out.push((traffic.clone(), code::BOUNCES.to_owned(), 1));
        }
        out.push((traffic, code::DURATION.to_owned(), self.duration_secs()));
        let pages = keys.report(Report::Pages);
        if let Some(entry) = &self.entry {
            out.push((pages.clone(), report::field(code::ENTRIES, &entry.value, true), 1));
        }
        if let Some(exit) = &self.exit {
            out.push((pages, report::field(code::EXITS, &exit.value, true), 1));
        }
        for (r, tuple) in [
            (Report::Sources, &self.start.value),
            (Report::Devices, &self.device),
            (Report::Locations, &self.country),
        ] {
            out.push((keys.report(r), report::field(code::VISITS, tuple, true), 1));
        }
        out
    }

    /// The stored form of the facts (the value of the session's key): each
    /// item as `<byte length>:<bytes>`, so any value round-trips. Site and
    /// session id are in the key and not repeated.
    pub fn encode_state(&self) -> String {
        // Numbers through itoa, not `fmt`: this runs for every session of
        // every batch.
        fn text(out: &mut String, v: &str) {
            out.push_str(itoa::Buffer::new().format(v.len()));
            out.push(':');
            out.push_str(v);
        }
        fn number(out: &mut String, v: impl itoa::Integer) {
            let mut buf = itoa::Buffer::new();
            text(out, buf.format(v));
        }
        let mut out = String::with_capacity(160);
        number(&mut out, self.visitor_id);
        number(&mut out, self.start.ts_ms);
        number(&mut out, self.start.tie);
        text(&mut out, &self.start.value);
        number(&mut out, self.end_ms);
        number(&mut out, self.pageviews);
        number(&mut out, self.interactive);
        for pick in [&self.entry, &self.exit] {
            match pick {
                Some(p) => {
                    number(&mut out, p.ts_ms);
                    number(&mut out, p.tie);
                    text(&mut out, &p.value);
                }
                None => {
                    for _ in 0..3 {
                        text(&mut out, "");
                    }
                }
            }
        }
        text(&mut out, &self.device);
        text(&mut out, &self.country);
        out
    }

    /// Parse [`SessionFacts::encode_state`]'s form; None if malformed.
    pub fn decode_state(site: &str, session_id: u64, state: &str) -> Option<SessionFacts> {
        let mut rest = state;
        let mut items: Vec<&str> = Vec::with_capacity(15);
        while !rest.is_empty() {
            let colon = rest.find(':')?;
            let len: usize = rest[..colon].parse().ok()?;
            let body = rest.get(colon + 1..colon + 1 + len)?;
            items.push(body);
            rest = &rest[colon + 1 + len..];
        }
        let [vi, st, st_tie, sr, en, pv, ia, et, et_tie, ep, xt, xt_tie, xp, dv, co] = items[..] else {
            return None;
        };
        let pick = |ts: &str, tie: &str, value: &str| -> Option<Option<Pick>> {
            if ts.is_empty() {
                return Some(None);
            }
            Some(Some(Pick {
                ts_ms: ts.parse().ok()?,
                tie: tie.parse().ok()?,
                value: value.to_owned(),
            }))
        };
        Some(SessionFacts {
            site: site.to_owned(),
            session_id,
            visitor_id: vi.parse().ok()?,
            start: Pick {
                ts_ms: st.parse().ok()?,
                tie: st_tie.parse().ok()?,
                value: sr.to_owned(),
            },
            end_ms: en.parse().ok()?,
            pageviews: pv.parse().ok()?,
            interactive: ia.parse().ok()?,
            entry: pick(et, et_tie, ep)?,
            exit: pick(xt, xt_tie, xp)?,
            device: dv.to_owned(),
            country: co.to_owned(),
        })
    }
}

/// The facts of every session in `events`, merged per (site, session).
pub fn sessions<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeMap<(String, u64), SessionFacts> {
    let mut out: BTreeMap<(String, u64), SessionFacts> = BTreeMap::new();
    for e in events {
        if let Some(f) = SessionFacts::of_event(e) {
            match out.get_mut(&(e.site.clone(), e.session_id)) {
                Some(s) => s.merge(&f),
                None => {
                    out.insert((e.site.clone(), e.session_id), f);
                }
            }
        }
    }
    out
}

/// The facts of a batch's sessions, keyed by (site, session id) borrowed
/// from the events: no copy of the site per event.
pub type BatchSessions<'a> = HashMap<(&'a str, u64), SessionFacts, foldhash::fast::RandomState>;

/// Fold one event into the facts of its session in `sessions` (the batch
/// path: [`SessionFacts::merge_event`]; [`sessions`] is the reference it
/// must agree with).
pub fn add_event<'a>(sessions: &mut BatchSessions<'a>, e: &'a Event) {
    match sessions.get_mut(&(e.site.as_str(), e.session_id)) {
        Some(f) => f.merge_event(e),
        None => {
            if let Some(f) = SessionFacts::of_event(e) {
                sessions.insert((e.site.as_str(), e.session_id), f);
            }
        }
    }
}

/// The session counters of complete sessions, summed per (key, field), zero
/// sums left out (the script deletes fields that return to zero).
pub fn session_counters<'a>(
    sessions: impl IntoIterator<Item = &'a SessionFacts>,
    ks: Keyspace,
) -> BTreeMap<(String, String), i64> {
    let mut out: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in sessions {
        for (key, field, v) in s.contribution(ks) {
            *out.entry((key, field)).or_insert(0) += v;
        }
    }
    out.retain(|_, v| *v != 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts_s: i64, name: &str, path: &str, session: u64) -> Event {
        let mut e = Event::pageview(1_795_000_000_000 + ts_s * 1000, "a.io", path, 7);
        e.name = name.into();
        e.session_id = session;
        e
    }

    #[test]
    fn merges_are_order_independent() {
        let events = vec![
            ev(0, "pageview", "/landing", 1),
            ev(40, "pageview", "/pricing", 1),
            ev(100, "signup", "/pricing", 1),
            ev(130, "pageview", "/thanks", 1),
            ev(5, "pageview", "/only", 2),
            ev(5, "engagement", "/only", 2),
        ];
        let forward = sessions(&events);
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(sessions(&reversed), forward);
        // Merging partial facts in another grouping gives the same facts.
        let (a, b) = events.split_at(3);
        let mut sa = sessions(a);
        for (k, f) in sessions(b) {
            match sa.get_mut(&k) {
                Some(s) => s.merge(&f),
                None => {
                    sa.insert(k, f);
                }
            }
        }
        assert_eq!(sa, forward);

        let s1 = &forward[&("a.io".to_owned(), 1)];
        assert_eq!(s1.pageviews, 3);
        assert_eq!(s1.interactive, 1);
        assert!(!s1.is_bounce());
        assert_eq!(s1.duration_secs(), 130);
        assert_eq!(s1.entry.as_ref().map(|p| p.value.as_str()), Some("/landing"));
        assert_eq!(s1.exit.as_ref().map(|p| p.value.as_str()), Some("/thanks"));
        let s2 = &forward[&("a.io".to_owned(), 2)];
        assert!(s2.is_bounce(), "engagement pings do not end a bounce");
        assert_eq!(s2.duration_secs(), 0);
    }

    #[test]
    fn non_interactive_events_do_not_end_a_bounce() {
        let mut autoplay = ev(20, "video_autoplay", "/watch", 4);
        autoplay.interactive = false;
        let s = &sessions([&ev(0, "pageview", "/watch", 4), &autoplay])[&("a.io".to_owned(), 4)];
        assert_eq!((s.pageviews, s.interactive), (1, 0));
        assert!(s.is_bounce());
        assert_eq!(s.duration_secs(), 20, "it still extends the visit");
        let play = ev(30, "video_play", "/watch", 4);
        let s = &sessions([&ev(0, "pageview", "/watch", 4), &autoplay, &play])[&("a.io".to_owned(), 4)];
        assert!(!s.is_bounce());
    }

    #[test]
    fn ties_are_broken_by_value_not_by_order() {
        let a = ev(10, "pageview", "/a", 3);
        let b = ev(10, "pageview", "/b", 3);
        let ab = sessions([&a, &b]);
        let ba = sessions([&b, &a]);
        assert_eq!(ab, ba);
    }

    #[test]
    fn contributions_sum_per_bucket() {
        let ks = Keyspace::default();
        let events = vec![
            ev(0, "pageview", "/", 1),
            ev(30, "pageview", "/x", 1),
            ev(10, "pageview", "/", 2),
        ];
        let s = sessions(&events);
        let c = session_counters(s.values(), ks);
        let t = ks.report_key(Report::Traffic, Grain::Day, "a.io", events[0].ts_ms);
        assert_eq!(c[&(t.clone(), "vi".to_owned())], 2);
        assert_eq!(c[&(t.clone(), "bo".to_owned())], 1);
        assert_eq!(c[&(t, "du".to_owned())], 30);
        let p = ks.report_key(Report::Pages, Grain::Day, "a.io", events[0].ts_ms);
        assert_eq!(c[&(p.clone(), "en\u{1f}/".to_owned())], 2);
        assert_eq!(c[&(p.clone(), "ex\u{1f}/x".to_owned())], 1);
        assert_eq!(c[&(p, "ex\u{1f}/".to_owned())], 1);
    }

    #[test]
    fn stored_state_round_trips() {
        let mut odd = ev(0, "pageview", "/a:b/12:x\u{1e}", 9);
        odd.referrer = "https://example.com/".into();
        odd.country = "DE".into();
        let with_pages = sessions([&odd, &ev(30, "signup", "/z", 9)]);
        let only_custom = sessions([&ev(5, "signup", "/", 10)]);
        for f in with_pages.values().chain(only_custom.values()) {
            let state = f.encode_state();
            assert_eq!(
                SessionFacts::decode_state(&f.site, f.session_id, &state).as_ref(),
                Some(f)
            );
        }
        for bad in ["", "3:abc", "2:1", "x:1", "99:1", "1:1".repeat(16).as_str()] {
            assert_eq!(SessionFacts::decode_state("a.io", 1, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn merging_an_event_equals_merging_its_facts() {
        // Ties on time at the start, the entry and the exit, different
        // sources at the same time, a custom event first, an engagement
        // ping and an event of no session: every order of arrival must give
        // what merging each event's own facts gives.
        let mut from_search = ev(0, "pageview", "/b", 5);
        from_search.referrer = "https://www.google.com/".into();
        let mut from_mail = ev(0, "pageview", "/a", 5);
        from_mail.url = "https://a.io/a?utm_source=newsletter&utm_medium=email".into();
        let events = [
            ev(-5, "signup", "/", 5),
            from_search,
            from_mail,
            ev(20, "pageview", "/c", 5),
            ev(20, "pageview", "/d", 5),
            ev(10, "pageview", "/e", 5),
            ev(30, "engagement", "/d", 5),
            ev(40, "pageview", "/f", 0),
        ];
        let expected = sessions(&events);
        let mut order: Vec<usize> = (0..events.len()).collect();
        for round in 0..200u64 {
            // A deterministic shuffle per round.
            let mut x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut batch = BatchSessions::default();
            for &i in &order {
                add_event(&mut batch, &events[i]);
            }
            let merged: BTreeMap<(String, u64), SessionFacts> = batch
                .into_iter()
                .map(|((site, id), facts)| ((site.to_owned(), id), facts))
                .collect();
            assert_eq!(merged, expected, "order {order:?}");
        }
    }

    #[test]
    fn events_without_a_session_are_not_visits() {
        let e = ev(0, "pageview", "/", 0);
        assert!(sessions([&e]).is_empty());
    }
}
