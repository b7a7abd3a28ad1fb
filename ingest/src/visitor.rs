//! Cookieless visitor ids.
//!
//! visitor id = SipHash-1-3 keyed with the day's secret salt over
//! (site, client IP, user agent). The salt is random, shared by all ingest
//! processes through Redis (`tally:salt:<day>`, created with `SET NX`, expiring
//! after 48 h) and rotates at UTC midnight, so the same person is counted once
//! per day and the id cannot be linked across days or reversed to an IP. The
//! IP itself is never stored.

use rand::RngCore;
use schema::grain::Grain;
use schema::keys::salt_key;
use schema::store::{RedisConn, StoreError};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::sync::Mutex;

/// Computes visitor ids, caching the current day's salt.
pub struct VisitorHasher {
    conn: RedisConn,
    current: Mutex<Option<(i64, [u8; 16])>>,
}

impl VisitorHasher {
    pub fn new(conn: RedisConn) -> Self {
        VisitorHasher {
            conn,
            current: Mutex::new(None),
        }
    }

    /// The visitor id for an event received at `now_ms` (the salt is chosen
    /// by receive time, not client time, so a back-dated event cannot select
    /// an expired salt).
    pub async fn visitor_id(&self, now_ms: i64, site: &str, ip: &str, user_agent: &str) -> Result<u64, StoreError> {
        let salt = self.salt_for(now_ms).await?;
        Ok(hash_visitor(&salt, site, ip, user_agent))
    }

    async fn salt_for(&self, now_ms: i64) -> Result<[u8; 16], StoreError> {
        let day = Grain::Day.truncate(now_ms);
        if let Ok(guard) = self.current.lock()
            && let Some((d, salt)) = *guard
            && d == day
        {
            return Ok(salt);
        }
        let key = salt_key(&Grain::Day.label(day));
        let mut candidate = [0u8; 16];
        rand::rng().fill_bytes(&mut candidate);
        let mut conn = self.conn.clone();
        // SET NX then GET: whichever process wins the race, all use its salt.
        let (stored,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(hex::encode(candidate))
            .arg("NX")
            .arg("EX")
            .arg(48 * 3600)
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        let salt = stored
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .unwrap_or(candidate);
        if let Ok(mut guard) = self.current.lock() {
            *guard = Some((day, salt));
        }
        Ok(salt)
    }
}

/// The keyed hash itself.
pub fn hash_visitor(salt: &[u8; 16], site: &str, ip: &str, user_agent: &str) -> u64 {
    let mut h = SipHasher13::new_with_key(salt);
    h.write(site.as_bytes());
    h.write_u8(0);
    h.write(ip.as_bytes());
    h.write_u8(0);
    h.write(user_agent.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_input() {
        let s = [7u8; 16];
        let base = hash_visitor(&s, "a.io", "1.2.3.4", "UA");
        assert_eq!(base, hash_visitor(&s, "a.io", "1.2.3.4", "UA"));
        assert_ne!(base, hash_visitor(&[8u8; 16], "a.io", "1.2.3.4", "UA"));
        assert_ne!(base, hash_visitor(&s, "b.io", "1.2.3.4", "UA"));
        assert_ne!(base, hash_visitor(&s, "a.io", "1.2.3.5", "UA"));
        assert_ne!(base, hash_visitor(&s, "a.io", "1.2.3.4", "UA2"));
        // Field boundaries matter: ("ab","c") vs ("a","bc").
        assert_ne!(hash_visitor(&s, "ab", "c", ""), hash_visitor(&s, "a", "bc", ""));
    }
}
