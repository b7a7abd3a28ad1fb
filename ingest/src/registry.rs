//! Which sites ingest accepts events for.
//!
//! The registry lives in Redis (`tally:sites`, managed by `tally sites`).
//! Checking it on every request would add a round trip per event, so the set
//! is cached and refreshed in the background; a site missing from the cache is
//! looked up once (so a site added a moment ago is accepted at once) and the
//! miss is remembered briefly, so unknown-site floods cost no Redis traffic.
//! With open collection, unknown sites are registered on first sight.

use schema::site::{add_site, list_sites};
use schema::store::{RedisConn, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long a negative lookup is trusted.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Cap on remembered misses (bounded memory under a flood of random sites).
const MAX_NEGATIVE: usize = 10_000;

pub struct SiteRegistry {
    conn: RedisConn,
    open: bool,
    known: RwLock<HashSet<String>>,
    misses: RwLock<HashMap<String, Instant>>,
}

impl SiteRegistry {
    pub fn new(conn: RedisConn, open: bool) -> Self {
        SiteRegistry {
            conn,
            open,
            known: RwLock::new(HashSet::new()),
            misses: RwLock::new(HashMap::new()),
        }
    }

    /// Whether events for `site` are accepted.
    pub async fn allows(&self, site: &str, now_ms: i64) -> Result<bool, StoreError> {
        if self.known.read().is_ok_and(|k| k.contains(site)) {
            return Ok(true);
        }
        let mut conn = self.conn.clone();
        if self.open {
            add_site(&mut conn, site, now_ms).await?;
            self.remember(site);
            return Ok(true);
        }
        if self
            .misses
            .read()
            .is_ok_and(|m| m.get(site).is_some_and(|t| t.elapsed() < NEGATIVE_TTL))
        {
            return Ok(false);
        }
        let exists: bool = redis::cmd("HEXISTS")
            .arg(schema::keys::sites_key())
            .arg(site)
            .query_async(&mut conn)
            .await?;
        if exists {
            self.remember(site);
        } else if let Ok(mut m) = self.misses.write() {
            if m.len() >= MAX_NEGATIVE {
                m.clear();
            }
            m.insert(site.to_owned(), Instant::now());
        }
        Ok(exists)
    }

    fn remember(&self, site: &str) {
        if let Ok(mut k) = self.known.write() {
            k.insert(site.to_owned());
        }
    }

    /// Reload the whole set from Redis (so removals take effect).
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let sites: HashSet<String> = list_sites(&mut conn).await?.into_iter().collect();
        let n = sites.len();
        if let Ok(mut k) = self.known.write() {
            *k = sites;
        }
        if let Ok(mut m) = self.misses.write() {
            m.clear();
        }
        Ok(n)
    }
}
