//! Session behaviour clients rely on: version(), SET/SHOW/RESET per
//! connection, BEGIN/COMMIT/ROLLBACK, empty queries and `-- ping`.

mod common;

use common::Stack;
use tokio_postgres::SimpleQueryMessage;

async fn show(c: &tokio_postgres::Client, name: &str) -> Option<String> {
    first_value(&c.simple_query(&format!("show {name}")).await.unwrap())
}

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_behave_like_postgresql() {
    let stack = Stack::start(&["s.test"]).await;
    let a = stack.pg().await;
    let b = stack.pg().await;

    let v: String = a.query_one("select version()", &[]).await.unwrap().get(0);
    assert!(v.starts_with("PostgreSQL 16."), "{v}");

    for (name, want) in [
        ("server_version", "16.6"),
        ("server_version_num", "160006"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("transaction isolation level", "read committed"),
        ("DateStyle", "ISO, MDY"),
    ] {
        let got = first_value(&a.simple_query(&format!("show {name}")).await.unwrap());
        assert_eq!(got.as_deref(), Some(want), "SHOW {name}");
    }

    // SET is per connection.
    a.simple_query("set application_name = 'dashboard'").await.unwrap();
    a.simple_query("SET statement_timeout TO 5000").await.unwrap();
    assert_eq!(show(&a, "application_name").await.as_deref(), Some("dashboard"));
    assert_eq!(show(&a, "statement_timeout").await.as_deref(), Some("5000"));
    assert_eq!(show(&b, "application_name").await.as_deref(), Some(""));
    a.simple_query("reset application_name").await.unwrap();
    assert_eq!(show(&a, "application_name").await.as_deref(), Some(""));
    // SET through the extended protocol, as pgJDBC sends it.
    b.execute("set application_name = 'jdbc'", &[]).await.unwrap();
    assert_eq!(show(&b, "application_name").await.as_deref(), Some("jdbc"));

    let err = a.simple_query("show no_such_setting").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42704"));
    let err = a.simple_query("set server_version = '1'").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("55P02"));

    // Transactions: read-only, but BEGIN/COMMIT/ROLLBACK work as blocks.
    let mut c = stack.pg().await;
    let tx = c.transaction().await.unwrap();
    let n: i64 = tx.query_one("select count(*) from sites", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.rollback().await.unwrap();
    let msgs = a
        .simple_query("begin; select 1 as one; commit; set transaction isolation level repeatable read")
        .await
        .unwrap();
    assert_eq!(first_value(&msgs).as_deref(), Some("1"));

    // Result column names as PostgreSQL gives them.
    for (sql, want) in [
        ("select 1", vec!["?column?"]),
        ("select version()", vec!["version"]),
        ("select count(*) from sites", vec!["count"]),
        (
            "select site, count(*) as n from sites group by site order by site",
            vec!["site", "n"],
        ),
        (
            "select sum(pageviews), max(bucket) from traffic_day",
            vec!["sum", "max"],
        ),
        (
            "select cast(1 as bigint), case when true then 1 end, now()",
            vec!["int8", "case", "now"],
        ),
        ("select * from sites limit 1", vec!["site"]),
    ] {
        let extended: Vec<String> = a
            .prepare(sql)
            .await
            .unwrap()
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        assert_eq!(extended, want, "extended: {sql}");
        let simple = a.simple_query(sql).await.unwrap();
        let names: Vec<String> = simple
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::RowDescription(cols) => Some(cols.iter().map(|c| c.name().to_owned()).collect()),
                _ => None,
            })
            .expect("a row description");
        assert_eq!(names, want, "simple: {sql}");
    }

    // psql's \dt reads pg_catalog and lists every table of the catalog.
    let listed: Vec<String> = stack.psql("\\dt").lines().map(str::to_owned).collect();
    let want: Vec<String> = {
        let mut names: Vec<String> = schema::catalog::tables().into_iter().map(|t| t.name).collect();
        names.sort();
        names.into_iter().map(|n| format!("public|{n}|table|tally")).collect()
    };
    assert_eq!(listed, want);

    // Empty queries and Grafana's pgx ping.
    a.simple_query("").await.unwrap();
    a.simple_query("-- ping").await.unwrap();
    a.simple_query(";").await.unwrap();
    drop((a, b, c));
    stack.stop().await;
}
