//! The HTTP query API beside the wire protocol (the original design's
//! micro service in front of the UI).
//!
//! `POST /api/query` takes `{"sql": ..., "params": [...]}` and answers the
//! column names with their PostgreSQL types and the rows as JSON, through
//! the same engine, SQL rewrite and limits as a wire connection: read-only,
//! the operator's statement timeout, and at most `max_rows` rows (the answer
//! says when it was cut). A few ready report endpoints run fixed SQL with
//! bound parameters, so a page needs no SQL of its own:
//!
//! - `GET /api/sites`
//! - `GET /api/report/summary?site=&from=&to=`: headline figures.
//! - `GET /api/report/timeseries?site=&from=&to=&grain=hour`
//! - `GET /api/report/top?site=&report=pages&from=&to=&limit=10[&dimension=path]`
//! - `GET /`: the built-in dashboard page, which reads only these.
//!
//! Errors are JSON `{"error", "sqlstate"}` with a 4xx status (503 when
//! Redis is unavailable).

use crate::engine::{Command, DATABASE, QueryEngine};
use crate::error::{GatewayError, sqlstate};
use crate::pg::session::SessionSettings;
use crate::rewrite::SessionView;
use crate::tenant::TenantScope;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the HTTP API.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<QueryEngine>,
    /// Users and API tokens (bearer authentication).
    pub users: crate::users::UserStore,
    pub auth: crate::pg::auth::AuthMode,
    pub max_rows: usize,
    pub statement_timeout: Option<Duration>,
}

/// The API's routes (merged into the gateway's HTTP server).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/query", post(query))
        .route("/api/sites", get(sites))
        .route("/api/report/summary", get(summary))
        .route("/api/report/timeseries", get(timeseries))
        .route("/api/report/top", get(top))
        .route("/", get(page))
        .with_state(state)
}

/// A refusal with its SQLSTATE.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    sqlstate: String,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            sqlstate: "22023".into(),
            message: message.into(),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let code = sqlstate(&e);
        let status = match code {
            "25006" | "42501" => StatusCode::FORBIDDEN,
            "57014" => StatusCode::REQUEST_TIMEOUT,
            "58000" => StatusCode::SERVICE_UNAVAILABLE,
            c if c.starts_with("XX") => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match &e {
            GatewayError::DataFusion(df) => df.message().into_owned(),
            other => other.to_string(),
        };
        ApiError {
            status,
            sqlstate: code.to_owned(),
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.message, "sqlstate": self.sqlstate})),
        )
            .into_response()
    }
}

/// Body of `POST /api/query`.
#[derive(Debug, Deserialize)]
pub struct QueryRequest {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<Value>,
}

fn param(v: &Value) -> Result<ScalarValue, ApiError> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        other => return Err(ApiError::bad_request(format!("unsupported parameter {other}"))),
    })
}

/// One cell as JSON: numbers as numbers (exact decimals as strings),
/// timestamps as RFC 3339.
fn cell(v: &ScalarValue) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(i)) => json!(i),
        ScalarValue::Int16(Some(i)) => json!(i),
        ScalarValue::Int32(Some(i)) => json!(i),
        ScalarValue::Int64(Some(i)) => json!(i),
        ScalarValue::UInt8(Some(i)) => json!(i),
        ScalarValue::UInt16(Some(i)) => json!(i),
        ScalarValue::UInt32(Some(i)) => json!(i),
        ScalarValue::UInt64(Some(i)) => json!(i),
        ScalarValue::Float32(Some(f)) => json!(f),
        ScalarValue::Float64(Some(f)) => json!(f),
        ScalarValue::TimestampSecond(Some(_), _)
        | ScalarValue::TimestampMillisecond(Some(_), _)
        | ScalarValue::TimestampMicrosecond(Some(_), _)
        | ScalarValue::TimestampNanosecond(Some(_), _) => {
            let micros = v
                .cast_to(&DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    None,
                ))
                .ok()
                .and_then(|t| match t {
                    ScalarValue::TimestampMicrosecond(Some(m), _) => Some(m),
                    _ => None,
                });
            match micros.and_then(chrono::DateTime::from_timestamp_micros) {
                Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                None => Value::String(v.to_string()),
            }
        }
        ScalarValue::List(l) => {
            let items = l.value(0);
            Value::Array(
                (0..items.len())
                    .map(|i| ScalarValue::try_from_array(&items, i).map_or(Value::Null, |s| cell(&s)))
                    .collect(),
            )
        }
        other => Value::String(other.to_string()),
    }
}

/// Run one read query with bound parameters; at most `max_rows` rows.
pub async fn run_sql(state: &ApiState, scope: &TenantScope, sql: &str, params: &[Value]) -> Result<Value, ApiError> {
    let settings = SessionSettings::default();
    let view = SessionView {
        settings: &settings,
        user: "http",
        database: DATABASE,
        pid: 0,
        lookup: state.engine.lookup(),
        scope,
    };
    let plan = match state.engine.plan_single(sql, &view).await? {
        Some(Command::Query(plan)) => plan,
        Some(_) => return Err(ApiError::bad_request("only queries can run over HTTP")),
        None => return Err(ApiError::bad_request("empty query")),
    };
    let values: Vec<ScalarValue> = params.iter().map(param).collect::<Result<_, _>>()?;
    let plan = if values.is_empty() {
        plan
    } else {
        plan.with_param_values(values).map_err(GatewayError::from)?
    };
    let names = crate::pg::names::postgres_names(&plan)
        .unwrap_or_else(|| plan.schema().fields().iter().map(|f| f.name().clone()).collect());
    let columns: Vec<Value> = plan
        .schema()
        .fields()
        .iter()
        .zip(&names)
        .map(|(f, n)| json!({"name": n, "type": crate::pg::encode::pg_type(f.data_type()).name()}))
        .collect();
    let collect = async {
        let mut stream = state.engine.execute(plan, scope).await?;
        let mut rows: Vec<Value> = Vec::new();
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch: RecordBatch = batch.map_err(GatewayError::from)?;
            for r in 0..batch.num_rows() {
                if rows.len() == state.max_rows {
                    truncated = true;
                    break;
                }
                let row: Vec<Value> = batch
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, r).map_or(Value::Null, |v| cell(&v)))
                    .collect();
                rows.push(Value::Array(row));
            }
            if truncated {
                break;
            }
        }
        Ok::<_, GatewayError>((rows, truncated))
    };
    let (rows, truncated) = match state.statement_timeout {
        Some(limit) => tokio::time::timeout(limit, collect).await.map_err(|_| ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            sqlstate: "57014".into(),
            message: "canceling statement due to statement timeout".into(),
        })??,
        None => collect.await?,
    };
    metrics::counter!("tally_gateway_http_queries_total").increment(1);
    Ok(json!({"columns": columns, "rows": rows, "row_count": rows.len(), "truncated": truncated}))
}

/// The caller's scope: with users defined (or `--auth scram`), a valid
/// `Authorization: Bearer <token>` is required (401 otherwise).
async fn caller(state: &ApiState, headers: &HeaderMap) -> Result<TenantScope, ApiError> {
    use crate::pg::auth::AuthMode;
    let unavailable = |e: crate::users::UserError| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        sqlstate: "58000".into(),
        message: format!("cannot read users: {e}"),
    };
    let required = match state.auth {
        AuthMode::Trust => false,
        AuthMode::Scram => true,
        AuthMode::Auto => state.users.any().await.map_err(unavailable)?,
    };
    if !required {
        return Ok(TenantScope::all());
    }
    let unauthorized = |message: &str| ApiError {
        status: StatusCode::UNAUTHORIZED,
        sqlstate: "28000".into(),
        message: message.into(),
    };
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthorized("authentication required: send Authorization: Bearer <token> (tally users token)")
        })?;
    match state.users.token_user(token).await.map_err(unavailable)? {
        Some((_, record)) => Ok(record.scope()),
        None => {
            tracing::warn!("HTTP API: unknown bearer token");
            Err(unauthorized("invalid token"))
        }
    }
}

async fn query(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let scope = caller(&state, &headers).await?;
    let Json(req) = body.map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok(Json(run_sql(&state, &scope, &req.sql, &req.params).await?))
}

/// The built-in dashboard page: one self-contained HTML file (its chart
/// is inline SVG), reading only this API.
const PAGE: &str = include_str!("page/index.html");

async fn page() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        PAGE,
    )
        .into_response()
}

async fn sites(State(state): State<ApiState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let scope = caller(&state, &headers).await?;
    Ok(Json(
        run_sql(&state, &scope, "select site from sites order by site", &[]).await?,
    ))
}

/// Query-string parameters of the report endpoints.
type Params = HashMap<String, String>;

fn required<'a>(p: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    p.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("missing query parameter '{name}'")))
}

/// `from`/`to` as timestamps (RFC 3339 or a date), checked here so a bad
/// value is a 400 with its name, not a cast error.
fn time_param(p: &Params, name: &str) -> Result<Value, ApiError> {
    let v = required(p, name)?;
    let ok =
        chrono::DateTime::parse_from_rfc3339(v).is_ok() || chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
    if !ok {
        return Err(ApiError::bad_request(format!(
            "'{name}' must be an RFC 3339 time or a date, got '{v}'"
        )));
    }
    Ok(Value::String(v.to_owned()))
}

/// The bound parameters `[site, from, to]` of a report endpoint.
fn site_range(p: &Params) -> Result<Vec<Value>, ApiError> {
    Ok(vec![
        Value::String(required(p, "site")?.to_owned()),
        time_param(p, "from")?,
        time_param(p, "to")?,
    ])
}

fn grain_param(p: &Params) -> Result<&'static str, ApiError> {
    match p.get("grain").map(String::as_str).unwrap_or("hour") {
        "minute" => Ok("minute"),
        "hour" => Ok("hour"),
        "day" => Ok("day"),
        other => Err(ApiError::bad_request(format!(
            "'grain' must be minute, hour or day, got '{other}'"
        ))),
    }
}

async fn summary(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scope = caller(&state, &headers).await?;
    let args = site_range(&p)?;
    let grain = grain_param(&p)?;
    // unique_visitors takes constants (it picks its keys at planning), so
    // its arguments are quoted literals; `from`/`to` were validated above.
    let lit = |v: &Value| format!("'{}'", v.as_str().unwrap_or_default().replace('\'', "''"));
    let sql = format!(
        "select coalesce(sum(pageviews), 0) as pageviews, coalesce(sum(visits), 0) as visits, \
         coalesce(sum(bounces), 0) as bounces, coalesce(sum(visit_duration), 0) as visit_duration, \
         (select visitors from unique_visitors({site}, {from}::timestamptz, {to}::timestamptz)) as visitors \
         from traffic_{grain} where site = $1 and bucket >= $2::timestamptz and bucket < $3::timestamptz",
        site = lit(&args[0]),
        from = lit(&args[1]),
        to = lit(&args[2]),
    );
    Ok(Json(run_sql(&state, &scope, &sql, &args).await?))
}

async fn timeseries(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scope = caller(&state, &headers).await?;
    let args = site_range(&p)?;
    let grain = grain_param(&p)?;
    let sql = format!(
        "select bucket as time, pageviews, visitors, visits from traffic_{grain} \
         where site = $1 and bucket >= $2::timestamptz and bucket < $3::timestamptz order by bucket"
    );
    Ok(Json(run_sql(&state, &scope, &sql, &args).await?))
}

async fn top(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scope = caller(&state, &headers).await?;
    let report_name = p.get("report").map(String::as_str).unwrap_or("pages");
    let report = schema::report::Report::ALL
        .into_iter()
        .find(|r| r.name() == report_name && *r != schema::report::Report::Traffic)
        .ok_or_else(|| ApiError::bad_request(format!("unknown report '{report_name}'")))?;
    let limit: u32 = p
        .get("limit")
        .map(|l| l.parse().map_err(|_| ApiError::bad_request("'limit' must be a number")))
        .transpose()?
        .unwrap_or(10)
        .min(1000);
    let grain = grain_param(&p)?;
    let mut dims: Vec<&str> = report.dimensions().iter().map(|d| d.name).collect();
    if let Some(d) = p.get("dimension") {
        if !dims.contains(&d.as_str()) {
            return Err(ApiError::bad_request(format!(
                "'dimension' of {report_name} must be one of {}",
                dims.join(", ")
            )));
        }
        dims = vec![d.as_str()];
    }
    let counters: Vec<&str> = report
        .measures()
        .iter()
        .filter(|m| matches!(m.kind, schema::report::MeasureKind::Counter(_)))
        .map(|m| m.name)
        .collect();
    let Some(order) = counters.first() else {
        return Err(ApiError::bad_request(format!("report '{report_name}' has no counters")));
    };
    let sums: Vec<String> = counters.iter().map(|c| format!("sum({c}) as {c}")).collect();
    let sql = format!(
        "select {dims}, {sums} from {report}_{grain} \
         where site = $1 and bucket >= $2::timestamptz and bucket < $3::timestamptz \
         group by {dims} order by {order} desc, {dims} limit {limit}",
        dims = dims.join(", "),
        sums = sums.join(", "),
        report = report.name(),
    );
    let args = site_range(&p)?;
    Ok(Json(run_sql(&state, &scope, &sql, &args).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_become_json() {
        assert_eq!(cell(&ScalarValue::Int64(Some(5))), json!(5));
        assert_eq!(cell(&ScalarValue::Utf8(None)), Value::Null);
        assert_eq!(
            cell(&ScalarValue::TimestampMicrosecond(
                Some(1_700_000_000_000_000),
                Some("+00:00".into())
            )),
            json!("2023-11-14T22:13:20Z")
        );
        assert_eq!(param(&json!("x")).unwrap(), ScalarValue::Utf8(Some("x".into())));
        assert_eq!(param(&json!(2)).unwrap(), ScalarValue::Int64(Some(2)));
        assert!(param(&json!({"a": 1})).is_err());
    }
}
