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

    // PostgreSQL's dialect and the functions clients call, with their values.
    for (sql, want) in [
        ("select 'a' = any(array['a','b']), 'c' = any('{a,b}')", "t|f"),
        (
            "select 'a_b' like 'a!_b' escape '!', 'axb' like 'a!_b' escape '!'",
            "t|f",
        ),
        ("select E'x\\ty'", "x\ty"),
        (
            "select extract(epoch from timestamptz '2026-01-01 00:00:00+00')",
            "1767225600",
        ),
        (
            "select date_trunc('hour', timestamptz '2026-01-01 05:06:07+00')",
            "2026-01-01 05:00:00+00",
        ),
        ("select count(*) from generate_series(1, 5)", "5"),
        ("select now() - interval '7 days' < now()", "t"),
        (
            "select interval '1 day' + interval '2 hours', interval '90 seconds'",
            "1 day 02:00:00|00:01:30",
        ),
        (
            "select current_setting('server_version_num'), current_setting('nope', true) is null",
            "160006|t",
        ),
        ("select set_config('application_name', 'probe', false)", "probe"),
        (
            "select current_user, session_user, current_database(), current_schema()",
            "tally|tally|tally|public",
        ),
        (
            "select current_schemas(false), current_schemas(true)",
            "{public}|{pg_catalog,public}",
        ),
        (
            "select pg_typeof(1.5::float8), format_type(1700, 1179658)",
            "double precision|numeric(18,6)",
        ),
        (
            "select quote_ident('User'), parse_ident('public.\"T\"')",
            "\"User\"|{public,T}",
        ),
        ("select to_regtype('bigint'), to_regclass('nope') is null", "20|t"),
        (
            "select 'traffic_day'::regclass = to_regclass('public.traffic_day')",
            "t",
        ),
        (
            "select has_table_privilege('traffic_day', 'select'), pg_table_is_visible('traffic_day'::regclass)",
            "t|t",
        ),
        (
            "select obj_description('sites'::regclass, 'pg_class'), col_description('sites'::regclass, 1)",
            "registered sites|site domain",
        ),
        (
            "select pg_get_constraintdef(oid) from pg_constraint where conname = 'sites_pkey'",
            "PRIMARY KEY (site)",
        ),
        (
            "select typname, typarray from pg_type where oid = 'timestamptz'::regtype",
            "timestamptz|1185",
        ),
        (
            "select data_type, udt_name from information_schema.columns where table_name = 'traffic_day' and column_name = 'bucket'",
            "timestamp with time zone|timestamptz",
        ),
        (
            "select data_type from information_schema.columns where table_name = 'events' and column_name = 'props'",
            "json",
        ),
        (
            "select format('%I.%I = %L', 'public', 'My T', 'it''s')",
            "public.\"My T\" = 'it''s'",
        ),
        (
            "select count(*) > 50, min(catcode) from pg_catalog.pg_get_keywords()",
            "t|R",
        ),
    ] {
        let msgs = a.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let row = msgs
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL"))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{sql}: no row"));
        assert_eq!(row, want, "{sql}");
    }
    assert_eq!(
        show(&a, "application_name").await.as_deref(),
        Some("probe"),
        "set_config sets"
    );
    // pg_settings shows this session's values, not another's.
    let mine = first_value(
        &a.simple_query("select setting, source from pg_catalog.pg_settings where name = 'application_name'")
            .await
            .unwrap(),
    );
    assert_eq!(mine.as_deref(), Some("probe"));
    let theirs = first_value(
        &b.simple_query("select setting from pg_settings where name = 'application_name'")
            .await
            .unwrap(),
    );
    assert_eq!(theirs.as_deref(), Some("jdbc"));
    // The raw events' props are json on the wire.
    let props = a.prepare("select props from events").await.unwrap();
    assert_eq!(props.columns()[0].type_(), &tokio_postgres::types::Type::JSON);
    // Intervals are interval on the wire, in text and binary.
    let interval = a.prepare("select interval '1 day 2 hours'").await.unwrap();
    assert_eq!(interval.columns()[0].type_(), &tokio_postgres::types::Type::INTERVAL);
    // Engine settings are not the session's to change.
    let err = a
        .simple_query("set datafusion.execution.batch_size = 1")
        .await
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));

    // Errors carry PostgreSQL's SQLSTATEs.
    for (sql, code) in [
        ("select * from no_such_table", "42P01"),
        ("select no_such_column from sites", "42703"),
        ("selec 1", "42601"),
        ("insert into sites values ('x')", "25006"),
        ("copy sites to stdout", "25006"),
        ("copy sites from stdin", "25006"),
        ("alter table sites add column y int", "25006"),
        ("/* hi */ grant select on sites to bob", "25006"),
        ("drop table sites", "25006"),
        ("create table x (a int)", "25006"),
        ("truncate sites", "25006"),
        ("select 'nope'::regclass", "42P01"),
        ("fetch 1 from no_cursor", "34000"),
    ] {
        let err = a.simple_query(sql).await.expect_err(sql);
        assert_eq!(err.code().map(|c| c.code()), Some(code), "{sql}: {err}");
    }

    // Empty queries and Grafana's pgx ping.
    a.simple_query("").await.unwrap();
    a.simple_query("-- ping").await.unwrap();
    a.simple_query(";").await.unwrap();
    drop((a, b, c));
    stack.stop().await;
}
