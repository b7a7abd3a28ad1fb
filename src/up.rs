//! `tally up`: ingest, streamer and gateway in one process.
//!
//! The three services share one Redis connection and one shutdown token;
//! SIGINT/SIGTERM stops accepting, finishes in-flight requests, batches and
//! queries, then stops the private Redis (if one was started). With `--demo`,
//! the loadgen's sites are registered and gentle traffic runs in the
//! background so the tables fill within seconds.

use crate::loadgen::{self, LoadgenOptions};
use crate::redis_setup;
use anyhow::{Context, Result};
use gateway::GatewayConfig;
use ingest::IngestConfig;
use schema::ops::{CancellationToken, PrometheusHandle};
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use std::path::PathBuf;
use streamer::StreamerConfig;
use tokio::net::TcpListener;

/// Options of `tally up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpOptions {
    #[command(flatten)]
    pub ingest: IngestConfig,
    #[command(flatten)]
    pub streamer: StreamerConfig,
    #[command(flatten)]
    pub gateway: GatewayConfig,
    /// Data directory of the private redis-server (used only when no Redis
    /// is configured or found).
    #[arg(long, env = "TALLY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address probed for a running Redis when REDIS_URL is unset.
    #[arg(long, env = "TALLY_DEFAULT_REDIS_ADDR", default_value = redis_setup::DEFAULT_REDIS_ADDR)]
    pub default_redis_addr: std::net::SocketAddr,
    /// Generate gentle demo traffic.
    #[arg(long)]
    pub demo: bool,
    /// Demo events per second.
    #[arg(long, default_value_t = 20.0)]
    pub demo_rate: f64,
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what} (is another tally running? change it with the flag or env shown in --help)"))
}

/// Run everything until a shutdown signal.
pub async fn run(opts: UpOptions, redis_url: Option<String>, metrics: Option<PrometheusHandle>) -> Result<()> {
    let resolved = redis_setup::resolve(redis_url.as_deref(), opts.default_redis_addr, opts.data_dir.clone())?;
    let target = RedisTarget::parse(&resolved.url)?;
    let conn = RedisConn::connect(&target, ConnectOptions::default()).await?;

    let mut ingest_cfg = opts.ingest.clone();
    if opts.demo {
        // The loadgen sends each simulated visitor's address as X-Forwarded-For.
        ingest_cfg.trust_forwarded_for = true;
        let mut c = conn.clone();
        let now = chrono::Utc::now().timestamp_millis();
        for site in loadgen::site_names(10) {
            schema::site::add_site(&mut c, &site, now).await?;
        }
    }
    let ingest_l = bind(ingest_cfg.addr, "ingest").await?;
    let pg_l = bind(opts.gateway.addr, "the gateway (PostgreSQL)").await?;
    let http_l = bind(opts.gateway.http_addr, "the gateway (HTTP)").await?;
    let streamer_l = bind(opts.streamer.addr, "the streamer (HTTP)").await?;
    let ingest_addr = ingest_l.local_addr()?;
    let pg_addr = pg_l.local_addr()?;
    let page_addr = http_l.local_addr()?;

    let signal = schema::ops::shutdown_signal();
    let shutdown = CancellationToken::new();
    let ingest_task = tokio::spawn(ingest::run(
        ingest_cfg,
        ingest_l,
        conn.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let streamer_task = tokio::spawn(streamer::run(
        opts.streamer.clone(),
        Some(streamer_l),
        conn.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let gateway_task = tokio::spawn(gateway::run(
        opts.gateway.clone(),
        pg_l,
        Some(http_l),
        conn.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    // One write, and a closed stdout (say, a supervisor that stopped
    // reading) must not take the services down: errors are ignored.
    let mut banner = String::new();
    banner.push_str("\nTally is up.\n");
    let private = if resolved.private.is_some() {
        " (private, AOF on)"
    } else {
        ""
    };
    banner.push_str(&format!("  Redis:    {}{private}\n", target.redacted()));
    banner.push_str(&format!("  Ingest:   http://{ingest_addr}/api/event\n"));
    banner.push_str(&format!(
        "  SQL:      psql -h {} -p {} -U tally tally\n",
        pg_addr.ip(),
        pg_addr.port()
    ));
    banner.push_str("  Try:      select * from traffic_minute order by bucket desc limit 10;\n");
    banner.push_str(&format!(
        "  Page:     http://{page_addr}/  (dashboard; HTTP query API at /api/query)\n"
    ));
    if opts.demo {
        banner.push_str(&format!(
            "  Demo:     sending {} events/s for 10 sites ({}).\n",
            opts.demo_rate,
            loadgen::site_names(10).join(", ")
        ));
    }
    banner.push_str("Stop with Ctrl-C.\n\n");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }

    let demo_task = opts.demo.then(|| {
        let mut lo = LoadgenOptions::new(format!("http://{ingest_addr}"));
        lo.rate = opts.demo_rate;
        lo.total = 0;
        lo.sites = 10;
        lo.concurrency = 4;
        lo.seed = rand::random();
        let stop = shutdown.clone();
        tokio::spawn(async move { loadgen::run(&lo, stop).await })
    });

    signal.await;
    tracing::info!("shutting down: finishing in-flight work");
    shutdown.cancel();
    if let Some(d) = demo_task {
        let _ = d.await;
    }
    let (i, s, g) = tokio::join!(ingest_task, streamer_task, gateway_task);
    i.context("ingest task")??;
    s.context("streamer task")??;
    g.context("gateway task")??;
    drop(resolved); // stops a private redis-server after the services are done
    Ok(())
}
