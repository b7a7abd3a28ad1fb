//! Streamer: folds the event streams into the key-map, exactly once.
//!
//! One consumer group per keyspace version reads all shard streams; any
//! number of streamer processes join it and share the work. Each batch is
//! pre-aggregated in memory and applied together with its `XACK` by one
//! server-side script that first checks the batch is still pending for this
//! consumer, so no batch is ever counted twice or lost, whatever crashes.
//!
//! - [`aggregate`]: batch -> per-key deltas (pure, order-independent).
//! - [`apply`]: the exactly-once apply script and its client side.
//! - [`consumer`]: the per-shard read / reclaim / apply loop.
//! - [`ttl_cache`], [`member_cache`]: what a shard loop's applied batches
//!   already did to sketches (lifetimes set, members added), left out of
//!   later batches.
//! - [`progress`]: lag and pending entries per shard.
//! - [`retention`]: stream trimming that never drops unapplied entries;
//!   removal of consumers of dead processes.
//! - [`rules`]: the processing rules of a keyspace version.
//! - [`replay`]: rebuild the reports into a new version and switch to it.
//! - [`verify`]: recompute the reports from the streams and diff them.

pub mod aggregate;
pub mod apply;
pub mod consumer;
pub mod member_cache;
pub mod progress;
pub mod replay;
pub mod retention;
pub mod rules;
pub mod sessions;
pub mod ttl_cache;
pub mod verify;
mod xinfo;

use schema::ops::PrometheusHandle;
use schema::ops::{CancellationToken, ops_router, redis_health};
use schema::store::RedisConn;
use schema::{Keyspace, Shard};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// Streamer configuration (flags and environment).
#[derive(Debug, Clone, clap::Args)]
pub struct StreamerConfig {
    /// Address of the streamer's /healthz and /metrics.
    #[arg(
        id = "streamer_addr",
        long = "streamer-addr",
        env = "TALLY_STREAMER_ADDR",
        default_value = "127.0.0.1:8082"
    )]
    pub addr: SocketAddr,
    /// Consumer name in the group; must be unique per running process.
    /// Defaults to host-pid-random.
    #[arg(long, env = "TALLY_CONSUMER")]
    pub consumer: Option<String>,
    /// Most events per batch.
    #[arg(long, env = "TALLY_BATCH", default_value_t = 1000)]
    pub batch: usize,
    /// Reclaim entries another consumer left pending for this many ms.
    #[arg(long, env = "TALLY_CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// Keep minute buckets this many hours.
    #[arg(long, env = "TALLY_MINUTE_RETENTION_HOURS", default_value_t = 48)]
    pub minute_retention_hours: u64,
    /// Keep hour buckets this many days (0 = forever).
    #[arg(long, env = "TALLY_HOUR_RETENTION_DAYS", default_value_t = 0)]
    pub hour_retention_days: u64,
    /// Keep day buckets this many days (0 = forever).
    #[arg(long, env = "TALLY_DAY_RETENTION_DAYS", default_value_t = 0)]
    pub day_retention_days: u64,
    /// Keep raw events in the streams this many hours (0 = forever). Events
    /// not yet applied by every consumer group are kept regardless.
    #[arg(long, env = "TALLY_STREAM_RETENTION_HOURS", default_value_t = 168)]
    pub stream_retention_hours: u64,
    /// Keep a session's merged facts this many hours after its last event
    /// was applied; a later event of that session starts a new visit.
    #[arg(long, env = "TALLY_SESSION_STATE_HOURS", default_value_t = 26)]
    pub session_state_hours: u64,
}

impl StreamerConfig {
    pub fn with_addr(addr: SocketAddr) -> Self {
        StreamerConfig {
            addr,
            consumer: None,
            batch: 1000,
            claim_idle_ms: 30_000,
            minute_retention_hours: 48,
            hour_retention_days: 0,
            day_retention_days: 0,
            stream_retention_hours: 168,
            session_state_hours: 26,
        }
    }

    /// The consume loop's options from these flags.
    pub fn options(&self) -> consumer::ConsumerOptions {
        let name = self.consumer.clone().unwrap_or_else(default_consumer_name);
        let mut o = consumer::ConsumerOptions::new(name);
        o.batch = self.batch.max(1);
        o.claim_idle = Duration::from_millis(self.claim_idle_ms);
        o.claim_every = o.claim_idle.min(Duration::from_secs(5)).max(Duration::from_millis(100));
        o.retention = aggregate::Retention {
            minute_secs: self.minute_retention_hours * 3600,
            hour_secs: self.hour_retention_days * 86_400,
            day_secs: self.day_retention_days * 86_400,
            session_secs: self.session_state_hours.max(1) * 3600,
        };
        o
    }
}

/// `host-pid-xxxx`: unique per process, readable in `XINFO CONSUMERS`.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// Errors that stop the streamer.
#[derive(Debug, thiserror::Error)]
pub enum StreamerError {
    #[error("streamer ops server failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] schema::store::StoreError),
}

/// Consume until `shutdown`; batches in progress are finished first.
///
/// The streamer builds the active keyspace version with that version's
/// rules. When a replay switches the active version, the shard loops finish
/// their batch and start again on the new version's consumer group, which
/// the replay has brought up to date.
pub async fn run(
    cfg: StreamerConfig,
    ops_listener: Option<TcpListener>,
    conn: RedisConn,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), StreamerError> {
    let base = cfg.options();
    let ops = ops_listener.map(|l| {
        let app = ops_router("streamer", metrics, redis_health(conn.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    });
    let maintenance = tokio::spawn(maintain(
        conn.clone(),
        Duration::from_secs(cfg.stream_retention_hours * 3600),
        shutdown.clone(),
    ));
    while let Some((ks, rules)) = active_with_rules(&conn, &shutdown).await {
        tracing::info!(consumer = %base.consumer, group = %ks.group(), rules = ?rules.spec(), "streamer started");
        let mut opts = base.clone();
        opts.rules = std::sync::Arc::new(rules);
        let epoch = shutdown.child_token();
        let tasks: Vec<_> = Shard::all()
            .map(|shard| {
                tokio::spawn(consumer::run_shard(
                    conn.clone(),
                    ks,
                    shard,
                    opts.clone(),
                    epoch.clone(),
                ))
            })
            .collect();
        let watcher = tokio::spawn(watch_keyspace(conn.clone(), ks, epoch.clone()));
        for t in tasks {
            let _ = t.await;
        }
        epoch.cancel();
        let _ = watcher.await;
        if shutdown.is_cancelled() {
            break;
        }
        tracing::info!(from = %ks.group(), "active keyspace changed; switching");
    }
    let _ = maintenance.await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    tracing::info!("streamer stopped");
    Ok(())
}

/// The active version and its rules, retried until Redis answers; `None` on
/// shutdown.
async fn active_with_rules(conn: &RedisConn, shutdown: &CancellationToken) -> Option<(Keyspace, rules::Rules)> {
    loop {
        let mut c = conn.clone();
        let got = match schema::store::active_keyspace(&mut c).await {
            Ok(ks) => rules::Rules::load(&mut c, ks)
                .await
                .map(|r| (ks, r))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match got {
            Ok(found) => return Some(found),
            Err(e) => tracing::warn!(error = %e, "cannot read the keyspace version and its rules; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Cancel `epoch` when the active version is no longer `ks`.
async fn watch_keyspace(conn: RedisConn, ks: Keyspace, epoch: CancellationToken) {
    let mut conn = conn;
    loop {
        tokio::select! {
            _ = epoch.cancelled() => return,
            _ = tokio::time::sleep(KEYSPACE_POLL) => {}
        }
        if let Ok(active) = schema::store::active_keyspace(&mut conn).await
            && active != ks
        {
            epoch.cancel();
            return;
        }
    }
}

/// How often a streamer looks for a switch of the active version.
pub const KEYSPACE_POLL: Duration = Duration::from_millis(500);

/// Keyspace the streamer is building, for callers that wait on progress.
pub async fn keyspace(conn: &mut RedisConn) -> Result<Keyspace, schema::store::StoreError> {
    schema::store::active_keyspace(conn).await
}

/// Once a minute: trim the streams to their retention, remove consumers of
/// dead processes and consumer groups of retired or abandoned keyspace
/// versions (a group left behind would hold back trimming forever). Every
/// streamer runs it; the operations are idempotent.
async fn maintain(conn: RedisConn, retention: Duration, shutdown: CancellationToken) {
    let mut conn = conn;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let Ok(ks) = schema::store::active_keyspace(&mut conn).await else {
            continue;
        };
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        for shard in Shard::all() {
            if !retention.is_zero() {
                match retention::trim_shard(&mut conn, shard, retention, now).await {
                    Ok(n) if n > 0 => {
                        metrics::counter!("tally_streamer_trimmed_total").increment(n);
                        tracing::debug!(shard = %shard, trimmed = n, "trimmed stream");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(shard = %shard, error = %e, "XTRIM failed"),
                }
            }
            match retention::remove_stale_consumers(&mut conn, shard, &ks.group(), retention::STALE_CONSUMER).await {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(shard = %shard, consumers = ?gone, "removed idle consumers")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(shard = %shard, error = %e, "consumer cleanup failed"),
            }
            match replay::remove_stale_groups(&mut conn, shard, ks).await {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(shard = %shard, groups = ?gone, "removed groups of old keyspaces")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(shard = %shard, error = %e, "group cleanup failed"),
            }
        }
    }
}
