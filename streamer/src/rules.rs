//! Processing rules: the part of the aggregation an operator can change.
//!
//! Rules belong to a keyspace version (`tally:rules:vN`, JSON), not to a
//! process: every streamer building version N, `tally verify` checking it
//! and a replay building it apply the same rules, whichever flags they were
//! started with. Changing a rule therefore means building a new version with
//! `tally replay`, which applies it to the whole retained history and then
//! switches over, instead of counting old and new events differently.
//!
//! - `exclude_paths`: globs of pages whose events are not counted
//!   (Plausible's "excluded pages": `*` stays within one path segment, `**`
//!   crosses segments).
//! - `floor_ms`: events before this time are not counted by this version;
//!   its buckets before the floor were carried over from the version it
//!   replaced (see `replay.rs`).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use schema::store::RedisConn;
use schema::{Event, Keyspace};
use serde::{Deserialize, Serialize};

/// Errors of rule definitions.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("invalid path pattern {0:?}: {1}")]
    Pattern(String, String),
    #[error("rules of keyspace v{0} are not valid JSON: {1}")]
    Json(u32, String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// The stored form of the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_ms: Option<i64>,
}

/// Rules ready to apply.
#[derive(Debug, Clone)]
pub struct Rules {
    spec: RuleSpec,
    excluded: GlobSet,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            spec: RuleSpec::default(),
            excluded: GlobSet::empty(),
        }
    }
}

fn glob(pattern: &str) -> Result<Glob, RulesError> {
    if !pattern.starts_with('/') {
        return Err(RulesError::Pattern(
            pattern.into(),
            "a path pattern starts with '/'".into(),
        ));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| RulesError::Pattern(pattern.into(), e.kind().to_string()))
}

impl Rules {
    pub fn new(spec: RuleSpec) -> Result<Rules, RulesError> {
        let mut set = GlobSetBuilder::new();
        for p in &spec.exclude_paths {
            set.add(glob(p)?);
        }
        let excluded = set
            .build()
            .map_err(|e| RulesError::Pattern(spec.exclude_paths.join(","), e.to_string()))?;
        Ok(Rules { spec, excluded })
    }

    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// Whether this version counts the event.
    pub fn admits(&self, e: &Event) -> bool {
        self.spec.floor_ms.is_none_or(|f| e.ts_ms >= f)
            && (self.excluded.is_empty() || !self.excluded.is_match(e.path()))
    }

    /// The rules of version `ks` (none stored: count everything).
    pub async fn load(conn: &mut RedisConn, ks: Keyspace) -> Result<Rules, RulesError> {
        let raw: Option<String> = redis::cmd("GET").arg(ks.rules_key()).query_async(conn).await?;
        let spec = match raw {
            Some(json) => serde_json::from_str(&json).map_err(|e| RulesError::Json(ks.version, e.to_string()))?,
            None => RuleSpec::default(),
        };
        Rules::new(spec)
    }

    /// Store these as the rules of version `ks`.
    pub async fn save(&self, conn: &mut RedisConn, ks: Keyspace) -> Result<(), RulesError> {
        let json = serde_json::to_string(&self.spec).map_err(|e| RulesError::Json(ks.version, e.to_string()))?;
        let () = redis::cmd("SET")
            .arg(ks.rules_key())
            .arg(json)
            .query_async(conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, ts_ms: i64) -> Event {
        Event::pageview(ts_ms, "a.io", path, 1)
    }

    #[test]
    fn excluded_paths_follow_plausible_globs() {
        let r = Rules::new(RuleSpec {
            exclude_paths: vec!["/admin/*".into(), "/private/**".into(), "/exact".into()],
            floor_ms: None,
        })
        .unwrap();
        assert!(!r.admits(&at("/admin/users", 0)));
        assert!(r.admits(&at("/admin/users/7", 0)), "* stays in one segment");
        assert!(!r.admits(&at("/private/a/b/c", 0)));
        assert!(!r.admits(&at("/exact", 0)));
        assert!(r.admits(&at("/exactly", 0)));
        assert!(r.admits(&at("/", 0)));
    }

    #[test]
    fn floor_drops_earlier_events() {
        let r = Rules::new(RuleSpec {
            exclude_paths: vec![],
            floor_ms: Some(1000),
        })
        .unwrap();
        assert!(!r.admits(&at("/", 999)));
        assert!(r.admits(&at("/", 1000)));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(
            Rules::new(RuleSpec {
                exclude_paths: vec!["admin".into()],
                floor_ms: None
            })
            .is_err()
        );
        assert!(
            Rules::new(RuleSpec {
                exclude_paths: vec!["/a[".into()],
                floor_ms: None
            })
            .is_err()
        );
    }

    #[test]
    fn spec_round_trips_as_json() {
        let spec = RuleSpec {
            exclude_paths: vec!["/x/**".into()],
            floor_ms: Some(86_400_000),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"exclude_paths":["/x/**"],"floor_ms":86400000}"#);
        assert_eq!(serde_json::from_str::<RuleSpec>(&json).unwrap(), spec);
        assert_eq!(serde_json::from_str::<RuleSpec>("{}").unwrap(), RuleSpec::default());
    }
}
