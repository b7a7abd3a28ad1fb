//! Gateway: Tally's aggregates as SQL tables over the PostgreSQL protocol.
//!
//! psql, BI tools and Grafana connect with their own drivers; queries run in
//! DataFusion over table providers that compute exactly which Redis keys to
//! read from the query's filters.
//!
//! - [`pushdown`]: filters on `site`/`bucket` -> scan bounds (pure).
//! - [`keymap`]: reading report rows from Redis for given bounds.
//! - [`tables`]: the DataFusion table providers, generated from the catalog.
//! - [`engine`]: planning and executing SQL.
//! - [`pg`]: the pgwire handlers, encoding and accept loop.
//! - [`pg_catalog`]: the system catalog clients discover tables through.
//! - [`rewrite`]: PostgreSQL idioms and per-connection functions -> plain SQL.
//! - [`http`]: the HTTP query API and ready report endpoints.
//! - [`result_cache`]: recent small results, for dashboard refreshes.
//! - [`tenant`]: the sites a query may read, enforced in every provider.
//! - [`tls`]: rustls from PEM files for the wire protocol.
//! - [`error`]: the one error -> SQLSTATE mapping.

pub mod engine;
pub mod error;
pub mod http;
pub mod keymap;
pub mod pg;
pub mod pg_catalog;
pub mod pushdown;
pub mod result_cache;
pub mod rewrite;
pub mod tables;
pub mod tenant;
pub mod tls;
pub mod users;

use schema::ops::{CancellationToken, PrometheusHandle, ops_router, redis_health};
use schema::store::RedisConn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Gateway configuration (flags and environment).
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Address of the PostgreSQL protocol listener.
    #[arg(
        id = "gateway_addr",
        long = "gateway-addr",
        env = "TALLY_GATEWAY_ADDR",
        default_value = "127.0.0.1:5433"
    )]
    pub addr: SocketAddr,
    /// Address of the gateway's HTTP server (/api/query, /api/report/*,
    /// /healthz, /metrics).
    #[arg(
        id = "gateway_http_addr",
        long = "gateway-http-addr",
        env = "TALLY_GATEWAY_HTTP_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub http_addr: SocketAddr,
    /// Most buckets of one site a single scan may read.
    #[arg(long, env = "TALLY_MAX_BUCKETS", default_value_t = 200_000)]
    pub max_buckets: usize,
    /// How long a small query result is reused for the same statement
    /// (dashboard refreshes); 0 turns the cache off.
    #[arg(long, env = "TALLY_RESULT_CACHE_MS", default_value_t = 1000)]
    pub result_cache_ms: u64,
    /// How wire connections authenticate: auto (SCRAM-SHA-256 once any user
    /// exists, trusted development mode before), scram or trust.
    #[arg(long, env = "TALLY_AUTH", value_enum, default_value_t = pg::auth::AuthMode::Auto)]
    pub auth: pg::auth::AuthMode,
    /// PEM certificate chain for TLS on the PostgreSQL listener.
    #[arg(long, env = "TALLY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the certificate.
    #[arg(long, env = "TALLY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Close wire connections idle (no statement running) for this long;
    /// 0 keeps them open.
    #[arg(long, env = "TALLY_IDLE_TIMEOUT_SECS", default_value_t = 3600)]
    pub idle_timeout_secs: u64,
    /// Most open wire connections; the next ones are refused with 53300.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", default_value_t = 500)]
    pub max_connections: usize,
    /// Memory one query may use for sorts, joins and aggregations, in MiB;
    /// past it the query fails with 53200 and others go on.
    #[arg(long, env = "TALLY_QUERY_MEMORY_MB", default_value_t = 512)]
    pub query_memory_mb: usize,
    /// Refuse connections that do not use TLS (28000).
    #[arg(long, env = "TALLY_TLS_REQUIRED")]
    pub tls_required: bool,
    /// Most rows one HTTP API answer carries (it says when it was cut).
    #[arg(long, env = "TALLY_HTTP_MAX_ROWS", default_value_t = 10_000)]
    pub http_max_rows: usize,
    /// Longest a statement may run before it is cancelled (SQLSTATE 57014);
    /// clients may lower it with `SET statement_timeout`. 0 = no limit.
    #[arg(long, env = "TALLY_STATEMENT_TIMEOUT_SECS", default_value_t = 60)]
    pub statement_timeout_secs: u64,
    /// How long running queries may take to finish on shutdown.
    #[arg(long, env = "TALLY_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl GatewayConfig {
    pub fn with_addrs(addr: SocketAddr, http_addr: SocketAddr) -> Self {
        GatewayConfig {
            addr,
            http_addr,
            max_buckets: 200_000,
            statement_timeout_secs: 60,
            http_max_rows: 10_000,
            auth: pg::auth::AuthMode::Auto,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            max_connections: 500,
            idle_timeout_secs: 3600,
            query_memory_mb: 512,
            result_cache_ms: 1000,
            shutdown_grace_secs: 10,
        }
    }
}

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayStartError {
    #[error("gateway server failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error("gateway engine: {0}")]
    Engine(#[from] error::GatewayError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Serve the Postgres protocol on `pg_listener` (and ops on `http_listener`)
/// until `shutdown`.
pub async fn run(
    cfg: GatewayConfig,
    pg_listener: TcpListener,
    http_listener: Option<TcpListener>,
    conn: RedisConn,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), GatewayStartError> {
    // TLS first: a bad certificate stops the gateway before it listens.
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        (None, None) if cfg.tls_required => {
            return Err(tls::TlsError::Config("--tls-required needs --tls-cert and --tls-key".into()).into());
        }
        (None, None) => None,
        _ => return Err(tls::TlsError::Config("--tls-cert and --tls-key go together".into()).into()),
    };
    let mut reader = keymap::KeymapReader::new(conn.clone());
    reader.max_buckets = cfg.max_buckets;
    let engine = Arc::new(engine::QueryEngine::new(reader)?.with_query_memory(cfg.query_memory_mb << 20));
    let statement_timeout = (cfg.statement_timeout_secs > 0).then(|| Duration::from_secs(cfg.statement_timeout_secs));
    let handler = Arc::new(pg::PgHandler::new(
        engine.clone(),
        statement_timeout,
        Arc::new(result_cache::ResultCache::new(
            Duration::from_millis(cfg.result_cache_ms),
            10_000,
            1_024,
        )),
    ));
    let users = users::UserStore::new(conn.clone());
    match (cfg.auth, users.any().await) {
        (pg::auth::AuthMode::Trust, _) | (pg::auth::AuthMode::Auto, Ok(false)) => tracing::warn!(
            "no users defined (or --auth trust): connections are not authenticated and see every site; \
             add one with `tally users add`"
        ),
        _ => {}
    }
    let factory = Arc::new(pg::HandlerFactory {
        auth: Arc::new(pg::auth::Authenticator::new(
            cfg.auth,
            users.clone(),
            handler.cancels.clone(),
            cfg.tls_required,
            cfg.max_connections,
        )),
        handler,
    });
    let api = http::ApiState {
        engine,
        users,
        auth: cfg.auth,
        max_rows: cfg.http_max_rows,
        statement_timeout,
    };
    let http = http_listener.map(|l| {
        let app = ops_router("gateway", metrics, redis_health(conn.clone())).merge(http::router(api));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    });
    tracing::info!(addr = %pg_listener.local_addr()?, "gateway listening (PostgreSQL protocol)");
    pg::server::serve(
        pg_listener,
        factory,
        tls,
        (cfg.idle_timeout_secs > 0).then(|| Duration::from_secs(cfg.idle_timeout_secs)),
        shutdown,
        Duration::from_secs(cfg.shutdown_grace_secs),
    )
    .await;
    if let Some(h) = http {
        let _ = h.await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}
