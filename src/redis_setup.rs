//! Where Redis is for `tally up`: `REDIS_URL`, else a Redis answering on the
//! default address, else a private `redis-server` child with its own data
//! dir and AOF on (stopped when `tally up` exits).
//!
//! The private server keeps sparse HyperLogLogs up to
//! [`HLL_SPARSE_MAX_BYTES`] rather than Redis's 3000: the streamer's
//! `PFADD`s into sparse sketches were a fifth of Redis's time in a drain,
//! and inserting into a long sparse sketch costs a scan of it. For the same
//! reason it keeps hashes as listpacks only up to
//! [`HASH_MAX_LISTPACK_ENTRIES`] fields rather than 512: every `HINCRBY`
//! and `HMGET` field scans a listpack.

use anyhow::Result;
use harness::{RedisServer, RedisServerOptions, ping};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default address probed when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_ADDR: &str = "127.0.0.1:6379";

/// Largest sparse HyperLogLog of the private server, in bytes; a larger
/// sketch is kept dense (12 KiB). `bench/streamer.sh` with
/// `REDIS_EXTRA_ARGS="--hll-sparse-max-bytes 1000"` against Redis's 3000:
/// `PFADD` took about half as long, Redis about a fifth less CPU per
/// drained event, and the key-map about a third more memory
/// (BENCHMARKS.md).
pub const HLL_SPARSE_MAX_BYTES: u32 = 1000;

/// Most fields of a hash that the private server keeps as a listpack (a
/// flat list, scanned by every lookup) before it becomes a hash table.
/// `bench/streamer.sh` with `--hash-max-listpack-entries 64` against Redis's
/// 512: about 5 % fewer Redis instructions per drained event (the minute
/// buckets' report hashes hold 64 to 128 fields), and a key-map 0.5 to 4 %
/// larger; ingest's append script, for calls of new visitors, about 11 to
/// 13 % fewer (`bench/append_cost.py`: the visit windows are hashes too).
/// See BENCHMARKS.md.
pub const HASH_MAX_LISTPACK_ENTRIES: u32 = 64;

/// A resolved Redis: its URL and, if private, the child process.
pub struct ResolvedRedis {
    pub url: String,
    pub private: Option<RedisServer>,
}

/// Default data dir of the private server.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("tally").join("redis");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/tally/redis");
    }
    PathBuf::from(".tally/redis")
}

/// Resolve Redis as described in the module docs; `probe` is the default
/// address to try before starting a private server.
pub fn resolve(redis_url: Option<&str>, probe: SocketAddr, data_dir: Option<PathBuf>) -> Result<ResolvedRedis> {
    if let Some(url) = redis_url {
        return Ok(ResolvedRedis {
            url: url.to_owned(),
            private: None,
        });
    }
    let default = probe;
    if ping(default) {
        tracing::info!(addr = %default, "using the Redis answering on the default address");
        return Ok(ResolvedRedis {
            url: format!("redis://{default}"),
            private: None,
        });
    }
    let dir = data_dir.unwrap_or_else(default_data_dir);
    tracing::info!(dir = %dir.display(), "no REDIS_URL and nothing on {default}: starting a private redis-server");
    let server = RedisServer::start(RedisServerOptions {
        dir: Some(dir),
        appendonly: true,
        extra_args: vec![
            "--hll-sparse-max-bytes".into(),
            HLL_SPARSE_MAX_BYTES.to_string(),
            "--hash-max-listpack-entries".into(),
            HASH_MAX_LISTPACK_ENTRIES.to_string(),
        ],
        ..Default::default()
    })?;
    Ok(ResolvedRedis {
        url: server.url(),
        private: Some(server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no `REDIS_URL` and nothing on the probed address, a private
    /// server starts in the given dir with AOF on and the two encoding
    /// limits above.
    #[test]
    fn the_private_server_has_the_aof_and_the_encoding_limits() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let probe = SocketAddr::from(([127, 0, 0, 1], harness::free_port().expect("a free port")));
        let resolved = resolve(None, probe, Some(dir.path().join("redis"))).expect("a private redis-server");
        assert!(resolved.private.is_some());
        let mut conn = redis::Client::open(resolved.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("a connection to the private server");
        let setting = |conn: &mut redis::Connection, name: &str| -> String {
            let pair: (String, String) = redis::cmd("CONFIG").arg("GET").arg(name).query(conn).expect(name);
            pair.1
        };
        assert_eq!(setting(&mut conn, "appendonly"), "yes");
        assert_eq!(
            setting(&mut conn, "hll-sparse-max-bytes"),
            HLL_SPARSE_MAX_BYTES.to_string()
        );
        assert_eq!(
            setting(&mut conn, "hash-max-listpack-entries"),
            HASH_MAX_LISTPACK_ENTRIES.to_string()
        );
    }
}
