//! Site domains and the site registry (`tally:sites`).
//!
//! A site is identified by its domain. Validation is strict (lower-case
//! hostname characters only) because the domain becomes part of Redis key
//! names, where a `:` or `{` would break the key layout.

use crate::keys::sites_key;
use crate::store::{RedisConn, StoreError};

/// Longest accepted site domain (DNS limit).
pub const MAX_SITE_LEN: usize = 253;

/// Why a site domain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SiteError {
    #[error("site is empty")]
    Empty,
    #[error("site is longer than {MAX_SITE_LEN} characters")]
    TooLong,
    #[error("site {0:?} is not a domain name (letters, digits, '-' and '.', e.g. example.com)")]
    Invalid(String),
}

/// Normalise and validate a site domain: trims, lower-cases, drops a leading
/// `www.`, and accepts only hostname characters.
pub fn normalize_site(raw: &str) -> Result<String, SiteError> {
    let s = raw.trim().to_ascii_lowercase();
    let s = s.strip_prefix("www.").unwrap_or(&s).to_owned();
    if s.is_empty() {
        return Err(SiteError::Empty);
    }
    if s.len() > MAX_SITE_LEN {
        return Err(SiteError::TooLong);
    }
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_');
    let ok_labels = s.split('.').all(|l| !l.is_empty() && l.len() <= 63);
    if !ok_chars || !ok_labels {
        return Err(SiteError::Invalid(raw.to_owned()));
    }
    Ok(s)
}

/// Register a site. Returns false if it was already registered.
pub async fn add_site(conn: &mut RedisConn, site: &str, now_ms: i64) -> Result<bool, StoreError> {
    let info = serde_json::json!({ "added_ms": now_ms }).to_string();
    let added: bool = redis::cmd("HSETNX")
        .arg(sites_key())
        .arg(site)
        .arg(info)
        .query_async(conn)
        .await?;
    Ok(added)
}

/// Remove a site from the registry (its data stays until it expires).
pub async fn remove_site(conn: &mut RedisConn, site: &str) -> Result<bool, StoreError> {
    let removed: i64 = redis::cmd("HDEL").arg(sites_key()).arg(site).query_async(conn).await?;
    Ok(removed > 0)
}

/// All registered sites, sorted.
pub async fn list_sites(conn: &mut RedisConn) -> Result<Vec<String>, StoreError> {
    let mut sites: Vec<String> = redis::cmd("HKEYS").arg(sites_key()).query_async(conn).await?;
    sites.sort();
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects() {
        assert_eq!(normalize_site(" WWW.Example.COM ").unwrap(), "example.com");
        assert_eq!(normalize_site("shop-1.example.co.uk").unwrap(), "shop-1.example.co.uk");
        assert_eq!(normalize_site(""), Err(SiteError::Empty));
        assert!(matches!(normalize_site("a:b"), Err(SiteError::Invalid(_))));
        assert!(matches!(normalize_site("{s01}x"), Err(SiteError::Invalid(_))));
        assert!(matches!(normalize_site("a..b"), Err(SiteError::Invalid(_))));
        assert_eq!(normalize_site(&"a".repeat(300)), Err(SiteError::TooLong));
    }
}
