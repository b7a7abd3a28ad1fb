//! Idle-connection timeout.
//!
//! pgwire owns each connection's socket, so the accept loop watches the
//! connection from outside: every connection has an [`Activity`] record,
//! found by its peer address; a statement holds a [`Busy`] guard while it
//! runs and streams its rows, and a connection with no statement running
//! for longer than the timeout is closed (its task dropped), freeing its
//! place. A long query is never idle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One connection's activity.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last statement's end.
    last_ms: AtomicI64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_ms: AtomicI64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Mark a statement as running until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.busy.load(Ordering::SeqCst) == 0).then(|| {
            Duration::from_millis(u64::try_from(self.now_ms() - self.last_ms.load(Ordering::SeqCst)).unwrap_or(0))
        })
    }

    /// Resolves once the connection has been idle for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        let tick = timeout.min(Duration::from_secs(1)).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            if self.idle_for().is_some_and(|d| d >= timeout) {
                return;
            }
        }
    }
}

/// A running statement; dropping it marks the connection active now.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every open connection's activity, by peer address.
#[derive(Debug, Default)]
pub struct ActivityBoard {
    by_peer: Mutex<HashMap<SocketAddr, Arc<Activity>>>,
}

impl ActivityBoard {
    pub fn open(&self, peer: SocketAddr) -> Arc<Activity> {
        let a = Arc::new(Activity::new());
        if let Ok(mut m) = self.by_peer.lock() {
            m.insert(peer, a.clone());
        }
        a
    }

    pub fn close(&self, peer: &SocketAddr) {
        if let Ok(mut m) = self.by_peer.lock() {
            m.remove(peer);
        }
    }

    /// A statement of the connection from `peer` starts.
    pub fn busy(&self, peer: &SocketAddr) -> Option<Busy> {
        let a = self.by_peer.lock().ok()?.get(peer).cloned()?;
        Some(a.busy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_connection_is_never_idle() {
        let board = ActivityBoard::default();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let a = board.open(peer);
        let guard = board.busy(&peer).expect("registered");
        let waited = tokio::time::timeout(Duration::from_millis(80), a.idle(Duration::from_millis(20))).await;
        assert!(waited.is_err(), "busy, so not idle");
        drop(guard);
        let waited = tokio::time::timeout(Duration::from_secs(2), a.idle(Duration::from_millis(20))).await;
        assert!(waited.is_ok(), "idle after the statement");
        board.close(&peer);
        assert!(board.busy(&peer).is_none());
    }
}
