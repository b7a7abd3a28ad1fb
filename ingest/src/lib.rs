//! Ingest: the HTTP collection endpoint of Tally.
//!
//! Trackers and server-side senders `POST` events; ingest validates them,
//! derives the path and a cookieless visitor id, and appends each to its
//! site's shard stream in Redis, answering 202 only after Redis accepted it.
//!
//! - [`payload`]: decoding and validation rules (pure, unit-tested).
//! - [`enrich`]: browser, OS, device and bots from the user agent; country.
//! - [`geoip`]: country from a MaxMind-format database, when configured.
//! - [`visitor`]: the daily-salted visitor id.
//! - [`registry`]: the cached site allow-list.
//! - [`writer`]: group commit of events into pipelined `XADD`s.
//! - [`http`]: the routes and their error answers.
//! - [`serve`]: the accept loop and its connection limits and timeouts.

pub mod enrich;
pub mod geoip;
pub mod http;
pub mod page_url;
pub mod payload;
pub mod ratelimit;
pub mod recent;
pub mod registry;
pub mod serve;
pub mod spam;
pub mod tracker;
pub mod visitor;
pub mod writer;

use schema::ops::PrometheusHandle;
use schema::ops::{CancellationToken, ops_router, redis_health};
use schema::store::RedisConn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Ingest configuration (flags and environment).
#[derive(Debug, Clone, clap::Args)]
pub struct IngestConfig {
    /// Address the HTTP server listens on.
    #[arg(
        id = "ingest_addr",
        long = "ingest-addr",
        env = "TALLY_INGEST_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: SocketAddr,
    /// Largest accepted request body, in bytes (larger bodies get 413).
    #[arg(long, env = "TALLY_MAX_BODY_BYTES", default_value_t = 65_536)]
    pub max_body_bytes: usize,
    /// Take the client address from the first X-Forwarded-For hop. Only set
    /// this behind a proxy that overwrites the header.
    #[arg(long, env = "TALLY_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Header with the client's two-letter country code, set by a CDN in
    /// front of ingest (e.g. CF-IPCountry). Only set it when that CDN
    /// overwrites the header.
    #[arg(long, env = "TALLY_COUNTRY_HEADER")]
    pub country_header: Option<String>,
    /// MaxMind-format database (GeoLite2/GeoIP2 Country or City `.mmdb`)
    /// giving the country of the client address when no country header
    /// does.
    #[arg(long, env = "TALLY_GEOIP_DB")]
    pub geoip_db: Option<std::path::PathBuf>,
    /// Accept events for sites not in the registry (and register them).
    #[arg(long, env = "TALLY_OPEN_COLLECTION")]
    pub open_collection: bool,
    /// Capacity of the write queue; when full, requests get 503.
    #[arg(long, env = "TALLY_INGEST_QUEUE", default_value_t = 16_384)]
    pub queue: usize,
    /// Per-site rate limit of this process, events per second (bursts of
    /// twice that); over it, events get 429. 0 = no limit.
    #[arg(long, env = "TALLY_SITE_RATE_LIMIT", default_value_t = 0.0)]
    pub site_rate_limit: f64,
    /// Most events in one `POST /api/events` request.
    #[arg(long, env = "TALLY_MAX_BATCH_EVENTS", default_value_t = 100)]
    pub max_batch_events: usize,
    /// Oldest event time accepted, in hours before now (raise it to import
    /// history through the batch endpoint).
    #[arg(long, env = "TALLY_MAX_EVENT_AGE_HOURS", default_value_t = 72)]
    pub max_event_age_hours: u32,
    /// File of extra referrer-spam domains, one per line (the built-in list
    /// is always on).
    #[arg(long, env = "TALLY_SPAM_LIST")]
    pub spam_list: Option<std::path::PathBuf>,
    /// Most open HTTP connections; one more is answered 503 and closed.
    #[arg(long, env = "TALLY_INGEST_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub ingest_max_connections: usize,
    /// Request headers must arrive within this many seconds of the
    /// connection opening or of the previous response (slow or silent
    /// clients are dropped; idle kept-alive connections closed).
    #[arg(long, env = "TALLY_INGEST_HEADER_TIMEOUT_SECS", default_value_t = 15)]
    pub ingest_header_timeout_secs: u64,
    /// A request body must arrive within this many seconds (else 408).
    #[arg(long, env = "TALLY_INGEST_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub ingest_body_timeout_secs: u64,
    /// Largest request head (request line and headers), in bytes (else 431).
    #[arg(long, env = "TALLY_MAX_HEADER_BYTES", default_value_t = 16_384)]
    pub max_header_bytes: usize,
}

impl IngestConfig {
    /// Defaults, for tests and embedding.
    pub fn with_addr(addr: SocketAddr) -> Self {
        IngestConfig {
            addr,
            max_body_bytes: 65_536,
            trust_forwarded_for: false,
            country_header: None,
            geoip_db: None,
            open_collection: false,
            queue: 16_384,
            site_rate_limit: 0.0,
            max_batch_events: 100,
            max_event_age_hours: 72,
            spam_list: None,
            ingest_max_connections: 10_000,
            ingest_header_timeout_secs: 15,
            ingest_body_timeout_secs: 10,
            max_header_bytes: 16_384,
        }
    }
}

/// Errors that stop ingest.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("ingest server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serve ingest on `listener` until `shutdown` is cancelled; then stop
/// accepting, finish in-flight requests and write every queued event.
pub async fn run(
    cfg: IngestConfig,
    listener: TcpListener,
    conn: RedisConn,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let country_header = cfg
        .country_header
        .as_deref()
        .map(axum::http::HeaderName::try_from)
        .transpose()
        .map_err(|e| IngestError::Config(format!("--country-header: {e}")))?;
    let spam = match &cfg.spam_list {
        Some(path) => spam::SpamList::with_extra(
            &std::fs::read_to_string(path)
                .map_err(|e| IngestError::Config(format!("--spam-list {}: {e}", path.display())))?,
        ),
        None => spam::SpamList::default(),
    };
    let geoip = match &cfg.geoip_db {
        Some(path) => {
            let db = geoip::GeoIp::open(path).map_err(|e| IngestError::Config(e.to_string()))?;
            tracing::info!(path = %path.display(), database = db.database_type(), "GeoIP database loaded");
            Some(db)
        }
        None => None,
    };
    if cfg.max_batch_events == 0 {
        return Err(IngestError::Config("--max-batch-events must be at least 1".into()));
    }
    let (writer, writer_task) = writer::EventWriter::spawn(
        conn.clone(),
        writer::WriterOptions {
            queue: cfg.queue,
            ..Default::default()
        },
    );
    let state = Arc::new(http::AppState {
        limits: payload::Limits {
            max_past_ms: i64::from(cfg.max_event_age_hours) * 3_600_000,
            ..payload::Limits::default()
        },
        max_body_bytes: cfg.max_body_bytes,
        body_timeout: Duration::from_secs(cfg.ingest_body_timeout_secs.max(1)),
        trust_forwarded_for: cfg.trust_forwarded_for,
        country_header,
        geoip,
        user_agents: enrich::UserAgentParser::default(),
        page_urls: page_url::PageUrls::default(),
        registry: registry::SiteRegistry::new(conn.clone(), cfg.open_collection),
        visitors: visitor::VisitorHasher::new(conn.clone()),
        writer,
        spam,
        rate_limit: ratelimit::SiteRateLimiter::new(cfg.site_rate_limit, 2.0 * cfg.site_rate_limit),
        max_batch_events: cfg.max_batch_events,
        accepted: metrics::counter!("tally_ingest_events_accepted_total"),
        dropped_bots: metrics::counter!("tally_ingest_events_dropped_total", "reason" => "bot"),
        dropped_spam: metrics::counter!("tally_ingest_events_dropped_total", "reason" => "spam"),
    });
    let refresher = tokio::spawn(refresh_registry(state.clone(), shutdown.clone()));
    let app = http::router(state.clone()).merge(ops_router("ingest", metrics, redis_health(conn)));
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    let limits = serve::ConnLimits {
        max_connections: cfg.ingest_max_connections,
        header_timeout: Duration::from_secs(cfg.ingest_header_timeout_secs.max(1)),
        max_header_bytes: cfg.max_header_bytes.max(1024),
    };
    serve::serve(listener, app, limits, shutdown.clone()).await?;
    refresher.abort();
    // The router (and its writer handles) are gone; dropping the last handle
    // closes the queue, and the writer drains it before ending.
    drop(state);
    let _ = writer_task.await;
    tracing::info!("ingest stopped");
    Ok(())
}

async fn refresh_registry(state: Arc<http::AppState>, shutdown: CancellationToken) {
    loop {
        if let Err(e) = state.registry.refresh().await {
            tracing::debug!(error = %e, "site registry refresh failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
