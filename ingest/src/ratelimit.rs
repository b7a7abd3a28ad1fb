//! Per-site rate limit: a token bucket per site, in each ingest process.
//!
//! An event over its site's rate is answered 429 with `Retry-After` and not
//! stored. The limit is per process (N ingest processes allow N times the
//! rate); it protects Redis and the other sites from one site's flood, and
//! costs no Redis round trip. Buckets of sites not seen for a while are
//! dropped, so memory stays bounded by the active sites.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// Token buckets per site.
#[derive(Debug)]
pub struct SiteRateLimiter {
    /// Events per second per site; 0 disables the limit.
    rate: f64,
    /// Largest burst.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Most sites tracked before idle buckets are swept.
const SWEEP_AT: usize = 10_000;

impl SiteRateLimiter {
    /// `rate` events per second with bursts of `burst` (0 = no limit).
    pub fn new(rate: f64, burst: f64) -> Self {
        SiteRateLimiter {
            rate,
            burst: burst.max(rate).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Take `n` tokens for `site` at `now_ms`; false when over the limit.
    pub fn allow(&self, site: &str, n: u32, now_ms: i64) -> bool {
        if !self.enabled() {
            return true;
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return true; // a poisoned lock must not stop collection
        };
        if buckets.len() >= SWEEP_AT {
            let idle = (self.burst / self.rate * 1000.0) as i64;
            buckets.retain(|_, b| now_ms - b.last_ms <= idle);
        }
        // The site's name is copied only for a new bucket, not per event.
        if !buckets.contains_key(site) {
            buckets.insert(
                site.to_owned(),
                Bucket {
                    tokens: self.burst,
                    last_ms: now_ms,
                },
            );
        }
        let Some(b) = buckets.get_mut(site) else {
            return true;
        };
        let elapsed = (now_ms - b.last_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last_ms = now_ms;
        if b.tokens >= f64::from(n) {
            b.tokens -= f64::from(n);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_site_separately_and_refills() {
        let l = SiteRateLimiter::new(10.0, 20.0);
        let t = 1_000_000;
        assert!((0..20).all(|_| l.allow("a.io", 1, t)));
        assert!(!l.allow("a.io", 1, t), "burst used up");
        assert!(l.allow("b.io", 1, t), "other sites unaffected");
        assert!(l.allow("a.io", 1, t + 100), "refilled 1 token in 100 ms");
        assert!(!l.allow("a.io", 1, t + 100));
        assert!(SiteRateLimiter::new(0.0, 0.0).allow("a.io", 1_000_000, t));
    }
}
