//! The accept loop of the Postgres listener.
//!
//! Each connection runs on its own task, tracked so that shutdown can stop
//! accepting, let running queries finish for a grace period, and only then
//! drop what is left.

use super::HandlerFactory;
use futures::FutureExt;
use pgwire::tokio::process_socket;
use schema::ops::CancellationToken;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Serve connections until `shutdown`, then drain for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    factory: Arc<HandlerFactory>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    idle_timeout: Option<Duration>,
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
                    let board = factory.handler.activity.clone();
                    let activity = board.open(peer);
                    tracker.spawn(async move {
                        // A panic in the protocol decoder (pgwire 0.42.1 reads
                        // past some truncated messages) ends this connection
                        // only; it is logged, and the server goes on.
                        let served = AssertUnwindSafe(process_socket(socket, tls, factory)).catch_unwind();
                        let idle = async {
                            match idle_timeout {
                                Some(t) => activity.idle(t).await,
                                None => std::future::pending().await,
                            }
                        };
                        let served = tokio::select! {
                            served = served => served,
                            () = idle => {
                                metrics::counter!("tally_gateway_idle_closed_total").increment(1);
                                tracing::debug!(%peer, "closing an idle connection");
                                Ok(Ok(()))
                            }
                        };
                        board.close(&peer);
                        match served {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                            Err(_) => {
                                metrics::counter!("tally_gateway_connection_panics_total").increment(1);
                                tracing::warn!(%peer, "connection closed: a malformed message failed in the protocol decoder");
                            }
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
