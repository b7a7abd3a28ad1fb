//! The whole stack on a private Redis, for end-to-end tests.
//!
//! Starts a harness redis-server on an ephemeral port, then ingest, a
//! streamer and the gateway in this process on `127.0.0.1:0`, and offers the
//! few helpers every end-to-end test needs: post an event, wait (bounded)
//! until the streamer has applied everything, connect over the Postgres wire.

#![allow(dead_code)]

use harness::RedisServer;
use schema::ops::CancellationToken;
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Epoch milliseconds of yesterday (UTC) at `hour`:00: inside ingest's
/// timestamp window, and a whole day for the tests' buckets.
pub fn yesterday_at(hour: u32) -> i64 {
    use chrono::{Duration as Days, TimeZone, Utc};
    let day = (Utc::now() - Days::days(1)).date_naive();
    Utc.from_utc_datetime(&day.and_hms_opt(hour, 0, 0).expect("a valid hour"))
        .timestamp_millis()
}

/// Rows of a simple query as text cells (NULL as "NULL"), failing the test
/// on an error.
pub async fn text_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_owned()).collect())
            }
            _ => None,
        })
        .collect()
}

pub struct Stack {
    /// Keeps the private Redis (single node or cluster) alive.
    _redis: Box<dyn std::any::Any + Send>,
    pub conn: RedisConn,
    /// The Redis URL the services use (for the `tally` binary).
    pub redis_url: String,
    pub ingest_url: String,
    pub pg_addr: SocketAddr,
    /// Base URL of the gateway's HTTP server (query API, health, metrics).
    pub gateway_url: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

async fn local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0")
}

impl Stack {
    /// Start everything on a private single-node Redis; `sites` are
    /// registered first.
    pub async fn start(sites: &[&str]) -> Stack {
        let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
        let url = redis.url();
        Self::start_on(Box::new(redis), &url, sites, 1).await
    }

    /// Start everything against the Redis at `url` (kept alive by `redis`),
    /// with `streamers` streamer processes sharing the consumer group.
    pub async fn start_on(redis: Box<dyn std::any::Any + Send>, url: &str, sites: &[&str], streamers: usize) -> Stack {
        Self::start_full(redis, url, sites, streamers, |_| {}).await
    }

    /// Start on a private Redis with the gateway's configuration adjusted.
    pub async fn start_with_gateway(sites: &[&str], configure: impl FnOnce(&mut gateway::GatewayConfig)) -> Stack {
        let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
        let url = redis.url();
        Self::start_full(Box::new(redis), &url, sites, 1, configure).await
    }

    async fn start_full(
        redis: Box<dyn std::any::Any + Send>,
        url: &str,
        sites: &[&str],
        streamers: usize,
        configure: impl FnOnce(&mut gateway::GatewayConfig),
    ) -> Stack {
        let target = RedisTarget::parse(url).unwrap();
        let conn = RedisConn::connect(&target, ConnectOptions::default()).await.unwrap();
        let mut c = conn.clone();
        for s in sites {
            schema::site::add_site(&mut c, s, 0).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        let (ingest_l, pg_l, gw_http_l) = (local().await, local().await, local().await);
        let gateway_url = format!("http://{}", gw_http_l.local_addr().unwrap());
        let ingest_url = format!("http://{}", ingest_l.local_addr().unwrap());
        let pg_addr = pg_l.local_addr().unwrap();
        let mut icfg = ingest::IngestConfig::with_addr(ingest_l.local_addr().unwrap());
        icfg.trust_forwarded_for = true;
        icfg.country_header = Some("cf-ipcountry".into());
        let mut scfg = streamer::StreamerConfig::with_addr("127.0.0.1:0".parse().unwrap());
        scfg.claim_idle_ms = 1_000;
        let scfgs: Vec<_> = (0..streamers.max(1))
            .map(|i| {
                let mut c = scfg.clone();
                c.consumer = Some(format!("test-streamer-{i}"));
                c
            })
            .collect();
        let mut gcfg = gateway::GatewayConfig::with_addrs(pg_addr, "127.0.0.1:0".parse().unwrap());
        gcfg.shutdown_grace_secs = 1;
        // Tests read right after writing; the result cache has its own test.
        gcfg.result_cache_ms = 0;
        configure(&mut gcfg);
        let mut tasks = Vec::new();
        let (c1, s1) = (conn.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            ingest::run(icfg, ingest_l, c1, None, s1).await.expect("ingest");
        }));
        for scfg in scfgs {
            let (c2, s2) = (conn.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                streamer::run(scfg, None, c2, None, s2).await.expect("streamer");
            }));
        }
        let (c3, s3) = (conn.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            gateway::run(gcfg, pg_l, Some(gw_http_l), c3, None, s3)
                .await
                .expect("gateway");
        }));
        Stack {
            _redis: redis,
            conn,
            redis_url: url.to_owned(),
            ingest_url,
            pg_addr,
            gateway_url,
            http: reqwest::Client::new(),
            shutdown,
            tasks,
        }
    }

    /// POST a body to `/api/event` as a browser at `ip` would.
    pub async fn post(&self, body: &str, ip: &str) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(format!("{}/api/event", self.ingest_url))
            .header("content-type", "text/plain")
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")
            .header("x-forwarded-for", ip)
            .body(body.to_owned())
            .send()
            .await
            .expect("ingest answers");
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Post one page view per path of `site`, a second apart from
    /// `start_ms`, each from its own address (`<ip_prefix>.<i>`), and wait
    /// until they are applied.
    pub async fn post_pageviews(&self, site: &str, paths: &[&str], start_ms: i64, ip_prefix: &str) {
        for (i, path) in paths.iter().enumerate() {
            let body = serde_json::json!({"n": "pageview", "u": format!("https://{site}{path}"), "d": site, "ts": start_ms + i as i64 * 1000});
            let (status, answer) = self.post(&body.to_string(), &format!("{ip_prefix}.{i}")).await;
            assert_eq!(status, 202, "{answer}");
        }
        self.wait_caught_up(Duration::from_secs(20)).await;
    }

    /// Wait until every accepted event is applied, failing after `limit`.
    pub async fn wait_caught_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut conn = self.conn.clone();
        loop {
            let ks = streamer::keyspace(&mut conn).await.expect("keyspace");
            let p = streamer::progress::progress(&mut conn, ks).await.expect("XINFO");
            if p.iter().all(|s| s.caught_up()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "streamer did not catch up within {limit:?}: {p:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A tokio-postgres client connected with only user and database, as
    /// Grafana's pgx driver connects.
    pub async fn pg(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=tally dbname=tally", self.pg_addr.port()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the gateway");
        tokio::spawn(connection);
        client
    }

    /// Send `total` loadgen events over `sites` sites, fast, with event
    /// times spread over the past `backfill_hours`.
    pub async fn loadgen(
        &self,
        total: u64,
        sites: usize,
        backfill_hours: u64,
        seed: u64,
    ) -> tally::loadgen::LoadgenReport {
        let mut opts = tally::loadgen::LoadgenOptions::new(self.ingest_url.clone());
        opts.total = total;
        opts.rate = 5_000.0;
        opts.sites = sites;
        opts.concurrency = 8;
        opts.backfill_hours = backfill_hours;
        opts.seed = seed;
        tally::loadgen::run(&opts, CancellationToken::new())
            .await
            .expect("loadgen runs")
    }

    /// Run the `psql` binary with `-At -c <command>` against the gateway;
    /// returns its stdout, failing the test if psql failed.
    pub fn psql(&self, command: &str) -> String {
        let out = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.pg_addr.port().to_string()])
            .args(["-U", "tally", "-d", "tally", "-At", "-c", command])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql is installed");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stop the services (graceful) and wait for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            t.await.expect("service task");
        }
    }
}
