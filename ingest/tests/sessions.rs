//! Session assignment by ingest's append script, against a real Redis: one
//! visitor's events in one request (which the writer hands to the script
//! together), out of order in event time, across the 30-minute inactivity
//! gap and across requests; a late event before a visit window's boundary
//! that joins the visit stored in the window after it; and a stream whose
//! last id lies in the future (the clock stepped back), whose entries keep
//! absolute times.

mod common;

use common::{start, stream_events};
use harness::RedisServer;
use serde_json::{Value, json};

const SITE: &str = "sessions.test";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const MIN: i64 = 60_000;

fn at(path: &str, ts: i64, ip: &str) -> Value {
    json!({"n": "pageview", "u": format!("https://{SITE}{path}"), "d": SITE, "ts": ts, "ip": ip})
}

async fn post(http: &reqwest::Client, base: &str, events: Vec<Value>) {
    let n = events.len() as u64;
    let resp = http
        .post(format!("{base}/api/events"))
        .header("user-agent", UA)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["accepted"].as_u64(), Some(n), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitors_events_in_one_request_get_the_sessions_of_the_timeout_rule() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |_| {}).await;
    let mut conn = ingest.conn.clone();
    let http = reqwest::Client::new();
    let t = chrono::Utc::now().timestamp_millis() - 150 * MIN;
    let (a, b) = ("203.0.113.1", "203.0.113.2");
    // First a request of another visitor, so that the day's salt and the
    // site registry are cached and the next request's events reach the
    // writer in their order.
    post(&http, &ingest.base, vec![at("/w0", t, "203.0.113.9")]).await;
    post(
        &http,
        &ingest.base,
        vec![
            at("/a0", t, a),
            at("/a10", t + 10 * MIN, a),
            // Earlier than the last one: same visit, which still ends at +10.
            at("/a5", t + 5 * MIN, a),
            at("/b0", t, b),
            // 28 minutes after +10 (33 after +5): the same visit.
            at("/a38", t + 38 * MIN, a),
            // 37 minutes after +38: a new visit.
            at("/a75", t + 75 * MIN, a),
            at("/a95", t + 95 * MIN, a),
        ],
    )
    .await;
    // A later request continues the visit that the first one left open.
    post(&http, &ingest.base, vec![at("/a110", t + 110 * MIN, a)]).await;

    let events = stream_events(&mut conn, SITE).await;
    assert_eq!(events.len(), 9);
    let session = |path: &str| {
        let e = events.iter().find(|e| e.path() == path).expect(path);
        assert_eq!(
            e.ts_ms,
            t + path[2..].parse::<i64>().unwrap() * MIN,
            "{path} keeps its time"
        );
        e.session_id
    };
    let first = session("/a0");
    assert_ne!(first, 0);
    assert_eq!(session("/a10"), first);
    assert_eq!(session("/a5"), first);
    assert_eq!(session("/a38"), first, "the visit's last event is still +10");
    let second = session("/a75");
    assert_ne!(second, first, "a gap over 30 minutes starts a visit");
    assert_eq!(session("/a95"), second);
    // (+95 moved the visit's last event into the next window; the copy
    // left in the window before must not hide it.)
    assert_eq!(session("/a110"), second, "the visit was stored");
    let other = session("/b0");
    assert!(other != first && other != second, "another visitor, another visit");
    assert!(![first, second, other].contains(&session("/w0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_joins_the_visit_stored_in_the_next_window() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |_| {}).await;
    let mut conn = ingest.conn.clone();
    let http = reqwest::Client::new();
    // A visit-window boundary an hour or two ago.
    let timeout = schema::event::SESSION_TIMEOUT_MS;
    let boundary = (chrono::Utc::now().timestamp_millis() / timeout - 3) * timeout;
    let ip = "203.0.113.4";
    post(&http, &ingest.base, vec![at("/c1", boundary + MIN, ip)]).await;
    // Arrives later, belongs before the boundary: the visit is stored in
    // the window after this event's.
    post(&http, &ingest.base, vec![at("/c-2", boundary - 2 * MIN, ip)]).await;
    // 29 minutes before /c-2 but 32 before the visit's last event (/c1): a
    // visit is continued only within 30 minutes of its last event, so this
    // starts another.
    post(&http, &ingest.base, vec![at("/c-31", boundary - 31 * MIN, ip)]).await;
    // Back after the first: same visit again.
    post(&http, &ingest.base, vec![at("/c20", boundary + 20 * MIN, ip)]).await;

    let events = stream_events(&mut conn, SITE).await;
    let session = |path: &str| events.iter().find(|e| e.path() == path).expect(path).session_id;
    assert_eq!(session("/c-2"), session("/c1"), "found in the next window");
    assert_ne!(
        session("/c-31"),
        session("/c1"),
        "32 minutes before the visit's last event"
    );
    assert_eq!(session("/c20"), session("/c1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_after_a_future_id_keep_absolute_times() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |_| {}).await;
    let mut conn = ingest.conn.clone();
    let now = chrono::Utc::now().timestamp_millis();
    // As if the clock had stepped back an hour since this entry was added.
    let stream = schema::Shard::of_site(SITE).stream_key();
    let future = schema::Event::pageview(now, SITE, "/future", 1);
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&stream).arg(format!("{}-0", now + 60 * MIN));
    for (k, v) in future.to_fields() {
        cmd.arg(k).arg(v);
    }
    let _: String = cmd.query_async(&mut conn).await.unwrap();

    let http = reqwest::Client::new();
    let ip = "203.0.113.3";
    post(
        &http,
        &ingest.base,
        vec![at("/x0", now - 2 * MIN, ip), at("/x1", now - MIN, ip)],
    )
    .await;

    let events = stream_events(&mut conn, SITE).await;
    let stored: Vec<(String, i64)> = events.iter().map(|e| (e.path().to_owned(), e.ts_ms)).collect();
    assert_eq!(
        stored,
        vec![
            ("/future".to_owned(), now),
            ("/x0".to_owned(), now - 2 * MIN),
            ("/x1".to_owned(), now - MIN)
        ]
    );
    assert_eq!(events[1].session_id, events[2].session_id);
    let raw = common::stream_entries(&mut conn, SITE).await;
    for entry in &raw[1..] {
        for t in entry.values("t") {
            let t: i64 = t.parse().unwrap();
            assert!(t >= schema::event::ABSOLUTE_TS_MIN, "absolute time stored: {t}");
        }
    }
}
