//! End to end: events posted to ingest come back, exactly counted, as SQL
//! over the PostgreSQL wire (tokio-postgres simple and extended protocol,
//! and the psql binary).

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::Stack;
use std::collections::BTreeMap;
use std::time::Duration;

struct Ev {
    site: &'static str,
    name: &'static str,
    path: &'static str,
    ts_ms: Option<i64>,
    ip: &'static str,
}

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn body(e: &Ev) -> String {
    let mut v =
        serde_json::json!({"n": e.name, "u": format!("https://{}{}?q=1", e.site, e.path), "d": e.site, "r": ""});
    if let Some(ts) = e.ts_ms {
        v["ts"] = ts.into();
    }
    v.to_string()
}

/// A fixed set of events over several sites, pages, minutes and hours.
fn events(base: i64) -> Vec<Ev> {
    let mut out = Vec::new();
    let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    // a.test: three hours, several minutes, pages and visitors.
    for h in 0..3 {
        for m in [0, 1, 7] {
            for (i, path) in ["/", "/pricing", "/", "/docs"].iter().enumerate() {
                out.push(Ev {
                    site: "a.test",
                    name: "pageview",
                    path,
                    ts_ms: Some(base + h * HOUR + m * MIN + i as i64 * 1000),
                    ip: ips[(h as usize + i) % ips.len()],
                });
            }
        }
        out.push(Ev {
            site: "a.test",
            name: "add_to_cart",
            path: "/pricing",
            ts_ms: Some(base + h * HOUR + 30 * MIN),
            ip: ips[0],
        });
    }
    // b.test: one busy minute, one visitor.
    for i in 0..25 {
        out.push(Ev {
            site: "b.test",
            name: if i % 5 == 4 { "signup" } else { "pageview" },
            path: "/landing",
            ts_ms: Some(base + HOUR + 15 * MIN + i * 100),
            ip: "10.9.9.9",
        });
    }
    // c.test: events without a client timestamp (time of arrival).
    for ip in &ips[..4] {
        out.push(Ev {
            site: "c.test",
            name: "pageview",
            path: "/now",
            ts_ms: None,
            ip,
        });
    }
    out
}

#[derive(Default, Debug, PartialEq)]
struct Traffic {
    pageviews: i64,
    events: i64,
    visitors: std::collections::BTreeSet<&'static str>,
}

fn expected_traffic(evs: &[Ev], step: i64) -> BTreeMap<(&'static str, i64), Traffic> {
    let mut m: BTreeMap<(&str, i64), Traffic> = BTreeMap::new();
    for e in evs.iter().filter(|e| e.ts_ms.is_some()) {
        let ts = e.ts_ms.unwrap_or_default();
        let t = m.entry((e.site, ts.div_euclid(step) * step)).or_default();
        t.events += 1;
        if e.name == "pageview" {
            t.pageviews += 1;
        }
        t.visitors.insert(e.ip);
    }
    m
}

fn utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("valid time")
}

/// HyperLogLog: small cardinalities are exact in practice; allow 2% or 1.
fn assert_visitors(got: i64, want: usize, ctx: &str) {
    let want = want as i64;
    let tolerance = (want as f64 * 0.02).ceil().max(1.0) as i64;
    assert!(
        (got - want).abs() <= tolerance,
        "{ctx}: visitors {got}, expected about {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_back_as_exact_sql_results() {
    let stack = Stack::start(&["a.test", "b.test", "c.test"]).await;
    // Three hours ago, on an hour boundary: inside the 72 h window.
    let now = Utc::now().timestamp_millis();
    let base = (now - 4 * HOUR).div_euclid(HOUR) * HOUR;
    let evs = events(base);
    for e in &evs {
        let (status, reply) = stack.post(&body(e), e.ip).await;
        assert_eq!(status, 202, "{reply}");
    }

    // Bad input is refused with a reason, and nothing of it is stored.
    let refusals = [
        (r#"{"n":"pageview"}"#.to_owned(), 400),
        (r#"{"n":"pageview","u":"notaurl","d":"a.test"}"#.to_owned(), 400),
        (
            format!(r#"{{"n":"pageview","u":"https://a.test/","ts":{}}}"#, now - 73 * HOUR),
            400,
        ),
        (
            format!(r#"{{"n":"pageview","u":"https://a.test/","ts":{}}}"#, now + 10 * MIN),
            400,
        ),
        (r#"{"n":"pageview","u":"https://unregistered.test/"}"#.to_owned(), 403),
        ("{".repeat(70_000), 413),
    ];
    for (b, want) in &refusals {
        let (status, reply) = stack.post(b, "10.0.0.1").await;
        assert_eq!(status, *want, "{reply}");
        assert!(
            reply["error"].as_str().is_some_and(|r| !r.is_empty()),
            "JSON reason for {status}: {reply}"
        );
    }

    stack.wait_caught_up(Duration::from_secs(30)).await;
    let pg = stack.pg().await;

    // Simple protocol: every (site, minute) row of the past events, exactly.
    let want = expected_traffic(&evs, MIN);
    let rows = pg
        .simple_query(
            "select site, extract(epoch from bucket)::bigint as b, pageviews, events, visitors \
             from traffic_minute where site in ('a.test', 'b.test') order by site, bucket",
        )
        .await
        .expect("minute query");
    let got: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), want.len(), "one row per (site, minute) with data");
    for (row, ((site, bucket), t)) in got.iter().zip(&want) {
        assert_eq!(row.get(0), Some(*site));
        assert_eq!(row.get(1).and_then(|v| v.parse::<i64>().ok()), Some(bucket / 1000));
        assert_eq!(
            row.get(2).and_then(|v| v.parse::<i64>().ok()),
            Some(t.pageviews),
            "{site} {bucket}"
        );
        assert_eq!(
            row.get(3).and_then(|v| v.parse::<i64>().ok()),
            Some(t.events),
            "{site} {bucket}"
        );
        let v = row.get(4).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
        assert_visitors(v, t.visitors.len(), &format!("{site} {bucket}"));
    }

    // Extended protocol with parameters, binary results: hourly traffic.
    let want_h = expected_traffic(&evs, HOUR);
    let rows = pg
        .query(
            "select bucket, pageviews, events, visitors from traffic_hour \
             where site = $1 and bucket >= $2 and bucket < $3 order by bucket",
            &[&"a.test", &utc(base), &utc(base + 3 * HOUR)],
        )
        .await
        .expect("hour query");
    let want_a: Vec<_> = want_h.iter().filter(|((s, _), _)| *s == "a.test").collect();
    assert_eq!(rows.len(), 3);
    for (row, ((_, bucket), t)) in rows.iter().zip(want_a) {
        assert_eq!(row.get::<_, DateTime<Utc>>(0), utc(*bucket));
        assert_eq!(row.get::<_, i64>(1), t.pageviews);
        assert_eq!(row.get::<_, i64>(2), t.events);
        assert_visitors(row.get::<_, i64>(3), t.visitors.len(), "a.test hour");
    }

    // Pages per path over the day table, with an aggregate on top.
    let rows = pg
        .query(
            "select path, sum(pageviews) as pv from pages_day where site = $1 group by path order by path",
            &[&"a.test"],
        )
        .await
        .expect("pages query");
    let pages: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        pages,
        vec![
            ("/".to_owned(), 18),
            ("/docs".to_owned(), 9),
            ("/pricing".to_owned(), 9)
        ]
    );

    // No site filter: the registry supplies the sites; the "now" events count.
    let rows = pg
        .query(
            "select site, sum(events) from traffic_day group by site order by site",
            &[],
        )
        .await
        .expect("all sites");
    let totals: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        totals,
        vec![
            ("a.test".to_owned(), 39),
            ("b.test".to_owned(), 25),
            ("c.test".to_owned(), 4)
        ]
    );

    // Unique visitors over a range: the union of the HyperLogLogs, not the
    // sum of per-bucket counts (a.test has 5 distinct visitors over 3 hours,
    // each seen in several hours).
    let sum_hours: i64 = pg
        .query_one("select sum(visitors) from traffic_hour where site = 'a.test'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(sum_hours > 5, "summing buckets over-counts: {sum_hours}");
    let from = utc(base).to_rfc3339();
    let to = utc(base + 3 * HOUR).to_rfc3339();
    let row = pg
        .query_one(
            &format!("select site, visitors from unique_visitors('a.test', '{from}', '{to}')"),
            &[],
        )
        .await
        .expect("unique_visitors");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("a.test".to_owned(), 5)
    );
    let row = pg
        .query_one(
            "select visitors from unique_visitors('a.test', now() - interval '5 hours', now())",
            &[],
        )
        .await
        .expect("unique_visitors with now()");
    assert_eq!(row.get::<_, i64>(0), 5);
    // The first hour alone: its 4 visitors.
    let first_hour = format!(
        "select visitors from unique_visitors('b.test', '{}', '{}')",
        utc(base).to_rfc3339(),
        utc(base + 2 * HOUR).to_rfc3339()
    );
    assert_eq!(pg.query_one(&first_hour, &[]).await.unwrap().get::<_, i64>(0), 1);
    // The grouped form: one row per hour, each its own union, equal to the
    // hour table's visitors.
    let grouped = pg
        .query(
            &format!("select \"from\", visitors from unique_visitors('a.test', '{from}', '{to}', '1 hour') order by 1"),
            &[],
        )
        .await
        .expect("grouped unique_visitors");
    let per_hour = pg
        .query(
            &format!(
                "select bucket, visitors from traffic_hour where site = 'a.test' and bucket >= '{from}' and bucket < '{to}' order by 1"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(grouped.len(), 3);
    let pairs = |rows: &[tokio_postgres::Row]| -> Vec<(chrono::DateTime<chrono::Utc>, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    assert_eq!(pairs(&grouped), pairs(&per_hour));
    let err = pg
        .simple_query(&format!(
            "select * from unique_visitors('a.test', '{from}', '{to}', '5 seconds')"
        ))
        .await
        .expect_err("sub-minute step");
    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(message.contains("whole minutes"), "{message}");

    // The psql binary, as a user would run it.
    assert_eq!(
        stack.psql("select site, sum(pageviews) from traffic_hour group by site order by site"),
        "a.test|36\nb.test|20\nc.test|4\n"
    );

    // Errors carry PostgreSQL SQLSTATEs.
    for (sql, code) in [
        ("select * from no_such_table", "42P01"),
        ("select no_such_column from traffic_day", "42703"),
        ("selec 1", "42601"),
        ("insert into sites values ('x.test')", "25006"),
    ] {
        let err = pg.simple_query(sql).await.expect_err(sql);
        assert_eq!(err.code().map(|c| c.code()), Some(code), "{sql}: {err}");
    }
    // And the connection is still fine afterwards.
    let row = pg.query_one("select count(*) from sites", &[]).await.expect("count");
    assert_eq!(row.get::<_, i64>(0), 3);

    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_traffic_is_counted_exactly() {
    let sites = tally::loadgen::site_names(5);
    let site_refs: Vec<&str> = sites.iter().map(String::as_str).collect();
    let stack = Stack::start(&site_refs).await;
    let report = stack.loadgen(600, 5, 3, 42).await;
    assert_eq!(report.sent, 600);
    assert_eq!(report.accepted, 600, "{report:?}");

    stack.wait_caught_up(Duration::from_secs(30)).await;
    let pg = stack.pg().await;
    let row = pg
        .query_one(
            "select (select sum(events) from traffic_day), (select sum(pageviews) from traffic_hour), \
                    (select sum(pageviews) from pages_minute), (select count(distinct site) from traffic_minute)",
            &[],
        )
        .await
        .expect("totals");
    let (events, pv_hour, pv_pages): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(events, 600, "every accepted event counted once");
    assert_eq!(pv_hour, pv_pages, "page views agree between reports and grains");
    assert!(pv_hour > 400 && pv_hour < 600, "mostly page views: {pv_hour}");
    assert!(row.get::<_, i64>(3) >= 3, "traffic spread over sites");

    // The same model through the batch endpoint (as a forwarding server).
    let mut opts = tally::loadgen::LoadgenOptions::new(stack.ingest_url.clone());
    (
        opts.total,
        opts.rate,
        opts.sites,
        opts.backfill_hours,
        opts.seed,
        opts.batch,
    ) = (300, 5_000.0, 5, 3, 43, 50);
    let batched = tally::loadgen::run(&opts, schema::ops::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((batched.sent, batched.accepted), (300, 300), "{batched:?}");
    stack.wait_caught_up(Duration::from_secs(30)).await;
    let events: i64 = pg
        .query_one("select sum(events) from traffic_day", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 900);
    drop(pg);
    stack.stop().await;
}
