//! The gateway's built-in dashboard page in headless Chromium (Debian's
//! chromium driven by playwright-core through tests/clients/page.mjs),
//! against a gateway with loadgen traffic: the figures and tables it shows
//! equal the SQL results for the same window, and a screenshot is saved
//! under the test output (`dashboard-page.png` in CARGO_TARGET_TMPDIR).

mod common;

use common::{Stack, text_rows as rows};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const SITE: &str = "shop.example";

fn number(shown: &Value) -> i64 {
    shown
        .as_str()
        .expect("a figure")
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("figure {shown}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_sql_answers() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium not found at {chromium}: apt-get install chromium (or run .ci/run)"
    );
    let stack = Stack::start(&["shop.example", "blog.example"]).await;
    let report = stack.loadgen(3_000, 2, 30, 11).await;
    assert!(report.accepted > 2_900, "{report:?}");
    stack.wait_caught_up(std::time::Duration::from_secs(60)).await;

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-page.png");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new("node")
        .arg("page.mjs")
        .arg(format!("{}/?site={SITE}&range=7d", stack.gateway_url))
        .arg(&shot)
        .current_dir(&dir)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "page.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let shown: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON");
    assert_eq!(shown["errors"], Value::Array(vec![]), "{shown}");
    assert_eq!(shown["error"], "", "{shown}");
    assert_eq!(shown["site"], SITE);
    assert_eq!(shown["sites"], serde_json::json!(["blog.example", "shop.example"]));
    assert_eq!(shown["chart_points"], 2, "two lines drawn");

    // The same window through SQL.
    let (from, to) = (shown["from"].as_str().unwrap(), shown["to"].as_str().unwrap());
    let c = stack.pg().await;
    let range = format!("site = '{SITE}' and bucket >= '{from}' and bucket < '{to}'");
    let totals = rows(
        &c,
        &format!(
            "select sum(pageviews), sum(visits), sum(bounces), sum(visit_duration) from traffic_hour where {range}"
        ),
    )
    .await;
    let [pageviews, visits, bounces, duration]: [i64; 4] = std::array::from_fn(|i| totals[0][i].parse().unwrap());
    let visitors: i64 = rows(
        &c,
        &format!("select visitors from unique_visitors('{SITE}', '{from}', '{to}')"),
    )
    .await[0][0]
        .parse()
        .unwrap();
    assert!(pageviews > 0 && visits > 0);
    let f = &shown["figures"];
    assert_eq!(number(&f["pageviews"]), pageviews);
    assert_eq!(number(&f["visits"]), visits);
    assert_eq!(number(&f["visitors"]), visitors);
    assert_eq!(f["views_per_visit"], format!("{:.2}", pageviews as f64 / visits as f64));
    assert_eq!(
        f["bounce_rate"],
        format!("{}%", (100.0 * bounces as f64 / visits as f64).round())
    );
    assert_eq!(
        f["visit_duration"],
        format!("{} s", (duration as f64 / visits as f64).round())
    );

    let top = rows(
        &c,
        &format!("select path, sum(pageviews) as pv from pages_hour where {range} group by path order by pv desc, path limit 10"),
    )
    .await;
    let shown_pages: Vec<(String, i64)> = shown["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), number(&r[1])))
        .collect();
    let want: Vec<(String, i64)> = top.into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
    assert_eq!(shown_pages, want);
    assert!(!shown["countries"].as_array().unwrap().is_empty());
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "screenshot saved"
    );
    stack.stop().await;
}
