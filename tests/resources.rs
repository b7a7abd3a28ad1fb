//! Resource limits: a sort past the query memory pool fails with 53200, a
//! cartesian product runs into the statement timeout (57014), and the
//! gateway keeps answering others; 500 concurrent connections against a
//! limit of 200 are each served or refused with 53300; malformed and
//! truncated protocol messages get an error or a closed socket and the
//! server goes on serving.

mod common;

use common::Stack;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect("query").get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_one_query_and_keep_the_rest_running() {
    let stack = Stack::start_with_gateway(&["limits.test"], |g| {
        g.query_memory_mb = 16;
        g.max_connections = 200;
    })
    .await;
    let a = stack.pg().await;
    let b = stack.pg().await;

    // A full sort of 5M rows (40 MB) past a 16 MB pool.
    let err = a
        .simple_query("select value from generate_series(1, 5000000) order by value desc")
        .await
        .expect_err("over the memory limit");
    assert_eq!(err.code().map(|c| c.code()), Some("53200"), "{err}");
    assert_eq!(count(&b, "select count(*) from generate_series(1, 1000)").await, 1000);

    // A cartesian product of 10^10 rows: the statement timeout ends it.
    a.simple_query("set statement_timeout = '500ms'").await.unwrap();
    let err = a
        .simple_query("select count(*) from generate_series(1, 100000) x cross join generate_series(1, 100000) y")
        .await
        .expect_err("timed out");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert_eq!(count(&a, "select count(*) from generate_series(1, 10)").await, 10);
    assert_eq!(count(&b, "select count(*) from sites").await, 1);

    // 500 concurrent connections against a limit of 200 (2 are open).
    let port = stack.pg_addr.port();
    let attempts: Vec<_> = (0..500)
        .map(|_| {
            tokio::spawn(async move {
                tokio_postgres::connect(
                    &format!("host=127.0.0.1 port={port} user=tally dbname=tally connect_timeout=20"),
                    tokio_postgres::NoTls,
                )
                .await
                .map(|(client, conn)| {
                    let task = tokio::spawn(conn);
                    (client, task)
                })
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a.await.expect("task") {
            Ok(c) => open.push(c),
            Err(e) => {
                assert_eq!(e.code().map(|c| c.code()), Some("53300"), "{e}");
                refused += 1;
            }
        }
    }
    // Exactly the free places are taken: 200 minus the 2 already open.
    assert_eq!(open.len(), 198, "{} served", open.len());
    assert_eq!(open.len() + refused, 500);
    for (client, _) in open.iter().take(20) {
        assert_eq!(count(client, "select count(*) from generate_series(1, 3)").await, 3);
    }
    drop(open);

    // Malformed and truncated protocol messages.
    let addr = stack.pg_addr;
    for junk in [
        b"\xff\xff\xff\xff\x00\x03\x00\x00".to_vec(),
        b"\x00\x00\x00\x08\x12\x34\x56\x78".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x00\x00\x00\x64\x00\x03".to_vec(),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&junk).await.unwrap();
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        // The server answers with an error or closes; either way promptly.
        let read = tokio::time::timeout(Duration::from_secs(70), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server kept a junk connection open: {junk:?}");
    }
    // A truncated Parse after a good startup: pgwire's decoder panics on it;
    // that connection is closed and the server goes on.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut startup = Vec::new();
    let params = b"user\0tally\0database\0tally\0\0";
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(params);
    s.write_all(&startup).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.ends_with(b"Z\0\0\0\x05I") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("startup answered")
            .unwrap();
        assert!(n > 0, "closed during startup");
        seen.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"P\0\0\0\x04").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the connection was answered or closed"
    );
    // Bounded wait for the refused connections to be counted out.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        match tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=tally dbname=tally"),
            tokio_postgres::NoTls,
        )
        .await
        {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                break c;
            }
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no new connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(count(&fresh, "select count(*) from sites").await, 1);
    stack.stop().await;
}
