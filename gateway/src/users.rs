//! Gateway users, their allowed sites and API tokens, kept in Redis.
//!
//! A user record is one field of the hash `tally:users`: a JSON object with
//! the password as a SCRAM-SHA-256 verifier in PostgreSQL's format
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64),
//! the admin flag and the granted sites. The password itself is never
//! stored, and the verifier is enough to check a SCRAM proof but not to
//! log in. API tokens for the HTTP API are random 32-byte values shown once;
//! only their SHA-256 is kept (`tally:tokens`, hash -> user).
//! `tally users add|list|remove|grant|revoke|token` manage them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};
use ring::rand::{SecureRandom, SystemRandom};
use schema::store::{RedisConn, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The hash of user records.
pub const USERS_KEY: &str = "tally:users";
/// The hash of API token digests.
pub const TOKENS_KEY: &str = "tally:tokens";
/// PBKDF2 iterations of new verifiers (PostgreSQL's default).
pub const SCRAM_ITERATIONS: usize = 4096;

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("user {0:?} does not exist")]
    NoSuchUser(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("user name {0:?} is not valid (1-63 letters, digits, '_', '-', '.', '@')")]
    BadName(String),
    #[error("the password must have at least 8 characters")]
    WeakPassword,
    #[error("stored record of user {0:?} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("no secure random source: {0}")]
    Random(String),
}

/// One stored user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub verifier: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub sites: BTreeSet<String>,
}

fn random_bytes(n: usize) -> Result<Vec<u8>, UserError> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|e| UserError::Random(e.to_string()))?;
    Ok(buf)
}

/// A PostgreSQL-format SCRAM-SHA-256 verifier for `password`.
pub fn make_verifier(password: &str) -> Result<String, UserError> {
    let salt = random_bytes(16)?;
    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
    match ScramSecret::verifier_from_salted_password(salt, salted, SCRAM_ITERATIONS) {
        ScramSecret::Verifier {
            salt,
            iterations,
            stored_key,
            server_key,
        } => Ok(format!(
            "SCRAM-SHA-256${iterations}:{}${}:{}",
            B64.encode(salt),
            B64.encode(stored_key),
            B64.encode(server_key)
        )),
        ScramSecret::SaltedPassword { .. } => Err(UserError::Random("unexpected secret kind".into())),
    }
}

/// Parse a stored verifier back into the secret pgwire checks proofs with.
pub fn parse_verifier(v: &str) -> Option<ScramSecret> {
    let rest = v.strip_prefix("SCRAM-SHA-256$")?;
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    Some(ScramSecret::Verifier {
        salt: B64.decode(salt).ok()?,
        iterations: iterations.parse().ok()?,
        stored_key: B64.decode(stored).ok()?,
        server_key: B64.decode(server).ok()?,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

fn token_digest(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// The user registry.
#[derive(Clone)]
pub struct UserStore {
    conn: RedisConn,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserStore")
    }
}

impl UserStore {
    pub fn new(conn: RedisConn) -> Self {
        UserStore { conn }
    }

    pub async fn get(&self, name: &str) -> Result<Option<UserRecord>, UserError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("HGET")
            .arg(USERS_KEY)
            .arg(name)
            .query_async(&mut conn)
            .await?;
        raw.map(|r| serde_json::from_str(&r).map_err(|e| UserError::Corrupt(name.to_owned(), e.to_string())))
            .transpose()
    }

    async fn put(&self, name: &str, record: &UserRecord) -> Result<(), UserError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(record).map_err(|e| UserError::Corrupt(name.to_owned(), e.to_string()))?;
        let _: i64 = redis::cmd("HSET")
            .arg(USERS_KEY)
            .arg(name)
            .arg(json)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether any user exists (then connections must authenticate).
    pub async fn any(&self) -> Result<bool, UserError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("HLEN").arg(USERS_KEY).query_async(&mut conn).await?;
        Ok(n > 0)
    }

    pub async fn add(&self, name: &str, password: &str, admin: bool) -> Result<(), UserError> {
        if !valid_name(name) {
            return Err(UserError::BadName(name.to_owned()));
        }
        if password.chars().count() < 8 {
            return Err(UserError::WeakPassword);
        }
        if self.get(name).await?.is_some() {
            return Err(UserError::Exists(name.to_owned()));
        }
        let record = UserRecord {
            verifier: make_verifier(password)?,
            admin,
            sites: BTreeSet::new(),
        };
        self.put(name, &record).await
    }

    pub async fn remove(&self, name: &str) -> Result<bool, UserError> {
        let mut conn = self.conn.clone();
        let removed: i64 = redis::cmd("HDEL")
            .arg(USERS_KEY)
            .arg(name)
            .query_async(&mut conn)
            .await?;
        // Its tokens go with it.
        let tokens: Vec<(String, String)> = redis::cmd("HGETALL").arg(TOKENS_KEY).query_async(&mut conn).await?;
        for (digest, owner) in tokens {
            if owner == name {
                let _: i64 = redis::cmd("HDEL")
                    .arg(TOKENS_KEY)
                    .arg(digest)
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(removed > 0)
    }

    /// Every user, by name.
    pub async fn list(&self) -> Result<Vec<(String, UserRecord)>, UserError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(USERS_KEY).query_async(&mut conn).await?;
        let mut out = Vec::with_capacity(all.len());
        for (name, raw) in all {
            let record = serde_json::from_str(&raw).map_err(|e| UserError::Corrupt(name.clone(), e.to_string()))?;
            out.push((name, record));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Grant (or with `grant = false`, revoke) a site.
    pub async fn set_site(&self, name: &str, site: &str, grant: bool) -> Result<bool, UserError> {
        let mut record = self
            .get(name)
            .await?
            .ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
        let changed = if grant {
            record.sites.insert(site.to_owned())
        } else {
            record.sites.remove(site)
        };
        self.put(name, &record).await?;
        Ok(changed)
    }

    /// A new API token for `name` (shown once; only its digest is kept).
    pub async fn new_token(&self, name: &str) -> Result<String, UserError> {
        if self.get(name).await?.is_none() {
            return Err(UserError::NoSuchUser(name.to_owned()));
        }
        let token = format!("tly_{}", hex(&random_bytes(32)?));
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("HSET")
            .arg(TOKENS_KEY)
            .arg(token_digest(&token))
            .arg(name)
            .query_async(&mut conn)
            .await?;
        Ok(token)
    }

    /// The user an API token belongs to.
    pub async fn token_user(&self, token: &str) -> Result<Option<(String, UserRecord)>, UserError> {
        let mut conn = self.conn.clone();
        let owner: Option<String> = redis::cmd("HGET")
            .arg(TOKENS_KEY)
            .arg(token_digest(token))
            .query_async(&mut conn)
            .await?;
        match owner {
            Some(name) => Ok(self.get(&name).await?.map(|r| (name, r))),
            None => Ok(None),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl UserRecord {
    /// The sites this user may read.
    pub fn scope(&self) -> crate::tenant::TenantScope {
        if self.admin {
            crate::tenant::TenantScope::all()
        } else {
            crate::tenant::TenantScope::sites(self.sites.iter().cloned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_and_never_contain_the_password() {
        let v = make_verifier("correct horse").unwrap();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("correct"));
        let Some(ScramSecret::Verifier {
            salt,
            iterations,
            stored_key,
            server_key,
        }) = parse_verifier(&v)
        else {
            panic!("parses")
        };
        assert_eq!(
            (salt.len(), iterations, stored_key.len(), server_key.len()),
            (16, 4096, 32, 32)
        );
        // The same password with the same salt gives the same keys.
        let again = ScramSecret::verifier_from_salted_password(
            salt.clone(),
            gen_salted_password("correct horse", &salt, 4096),
            4096,
        );
        let ScramSecret::Verifier { stored_key: k2, .. } = again else {
            panic!()
        };
        assert_eq!(stored_key, k2);
        assert!(parse_verifier("md5abc").is_none());
        assert_ne!(make_verifier("correct horse").unwrap(), v, "random salt");
        assert!(valid_name("alice@example.com") && !valid_name("a b") && !valid_name(""));
        assert_eq!(token_digest("x").len(), 64);
    }
}
