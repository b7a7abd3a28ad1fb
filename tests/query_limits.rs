//! A running query stops on a CancelRequest and on its statement timeout,
//! both with SQLSTATE 57014, and the connection goes on serving.

mod common;

use common::Stack;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs until stopped: counts a hundred billion generated rows.
const ENDLESS: &str = "select count(*) from generate_series(1, 100000000000)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_statement_timeout_stop_a_query_and_keep_the_connection() {
    let stack = Stack::start(&["limits.test"]).await;
    let client = Arc::new(stack.pg().await);

    // Cancel: resend the request until the query ends (a request that
    // arrives before the query starts finds nothing to cancel).
    let token = client.cancel_token();
    let running = {
        let c = client.clone();
        tokio::spawn(async move { c.simple_query(ENDLESS).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running.is_finished() {
        assert!(Instant::now() < deadline, "the cancel request was not honoured");
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel request sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = running.await.expect("query task").expect_err("the query was cancelled");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57014");
    assert_eq!(db.message(), "canceling statement due to user request");
    let one: i64 = client
        .query_one("select 1::bigint", &[])
        .await
        .expect("still serving")
        .get(0);
    assert_eq!(one, 1);

    // Statement timeout, lowered by the session.
    client
        .simple_query("set statement_timeout = '300ms'")
        .await
        .expect("SET");
    let started = Instant::now();
    let err = client.simple_query(ENDLESS).await.expect_err("timed out");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57014");
    assert_eq!(db.message(), "canceling statement due to statement timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let err = client
        .simple_query("set statement_timeout = 'soon'")
        .await
        .expect_err("bad value");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
    client.simple_query("reset statement_timeout").await.expect("RESET");
    let n: i64 = client
        .query_one("select count(*) from generate_series(1, 1000)", &[])
        .await
        .expect("still serving")
        .get(0);
    assert_eq!(n, 1000);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_running_ones_are_not() {
    let stack = Stack::start_with_gateway(&["idle.test"], |g| g.idle_timeout_secs = 1).await;
    let client = stack.pg().await;
    // A statement running longer than the idle timeout keeps its
    // connection: it ends by its own statement timeout (3 s), not by a
    // closed socket.
    client.simple_query("set statement_timeout = '3s'").await.expect("SET");
    let err = client.simple_query(ENDLESS).await.expect_err("timed out");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(!client.is_closed());
    // Then, with nothing running, it is closed after about a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.is_closed() {
        assert!(Instant::now() < deadline, "the idle connection stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New connections are still served.
    let fresh = stack.pg().await;
    let n: i64 = fresh.query_one("select count(*) from sites", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    stack.stop().await;
}
