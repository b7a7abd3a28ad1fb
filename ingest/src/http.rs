//! The HTTP surface of ingest: `POST /api/event` (one event, the tracker's
//! format), `POST /api/events` (a batch for server-side senders, answered
//! per event), their CORS preflight, and `GET /t.js`.
//!
//! A handler reads the body under the size limit, decodes and validates each
//! event, checks the site registry and the site's rate limit, drops bots and
//! referrer spam (answered as accepted, and counted), computes the visitor id
//! and hands the event to the group-commit writer; an event is answered 202
//! only once Redis has the entry. Every refusal is a JSON `{"error": ...}`
//! with a 4xx status; Redis trouble is a 503 with `Retry-After`, and the
//! service keeps running.

use crate::enrich::{UserAgentParser, country_from_header};
use crate::payload::{self, Limits, Rejection};
use crate::ratelimit::SiteRateLimiter;
use crate::registry::SiteRegistry;
use crate::spam::SpamList;
use crate::visitor::VisitorHasher;
use crate::writer::{EventWriter, WriteError};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Shared state of the handlers.
pub struct AppState {
    pub limits: Limits,
    pub max_body_bytes: usize,
    /// How long reading a request body may take.
    pub body_timeout: std::time::Duration,
    pub trust_forwarded_for: bool,
    /// Header carrying the client's country (set by a trusted CDN).
    pub country_header: Option<axum::http::HeaderName>,
    /// Country database, consulted when no header gave the country.
    pub geoip: Option<crate::geoip::GeoIp>,
    pub user_agents: UserAgentParser,
    /// Recent page URLs, parsed.
    pub page_urls: crate::page_url::PageUrls,
    pub registry: SiteRegistry,
    pub visitors: VisitorHasher,
    pub writer: EventWriter,
    pub spam: SpamList,
    pub rate_limit: SiteRateLimiter,
    /// Most events in one batch request.
    pub max_batch_events: usize,
    /// Metric handles, registered once rather than looked up per request.
    pub accepted: metrics::Counter,
    pub dropped_bots: metrics::Counter,
    pub dropped_spam: metrics::Counter,
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

    /// Whether the client should send the event again later.
    fn retryable(&self) -> bool {
        matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::FORBIDDEN => "unknown_site",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            _ => "invalid",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("tally_ingest_events_rejected_total", "reason" => self.kind()).increment(1);
        let mut resp = (self.status, axum::Json(serde_json::json!({ "error": self.reason }))).into_response();
        if self.retryable() {
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
        .route("/api/events", post(post_batch).options(preflight))
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
    ip_string(peer.ip())
}

/// `ip.to_string()`, with IPv4 written by hand: the standard `Display`
/// cost about 1,300 instructions per request (`INSTRUCTIONS=1
/// bench/ingest.sh`), 2.5 % of ingest's own.
fn ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(digits.format(octet));
            }
            s
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// Where an event came from: the visitor id and the enrichment derive from
/// it. For the tracker, the request itself; a batch event may name the
/// visitor's address and user agent (a server forwarding its traffic).
struct Sender {
    ip: String,
    user_agent: String,
    country: String,
}

impl Sender {
    fn of_request(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Sender {
        let ip = client_ip(state, headers, peer);
        let header_country = state
            .country_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(country_from_header);
        Sender {
            country: header_country.unwrap_or_else(|| geo_country(state, &ip)),
            ip,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// The country of `ip` from the GeoIP database, empty when unknown.
fn geo_country(state: &AppState, ip: &str) -> String {
    state.geoip.as_ref().and_then(|g| g.country(ip)).unwrap_or_default()
}

/// What became of an event that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    /// Answered as accepted but not stored (`bot`, `spam`).
    Dropped(&'static str),
}

/// The request body, under the size limit and the body timeout. A tracker's
/// body usually came in with its headers and is read at once; only a body
/// still in transit arms the timer (one per request would cost every
/// request a registration with the runtime's timer wheel).
async fn read_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let mut read = std::pin::pin!(axum::body::to_bytes(body, state.max_body_bytes));
    let read = match read.as_mut().now_or_never() {
        Some(read) => read,
        None => tokio::time::timeout(state.body_timeout, read).await.map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not received within {} s", state.body_timeout.as_secs()),
            )
        })?,
    };
    read.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {} bytes", state.max_body_bytes),
        )
    })
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("redis unavailable: {e}"))
}

/// What the checks decided for one event. A short-lived return value, moved
/// at once into the writer's queue or the batch's list: boxing the event
/// would cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
enum Checked {
    /// Valid and enriched: to be stored.
    Store(schema::Event),
    /// Answered as accepted but not stored (`bot`, `spam`).
    Dropped(&'static str),
}

/// Validate, check, enrich and store one event.
async fn ingest(state: &AppState, raw: payload::RawEvent, sender: &Sender, now: i64) -> Result<Outcome, ApiError> {
    match check(state, raw, sender, now).await? {
        Checked::Store(event) => {
            state.writer.write(event).await?;
            state.accepted.increment(1);
            Ok(Outcome::Stored)
        }
        Checked::Dropped(reason) => Ok(Outcome::Dropped(reason)),
    }
}

/// Validate, check and enrich one event.
async fn check(state: &AppState, raw: payload::RawEvent, sender: &Sender, now: i64) -> Result<Checked, ApiError> {
    let mut event = payload::validate_with(raw, now, &state.limits, Some(&state.page_urls))?;
    if !state.registry.allows(&event.site, now).await.map_err(unavailable)? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "site {:?} is not registered (tally sites add {})",
                event.site, event.site
            ),
        ));
    }
    let agent = state.user_agents.parse(&sender.user_agent);
    if agent.bot {
        state.dropped_bots.increment(1);
        return Ok(Checked::Dropped("bot"));
    }
    if !event.referrer.is_empty() && state.spam.is_spam(&schema::source::host_of(&event.referrer)) {
        state.dropped_spam.increment(1);
        return Ok(Checked::Dropped("spam"));
    }
    if !state.rate_limit.allow(&event.site, 1, now) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("site {:?} is over its rate limit", event.site),
        ));
    }
    event.visitor_id = state
        .visitors
        .visitor_id(now, &event.site, &sender.ip, &sender.user_agent)
        .await
        .map_err(unavailable)?;
    event.browser = agent.browser;
    event.os = agent.os;
    event.device = agent.device;
    event.country = sender.country.clone();
    Ok(Checked::Store(event))
}

async fn post_event(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    // The request itself rather than a `HeaderMap` extractor, which would
    // clone the headers.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let bytes = read_body(&state, body).await?;
    let raw = payload::decode(&bytes)?;
    let sender = Sender::of_request(&state, headers, peer);
    let mut resp = accepted();
    if let Outcome::Dropped(reason) = ingest(&state, raw, &sender, now_ms()).await? {
        // Dropped, counted, and answered like any other event.
        resp.headers_mut()
            .insert("x-tally-dropped", HeaderValue::from_static(reason));
    }
    Ok(resp)
}

/// The body of `POST /api/events`, decoded in one pass when every event in
/// it is well-formed (the usual case).
#[derive(serde::Deserialize)]
struct Batch {
    events: Vec<payload::RawEvent>,
}

/// The same body, event by event, so that one malformed event is refused
/// alone and the others are still stored.
#[derive(serde::Deserialize)]
struct LenientBatch {
    events: Vec<serde_json::Value>,
}

/// `POST /api/events`: `{"events": [event, ...]}`, at most
/// `max_batch_events`. Each event has the tracker's fields plus, optionally,
/// `ip` and `user_agent` of the visitor when a server forwards its traffic.
/// Answers 200 with one result per event, in order (`{"status": 202}`,
/// `{"status": 202, "dropped": "bot"}`, or the status and `error` of a
/// refusal); 503 with `Retry-After` if any event could not be stored for
/// want of Redis (the results say which, so only those are sent again).
async fn post_batch(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    // The request itself rather than a `HeaderMap` extractor, which would
    // clone the headers.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let bytes = read_body(&state, body).await?;
    let events: Vec<Result<payload::RawEvent, Rejection>> = match serde_json::from_slice::<Batch>(&bytes) {
        Ok(batch) => batch.events.into_iter().map(Ok).collect(),
        Err(_) => {
            let batch: LenientBatch = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("body is not {{\"events\": [...]}}: {e}"),
                )
            })?;
            batch
                .events
                .into_iter()
                .map(|v| serde_json::from_value(v).map_err(|e| Rejection::Json(e.to_string())))
                .collect()
        }
    };
    if events.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "events is empty"));
    }
    if events.len() > state.max_batch_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {} events per request", state.max_batch_events),
        ));
    }
    let request = Sender::of_request(&state, headers, peer);
    let now = now_ms();
    // The checks rarely wait (the site registry and the day's salt are
    // cached), so they run one after another; the events to store then go
    // to the writer together, with one reply for all of them, and share
    // group commits.
    let mut results: Vec<Result<Outcome, ApiError>> = Vec::with_capacity(events.len());
    let mut to_store = Vec::with_capacity(events.len());
    let mut stored_at = Vec::with_capacity(events.len());
    for one in events {
        let checked = match one {
            Ok(mut one) => {
                // A forwarded visitor's own address decides their country;
                // the request's header describes the forwarding server.
                let user_agent = one.user_agent.take().unwrap_or_else(|| request.user_agent.clone());
                let sender = match one.ip.take() {
                    Some(ip) => Sender {
                        country: geo_country(&state, &ip),
                        ip,
                        user_agent,
                    },
                    None => Sender {
                        ip: request.ip.clone(),
                        user_agent,
                        country: request.country.clone(),
                    },
                };
                check(&state, one, &sender, now).await
            }
            Err(rejection) => Err(rejection.into()),
        };
        results.push(match checked {
            Ok(Checked::Store(event)) => {
                stored_at.push(results.len());
                to_store.push(event);
                Ok(Outcome::Stored)
            }
            Ok(Checked::Dropped(reason)) => Ok(Outcome::Dropped(reason)),
            Err(e) => Err(e),
        });
    }
    for (at, written) in stored_at.into_iter().zip(state.writer.write_many(to_store).await) {
        match written {
            Ok(()) => state.accepted.increment(1),
            Err(e) => results[at] = Err(e.into()),
        }
    }
    let (body, retry) = batch_results(&results);
    let status = if retry {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    cors(resp.headers_mut());
    Ok(resp)
}

/// The batch answer, `{"accepted": n, "dropped": n, "rejected": n,
/// "results": [...]}`, written directly (most results are the same
/// `{"status":202}`), and whether any event should be sent again.
fn batch_results(results: &[Result<Outcome, ApiError>]) -> (String, bool) {
    let mut counts = [0u64; 3]; // accepted, dropped, refused
    let mut retry = false;
    let mut items = String::with_capacity(results.len() * 16);
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            items.push(',');
        }
        match r {
            Ok(Outcome::Stored) => {
                counts[0] += 1;
                items.push_str(r#"{"status":202}"#);
            }
            Ok(Outcome::Dropped(reason)) => {
                counts[1] += 1;
                items.push_str(&serde_json::json!({"status": 202, "dropped": reason}).to_string());
            }
            Err(e) => {
                counts[2] += 1;
                retry |= e.retryable();
                metrics::counter!("tally_ingest_events_rejected_total", "reason" => e.kind()).increment(1);
                items.push_str(&serde_json::json!({"status": e.status.as_u16(), "error": e.reason}).to_string());
            }
        }
    }
    let body = format!(
        r#"{{"accepted":{},"dropped":{},"rejected":{},"results":[{items}]}}"#,
        counts[0], counts[1], counts[2]
    );
    (body, retry)
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

#[cfg(test)]
mod tests {
    use super::ip_string;
    use std::net::IpAddr;

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.12.250",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }
}
