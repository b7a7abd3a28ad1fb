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

/// Entries in all shard streams.
pub async fn stream_length(conn: &mut RedisConn) -> u64 {
    let mut total = 0;
    for s in Shard::all() {
        let n: u64 = redis::cmd("XLEN").arg(s.stream_key()).query_async(conn).await.unwrap();
        total += n;
    }
    total
}

/// The entries of `site`'s shard stream as stored, oldest first.
pub async fn stream_entries(conn: &mut RedisConn, site: &str) -> Vec<redis::streams::StreamId> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(Shard::of_site(site).stream_key())
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply.ids
}

/// The decoded events in `site`'s shard stream, oldest first.
pub async fn stream_events(conn: &mut RedisConn, site: &str) -> Vec<schema::Event> {
    stream_entries(conn, site)
        .await
        .iter()
        .map(|e| schema::Event::from_stream_id(e).unwrap())
        .collect()
}
