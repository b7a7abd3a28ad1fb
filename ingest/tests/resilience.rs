//! Ingest under Redis failure and shutdown: 503 with Retry-After while Redis
//! is gone, recovery on its own when it returns, and no event that got a 202
//! missing from the streams after a graceful shutdown.

mod common;

use common::{start, stored_events};
use harness::{RedisServer, RedisServerOptions};
use std::time::{Duration, Instant};

const SITE: &str = "resilient.test";
const EVENT: &str = r#"{"n":"pageview","u":"https://resilient.test/x","d":"resilient.test"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let port = redis.port();
    let ingest = start(&redis, &[SITE], |_| {}).await;
    let (url, stop, task) = (format!("{}/api/event", ingest.base), ingest.stop, ingest.task);
    let http = reqwest::Client::new();
    let post = || http.post(&url).body(EVENT).send();
    assert_eq!(post().await.unwrap().status(), 202);

    redis.kill();
    let resp = post().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap_or_default().contains("redis"), "{body}");

    // Redis comes back on the same port; ingest reconnects by itself.
    let _redis2 = RedisServer::start(RedisServerOptions {
        port: Some(port),
        ..Default::default()
    })
    .expect("restart redis");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = post().await.unwrap().status();
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "only 503 while reconnecting");
        assert!(Instant::now() < deadline, "ingest did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_every_accepted_event() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |_| {}).await;
    let (mut conn, url, stop, task) = (
        ingest.conn,
        format!("{}/api/event", ingest.base),
        ingest.stop,
        ingest.task,
    );
    let http = reqwest::Client::new();
    // One answered request first, so the run cannot end with nothing accepted
    // however slowly the machine starts the barrage below.
    assert_eq!(http.post(&url).body(EVENT).send().await.unwrap().status(), 202);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..400 {
        let (http, url) = (http.clone(), url.clone());
        requests.spawn(async move { http.post(&url).body(EVENT).send().await.map(|r| r.status().as_u16()) });
    }
    // Shut down while requests are still arriving: as soon as more entries
    // than the first one reached the streams (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_events(&mut conn).await < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.cancel();
    let mut accepted = 1u64;
    while let Some(r) = requests.join_next().await {
        if let Ok(Ok(202)) = r {
            accepted += 1;
        }
    }
    task.await.unwrap();
    assert!(accepted > 0, "some requests were accepted before shutdown");
    assert_eq!(stored_events(&mut conn).await, accepted, "every 202 is in a stream");
}
