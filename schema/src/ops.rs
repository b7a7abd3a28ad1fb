//! Operational endpoints and lifecycle shared by every service.
//!
//! Each service serves `/healthz` (200 when it can do its work, 503 with a
//! JSON reason when not) and `/metrics` (Prometheus text from the process's
//! one recorder), and stops on one [`CancellationToken`] that the binary
//! cancels on SIGINT/SIGTERM. Keeping these here means the three services
//! behave alike for an operator.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
pub use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
pub use tokio_util::sync::CancellationToken;

/// A health probe: `Ok(())` when healthy, else the reason.
pub type HealthCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    service: &'static str,
    metrics: Option<PrometheusHandle>,
    health: HealthCheck,
}

/// Router with `/healthz` and `/metrics`.
pub fn ops_router(service: &'static str, metrics: Option<PrometheusHandle>, health: HealthCheck) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState {
            service,
            metrics,
            health,
        })
}

async fn healthz(State(s): State<OpsState>) -> Response {
    match (s.health)().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok", "service": s.service})),
        )
            .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable", "service": s.service, "reason": reason})),
        )
            .into_response(),
    }
}

async fn render_metrics(State(s): State<OpsState>) -> Response {
    match s.metrics {
        Some(h) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed\n").into_response(),
    }
}

/// A health check that PINGs Redis.
pub fn redis_health(conn: crate::store::RedisConn) -> HealthCheck {
    Arc::new(move || {
        let mut c = conn.clone();
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| format!("redis: {e}"))
        })
    })
}

/// A future that resolves when SIGINT or SIGTERM arrives. The handlers are
/// installed when this function is called (not when the future is first
/// polled), so a signal that arrives right after startup is not lost to the
/// default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {},
                _ = wait(term) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
    }
}
