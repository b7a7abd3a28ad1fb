//! Shared setup of the ingest tests: a private Redis (through the harness),
//! registered sites, and ingest on an ephemeral port.

#![allow(dead_code)] // each test binary uses a part

use harness::RedisServer;
use schema::Shard;
use schema::ops::CancellationToken;
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use std::time::Duration;
use tally_ingest::{IngestConfig, run};
use tokio::net::TcpListener;

/// A running ingest.
pub struct Ingest {
    pub conn: RedisConn,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Start ingest against `redis` with `sites` registered; `configure` may
/// change the defaults.
pub async fn start(redis: &RedisServer, sites: &[&str], configure: impl FnOnce(&mut IngestConfig)) -> Ingest {
    let opts = ConnectOptions {
        response_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(300),
    };
    let conn = RedisConn::connect(&RedisTarget::parse(&redis.url()).unwrap(), opts)
        .await
        .unwrap();
    let mut c = conn.clone();
    for site in sites {
        schema::site::add_site(&mut c, site, 0).await.unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut cfg = IngestConfig::with_addr(listener.local_addr().unwrap());
    configure(&mut cfg);
    let stop = CancellationToken::new();
    let (c2, s2) = (conn.clone(), stop.clone());
    let task = tokio::spawn(async move { run(cfg, listener, c2, None, s2).await.expect("ingest runs") });
    Ingest { conn, base, stop, task }
}

/// Events in all shard streams (an entry holds one or several).
pub async fn stored_events(conn: &mut RedisConn) -> u64 {
    let mut total = 0;
    for s in Shard::all() {
        total += shard_entries(conn, s)
            .await
            .iter()
            .map(|e| e.events.as_ref().map_or(0, Vec::len) as u64)
            .sum::<u64>();
    }
    total
}

async fn shard_entries(conn: &mut RedisConn, shard: Shard) -> Vec<schema::entry::StoredEntry> {
    schema::entry::range(conn, &shard.stream_key(), "-", "+", 100_000)
        .await
        .unwrap()
}

/// A stream entry as stored: its id and its field/value pairs in order (see
/// `schema::entry` for the layouts).
pub struct RawEntry {
    pub id: String,
    pub pairs: Vec<(String, String)>,
}

impl RawEntry {
    /// The values of `field` as stored, one per record of the entry that
    /// has it (records by value read with their layout's names).
    pub fn values(&self, field: &str) -> Vec<String> {
        let pairs: Vec<(&[u8], &[u8])> = self.pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        schema::entry::records(&pairs)
            .unwrap()
            .iter()
            .flat_map(|record| record.iter().filter(|(k, _)| *k == field.as_bytes()))
            .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
            .collect()
    }
}

/// The entries of `site`'s shard stream as stored, oldest first.
pub async fn stream_entries(conn: &mut RedisConn, site: &str) -> Vec<RawEntry> {
    let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(Shard::of_site(site).stream_key())
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply.into_iter().map(|(id, pairs)| RawEntry { id, pairs }).collect()
}

/// The decoded events in `site`'s shard stream, oldest first.
pub async fn stream_events(conn: &mut RedisConn, site: &str) -> Vec<schema::Event> {
    shard_entries(conn, Shard::of_site(site))
        .await
        .into_iter()
        .flat_map(|e| e.events.unwrap())
        .collect()
}
