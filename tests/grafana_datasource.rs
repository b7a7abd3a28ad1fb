//! Grafana's PostgreSQL datasource against the gateway, with the exact SQL
//! it sends (tests/grafana/datasource_queries.json, byte for byte from
//! Grafana's source): the connection pings, version and TimescaleDB
//! detection, the table list and a table's columns; then panel queries as
//! its macros expand them, over the simple protocol with only `user` and
//! `database` in the startup packet (as its pgx driver connects).

mod common;

use chrono::{Duration as Days, TimeZone, Utc};
use common::Stack;
use std::collections::HashMap;
use tokio_postgres::SimpleQueryMessage;

const SITE: &str = "grafana.test";

/// Column names and text rows of a simple query.
async fn simple(c: &tokio_postgres::Client, sql: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}\n-> {e}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_owned()).collect());
            }
            _ => {}
        }
    }
    (columns, rows)
}

/// Grafana's RFC 3339 form of a time (`2006-01-02T15:04:05.999999999Z07:00`).
fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_metadata_and_panel_queries_work_as_sent() {
    let stack = Stack::start(&[SITE]).await;
    let t0 = common::yesterday_at(3);
    // Hour 03: 3 views, hour 05: 2 views.
    stack.post_pageviews(SITE, &["/", "/a", "/b"], t0, "10.6.0").await;
    stack
        .post_pageviews(SITE, &["/", "/c"], t0 + 2 * 3_600_000, "10.6.1")
        .await;
    let c = stack.pg().await;
    let queries: HashMap<String, String> =
        serde_json::from_str(include_str!("grafana/datasource_queries.json")).expect("fixture");

    // Pings: an empty query answers EmptyQueryResponse.
    for ping in ["ping_pgx", "ping_libpq"] {
        let msgs = c.simple_query(&queries[ping]).await.expect(ping);
        assert!(msgs.iter().all(|m| !matches!(m, SimpleQueryMessage::Row(_))), "{ping}");
    }
    assert_eq!(
        simple(&c, &queries["version"]).await,
        (vec!["version".to_owned()], vec![vec!["1600".to_owned()]])
    );
    let (cols, rows) = simple(&c, &queries["timescaledb"]).await;
    assert_eq!((cols, rows.len()), (vec!["extversion".to_owned()], 0));

    // The table list: every table, unqualified (public is on the search
    // path), in name order.
    let (cols, rows) = simple(&c, &queries["showTables"]).await;
    assert_eq!(cols, ["table"]);
    let mut want: Vec<String> = schema::catalog::tables().into_iter().map(|t| t.name).collect();
    want.sort();
    assert_eq!(rows.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>(), want);

    // A table's columns, with PostgreSQL's data_type spelling.
    let (cols, rows) = simple(&c, &queries["getSchema(<t>)"].replace("<t>", "traffic_hour")).await;
    assert_eq!(cols, ["column", "type"]);
    let got: Vec<(String, String)> = rows.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(got[0], ("site".into(), "text".into()));
    assert_eq!(got[1], ("bucket".into(), "timestamp with time zone".into()));
    assert!(got.contains(&("pageviews".into(), "bigint".into())));
    let (_, dbs) = simple(
        &c,
        "SELECT datname FROM pg_database WHERE datistemplate = false ORDER BY datname",
    )
    .await;
    assert_eq!(dbs, [["tally"]]);

    // Panels, macros expanded as Grafana does for the range yesterday
    // 00:00 to 23:59:59.999.
    let day = (Utc::now() - Days::days(1)).date_naive();
    let from = Utc
        .from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
        .timestamp_millis();
    let to = from + 86_400_000 - 1;
    let filter = format!("bucket BETWEEN '{}' AND '{}'", rfc3339(from), rfc3339(to));
    let h3 = (t0 / 1000).to_string();
    let h5 = (t0 / 1000 + 7200).to_string();
    // $__timeGroupAlias(bucket,'1h') -> epoch seconds, ascending.
    let (cols, rows) = simple(
        &c,
        &format!(
            "SELECT floor(extract(epoch from bucket)/3600)*3600 AS \"time\", sum(pageviews) AS pageviews FROM traffic_hour WHERE {filter} AND site = '{SITE}' GROUP BY 1 ORDER BY 1"
        ),
    )
    .await;
    assert_eq!(cols, ["time", "pageviews"]);
    assert_eq!(rows, [[h3.clone(), "3".into()], [h5.clone(), "2".into()]]);
    // $__time(bucket) -> timestamptz with a space separator.
    let (cols, rows) = simple(
        &c,
        &format!(
            "SELECT bucket AS \"time\", pageviews FROM traffic_hour WHERE {filter} AND site = '{SITE}' ORDER BY 1"
        ),
    )
    .await;
    assert_eq!(cols, ["time", "pageviews"]);
    assert_eq!(rows[0][0], format!("{day} 03:00:00+00"));
    assert_eq!(rows.len(), 2);
    // $__timeEpoch(bucket) and $__unixEpochFilter on the epoch.
    let (cols, rows) = simple(
        &c,
        &format!(
            "SELECT extract(epoch from bucket) as \"time\", visitors FROM traffic_hour WHERE extract(epoch from bucket) >= {} AND extract(epoch from bucket) <= {} AND site = '{SITE}' ORDER BY 1",
            from / 1000,
            to / 1000
        ),
    )
    .await;
    assert_eq!(cols, ["time", "visitors"]);
    assert_eq!(rows, [[h3, "3".into()], [h5, "2".into()]]);
    stack.stop().await;
}
