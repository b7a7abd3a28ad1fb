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

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
