//! The tracker in a real browser: headless Chromium (Debian's `chromium`,
//! driven by playwright-core through `ingest/tracker/drive.mjs`) loads a
//! local page with the tracker, navigates an SPA route, fires a custom event
//! with revenue and clicks an outbound link; the events in the stream are
//! then checked field by field. `.ci/run` installs Chromium and the npm
//! packages; this test fails, with the install command, when they are
//! missing.

mod common;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use harness::RedisServer;
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tally_ingest::{IngestConfig, run};
use tokio::net::TcpListener;

const SITE: &str = "browser.test";

fn tracker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tracker")
}

fn require_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium not found at {chromium}: apt-get install chromium (or run .ci/run)"
    );
    assert!(
        tracker_dir().join("node_modules/playwright-core").exists(),
        "playwright-core missing: npm ci --prefix ingest/tracker (or run .ci/run)"
    );
}

fn page(ingest: &str, other_origin: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Tally test page</title>
<script>window.tally=window.tally||function(){{(tally.q=tally.q||[]).push(arguments)}};
tally('queued_before_load', {{props: {{early: 'yes'}}}});</script>
<script defer src="{ingest}/t.js" data-site="{SITE}" data-local data-track="outbound"></script>
</head><body style="height:3000px">
<button id="spa" onclick="history.pushState({{}}, '', '/spa/route')">route</button>
<button id="buy" onclick="tally('purchase', {{props: {{plan: 'pro'}}, revenue: {{amount: '49.90', currency: 'EUR'}}}})">buy</button>
<a id="out" href="{other_origin}/elsewhere" target="_blank">elsewhere</a>
</body></html>"#
    )
}

#[test]
fn minified_tracker_is_built_from_the_source() {
    require_tools();
    let out = Command::new("node")
        .arg(tracker_dir().join("node_modules/terser/bin/terser"))
        .args(["t.js", "--compress", "--mangle", "--comments", "false"])
        .current_dir(tracker_dir())
        .output()
        .expect("node runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let built = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        built.trim_end(),
        tally_ingest::tracker::TRACKER_JS.trim_end(),
        "t.min.js is stale: run `npm run build` in ingest/tracker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_sends_the_exact_events_from_chromium() {
    require_tools();
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let conn = RedisConn::connect(&RedisTarget::parse(&redis.url()).unwrap(), ConnectOptions::default())
        .await
        .unwrap();
    let mut c = conn.clone();
    schema::site::add_site(&mut c, SITE, 0).await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingest = format!("http://{}", listener.local_addr().unwrap());
    let cfg = IngestConfig::with_addr(listener.local_addr().unwrap());
    let stop = schema::ops::CancellationToken::new();
    let (c2, s2) = (conn.clone(), stop.clone());
    let ingest_task = tokio::spawn(async move { run(cfg, listener, c2, None, s2).await.expect("ingest runs") });

    // The page, on its own origin; the outbound link goes to another host
    // name of the same server.
    let pages = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = pages.local_addr().unwrap().port();
    let html = page(&ingest, &format!("http://localhost:{port}"));
    let app = Router::new()
        .route("/", get(move || async move { Html(html) }))
        .route("/elsewhere", get(|| async { Html("<!doctype html><p>elsewhere</p>") }))
        .route("/left", get(|| async { Html("<!doctype html><p>left</p>") }));
    let page_task = tokio::spawn(async move { axum::serve(pages, app).await });

    let url = format!("http://127.0.0.1:{port}/");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("drive.mjs")
            .arg(url)
            .env("TALLY_DEBUG", "1")
            .current_dir(tracker_dir())
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    // The driver's log (requests it saw), shown when the test fails.
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Wait (bounded) for the non-engagement events and the engagement ping
    // sent when the page was left.
    let deadline = Instant::now() + Duration::from_secs(15);
    let events = loop {
        let events = common::stream_events(&mut c, SITE).await;
        let custom = events.iter().filter(|e| e.name != "engagement").count();
        let leaving = events
            .iter()
            .any(|e| e.name == "engagement" && e.path() == "/spa/route");
        if custom >= 5 && leaving {
            break events;
        }
        assert!(Instant::now() < deadline, "events did not arrive: {events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Concurrent keepalive requests may arrive in any order: compare sorted.
    let mut main: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.name != "engagement")
        .map(|e| (e.name.as_str(), e.path()))
        .collect();
    main.sort();
    assert_eq!(
        main,
        vec![
            ("Outbound Link: Click", "/spa/route"),
            ("pageview", "/"),
            ("pageview", "/spa/route"),
            ("purchase", "/spa/route"),
            ("queued_before_load", "/"),
        ],
        "exact events, the repeated push de-duplicated"
    );
    let mut pings: Vec<&str> = events
        .iter()
        .filter(|e| e.name == "engagement")
        .map(|e| e.path())
        .collect();
    pings.sort();
    assert_eq!(pings, vec!["/", "/spa/route"], "one engagement ping per page left");
    let by_name = |n: &str| events.iter().find(|e| e.name == n).unwrap();
    assert_eq!(
        by_name("queued_before_load").props,
        vec![("early".into(), "yes".into())]
    );
    let purchase = by_name("purchase");
    let revenue = purchase.revenue.as_ref().expect("revenue");
    assert_eq!((revenue.amount.as_str(), revenue.currency.as_str()), ("49.9", "EUR"));
    assert_eq!(purchase.props, vec![("plan".into(), "pro".into())]);
    assert_eq!(
        by_name("Outbound Link: Click").props,
        vec![("url".into(), format!("http://localhost:{port}/elsewhere"))]
    );
    for e in &events {
        assert_eq!(e.site, SITE);
        assert_eq!(e.browser, "Chrome", "{e:?}");
        assert_eq!(e.device.as_str(), "desktop");
        let flag = (e.name != "engagement").then_some(false);
        assert_eq!(e.returning, flag, "a first visit (pings carry no flag): {e:?}");
        assert_eq!(e.visitor_id, events[0].visitor_id, "one visitor");
        assert_eq!(e.session_id, events[0].session_id, "one session");
        assert_ne!(e.session_id, 0);
    }
    for e in events.iter().filter(|e| e.name == "engagement") {
        let prop = |k: &str| e.props.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let ms: u64 = prop("engaged_ms").expect("engaged_ms").parse().unwrap();
        assert!(ms > 0, "{e:?}");
        let depth: u64 = prop("scroll_depth").expect("scroll_depth").parse().unwrap();
        assert!(depth <= 100, "{e:?}");
    }

    stop.cancel();
    ingest_task.await.unwrap();
    page_task.abort();
}
