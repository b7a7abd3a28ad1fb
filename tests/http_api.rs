//! The gateway's HTTP query API: SQL with bound parameters, JSON rows with
//! PostgreSQL column types, the row cap, the ready report endpoints, and a
//! JSON error with a SQLSTATE for every refusal.

mod common;

use chrono::{Duration as Days, Utc};
use common::Stack;
use serde_json::{Value, json};

const SITE: &str = "http.test";

async fn post_query(stack: &Stack, body: Value) -> (u16, Value) {
    let resp = stack
        .http
        .post(format!("{}/api/query", stack.gateway_url))
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    (resp.status().as_u16(), resp.json().await.expect("a JSON answer"))
}

async fn get(stack: &Stack, path: &str) -> (u16, Value) {
    let resp = stack
        .http
        .get(format!("{}{path}", stack.gateway_url))
        .send()
        .await
        .expect("gateway answers");
    (resp.status().as_u16(), resp.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_reports_over_http() {
    let stack = Stack::start(&[SITE]).await;
    let day = (Utc::now() - Days::days(1)).date_naive();
    stack
        .post_pageviews(SITE, &["/a", "/a", "/a", "/b", "/b"], common::yesterday_at(1), "10.8.0")
        .await;

    let (status, got) = post_query(
        &stack,
        json!({"sql": "select path, pageviews from pages_day where site = $1 order by path", "params": [SITE]}),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        got["columns"],
        json!([{"name": "path", "type": "text"}, {"name": "pageviews", "type": "int8"}])
    );
    assert_eq!(got["rows"], json!([["/a", 3], ["/b", 2]]));
    assert_eq!(got["truncated"], false);

    // The row cap (10,000 by default) is reported, not silent.
    let (status, got) = post_query(&stack, json!({"sql": "select * from generate_series(1, 20000)"})).await;
    assert_eq!(status, 200);
    assert_eq!(got["row_count"], 10_000);
    assert_eq!(got["truncated"], true);

    // Refusals: JSON with the SQLSTATE.
    for (body, want_status, want_state) in [
        (json!({"sql": "select * from no_such_table"}), 400, "42P01"),
        (json!({"sql": "insert into sites values ('x')"}), 403, "25006"),
        (json!({"sql": "selec 1"}), 400, "42601"),
        (json!({"sql": "select $1", "params": [{"nested": 1}]}), 400, "22023"),
        (json!({"query": "select 1"}), 400, "22023"),
    ] {
        let (status, got) = post_query(&stack, body.clone()).await;
        assert_eq!(
            (status, got["sqlstate"].as_str()),
            (want_status, Some(want_state)),
            "{body}: {got}"
        );
        assert!(got["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    let (status, got) = get(&stack, "/api/sites").await;
    assert_eq!((status, got["rows"].clone()), (200, json!([[SITE]])));
    let range = format!("site={SITE}&from={day}&to={}", day + Days::days(1));
    let (status, got) = get(&stack, &format!("/api/report/summary?{range}&grain=day")).await;
    assert_eq!(status, 200, "{got}");
    let names: Vec<&str> = got["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pageviews", "visits", "bounces", "visit_duration", "visitors"]);
    assert_eq!(got["rows"], json!([[5, 5, 5, 0, 5]]));
    let (status, got) = get(&stack, &format!("/api/report/top?{range}&report=pages&limit=1")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["rows"][0][0], "/a");
    assert_eq!(got["rows"][0][1], 3);
    assert_eq!(got["row_count"], 1);
    let (status, got) = get(&stack, &format!("/api/report/timeseries?{range}&grain=hour")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["rows"], json!([[format!("{day}T01:00:00Z"), 5, 5, 5]]));
    for bad in [
        format!("/api/report/summary?site={SITE}&from=yesterday&to={day}"),
        format!("/api/report/top?{range}&report=nope"),
        format!("/api/report/timeseries?{range}&grain=week"),
        "/api/report/summary?from=2026-01-01&to=2026-01-02".to_owned(),
    ] {
        let (status, got) = get(&stack, &bad).await;
        assert_eq!(status, 400, "{bad}: {got}");
        assert!(got["error"].as_str().is_some(), "{bad}: {got}");
    }
    stack.stop().await;
}
