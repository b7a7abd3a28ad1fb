//! Every report, end to end: a scripted set of visits posted to ingest (which
//! assigns the sessions) comes back through SQL with the exact visits,
//! bounces, durations, entry and exit pages, sources, devices, locations,
//! conversions with revenue, event properties, new/returning visitors and
//! the realtime table.

mod common;

use chrono::{Duration as Days, TimeZone, Utc};
use common::{Stack, text_rows as rows};
use std::time::Duration;

const SITE: &str = "reports.test";
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn body(name: &str, path: &str, ts: i64, referrer: &str, returning: u8) -> String {
    serde_json::json!({"n": name, "u": format!("https://{SITE}{path}"), "d": SITE, "r": referrer, "ts": ts, "ret": returning})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_is_exact_through_sql() {
    let stack = Stack::start(&[SITE]).await;
    // 01:00 UTC yesterday: inside ingest's 72-hour window, and the whole
    // script stays within one day.
    let yesterday = (Utc::now() - Days::days(1)).date_naive();
    let day = Utc.from_utc_datetime(&yesterday.and_hms_opt(0, 0, 0).unwrap());
    let t = day.timestamp_millis() + HOUR;
    let (a, b) = ("10.1.0.1", "10.1.0.2");
    let script = [
        // Visitor A, first visit, from Google: three pages and a purchase.
        (a, body("pageview", "/", t, "https://www.google.com/", 0)),
        (a, body("pageview", "/pricing", t + MIN, "", 0)),
        (
            a,
            serde_json::json!({"n": "purchase", "u": format!("https://{SITE}/pricing"), "d": SITE, "ts": t + 2 * MIN,
                "ret": 0, "p": {"plan": "pro"}, "$": {"amount": "10.50", "currency": "EUR"}})
            .to_string(),
        ),
        // Visitor B, returning, from a newsletter: one page (a bounce).
        (
            b,
            body(
                "pageview",
                "/docs?utm_source=newsletter&utm_medium=email",
                t + 10_000,
                "",
                1,
            ),
        ),
        // Visitor A again two hours later: a new visit, a bounce.
        (a, body("pageview", "/docs", t + 2 * HOUR, "", 0)),
    ];
    for (ip, body) in &script {
        assert_eq!(stack.post(body, ip).await.0, 202, "{body}");
    }
    // And one event now, for the realtime table.
    let now = serde_json::json!({"n": "pageview", "u": format!("https://{SITE}/now"), "d": SITE}).to_string();
    assert_eq!(stack.post(&now, "10.1.0.3").await.0, 202);
    stack.wait_caught_up(Duration::from_secs(20)).await;

    let pg = stack.pg().await;
    let day_filter = format!("site = '{SITE}' AND bucket = '{}'", day.to_rfc3339());
    assert_eq!(
        rows(
            &pg,
            &format!(
                "SELECT pageviews, events, visitors, visits, bounces, visit_duration, new_visitors, returning_visitors \
                 FROM traffic_day WHERE {day_filter}"
            )
        )
        .await,
        vec![vec!["4", "5", "2", "3", "2", "120", "1", "1"]]
    );
    // Visits are counted in the hour their session started.
    let hours = rows(
        &pg,
        &format!("SELECT extract(hour FROM bucket)::bigint, visits, bounces FROM traffic_hour WHERE site = '{SITE}' AND bucket >= '{}' AND bucket < '{}' ORDER BY bucket",
            day.to_rfc3339(), (day + Days::days(1)).to_rfc3339()),
    )
    .await;
    assert_eq!(hours, vec![vec!["1", "2", "1"], vec!["3", "1", "1"]]);
    assert_eq!(
        rows(
            &pg,
            &format!(
                "SELECT path, pageviews, visitors, entries, exits FROM pages_day WHERE {day_filter} ORDER BY path"
            )
        )
        .await,
        vec![
            vec!["/", "1", "1", "1", "0"],
            vec!["/docs", "2", "2", "2", "2"],
            vec!["/pricing", "1", "1", "0", "1"],
        ]
    );
    assert_eq!(
        rows(
            &pg,
            &format!(
                "SELECT channel, source, referrer_host, utm_source, utm_medium, visits, visitors FROM sources_day \
                 WHERE {day_filter} ORDER BY source"
            )
        )
        .await,
        vec![
            vec!["direct", "Direct / None", "", "", "", "1", "1"],
            vec!["search", "Google", "google.com", "", "", "1", "1"],
            vec!["email", "newsletter", "", "newsletter", "email", "1", "1"],
        ]
    );
    assert_eq!(
        rows(
            &pg,
            &format!("SELECT browser, device_type, sum(visits) FROM devices_day WHERE {day_filter} GROUP BY 1, 2")
        )
        .await,
        vec![vec!["Firefox", "desktop", "3"]]
    );
    assert_eq!(
        rows(
            &pg,
            &format!("SELECT country, visits, visitors FROM locations_day WHERE {day_filter}")
        )
        .await,
        vec![vec!["", "3", "2"]]
    );
    assert_eq!(
        rows(
            &pg,
            &format!("SELECT name, currency, events, visitors, revenue FROM conversions_day WHERE {day_filter}")
        )
        .await,
        vec![vec!["purchase", "EUR", "1", "1", "10.500000"]]
    );
    assert_eq!(
        rows(
            &pg,
            &format!("SELECT name, property, value, events FROM event_props_day WHERE {day_filter}")
        )
        .await,
        vec![vec!["purchase", "plan", "pro", "1"]]
    );
    assert_eq!(
        rows(
            &pg,
            &format!("SELECT visitors, pageviews FROM realtime WHERE site = '{SITE}'")
        )
        .await,
        vec![vec!["1", "1"]]
    );
    // The raw events carry the sessions ingest assigned: three visits.
    assert_eq!(
        rows(
            &pg,
            &format!(
                "SELECT count(DISTINCT session_id) FROM events WHERE site = '{SITE}' AND ts < '{}'",
                (day + Days::days(1)).to_rfc3339()
            )
        )
        .await,
        vec![vec!["3"]]
    );
    stack.stop().await;
}
