//! Ingest's connection limits, over raw sockets: a silent client and a
//! slowloris are dropped after the header timeout, oversized headers get
//! 431, a trickled body 408 with a JSON reason, connections past the limit
//! a JSON 503; and through all of it ingest keeps accepting events.

mod common;

use common::{start, stored_events};
use harness::RedisServer;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SITE: &str = "limits.test";

fn event_request(host: &str) -> String {
    let body = format!(r#"{{"n":"pageview","u":"https://{SITE}/","d":"{SITE}"}}"#);
    format!(
        "POST /api/event HTTP/1.1\r\nhost: {host}\r\nuser-agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0\r\n\
         content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Everything the server sends until it closes, within `limit`.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("the server did not close the connection within {limit:?}"))
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

async fn send_event(host: &str) -> String {
    let mut s = TcpStream::connect(host).await.unwrap();
    s.write_all(event_request(host).as_bytes()).await.unwrap();
    read_to_close(&mut s, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_oversized_clients_are_cut_off_and_others_served() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |c| {
        c.ingest_header_timeout_secs = 1;
        c.ingest_body_timeout_secs = 1;
        c.ingest_max_connections = 3;
        c.max_header_bytes = 4096;
    })
    .await;
    let host = ingest.base.trim_start_matches("http://").to_owned();

    // A client that connects and says nothing is dropped.
    let started = Instant::now();
    let mut silent = TcpStream::connect(&host).await.unwrap();
    let said = read_to_close(&mut silent, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "dropped too early");
    assert!(said.is_empty() || said.starts_with("HTTP/1.1 408"), "{said:?}");

    // A slowloris: headers one byte at a time, never finished.
    let mut slow = TcpStream::connect(&host).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in b"POST /api/event HTTP/1.1\r\nhost: x\r\nx-slow: "
        .iter()
        .cycle()
        .take(200)
    {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cut || started.elapsed() < Duration::from_secs(9),
        "a trickling client was kept"
    );
    let _ = read_to_close(&mut slow, Duration::from_secs(5)).await;

    // Oversized headers: 431.
    let mut big = TcpStream::connect(&host).await.unwrap();
    let huge = format!(
        "GET /t.js HTTP/1.1\r\nhost: {host}\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(8000)
    );
    big.write_all(huge.as_bytes()).await.unwrap();
    let said = read_to_close(&mut big, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 431"), "{said:?}");

    // Too many header lines, though short: 431; as many as allowed: served.
    for (lines, status) in [
        (tally_ingest::serve::MAX_HEADERS + 1, "431"),
        (tally_ingest::serve::MAX_HEADERS - 2, "200"),
    ] {
        let mut s = TcpStream::connect(&host).await.unwrap();
        let extra: String = (0..lines - 2).map(|i| format!("x-h{i}: 1\r\n")).collect();
        let head = format!("GET /t.js HTTP/1.1\r\nhost: {host}\r\n{extra}connection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let said = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(
            said.starts_with(&format!("HTTP/1.1 {status}")),
            "{lines} lines: {said:?}"
        );
    }

    // A body that trickles in: 408 with a JSON reason.
    let mut trickle = TcpStream::connect(&host).await.unwrap();
    trickle
        .write_all(
            format!(
                "POST /api/event HTTP/1.1\r\nhost: {host}\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{{\"n\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let said = read_to_close(&mut trickle, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said:?}");
    assert!(said.contains(r#"{"error":"body not received within 1 s"}"#), "{said:?}");

    // Past three open connections: a JSON 503, and served again once one
    // closes.
    let held: Vec<TcpStream> = hold_connections(&host, 3).await;
    let mut extra = TcpStream::connect(&host).await.unwrap();
    let said = read_to_close(&mut extra, Duration::from_secs(5)).await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said:?}");
    assert!(said.contains(r#"{"error":"too many connections"}"#), "{said:?}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = send_event(&host).await;
        if answer.starts_with("HTTP/1.1 202") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the held connections closed: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = ingest.conn.clone();
    assert_eq!(
        stored_events(&mut conn).await,
        1,
        "exactly the one accepted event is stored"
    );
    ingest.stop.cancel();
    ingest.task.await.unwrap();
}

/// Open `n` connections that each wait inside an unfinished request head
/// (so they hold their slot until closed or timed out).
async fn hold_connections(host: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(host).await.unwrap();
        s.write_all(b"GET /t.js HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // The accept loop takes connections in the order they were made, so
    // these three hold the slots before the caller's next one.
    held
}
