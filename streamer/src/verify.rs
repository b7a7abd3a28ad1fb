//! Recompute the reports from the raw streams and diff them against the
//! key-map (`tally verify`).
//!
//! The events retained in the shard streams are folded with the same
//! aggregation the streamer uses; every counter key they imply is compared
//! field by field with Redis, and every HyperLogLog with the exact number of
//! distinct visitors (allowing HyperLogLog's error). Keys are computed from
//! the events, never scanned. Buckets older than the stream retention were
//! built from events that are gone, so verify ranges within it.

use crate::aggregate::{Delta, recompute};
use crate::rules::Rules;
use schema::keys::bucket_of_key;
use schema::store::RedisConn;
use schema::{Event, Keyspace, Shard};
use std::collections::{BTreeMap, HashMap};

/// Entries per XRANGE call.
const CHUNK: usize = 500;
/// Allowed relative error of a HyperLogLog count: 5 standard errors of
/// Redis's 0.81%. A verification checks thousands of sketches (one per
/// bucket, page, device, country...), so a 3-sigma bound would flag a few
/// sketches of a correct key-map by chance alone (seen: 143 for 148 among
/// ~10k sketches).
pub const HLL_TOLERANCE: f64 = 0.0405;
/// Allowed absolute error for small counts: two members hashing to the same
/// one of the 16384 registers count once, and among thousands of small
/// minute sketches a few such collisions are expected.
pub const HLL_SMALL_SLACK: i64 = 3;

/// Key segment of the visitors-per-source sketches.
const SOURCES_UNIQUE: &str = ":sources.u:";

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyScope {
    /// Only this site (else every site in the streams).
    pub site: Option<String>,
    /// Only buckets starting at or after this time (ms).
    pub from_ms: Option<i64>,
    /// Only buckets starting before this time (ms).
    pub to_ms: Option<i64>,
}

/// One disagreement between the streams and the key-map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub key: String,
    pub field: String,
    pub expected: i64,
    pub actual: i64,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub events: u64,
    pub counters_checked: u64,
    pub uniques_checked: u64,
    /// Counters that differ (must be empty).
    pub counters: Vec<Difference>,
    /// HyperLogLogs off by more than [`HLL_TOLERANCE`].
    pub uniques: Vec<Difference>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.counters.is_empty() && self.uniques.is_empty()
    }
}

async fn read_events(conn: &mut RedisConn, shard: Shard, site: Option<&str>) -> redis::RedisResult<Vec<Event>> {
    let mut out = Vec::new();
    let mut from = "-".to_owned();
    loop {
        let entries = schema::entry::range(conn, &shard.stream_key(), &from, "+", CHUNK).await?;
        let n = entries.len();
        if let Some(last) = entries.last() {
            from = format!("({}", last.id);
        }
        for entry in entries {
            for e in entry.events.into_iter().flatten() {
                if site.is_none_or(|s| s == e.site) {
                    out.push(e);
                }
            }
        }
        if n < CHUNK {
            return Ok(out);
        }
    }
}

/// Recompute and compare.
pub async fn verify(conn: &mut RedisConn, ks: Keyspace, scope: &VerifyScope) -> redis::RedisResult<VerifyReport> {
    let shards: Vec<Shard> = match &scope.site {
        Some(s) => vec![Shard::of_site(s)],
        None => Shard::all().collect(),
    };
    let mut report = VerifyReport::default();
    let in_scope = |key: &str| {
        bucket_of_key(key).is_some_and(|b| scope.from_ms.is_none_or(|f| b >= f) && scope.to_ms.is_none_or(|t| b < t))
    };
    // Recompute with the version's rules; buckets before its floor were
    // carried over by a replay from events the streams no longer hold.
    let rules = Rules::load(conn, ks).await.map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "cannot read the keyspace rules",
            e.to_string(),
        ))
    })?;
    let floor = rules.spec().floor_ms;
    let in_scope = |key: &str| in_scope(key) && bucket_of_key(key).zip(floor).is_none_or(|(b, f)| b >= f);
    for shard in shards {
        let mut events = read_events(conn, shard, scope.site.as_deref()).await?;
        events.retain(|e| rules.admits(e));
        report.events += events.len() as u64;
        let deltas = recompute(&events, ks);
        // One site's keys share a slot; compare per key (no cross-slot pipeline).
        for ((key, _), (delta, _)) in deltas.ops.iter().filter(|((k, _), _)| in_scope(k)) {
            match delta {
                Delta::Incr(expected) => {
                    let actual: HashMap<String, i64> = redis::cmd("HGETALL").arg(key).query_async(conn).await?;
                    let expected: BTreeMap<&String, &i64> = expected.iter().collect();
                    for (field, want) in &expected {
                        report.counters_checked += 1;
                        let got = actual.get(*field).copied().unwrap_or(0);
                        if got != **want {
                            report.counters.push(Difference {
                                key: key.clone(),
                                field: (*field).clone(),
                                expected: **want,
                                actual: got,
                            });
                        }
                    }
                    for (field, got) in &actual {
                        if !expected.contains_key(field) {
                            report.counters.push(Difference {
                                key: key.clone(),
                                field: field.clone(),
                                expected: 0,
                                actual: *got,
                            });
                        }
                    }
                }
                Delta::Union(members) => {
                    report.uniques_checked += 1;
                    let got: i64 = redis::cmd("PFCOUNT").arg(key).query_async(conn).await?;
                    let want = members.len() as i64;
                    let allowed = (((want as f64) * HLL_TOLERANCE).ceil() as i64).max(HLL_SMALL_SLACK);
                    // Visitors per source are add-only at the session's
                    // start as known when a batch is applied: when a later
                    // event of a session is applied before its first one
                    // (several streamers, or back-dated events) the visitor
                    // is also in the first-seen source's sketch. They are
                    // checked as a lower bound (see `apply.lua`).
                    let add_only = key.contains(SOURCES_UNIQUE);
                    let off = if add_only { want - got } else { (got - want).abs() };
                    if off > allowed {
                        report.uniques.push(Difference {
                            key: key.clone(),
                            field: "visitors".into(),
                            expected: want,
                            actual: got,
                        });
                    }
                }
                Delta::Min(_) | Delta::Max(_) => {}
            }
        }
    }
    Ok(report)
}
