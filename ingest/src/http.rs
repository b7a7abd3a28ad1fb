//! The HTTP surface of ingest: `POST /api/event` and its CORS preflight.
//!
//! A handler reads the body under the size limit, decodes and validates it,
//! checks the site registry, computes the visitor id and hands the event to
//! the group-commit writer; it answers 202 only once Redis has the entry.
//! Every refusal is a JSON `{"error": ...}` with a 4xx status; Redis trouble
//! is a 503 with `Retry-After`, and the service keeps running.

use crate::enrich::{UserAgentParser, country_from_header};
use crate::payload::{self, Limits, Rejection};
use crate::registry::SiteRegistry;
use crate::visitor::VisitorHasher;
use crate::writer::{EventWriter, WriteError};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;

/// Shared state of the handlers.
pub struct AppState {
    pub limits: Limits,
    pub max_body_bytes: usize,
    pub trust_forwarded_for: bool,
    /// Header carrying the client's country (set by a trusted CDN).
    pub country_header: Option<axum::http::HeaderName>,
    pub user_agents: UserAgentParser,
    pub registry: SiteRegistry,
    pub visitors: VisitorHasher,
    pub writer: EventWriter,
    /// Metric handles, registered once rather than looked up per request.
    pub accepted: metrics::Counter,
    pub dropped_bots: metrics::Counter,
}

/// An error answer: status and reason.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
        }
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::FORBIDDEN => "unknown_site",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "invalid",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("tally_ingest_events_rejected_total", "reason" => self.kind()).increment(1);
        let mut resp = (self.status, axum::Json(serde_json::json!({ "error": self.reason }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        cors(resp.headers_mut());
        resp
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, r.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// The event routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/event", post(post_event).options(preflight))
        .route("/t.js", get(crate::tracker::serve))
        .with_state(state)
}

fn cors(h: &mut HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
}

async fn preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The client address: the first `X-Forwarded-For` hop when trusted, else
/// the socket peer.
fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> String {
    if state.trust_forwarded_for
        && let Some(first) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    {
        return first.to_owned();
    }
    peer.ip().to_string()
}

async fn post_event(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {} bytes", state.max_body_bytes),
        )
    })?;
    let now = now_ms();
    let mut event = payload::validate(payload::decode(&bytes)?, now, &state.limits)?;
    let allowed = state
        .registry
        .allows(&event.site, now)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("redis unavailable: {e}")))?;
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "site {:?} is not registered (tally sites add {})",
                event.site, event.site
            ),
        ));
    }
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let agent = state.user_agents.parse(ua);
    if agent.bot {
        // Dropped, counted, and answered like any other event.
        state.dropped_bots.increment(1);
        let mut resp = accepted();
        resp.headers_mut()
            .insert("x-tally-dropped", HeaderValue::from_static("bot"));
        return Ok(resp);
    }
    let ip = client_ip(&state, &headers, peer);
    let country = state
        .country_header
        .as_ref()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .and_then(country_from_header)
        .unwrap_or_default();
    event.visitor_id = state
        .visitors
        .visitor_id(now, &event.site, &ip, ua)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("redis unavailable: {e}")))?;
    event.browser = agent.browser;
    event.os = agent.os;
    event.device = agent.device;
    event.country = country;
    state.writer.write(event).await?;
    state.accepted.increment(1);
    Ok(accepted())
}

/// The 202 answer: a constant body, built without serialising anything.
fn accepted() -> Response {
    let mut resp = (StatusCode::ACCEPTED, ACCEPTED_BODY).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    cors(h);
    resp
}

const ACCEPTED_BODY: &str = r#"{"status":"accepted"}"#;
