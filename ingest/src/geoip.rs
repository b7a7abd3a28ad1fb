//! The country of a client address from a MaxMind-format database
//! (GeoLite2 or GeoIP2 Country or City, or any compatible `.mmdb`).
//!
//! The database is read once at startup (`--geoip-db`); a missing or
//! unreadable file is a startup error, never a silent "no countries". It is
//! consulted only when no trusted CDN header gave the country. The address
//! is used for the lookup and the visitor hash only, never stored.

use maxminddb::{Reader, geoip2};
use std::net::IpAddr;
use std::path::Path;

/// Errors opening the database.
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {path}: {reason}")]
pub struct GeoIpError {
    path: String,
    reason: String,
}

/// An opened country database.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database_type", &self.reader.metadata.database_type)
            .finish()
    }
}

impl GeoIp {
    pub fn open(path: &Path) -> Result<GeoIp, GeoIpError> {
        let reader = Reader::open_readfile(path).map_err(|e| GeoIpError {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(GeoIp { reader })
    }

    /// The database's type, e.g. `GeoLite2-Country` (for the startup log).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata.database_type
    }

    /// The ISO 3166-1 alpha-2 code of `ip`'s country, if the database knows
    /// it (an unparsable address or one of another IP version: none).
    pub fn country(&self, ip: &str) -> Option<String> {
        let addr: IpAddr = ip.trim().parse().ok()?;
        let found = self.reader.lookup(addr).ok()?;
        let record: geoip2::Country = found.decode().ok()??;
        crate::enrich::country_from_header(record.country.iso_code?)
    }
}
