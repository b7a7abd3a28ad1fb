//! `tally replay`: a changed processing rule reaches history.
//!
//! The live stack counts every page; `tally replay --exclude-path` rebuilds
//! the reports into a new keyspace version under the new rule while the old
//! one serves, switches, and removes the old version. The tests check the
//! gateway serves the new figures, nothing of the old version is left (keys
//! or consumer groups), the running streamer moved to the new version and
//! applies its rule to new events, and `tally verify` agrees. A second test
//! covers streams that were trimmed: days the streams no longer hold are
//! carried over unchanged, the rest is recomputed.

mod common;

use common::{Stack, text_rows as rows};
use schema::Shard;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400_000;

/// Run the `tally` binary against the stack's Redis, with a bound.
fn tally(redis_url: &str, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env("REDIS_URL", redis_url)
        .env("TALLY_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tally");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "tally {args:?} did not finish in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Run `tally`, which must succeed; its standard output.
fn tally_ok(redis_url: &str, args: &[&str]) -> String {
    let out = tally(redis_url, args);
    assert!(
        out.status.success(),
        "tally {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

async fn keys(conn: &mut schema::store::RedisConn, pattern: &str) -> Vec<String> {
    schema::store::scan_keys(conn, pattern).await.expect("SCAN")
}

async fn groups(conn: &mut schema::store::RedisConn) -> Vec<String> {
    let mut names = Vec::new();
    for shard in Shard::all() {
        let info: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(shard.stream_key())
            .query_async(conn)
            .await
            .unwrap_or_default();
        for g in info {
            let m: std::collections::HashMap<String, redis::Value> = redis::from_redis_value(g).unwrap();
            names.push(redis::from_redis_value::<String>(m["name"].clone()).unwrap());
        }
    }
    names.sort();
    names.dedup();
    names
}

async fn active_version(conn: &mut schema::store::RedisConn) -> u32 {
    schema::store::active_keyspace(conn).await.unwrap().version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_applies_a_changed_rule_to_history_and_switches() {
    const SITE: &str = "replay.test";
    let stack = Stack::start(&[SITE]).await;
    let url = stack.redis_url.clone();
    let t = common::yesterday_at(9);
    stack
        .post_pageviews(
            SITE,
            &["/", "/pricing", "/admin/users", "/admin/settings", "/docs"],
            t,
            "10.4.0",
        )
        .await;
    let pg = stack.pg().await;
    let day = format!(
        "site = '{SITE}' AND bucket = '{}'",
        chrono::DateTime::from_timestamp_millis(t).unwrap().format("%Y-%m-%d")
    );
    let pages = format!("SELECT path, pageviews FROM pages_day WHERE {day} ORDER BY path");
    assert_eq!(rows(&pg, &pages).await.len(), 5);

    let said = tally_ok(&url, &["replay", "--exclude-path", "/admin/*"]);
    assert!(said.contains("replayed 5 events into keyspace v2"), "{said}");
    assert!(said.contains("now serving v2, v1 removed"), "{said}");

    // Served: the rule applies to history.
    assert_eq!(
        rows(&pg, &pages).await,
        [["/", "1"], ["/docs", "1"], ["/pricing", "1"]].map(|r| r.map(String::from).to_vec())
    );
    assert_eq!(
        rows(&pg, &format!("SELECT pageviews, visits FROM traffic_day WHERE {day}")).await,
        vec![vec!["3".to_owned(), "3".to_owned()]]
    );
    // The old version is gone: keys, rules and consumer groups.
    let mut conn = stack.conn.clone();
    assert_eq!(active_version(&mut conn).await, 2);
    assert_eq!(keys(&mut conn, "tally:v1:*").await, Vec::<String>::new());
    assert_eq!(keys(&mut conn, "tally:rules:v1").await, Vec::<String>::new());
    assert!(!keys(&mut conn, "tally:v2:*").await.is_empty());
    assert_eq!(groups(&mut conn).await, vec!["tally:agg:v2".to_owned()]);
    assert_eq!(
        keys(&mut conn, "tally:replay").await,
        Vec::<String>::new(),
        "lock released"
    );
    let rules: String = redis::cmd("GET")
        .arg("tally:rules:v2")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(rules, r#"{"exclude_paths":["/admin/*"]}"#);

    // The running streamer followed: new events count under the new rule.
    stack
        .post_pageviews(SITE, &["/fresh", "/admin/new"], t + 60_000, "10.4.1")
        .await;
    assert_eq!(
        rows(&pg, &pages).await,
        [["/", "1"], ["/docs", "1"], ["/fresh", "1"], ["/pricing", "1"]].map(|r| r.map(String::from).to_vec())
    );
    let status = tally(&url, &["status"]);
    assert!(
        text(&status.stdout).contains(r#"rules {"exclude_paths":["/admin/*"]}"#),
        "{}",
        text(&status.stdout)
    );
    tally_ok(&url, &["verify", "--site", SITE]);

    // A second replay dropping the rule counts every page again (v3).
    tally_ok(&url, &["replay", "--count-all-paths"]);
    assert_eq!(rows(&pg, &pages).await.len(), 7);
    assert_eq!(groups(&mut conn).await, vec!["tally:agg:v3".to_owned()]);
    assert_eq!(keys(&mut conn, "tally:v2:*").await, Vec::<String>::new());

    // Refusals: a bad pattern, a start buckets could still change after.
    let bad = tally(&url, &["replay", "--exclude-path", "admin"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("starts with '/'"), "{}", text(&bad.stderr));
    let recent = tally(
        &url,
        &["replay", "--from", &chrono::Utc::now().format("%Y-%m-%d").to_string()],
    );
    assert!(!recent.status.success());
    assert!(
        text(&recent.stderr).contains("may still receive back-dated events"),
        "{}",
        text(&recent.stderr)
    );
    assert_eq!(active_version(&mut conn).await, 3, "a refused replay changes nothing");
    assert_eq!(
        keys(&mut conn, "tally:replay").await,
        Vec::<String>::new(),
        "nor keeps the lock"
    );
    stack.stop().await;
}

/// Write a page view directly into its shard stream with an entry id at its
/// own time, as ingest would have days ago.
async fn xadd_at(conn: &mut schema::store::RedisConn, site: &str, path: &str, ts_ms: i64, visitor: u64) {
    let mut e = schema::Event::pageview(ts_ms, site, path, visitor);
    e.session_id = visitor;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(Shard::of_site(site).stream_key())
        .arg(format!("{ts_ms}-{visitor}"));
    for (f, v) in e.to_fields() {
        cmd.arg(f).arg(v);
    }
    let _: String = cmd.query_async(conn).await.expect("XADD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_carries_over_days_the_streams_no_longer_hold() {
    const SITE: &str = "carry.test";
    let stack = Stack::start(&[SITE]).await;
    let mut conn = stack.conn.clone();
    let today = schema::Grain::Day.truncate(chrono::Utc::now().timestamp_millis());
    let (d10, d6, d5) = (today - 10 * DAY, today - 6 * DAY, today - 5 * DAY);
    xadd_at(&mut conn, SITE, "/old", d10 + 12 * 3_600_000, 1).await;
    xadd_at(&mut conn, SITE, "/admin/old", d10 + 12 * 3_600_000 + 1, 2).await;
    xadd_at(&mut conn, SITE, "/mid", d6 + 20 * 3_600_000, 3).await;
    xadd_at(&mut conn, SITE, "/new", d5 + 12 * 3_600_000, 4).await;
    xadd_at(&mut conn, SITE, "/admin/new", d5 + 12 * 3_600_000 + 1, 5).await;
    stack.wait_caught_up(Duration::from_secs(20)).await;
    // The stream keeps only the last week (all of it applied).
    let stream = Shard::of_site(SITE).stream_key();
    let trimmed: u64 = redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MINID")
        .arg(format!("{}-0", d6))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(trimmed, 2);

    let said = tally_ok(&stack.redis_url, &["replay", "--exclude-path", "/admin/*"]);
    // Floor: the first whole day the stream holds (d5). d10 and d6 are
    // carried over (their day, hour and span keys), d5 is recomputed.
    let floor = chrono::DateTime::from_timestamp_millis(d5).unwrap().format("%Y-%m-%d");
    assert!(said.contains(&format!(r#""floor_ms":{d5}"#)), "{said}");
    let pg = stack.pg().await;
    let per_day = rows(
        &pg,
        &format!("SELECT bucket::date::text, path, pageviews FROM pages_day WHERE site = '{SITE}' ORDER BY 1, 2"),
    )
    .await;
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let want: Vec<Vec<String>> = [
        (day(d10), "/admin/old"),
        (day(d10), "/old"),
        (day(d6), "/mid"),
        (floor.to_string(), "/new"),
    ]
    .into_iter()
    .map(|(d, p)| vec![d, p.to_owned(), "1".to_owned()])
    .collect();
    assert_eq!(per_day, want);
    assert_eq!(
        rows(&pg, &format!("SELECT count(*) FROM pages_hour WHERE site = '{SITE}'")).await,
        vec![vec!["4".to_owned()]]
    );
    assert_eq!(keys(&mut conn, "tally:v1:*").await, Vec::<String>::new());
    tally_ok(&stack.redis_url, &["verify", "--site", SITE]);
    // Before what the stream holds, --from is refused.
    let early = tally(&stack.redis_url, &["replay", "--from", &day(d10)]);
    assert!(!early.status.success());
    assert!(
        text(&early.stderr).contains("keep events only from"),
        "{}",
        text(&early.stderr)
    );
    stack.stop().await;
}
