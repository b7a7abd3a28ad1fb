//! A short-lived cache of small query results, for dashboard refreshes.
//!
//! Grafana panels, the built-in page and BI tools send the same statements
//! again and again; within a second the answer cannot usefully change
//! (the streamer applies in batches), so a result seen less than `ttl` ago
//! is answered from memory without planning or reading Redis again. The key
//! is the bound logical plan after the connection's SQL rewrite and the
//! caller's tenant scope, so two statements share an entry only when they
//! mean the same thing for the same sites. Only
//! results of at most `max_rows` rows are kept, and at most `max_entries`
//! of them, so the cache's memory is bounded; a large result streams as
//! usual and is not cached. A TTL of 0 turns the cache off.

use crate::tenant::TenantScope;
use datafusion::arrow::array::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Cached batches of one result.
pub type Batches = Arc<Vec<RecordBatch>>;

pub struct ResultCache {
    ttl: Duration,
    max_rows: usize,
    max_entries: usize,
    entries: Mutex<HashMap<(LogicalPlan, TenantScope), (Instant, Batches)>>,
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

    /// A collector for a result about to stream (inert when disabled).
    pub fn collector(&self) -> Collector {
        Collector {
            gathered: Arc::new(Mutex::new(self.enabled().then(|| (Vec::new(), 0)))),
            max_rows: self.max_rows,
        }
    }

    /// A fresh result for `plan`, if one is cached.
    pub fn get(&self, plan: &LogicalPlan, scope: &TenantScope) -> Option<Batches> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let (at, batches) = entries.get(&(plan.clone(), scope.clone()))?;
        (at.elapsed() < self.ttl).then(|| batches.clone())
    }

    /// Remember a complete result computed starting at `started`.
    pub fn put(&self, plan: LogicalPlan, scope: &TenantScope, started: Instant, batches: Vec<RecordBatch>) {
        if !self.enabled() || batches.iter().map(RecordBatch::num_rows).sum::<usize>() > self.max_rows {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= self.max_entries {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert((plan, scope.clone()), (started, Arc::new(batches)));
    }
}

/// Batches so far and their row count.
type Gathered = (Vec<RecordBatch>, usize);

/// Gathers a streaming result for the cache, giving up past the row limit
/// or on an error.
#[derive(Clone)]
pub struct Collector {
    gathered: Arc<Mutex<Option<Gathered>>>,
    max_rows: usize,
}

impl Collector {
    pub fn push(&self, batch: &RecordBatch) {
        let Ok(mut g) = self.gathered.lock() else { return };
        let full = g.as_mut().is_some_and(|(v, n)| {
            *n += batch.num_rows();
            v.push(batch.clone());
            *n > self.max_rows
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
    pub fn finish(&self) -> Option<Vec<RecordBatch>> {
        self.gathered.lock().ok()?.take().map(|(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::LogicalPlanBuilder;

    fn plan(n: i64) -> LogicalPlan {
        use datafusion::prelude::lit;
        LogicalPlanBuilder::empty(true)
            .project(vec![lit(n)])
            .and_then(|b| b.build())
            .expect("a plan")
    }

    #[test]
    fn entries_expire_and_stay_bounded() {
        let cache = ResultCache::new(Duration::from_millis(50), 10, 2);
        cache.put(plan(1), &TenantScope::all(), Instant::now(), Vec::new());
        assert!(cache.get(&plan(1), &TenantScope::all()).is_some());
        assert!(cache.get(&plan(2), &TenantScope::all()).is_none());
        cache.put(plan(2), &TenantScope::all(), Instant::now(), Vec::new());
        cache.put(plan(3), &TenantScope::all(), Instant::now(), Vec::new());
        assert!(cache.entries.lock().unwrap().len() <= 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&plan(3), &TenantScope::all()).is_none(), "expired");
        let off = ResultCache::new(Duration::ZERO, 10, 2);
        off.put(plan(1), &TenantScope::all(), Instant::now(), Vec::new());
        assert!(off.get(&plan(1), &TenantScope::all()).is_none());
    }
}
