//! Query cancel and statement timeout.
//!
//! A running query ends early for two reasons, both SQLSTATE 57014 as in
//! PostgreSQL: the client sent a CancelRequest for this connection (pgwire's
//! [`ConnectionManager`] routes it by pid and secret key), or the statement
//! ran past its timeout (the operator's default, which `SET
//! statement_timeout` may lower but not raise). The result stream is cut at
//! that point; dropping it stops DataFusion's tasks, and the connection
//! stays usable.

use crate::error::user_error;
use futures::{Stream, StreamExt, stream};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Parse a `statement_timeout` value: milliseconds, or a number with a unit
/// (`ms`, `s`, `min`, `h`, `d`). `None` when malformed.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let v = value.trim().trim_matches('\'').trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: f64 = number.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "min" => n * 60e3,
        "h" => n * 3600e3,
        "d" => n * 86_400e3,
        _ => return None,
    };
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_micros((ms * 1e3) as u64))
}

/// The timeout in force: the session's when set (non-zero) and lower than
/// the operator's default, else the default. `None` = no limit.
pub fn effective_timeout(operator: Option<Duration>, session: Option<Duration>) -> Option<Duration> {
    let session = session.filter(|d| !d.is_zero());
    match (operator, session) {
        (Some(o), Some(s)) => Some(o.min(s)),
        (o, s) => o.or(s),
    }
}

/// Why a statement stopped.
pub type StopReason = &'static str;

/// A future that resolves when the statement must stop.
pub async fn stop_signal(
    cancel: Option<futures::channel::oneshot::Receiver<()>>,
    timeout: Option<Duration>,
) -> StopReason {
    let cancelled = async move {
        // A dropped sender means a newer query replaced this one.
        let fired = match cancel {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        if fired {
            "canceling statement due to user request"
        } else {
            std::future::pending().await
        }
    };
    let timed_out = async move {
        match timeout {
            Some(d) => {
                tokio::time::sleep(d).await;
                "canceling statement due to statement timeout"
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = cancelled => r,
        r = timed_out => r,
    }
}

/// Rows of `rows` until `stop` fires, then one 57014 error.
pub fn guarded<S>(
    rows: S,
    stop: Pin<Box<dyn Future<Output = StopReason> + Send>>,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send
where
    S: Stream<Item = PgWireResult<DataRow>> + Send + 'static,
{
    stream::unfold((Box::pin(rows), stop, false), |(mut rows, mut stop, done)| async move {
        if done {
            return None;
        }
        tokio::select! {
            biased;
            reason = &mut stop => Some((Err(user_error("57014", reason)), (rows, stop, true))),
            item = rows.next() => item.map(|i| (i, (rows, stop, false))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_combine() {
        assert_eq!(parse_timeout("5000"), Some(Duration::from_millis(5000)));
        assert_eq!(parse_timeout("'2s'"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout("0"), Some(Duration::ZERO));
        assert_eq!(parse_timeout("soon"), None);
        let op = Some(Duration::from_secs(60));
        assert_eq!(
            effective_timeout(op, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(effective_timeout(op, Some(Duration::from_secs(600))), op);
        assert_eq!(effective_timeout(op, Some(Duration::ZERO)), op);
        assert_eq!(
            effective_timeout(None, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(effective_timeout(None, None), None);
    }

    #[tokio::test]
    async fn a_stopped_stream_ends_with_57014() {
        let rows = stream::pending::<PgWireResult<DataRow>>();
        let stop = Box::pin(stop_signal(None, Some(Duration::from_millis(10))));
        let out: Vec<_> = guarded(rows, stop).collect().await;
        assert_eq!(out.len(), 1);
        let Err(pgwire::error::PgWireError::UserError(info)) = &out[0] else {
            panic!("expected an error")
        };
        assert_eq!(info.code, "57014");
    }
}
