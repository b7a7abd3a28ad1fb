//! Per-connection session settings: what SET, SHOW and RESET act on.
//!
//! Each connection has its own map (kept in pgwire's per-connection session
//! extensions), so a SET on one connection is never seen by another. Values
//! start from the defaults a PostgreSQL 16 server reports; parameters that
//! are not known are refused as PostgreSQL does (42704), except custom
//! `prefix.name` settings, which PostgreSQL also accepts.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// Defaults, by lower-case name.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "off"),
    ("lc_collate", "C.UTF-8"),
    ("lc_ctype", "C.UTF-8"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", super::SERVER_VERSION),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
];

/// Settings that describe the server and cannot be changed.
const READ_ONLY: &[&str] = &[
    "integer_datetimes",
    "is_superuser",
    "lc_collate",
    "lc_ctype",
    "max_identifier_length",
    "server_encoding",
    "server_version",
    "server_version_num",
];

/// Why a setting could not be read or changed.
#[derive(Debug, PartialEq, Eq)]
pub enum SettingError {
    Unknown(String),
    ReadOnly(String),
}

impl SettingError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SettingError::Unknown(_) => "42704",
            SettingError::ReadOnly(_) => "55P02",
        }
    }

    pub fn message(&self) -> String {
        match self {
            SettingError::Unknown(n) => format!("unrecognized configuration parameter \"{n}\""),
            SettingError::ReadOnly(n) => format!("parameter \"{n}\" cannot be changed"),
        }
    }
}

/// Canonical name: lower case, with PostgreSQL's spelled-out aliases.
pub fn canonical(name: &str) -> String {
    match name.trim().to_ascii_lowercase().as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        other => other.to_owned(),
    }
}

fn is_known(name: &str) -> bool {
    DEFAULTS.iter().any(|(n, _)| *n == name) || name.contains('.')
}

/// The settings of one connection.
#[derive(Debug, Default)]
pub struct SessionSettings {
    changed: RwLock<BTreeMap<String, String>>,
}

impl SessionSettings {
    pub fn get(&self, name: &str) -> Result<String, SettingError> {
        let name = canonical(name);
        if let Some(v) = self.changed.read().ok().and_then(|m| m.get(&name).cloned()) {
            return Ok(v);
        }
        DEFAULTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
            .ok_or(SettingError::Unknown(name))
    }

    pub fn set(&self, name: &str, value: &str) -> Result<(), SettingError> {
        let name = canonical(name);
        if !is_known(&name) {
            return Err(SettingError::Unknown(name));
        }
        if READ_ONLY.contains(&name.as_str()) {
            return Err(SettingError::ReadOnly(name));
        }
        if let Ok(mut m) = self.changed.write() {
            m.insert(name, value.to_owned());
        }
        Ok(())
    }

    /// The settings changed from their defaults, by name.
    pub fn changed(&self) -> Vec<(String, String)> {
        self.changed
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The settings changed from their defaults, as one string (part of
    /// the result cache's key: a statement may read them).
    pub fn fingerprint(&self) -> String {
        format!("{:?}", self.changed())
    }

    pub fn reset(&self, name: Option<&str>) -> Result<(), SettingError> {
        let Ok(mut m) = self.changed.write() else { return Ok(()) };
        match name.map(canonical) {
            None => m.clear(),
            Some(n) if is_known(&n) => {
                m.remove(&n);
            }
            Some(n) => return Err(SettingError::Unknown(n)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset() {
        let s = SessionSettings::default();
        assert_eq!(s.get("TimeZone").unwrap(), "UTC");
        assert_eq!(s.get("transaction isolation level").unwrap(), "read committed");
        s.set("application_name", "psql").unwrap();
        assert_eq!(s.get("application_name").unwrap(), "psql");
        s.set("myapp.flag", "x").unwrap();
        assert_eq!(s.get("myapp.flag").unwrap(), "x");
        assert_eq!(s.set("no_such", "1"), Err(SettingError::Unknown("no_such".into())));
        assert_eq!(
            s.set("server_version", "1"),
            Err(SettingError::ReadOnly("server_version".into()))
        );
        s.reset(None).unwrap();
        assert_eq!(s.get("application_name").unwrap(), "");
        assert!(matches!(s.get("nope"), Err(SettingError::Unknown(_))));
    }
}
