//! The HTTP/1.1 accept loop of ingest, with the connection limits a public
//! collection endpoint needs and `axum::serve` does not offer.
//!
//! - At most `max_connections` connections at once; one more is answered
//!   `503` with a JSON reason and closed, so a flood of sockets cannot
//!   exhaust file descriptors or memory.
//! - Request headers (the first ones, and each next request's on a kept-alive
//!   connection) must arrive within `header_timeout`: a client that opens a
//!   socket and sends nothing, or trickles its headers (slowloris), is
//!   dropped, and idle kept-alive connections are closed after that long.
//! - Headers are bounded in size and number (`431`); bodies are bounded and
//!   timed by the handlers (`413`, `408`). The number is hyper's default,
//!   [`MAX_HEADERS`]: hyper parses that many on the stack, and any other
//!   limit costs a heap allocation per request (about 1,400 instructions of
//!   ingest's 52,000 per event, `INSTRUCTIONS=1 bench/ingest.sh`).
//! - Shutdown stops accepting, lets in-flight requests finish and closes
//!   idle connections (hyper's graceful shutdown).

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use schema::ops::CancellationToken;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

/// Most header lines in a request (hyper's own bound; more is `431`).
pub const MAX_HEADERS: usize = 100;

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(15),
            max_header_bytes: 16 * 1024,
        }
    }
}

const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
access-control-allow-origin: *\r\nconnection: close\r\ncontent-length: 33\r\n\r\n{\"error\":\"too many connections\"}\n";

/// Answer a connection over the limit and close it, without waiting on a
/// client that does not read.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serve `app` on `listener` until `shutdown`, then finish in-flight
/// requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let open = metrics::gauge!("tally_ingest_connections");
    let refused = metrics::counter!("tally_ingest_connections_refused_total");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
