//! Countries from a GeoIP database: ingest opened with a MaxMind-format
//! `.mmdb` (written by the `mmdb-writer` Python package for the test) gives
//! each event the country of its client address, or of a forwarded
//! visitor's address on the batch endpoint; a trusted CDN header wins; an
//! unknown or unreadable database is a startup error.

mod common;

use common::start;
use harness::RedisServer;
use serde_json::json;
use std::path::Path;
use std::process::Command;

const SITE: &str = "geo.test";

/// A country database: 203.0.113.0/24 in France, 198.51.100.0/24 in Japan.
fn write_db(path: &Path) {
    let script = format!(
        "from mmdb_writer import MMDBWriter\n\
         from netaddr import IPSet\n\
         w = MMDBWriter(ip_version=4, database_type='GeoLite2-Country', languages=['en'], description='Tally test')\n\
         w.insert_network(IPSet(['203.0.113.0/24']), {{'country': {{'iso_code': 'FR'}}}})\n\
         w.insert_network(IPSet(['198.51.100.0/24']), {{'country': {{'iso_code': 'JP'}}}})\n\
         w.to_db_file({:?})\n",
        path.display().to_string()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().expect("python3");
    assert!(
        out.status.success(),
        "mmdb-writer (tests/clients/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countries_come_from_the_geoip_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    write_db(&db);
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let ingest = start(&redis, &[SITE], |c| {
        c.geoip_db = Some(db.clone());
        c.trust_forwarded_for = true;
        c.country_header = Some("cf-ipcountry".into());
    })
    .await;
    let http = reqwest::Client::new();
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    for (path, ip, header) in [
        ("/fr", "203.0.113.7", None),
        ("/jp", "198.51.100.9", None),
        ("/unknown", "192.0.2.1", None),
        ("/v6", "2001:db8::1", None),
        ("/cdn", "203.0.113.8", Some("DE")),
    ] {
        let mut req = http
            .post(format!("{}/api/event", ingest.base))
            .header("user-agent", ua)
            .header("x-forwarded-for", ip)
            .body(json!({"n": "pageview", "u": format!("https://{SITE}{path}"), "d": SITE}).to_string());
        if let Some(country) = header {
            req = req.header("cf-ipcountry", country);
        }
        assert_eq!(req.send().await.unwrap().status(), 202, "{path}");
    }
    let forwarded = json!({"events": [
        {"n": "pageview", "u": format!("https://{SITE}/batch-jp"), "d": SITE, "ip": "198.51.100.20", "user_agent": ua}
    ]});
    let resp = http
        .post(format!("{}/api/events", ingest.base))
        .header("user-agent", ua)
        .header("x-forwarded-for", "203.0.113.50")
        .json(&forwarded)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let mut conn = ingest.conn.clone();
    let events = common::stream_events(&mut conn, SITE).await;
    let mut countries: Vec<(String, String)> = events.into_iter().map(|e| (e.path().to_owned(), e.country)).collect();
    countries.sort();
    let want: Vec<(String, String)> = [
        ("/batch-jp", "JP"),
        ("/cdn", "DE"),
        ("/fr", "FR"),
        ("/jp", "JP"),
        ("/unknown", ""),
        ("/v6", ""),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(countries, want);
    ingest.stop.cancel();
    ingest.task.await.unwrap();
}

#[tokio::test]
async fn an_unreadable_database_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.mmdb");
    std::fs::write(&bogus, b"not a database").unwrap();
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    for path in [bogus, dir.path().join("missing.mmdb")] {
        let conn = schema::store::RedisConn::connect(
            &schema::store::RedisTarget::parse(&redis.url()).unwrap(),
            schema::store::ConnectOptions::default(),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = tally_ingest::IngestConfig::with_addr(listener.local_addr().unwrap());
        cfg.geoip_db = Some(path.clone());
        let err = tally_ingest::run(cfg, listener, conn, None, schema::ops::CancellationToken::new())
            .await
            .expect_err("refused at startup");
        assert!(err.to_string().contains("GeoIP database"), "{path:?}: {err}");
    }
}
