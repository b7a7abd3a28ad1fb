//! Tenant isolation: which sites a query may read.
//!
//! Every query runs with a [`TenantScope`] in its DataFusion session config
//! (an extension set by the engine from the authenticated user). The table
//! providers, the `events` streams, `sites`, `realtime` and
//! `unique_visitors` read it at scan time and confine their keys to the
//! allowed sites, so isolation holds below SQL whatever the query looks
//! like (joins, subqueries, UNION, CTEs, cursors, prepared statements): a
//! site outside the grant behaves as if it had no data. A query that
//! somehow runs without a scope reads nothing.

use crate::pushdown::ScanBounds;
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionConfig;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The sites a connection may read (`None` = all: the admin role, or a
/// server without users).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TenantScope {
    allowed: Option<BTreeSet<String>>,
}

impl TenantScope {
    /// Every site.
    pub fn all() -> Self {
        TenantScope { allowed: None }
    }

    /// Only these sites.
    pub fn sites(sites: impl IntoIterator<Item = String>) -> Self {
        TenantScope {
            allowed: Some(sites.into_iter().collect()),
        }
    }

    /// No site at all.
    pub fn none() -> Self {
        TenantScope {
            allowed: Some(BTreeSet::new()),
        }
    }

    pub fn allows(&self, site: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(site))
    }

    /// Narrow a scan to the allowed sites.
    pub fn confine(&self, bounds: &mut ScanBounds) {
        if let Some(allowed) = &self.allowed {
            bounds.sites = Some(match bounds.sites.take() {
                Some(wanted) => wanted.intersection(allowed).cloned().collect(),
                None => allowed.clone(),
            });
        }
    }

    /// Keep the allowed sites of a list.
    pub fn filter(&self, sites: Vec<String>) -> Vec<String> {
        sites.into_iter().filter(|s| self.allows(s)).collect()
    }

    /// The scope a query runs under (none when the engine set none).
    pub fn of_config(config: &SessionConfig) -> TenantScope {
        config
            .get_extension::<TenantScope>()
            .map_or_else(TenantScope::none, |s| (*s).clone())
    }

    /// The scope of a running task.
    pub fn of_task(ctx: &Arc<TaskContext>) -> TenantScope {
        Self::of_config(ctx.session_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_confine_scans() {
        let a = TenantScope::sites(["a.test".to_owned()]);
        let mut open = ScanBounds::default();
        a.confine(&mut open);
        assert_eq!(open.sites, Some(BTreeSet::from(["a.test".to_owned()])));
        let mut foreign = ScanBounds {
            sites: Some(BTreeSet::from(["b.test".to_owned()])),
            ..ScanBounds::default()
        };
        a.confine(&mut foreign);
        assert_eq!(foreign.sites, Some(BTreeSet::new()));
        let mut any = ScanBounds::default();
        TenantScope::all().confine(&mut any);
        assert_eq!(any.sites, None);
        assert!(!TenantScope::none().allows("a.test"));
        assert_eq!(TenantScope::of_config(&SessionConfig::new()), TenantScope::none());
        assert_eq!(
            a.filter(vec!["a.test".into(), "b.test".into()]),
            vec!["a.test".to_owned()]
        );
    }
}
