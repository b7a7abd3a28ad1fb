//! A short-lived cache of small query results, for dashboard refreshes.
//!
//! Grafana panels, the built-in page and BI tools send the same statements
//! again and again; within a second the answer cannot usefully change
//! (the streamer applies in batches), so a result seen less than `ttl` ago
//! is answered from memory: the encoded rows are sent again without
//! planning, reading Redis or encoding. Two keys lead to an entry:
//!
//! - the statement text of a simple query, with the caller's tenant scope,
//!   user and session settings (so nothing that changes its meaning is
//!   left out); a hit skips parsing and planning too. Statements with side
//!   effects or randomness (`set_config`, `random()`) are never cached.
//! - the bound logical plan after the connection's SQL rewrite, with the
//!   scope and the result format (prepared statements, the HTTP API).
//!
//! Only results of at most `max_rows` rows are kept, and at most
//! `max_entries` of them, so the cache's memory is bounded; a large result
//! streams as usual and is not cached. A TTL of 0 turns the cache off.

use crate::tenant::TenantScope;
use datafusion::logical_expr::LogicalPlan;
use pgwire::api::results::FieldInfo;
use pgwire::messages::data::DataRow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a cached result is found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// Statement text, scope, and the user and settings it was run with.
    Text(String, TenantScope, String),
    /// Bound plan, scope and result format.
    Plan(LogicalPlan, TenantScope, String),
}

impl CacheKey {
    /// A text key, or `None` for statements that must run every time.
    pub fn text(sql: &str, scope: &TenantScope, session: String) -> Option<CacheKey> {
        let lower = sql.to_ascii_lowercase();
        let volatile = ["set_config", "random(", "nextval", "pg_sleep"]
            .iter()
            .any(|f| lower.contains(f));
        (!volatile).then(|| CacheKey::Text(sql.to_owned(), scope.clone(), session))
    }
}

/// One cached result: its row description and encoded rows.
#[derive(Debug, Clone)]
pub struct Cached {
    pub fields: Arc<Vec<FieldInfo>>,
    pub rows: Arc<Vec<DataRow>>,
}

pub struct ResultCache {
    ttl: Duration,
    max_rows: usize,
    max_entries: usize,
    entries: Mutex<HashMap<CacheKey, (Instant, Cached)>>,
}

impl ResultCache {
    pub fn new(ttl: Duration, max_rows: usize, max_entries: usize) -> Self {
        ResultCache {
            ttl,
            max_rows,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// A fresh result for `key`, if one is cached.
    pub fn get(&self, key: &CacheKey) -> Option<Cached> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let (at, cached) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| cached.clone())
    }

    /// Remember a complete result computed starting at `started`.
    pub fn put(&self, keys: Vec<CacheKey>, started: Instant, cached: Cached) {
        if !self.enabled() || cached.rows.len() > self.max_rows {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() + keys.len() > self.max_entries {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() + keys.len() > self.max_entries {
                entries.clear();
            }
        }
        for key in keys {
            entries.insert(key, (started, cached.clone()));
        }
    }

    /// A collector for a result about to stream (inert when disabled).
    pub fn collector(&self) -> Collector {
        Collector {
            gathered: Arc::new(Mutex::new(self.enabled().then(Vec::new))),
            max_rows: self.max_rows,
        }
    }
}

/// Gathers a streaming result's encoded rows for the cache, giving up past
/// the row limit or on an error.
#[derive(Clone)]
pub struct Collector {
    gathered: Arc<Mutex<Option<Vec<DataRow>>>>,
    max_rows: usize,
}

impl Collector {
    pub fn push(&self, rows: &[DataRow]) {
        let Ok(mut g) = self.gathered.lock() else { return };
        let full = g.as_mut().is_some_and(|v| {
            v.extend_from_slice(rows);
            v.len() > self.max_rows
        });
        if full {
            *g = None;
        }
    }

    pub fn abandon(&self) {
        if let Ok(mut g) = self.gathered.lock() {
            *g = None;
        }
    }

    /// The complete result, if it was kept.
    pub fn finish(&self) -> Option<Vec<DataRow>> {
        self.gathered.lock().ok()?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> CacheKey {
        CacheKey::Text(n.to_owned(), TenantScope::all(), String::new())
    }

    fn result(rows: usize) -> Cached {
        Cached {
            fields: Arc::new(Vec::new()),
            rows: Arc::new(vec![DataRow::default(); rows]),
        }
    }

    #[test]
    fn entries_expire_and_stay_bounded() {
        let cache = ResultCache::new(Duration::from_millis(50), 10, 2);
        cache.put(vec![key("1")], Instant::now(), result(1));
        assert!(cache.get(&key("1")).is_some());
        assert!(cache.get(&key("2")).is_none());
        cache.put(vec![key("2")], Instant::now(), result(1));
        cache.put(vec![key("3")], Instant::now(), result(1));
        assert!(cache.entries.lock().unwrap().len() <= 2);
        cache.put(vec![key("big")], Instant::now(), result(11));
        assert!(cache.get(&key("big")).is_none(), "over the row limit");
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key("3")).is_none(), "expired");
        let off = ResultCache::new(Duration::ZERO, 10, 2);
        off.put(vec![key("1")], Instant::now(), result(1));
        assert!(off.get(&key("1")).is_none());
        assert!(CacheKey::text("select set_config('a', 'b', false)", &TenantScope::all(), String::new()).is_none());
        assert!(CacheKey::text("SELECT RANDOM()", &TenantScope::all(), String::new()).is_none());
    }

    #[test]
    fn a_collector_gives_up_past_the_limit() {
        let cache = ResultCache::new(Duration::from_secs(1), 2, 10);
        let c = cache.collector();
        c.push(&[DataRow::default(), DataRow::default()]);
        assert_eq!(c.finish().map(|v| v.len()), Some(2));
        let c = cache.collector();
        c.push(&vec![DataRow::default(); 3]);
        assert!(c.finish().is_none());
    }
}
