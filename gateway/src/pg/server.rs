//! The accept loop of the Postgres listener.
//!
//! Each connection runs on its own task, tracked so that shutdown can stop
//! accepting, let running queries finish for a grace period, and only then
//! drop what is left.

use super::HandlerFactory;
use pgwire::tokio::process_socket;
use schema::ops::CancellationToken;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Serve connections until `shutdown`, then drain for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    factory: Arc<HandlerFactory>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let factory = factory.clone();
                    let tls = tls.clone();
                    metrics::counter!("tally_gateway_connections_total").increment(1);
                    tracker.spawn(async move {
                        if let Err(e) = process_socket(socket, tls, factory).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the grace period; closing them"
        );
    }
}
