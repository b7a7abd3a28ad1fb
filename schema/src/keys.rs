//! The Redis key layout.
//!
//! Sites are spread over [`SHARDS`] shard streams by a stable hash of the site
//! domain. Every key that belongs to a site (its stream, its aggregates, its
//! span) carries the shard's hash tag `{sNN}`, so on Redis Cluster all of them
//! live in one slot: the streamer's apply script, multi-key `PFCOUNT` and
//! pipelines over one site never cross slots.
//!
//! ```text
//! tally:{s07}:events                                  stream of raw events (shard 7)
//! tally:{s07}:visits:997200                          hash    ingest's open visits whose last event is in a
//!                                                     30-minute window: "<visitor>:<site>" -> "<id>:<last ms>"
//! tally:v1:{s07}:traffic:m:example.com:202611260658   hash    counters of a report bucket (see report.rs)
//! tally:v1:{s07}:traffic.u:m:example.com:202611260658 HLL     visitor ids of the bucket
//! tally:v1:{s07}:pages.u:h:example.com:2026112606:/x  HLL     visitor ids of one dimension tuple
//! tally:v1:{s07}:ses:example.com:<session>            string  merged facts of one session
//! tally:v1:{s07}:span:example.com                     hash    first_ms, last_ms
//! tally:v1:{s07}:applied                              hash    events, entries, batches (streamer progress)
//! tally:sites                                         hash    site -> registration JSON
//! tally:salt:20261126                                 string  daily visitor-id salt
//! tally:keyspace                                      string  active aggregate version
//! tally:keyspace:seq                                  string  last version handed out
//! tally:rules:v2                                      string  processing rules of version 2 (JSON)
//! tally:replay                                        string  lock of a running replay
//! ```
//!
//! Aggregate keys carry a keyspace version (`v1`) so that a replay can build a
//! new version beside the live one and switch atomically (`tally:keyspace`).
//! The raw streams are not versioned: they are the log every version is
//! computed from.

use crate::grain::Grain;
use crate::report::Report;
use std::fmt;

/// The keys of one site's bucket in one grain and keyspace version; see
/// [`Keyspace::bucket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketKeys {
    /// `tally:v1:{s07}:`
    base: String,
    /// `:m:example.com:202611260658`
    tail: String,
}

impl BucketKeys {
    /// The counter hash of `report` in this bucket.
    pub fn report(&self, report: Report) -> String {
        let code = report.code();
        let mut k = String::with_capacity(self.base.len() + code.len() + self.tail.len());
        k.push_str(&self.base);
        k.push_str(code);
        k.push_str(&self.tail);
        k
    }

    /// The HyperLogLog of `report` in this bucket for a dimension tuple (or
    /// variant); `suffix` empty for none.
    pub fn unique(&self, report: Report, suffix: &str) -> String {
        let code = report.code();
        let mut k = String::with_capacity(self.base.len() + code.len() + self.tail.len() + suffix.len() + 3);
        k.push_str(&self.base);
        k.push_str(code);
        k.push_str(".u");
        k.push_str(&self.tail);
        if !suffix.is_empty() {
            k.push(':');
            k.push_str(suffix);
        }
        k
    }
}

/// Number of shard streams. Fixed for a deployment: changing it would move
/// sites to other streams and other slots.
pub const SHARDS: u16 = 16;

/// Prefix of every key Tally owns.
pub const PREFIX: &str = "tally";

/// Keyspace version used when `tally:keyspace` is not set.
pub const DEFAULT_VERSION: u32 = 1;

/// One shard stream and the hash tag shared by all keys routed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(pub u16);

impl Shard {
    /// The shard a site belongs to: FNV-1a (32 bit) of the domain, modulo
    /// [`SHARDS`]. Stable across versions and platforms by construction.
    pub fn of_site(site: &str) -> Shard {
        let mut h: u32 = 0x811c_9dc5;
        for b in site.as_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        Shard((h % u32::from(SHARDS)) as u16)
    }

    /// All shards, in order.
    pub fn all() -> impl Iterator<Item = Shard> {
        (0..SHARDS).map(Shard)
    }

    /// The hash tag, e.g. `{s07}`.
    pub fn tag(self) -> String {
        let mut t = String::with_capacity(8);
        self.push_tag(&mut t);
        t
    }

    /// Append the hash tag to `out`: key names are built for every session
    /// of every batch, and `format!` (here and for URLs) was a twentieth of
    /// the streamer's instructions.
    fn push_tag(self, out: &mut String) {
        out.push_str("{s");
        if self.0 < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(self.0));
        out.push('}');
    }

    /// The shard's event stream.
    pub fn stream_key(self) -> String {
        format!("{PREFIX}:{}:events", self.tag())
    }

    /// Ingest's open visits (sessions) on the shard's sites whose last event
    /// lies in `window` (event time in ms divided by the session timeout).
    pub fn visits_key(self, window: i64) -> String {
        format!("{PREFIX}:{}:visits:{window}", self.tag())
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{:02}", self.0)
    }
}

/// Field names inside the span hash.
pub mod span_fields {
    pub const FIRST_MS: &str = "first_ms";
    pub const LAST_MS: &str = "last_ms";
}

/// One version of the aggregate keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyspace {
    pub version: u32,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace {
            version: DEFAULT_VERSION,
        }
    }
}

impl Keyspace {
    pub fn new(version: u32) -> Self {
        Keyspace { version }
    }

    fn base(self, shard: Shard) -> String {
        let mut k = String::with_capacity(PREFIX.len() + 64);
        k.push_str(PREFIX);
        k.push_str(":v");
        k.push_str(itoa::Buffer::new().format(self.version));
        k.push(':');
        shard.push_tag(&mut k);
        k
    }

    /// The counter hash of one report bucket of a site.
    pub fn report_key(self, report: Report, grain: Grain, site: &str, bucket_ms: i64) -> String {
        self.bucket(grain, site, bucket_ms).report(report)
    }

    /// The HyperLogLog of one report bucket and dimension tuple (or, for a
    /// report without dimensions, variant); `suffix` empty for none.
    pub fn unique_key(self, report: Report, grain: Grain, site: &str, bucket_ms: i64, suffix: &str) -> String {
        self.bucket(grain, site, bucket_ms).unique(report, suffix)
    }

    /// The parts of every key of one site's bucket, for callers that build
    /// many keys of a bucket (the streamer builds about twenty per event).
    pub fn bucket(self, grain: Grain, site: &str, bucket_ms: i64) -> BucketKeys {
        BucketKeys {
            base: format!("{}:", self.base(Shard::of_site(site))),
            tail: format!(":{}:{}:{}", grain.code(), site, grain.label(bucket_ms)),
        }
    }

    /// The merged facts of one session (start, end, page views, entry and
    /// exit page, source, device, country).
    pub fn session_key(self, site: &str, session_id: u64) -> String {
        let mut k = self.base(Shard::of_site(site));
        k.reserve(site.len() + 26);
        k.push_str(":ses:");
        k.push_str(site);
        k.push(':');
        k.push_str(itoa::Buffer::new().format(session_id as i64));
        k
    }

    /// Hash with the first and last event time seen for a site; bounds the
    /// buckets a query without a time filter has to read.
    pub fn span_key(self, site: &str) -> String {
        format!("{}:span:{}", self.base(Shard::of_site(site)), site)
    }

    /// Streamer progress counters of one shard.
    pub fn applied_key(self, shard: Shard) -> String {
        format!("{}:applied", self.base(shard))
    }

    /// Consumer group that builds this keyspace version.
    pub fn group(self) -> String {
        format!("{PREFIX}:agg:v{}", self.version)
    }

    /// The version a consumer group name belongs to (`tally:agg:v3` -> 3).
    pub fn of_group(name: &str) -> Option<Keyspace> {
        name.strip_prefix(PREFIX)?
            .strip_prefix(":agg:v")?
            .parse()
            .ok()
            .map(Keyspace::new)
    }

    /// `SCAN` pattern of every aggregate key of this version.
    pub fn pattern(self) -> String {
        format!("{PREFIX}:v{}:*", self.version)
    }

    /// The name `key` (a key of this version) has in version `to`; `None`
    /// when `key` is not of this version.
    pub fn rename(self, key: &str, to: Keyspace) -> Option<String> {
        let rest = key.strip_prefix(&format!("{PREFIX}:v{}:", self.version))?;
        Some(format!("{PREFIX}:v{}:{rest}", to.version))
    }

    /// The processing rules this version is built with.
    pub fn rules_key(self) -> String {
        format!("{PREFIX}:rules:v{}", self.version)
    }

    /// The version a rules key belongs to (`tally:rules:v3` -> 3).
    pub fn of_rules_key(key: &str) -> Option<Keyspace> {
        key.strip_prefix(PREFIX)?
            .strip_prefix(":rules:v")?
            .parse()
            .ok()
            .map(Keyspace::new)
    }
}

/// `SCAN` pattern of every version's rules key.
pub fn rules_pattern() -> String {
    format!("{PREFIX}:rules:v*")
}

/// A stream entry id `<ms>-<seq>` as numbers (they order as the stream does).
pub fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Bucket start (ms) of a report key
/// `tally:vN:{sNN}:<report>[.u]:<grain>:<site>:<label>[:<tuple>]`; `None`
/// for keys that are not buckets (spans, sessions, progress).
pub fn bucket_of_key(key: &str) -> Option<i64> {
    let parts: Vec<&str> = key.splitn(7, ':').collect();
    if parts.len() != 7 {
        return None;
    }
    let label = parts[6].split(':').next()?;
    parts[4].parse::<Grain>().ok()?.parse_label(label)
}

/// Whether `key` is a site's span hash (`tally:vN:{sNN}:span:<site>`).
pub fn is_span_key(key: &str) -> bool {
    key.split(':').nth(3) == Some("span")
}

/// The field of a visitor's open visit in a [`Shard::visits_key`] hash.
pub fn visit_field(site: &str, visitor_id: u64) -> String {
    // Written by hand: ingest builds one per event, and `format!` with a
    // padded hex argument cost about 950 instructions of it.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut field = String::with_capacity(17 + site.len());
    for shift in (0..16).rev() {
        field.push(char::from(HEX[((visitor_id >> (shift * 4)) & 0xf) as usize]));
    }
    field.push(':');
    field.push_str(site);
    field
}

/// The site registry.
pub fn sites_key() -> String {
    format!("{PREFIX}:sites")
}

/// The daily visitor-id salt for a UTC day label (`20261126`).
pub fn salt_key(day_label: &str) -> String {
    format!("{PREFIX}:salt:{day_label}")
}

/// Pointer to the active keyspace version.
pub fn keyspace_key() -> String {
    format!("{PREFIX}:keyspace")
}

/// Counter handing out new keyspace versions (never reused).
pub fn keyspace_seq_key() -> String {
    format!("{PREFIX}:keyspace:seq")
}

/// Lock held by a running `tally replay` (value: the version it builds).
pub fn replay_lock_key() -> String {
    format!("{PREFIX}:replay")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visit_fields_are_the_padded_hex_visitor_and_the_site() {
        for v in [0, 0xab, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(visit_field("a.io", v), format!("{v:016x}:a.io"));
        }
    }

    #[test]
    fn all_site_keys_share_the_stream_tag() {
        let ks = Keyspace::default();
        let site = "example.com";
        let tag = Shard::of_site(site).tag();
        for k in [
            Shard::of_site(site).stream_key(),
            ks.report_key(Report::Traffic, Grain::Minute, site, 0),
            ks.unique_key(Report::Pages, Grain::Day, site, 0, "/a:b"),
            ks.session_key(site, 42),
            ks.span_key(site),
            Shard::of_site(site).visits_key(997_200),
        ] {
            assert!(k.contains(&tag), "{k} lacks {tag}");
            assert_eq!(k.matches('{').count(), 1, "{k}: exactly one hash tag");
        }
    }

    #[test]
    fn tags_and_session_keys_spell_the_layout() {
        assert_eq!(Shard(0).tag(), "{s00}");
        assert_eq!(Shard(7).tag(), "{s07}");
        assert_eq!(Shard(15).tag(), "{s15}");
        assert_eq!(Shard(123).tag(), "{s123}");
        let site = "shop.example";
        let tag = Shard::of_site(site).tag();
        assert_eq!(
            Keyspace::new(12).session_key(site, u64::MAX),
            format!("tally:v12:{tag}:ses:shop.example:-1")
        );
        assert_eq!(
            Keyspace::new(1).session_key(site, 42),
            format!("tally:v1:{tag}:ses:shop.example:42")
        );
        assert_eq!(Keyspace::new(2).applied_key(Shard(3)), "tally:v2:{s03}:applied");
    }

    #[test]
    fn bucket_keys_spell_the_layout() {
        let ks = Keyspace::new(3);
        let tag = Shard::of_site("a.io").tag();
        let hour = 3_600_000 * 25 + 59_000;
        assert_eq!(
            ks.report_key(Report::Traffic, Grain::Hour, "a.io", hour),
            format!("tally:v3:{tag}:traffic:h:a.io:1970010201")
        );
        assert_eq!(
            ks.unique_key(Report::Traffic, Grain::Minute, "a.io", hour, ""),
            format!("tally:v3:{tag}:traffic.u:m:a.io:197001020100")
        );
        assert_eq!(
            ks.unique_key(Report::Pages, Grain::Day, "a.io", hour, "/x:y"),
            format!("tally:v3:{tag}:pages.u:d:a.io:19700102:/x:y")
        );
        assert_eq!(
            ks.report_key(Report::EventProps, Grain::Day, "a.io", hour),
            format!("tally:v3:{tag}:props:d:a.io:19700102")
        );
    }

    #[test]
    fn buckets_and_versions_from_keys() {
        assert_eq!(
            bucket_of_key("tally:v1:{s01}:traffic:h:a.io:1970010101"),
            Some(3_600_000)
        );
        assert_eq!(bucket_of_key("tally:v1:{s01}:span:a.io"), None);
        assert!(is_span_key("tally:v1:{s01}:span:a.io"));
        assert!(!is_span_key("tally:v1:{s01}:ses:a.io:5"));
        assert_eq!(bucket_of_key("tally:v1:{s01}:pages:x:a.io:1970010101"), None);
        assert_eq!(
            bucket_of_key("tally:v1:{s01}:pages.u:h:a.io:1970010101:/a:b"),
            Some(3_600_000)
        );
        let (v1, v2) = (Keyspace::new(1), Keyspace::new(2));
        assert_eq!(
            v1.rename("tally:v1:{s01}:pages.u:h:a.io:1970010101:/a:b", v2)
                .as_deref(),
            Some("tally:v2:{s01}:pages.u:h:a.io:1970010101:/a:b")
        );
        assert_eq!(v2.rename("tally:v1:{s01}:span:a.io", v1), None);
        assert_eq!(Keyspace::of_group(&v2.group()), Some(v2));
        assert_eq!(Keyspace::of_rules_key(&v2.rules_key()), Some(v2));
        assert_eq!(Keyspace::of_rules_key(&v2.group()), None);
        assert_eq!(parse_stream_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(parse_stream_id("17"), None);
        let mut ids = vec!["10-0", "9-5", "9-10", "100-0"];
        ids.sort_by_key(|s| parse_stream_id(s));
        assert_eq!(ids, vec!["9-5", "9-10", "10-0", "100-0"], "stream ids sort numerically");
        assert_eq!(Keyspace::of_group("other"), None);
    }

    #[test]
    fn shard_routing_is_stable_and_spread() {
        // Fixed values: changing the hash would move every site's data.
        assert_eq!(Shard::of_site("example.com"), Shard::of_site("example.com"));
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            seen.insert(Shard::of_site(&format!("site{i}.test")));
        }
        assert_eq!(seen.len(), SHARDS as usize);
        assert_eq!(
            Keyspace::default().report_key(Report::Traffic, Grain::Hour, "a.io", 3_600_000),
            format!("tally:v1:{}:traffic:h:a.io:1970010101", Shard::of_site("a.io").tag())
        );
        assert_eq!(
            Keyspace::default().unique_key(Report::Traffic, Grain::Hour, "a.io", 3_600_000, ""),
            format!("tally:v1:{}:traffic.u:h:a.io:1970010101", Shard::of_site("a.io").tag())
        );
    }
}
