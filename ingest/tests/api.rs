//! The ingest API against a real Redis: the batch endpoint's per-event
//! results, the per-site rate limit, referrer spam, and the tracker's
//! delivery (gzip, ETag).

mod common;

use common::{start, stored_events};
use harness::RedisServer;
use serde_json::{Value, json};

const SITE: &str = "api.test";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn ev(path: &str) -> Value {
    json!({"n": "pageview", "u": format!("https://{SITE}{path}"), "d": SITE})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_answers_per_event_and_stores_exactly_the_accepted() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |_| {}).await;
    let mut conn = ingest.conn.clone();
    let http = reqwest::Client::new();
    let url = format!("{}/api/events", ingest.base);
    let mut forwarded = ev("/server");
    forwarded["ip"] = json!("203.0.113.9");
    forwarded["user_agent"] = json!(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    );
    let mut bot = ev("/bot");
    bot["user_agent"] = json!("Googlebot/2.1 (+http://www.google.com/bot.html)");
    let mut spam = ev("/spam");
    spam["r"] = json!("https://www.semalt.com/crawler");
    let mut back_dated = ev("/old");
    let old_ts = chrono::Utc::now().timestamp_millis() - 3_600_000;
    back_dated["ts"] = json!(old_ts);
    let body = json!({"events": [
        ev("/a"),
        json!({"n": "pageview", "d": SITE}),
        forwarded,
        bot,
        spam,
        json!({"n": "pageview", "u": "https://elsewhere.test/"}),
        back_dated,
    ]});
    let resp = http
        .post(&url)
        .header("user-agent", UA)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let statuses: Vec<(u64, Option<&str>)> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_u64().unwrap(), r["dropped"].as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (202, None),
            (400, None),
            (202, None),
            (202, Some("bot")),
            (202, Some("spam")),
            (403, None),
            (202, None)
        ],
        "{answer}"
    );
    assert!(
        answer["results"][1]["error"].as_str().unwrap().contains("url"),
        "{answer}"
    );
    assert_eq!(
        (
            answer["accepted"].as_u64(),
            answer["dropped"].as_u64(),
            answer["rejected"].as_u64()
        ),
        (Some(3), Some(2), Some(2))
    );

    assert_eq!(stored_events(&mut conn).await, 3);
    let events = common::stream_events(&mut conn, SITE).await;
    let server = events.iter().find(|e| e.path() == "/server").unwrap();
    assert_eq!(
        (server.os.as_str(), server.device.as_str()),
        ("iPhone", "mobile"),
        "forwarded user agent used"
    );
    let a = events.iter().find(|e| e.path() == "/a").unwrap();
    assert_ne!(
        a.visitor_id, server.visitor_id,
        "forwarded address and agent make another visitor"
    );
    assert!(events.iter().all(|e| e.session_id != 0));
    let old = events.iter().find(|e| e.path() == "/old").unwrap();
    assert_eq!(old.ts_ms, old_ts, "a back-dated time survives its storage");
    // Times are stored relative to the entry id's milliseconds: small numbers.
    let raw = common::stream_entries(&mut conn, SITE).await;
    for entry in &raw {
        for t in entry.values("t") {
            let t: i64 = t.parse().unwrap();
            assert!(t.abs() < schema::event::ABSOLUTE_TS_MIN, "{} t={t}", entry.id);
        }
    }

    // An event that is not even the right shape (a name that is no string,
    // an event that is no object) is refused alone; the others of its
    // request are stored.
    let mut forwarded_again = ev("/forwarded-again");
    forwarded_again["ip"] = json!("203.0.113.9");
    let mixed = json!({"events": [{"n": ["x"], "u": "https://api.test/", "d": SITE}, 42, forwarded_again]});
    let r = http
        .post(&url)
        .header("user-agent", UA)
        .json(&mixed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let statuses: Vec<u64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![400, 400, 202], "{answer}");
    assert!(
        answer["results"][0]["error"].as_str().unwrap().contains("JSON"),
        "{answer}"
    );
    assert_eq!(stored_events(&mut conn).await, 4);
    let events = common::stream_events(&mut conn, SITE).await;
    let again = events.iter().find(|e| e.path() == "/forwarded-again").unwrap();
    let a = events.iter().find(|e| e.path() == "/a").unwrap();
    assert_ne!(
        again.visitor_id, a.visitor_id,
        "the forwarded address counts on this path too (same user agent as /a)"
    );

    // Whole-request refusals.
    let too_many = json!({"events": vec![ev("/x"); 101]});
    let r = http
        .post(&url)
        .header("user-agent", UA)
        .json(&too_many)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    for bad in [json!({"events": []}), json!([1, 2]), json!({"events": 3})] {
        let r = http.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string());
    }
    assert_eq!(stored_events(&mut conn).await, 4, "nothing stored by refused requests");
    ingest.stop.cancel();
    ingest.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_packed_unless_a_value_holds_the_separator() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |_| {}).await;
    let mut conn = ingest.conn.clone();
    let http = reqwest::Client::new();
    let odd_referrer = "https://news.test/a\u{1e}b";
    let mut odd = ev("/odd");
    odd["r"] = json!(odd_referrer);
    let mut plain = ev("/plain");
    plain["r"] = json!("https://news.test/");
    let resp = http
        .post(format!("{}/api/events", ingest.base))
        .header("user-agent", UA)
        .json(&json!({"events": [plain, odd]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let raw = common::stream_entries(&mut conn, SITE).await;
    let mut layouts: Vec<(String, Vec<String>)> = raw
        .iter()
        .map(|entry| {
            let pairs: Vec<(&[u8], &[u8])> = entry.pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
            let events = schema::entry::decode_events(Some(&entry.id), &pairs).unwrap();
            assert_eq!(events.len(), 1, "the two layouts are written in separate entries");
            let e = &events[0];
            let mut names: Vec<String> = entry.pairs.iter().map(|(k, _)| k.clone()).collect();
            names.sort();
            assert_eq!(
                e.referrer,
                if e.path() == "/odd" {
                    odd_referrer
                } else {
                    "https://news.test/"
                }
            );
            (e.path().to_owned(), names)
        })
        .collect();
    layouts.sort();
    assert_eq!(layouts[0].0, "/odd");
    assert_eq!(layouts[0].1.len(), 12, "stored unpacked: {:?}", layouts[0].1);
    assert_eq!(
        layouts[1],
        (
            "/plain".to_owned(),
            vec!["e".into(), "i".into(), "t".into(), "v".into()]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_over_its_rate_gets_429_and_others_go_on() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE, "other.test"], |c| c.site_rate_limit = 0.5).await;
    let mut conn = ingest.conn.clone();
    let http = reqwest::Client::new();
    let url = format!("{}/api/event", ingest.base);
    let post = |body: Value| http.post(&url).header("user-agent", UA).body(body.to_string()).send();
    // Burst of max(2 x 0.5, 1) = 1 event, refilling one every 2 s.
    assert_eq!(post(ev("/1")).await.unwrap().status(), 202);
    let over = post(ev("/2")).await.unwrap();
    assert_eq!(over.status(), 429);
    assert_eq!(over.headers().get("retry-after").unwrap(), "1");
    let v: Value = over.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("rate limit"), "{v}");
    let other = json!({"n": "pageview", "u": "https://other.test/", "d": "other.test"});
    assert_eq!(post(other).await.unwrap().status(), 202, "another site is not limited");
    assert_eq!(stored_events(&mut conn).await, 2);
    ingest.stop.cancel();
    ingest.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_referrers_are_dropped_and_the_tracker_is_served() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("spam.txt");
    std::fs::write(&list, "# ours\nbad-referrer.example\n").unwrap();
    let ingest = start(&redis, &[SITE], |c| c.spam_list = Some(list.clone())).await;
    let mut conn = ingest.conn.clone();
    let http = reqwest::Client::new(); // no gzip feature: bodies arrive as sent
    let url = format!("{}/api/event", ingest.base);
    for referrer in ["https://semalt.com/", "https://x.bad-referrer.example/page"] {
        let mut body = ev("/");
        body["r"] = json!(referrer);
        let r = http
            .post(&url)
            .header("user-agent", UA)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.headers().get("x-tally-dropped").unwrap(), "spam");
    }
    assert_eq!(stored_events(&mut conn).await, 0);

    let js = format!("{}/t.js", ingest.base);
    let r = http
        .get(&js)
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-encoding").unwrap(), "gzip");
    assert!(
        r.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    let etag = r.headers().get("etag").unwrap().clone();
    let gz = r.bytes().await.unwrap();
    assert!(gz.len() <= 2048, "{} bytes gzipped", gz.len());
    let r = http.get(&js).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
    let plain = http.get(&js).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.text().await.unwrap(), tally_ingest::tracker::TRACKER_JS);
    ingest.stop.cancel();
    ingest.task.await.unwrap();
}
