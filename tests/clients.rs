//! Real PostgreSQL clients against a live gateway: psql's describe commands,
//! psycopg2, psycopg 3, SQLAlchemy with pandas, pgJDBC and node-postgres.
//! Each reads the same known data (posted through ingest) and the test
//! checks the values it got, not only that it did not fail. `.ci/run`
//! installs the clients.

mod common;

use chrono::{Duration as Days, Utc};
use common::Stack;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const SITE: &str = "clients.test";

/// Three views of /a and two of /b, yesterday at 01:00 UTC.
async fn stack_with_pages() -> Stack {
    let stack = Stack::start(&[SITE]).await;
    stack
        .post_pageviews(SITE, &["/a", "/a", "/a", "/b", "/b"], common::yesterday_at(1), "10.9.0")
        .await;
    stack
}

/// Run a client program; its stdout is one JSON object.
fn run_json(program: &str, args: &[&str], dir: &Path) -> Value {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (.ci/run installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{program} printed no JSON ({e}): {stdout}"))
}

fn clients_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describes_tables_schemas_and_databases() {
    let stack = stack_with_pages().await;
    let d = stack.psql("\\d pages_day");
    for line in [
        "site|text||not null|",
        "bucket|timestamp with time zone||not null|",
        "pageviews|bigint||not null|",
    ] {
        assert!(d.lines().any(|l| l == line), "\\d pages_day lacks {line:?}:\n{d}");
    }
    // Footers (indexes) are printed only without -t.
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &stack.pg_addr.port().to_string(),
            "-U",
            "tally",
            "-d",
            "tally",
        ])
        .args(["-c", "\\d pages_day"])
        .output()
        .expect("psql is installed");
    let full = String::from_utf8_lossy(&out.stdout);
    assert!(
        full.contains("\"pages_day_pkey\" PRIMARY KEY, btree (site, bucket, path)"),
        "{full}"
    );
    let d_plus = stack.psql("\\d+ pages_day");
    assert!(
        d_plus.contains("URL path of the page"),
        "\\d+ shows column descriptions:\n{d_plus}"
    );
    let l = stack.psql("\\l");
    assert!(l.lines().any(|r| r.starts_with("tally|tally|UTF8|")), "{l}");
    assert_eq!(stack.psql("\\dn"), "public|tally\n");
    assert_eq!(
        stack.psql(&format!(
            "select path, pageviews from pages_day where site = '{SITE}' order by path"
        )),
        "/a|3\n/b|2\n"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_read_the_same_numbers() {
    let stack = stack_with_pages().await;
    let port = stack.pg_addr.port().to_string();
    let got = run_json(
        "python3",
        &["python_clients.py", "127.0.0.1", &port, SITE],
        &clients_dir(),
    );
    let pages = json!([["/a", 3], ["/b", 2]]);
    for key in [
        "psycopg2",
        "psycopg2_named",
        "psycopg3",
        "psycopg3_server_cursor",
        "pandas",
    ] {
        assert_eq!(got[key], pages, "{key}");
    }
    assert_eq!(got["psycopg2_sum"], 5);
    let day = (Utc::now() - Days::days(1)).date_naive();
    assert_eq!(got["psycopg3_binary"], json!([[format!("{day}T00:00:00+00:00"), 5]]));
    assert_eq!(got["psycopg3_typeinfo"], json!(["timestamptz", 1184, 1185]));
    let tables = got["sqlalchemy_tables"].as_array().expect("table list").len();
    assert_eq!(tables, schema::catalog::tables().len());
    assert_eq!(
        got["sqlalchemy_columns"],
        json!([
            ["site", "TEXT", false],
            ["bucket", "TIMESTAMP", false],
            ["path", "TEXT", false],
            ["pageviews", "BIGINT", false],
            ["visitors", "BIGINT", false],
            ["entries", "BIGINT", false],
            ["exits", "BIGINT", false]
        ])
    );
    assert_eq!(got["sqlalchemy_pk"], json!(["site", "bucket", "path"]));
    assert_eq!(got["server_version"], json!([16]));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_runs_parameterised_queries() {
    let stack = stack_with_pages().await;
    let port = stack.pg_addr.port().to_string();
    let got = run_json("node", &["node_pg.mjs", "127.0.0.1", &port, SITE], &clients_dir());
    assert_eq!(got["rows"], json!([["/a", 3], ["/b", 2]]));
    assert_eq!(got["fields"], json!([["path", 25], ["pageviews", 20]]));
    assert!(got["version"].as_str().is_some_and(|v| v.starts_with("PostgreSQL 16.")));
    assert_eq!(got["total"], "5");
    assert_eq!(got["last_is_date"], true);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_reads_metadata_and_pages_with_a_fetch_size() {
    let stack = stack_with_pages().await;
    let port = stack.pg_addr.port().to_string();
    let jar = std::env::var("TALLY_PGJDBC_JAR").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    let got = run_json(
        "java",
        &["-cp", &jar, "JdbcClient.java", "127.0.0.1", &port, SITE],
        &clients_dir(),
    );
    assert_eq!(got["product"], "PostgreSQL 16");
    let tables = got["tables"].as_array().expect("tables").len();
    assert_eq!(tables, schema::catalog::tables().len());
    assert_eq!(
        got["columns"],
        json!([
            ["site", "text"],
            ["bucket", "timestamptz"],
            ["path", "text"],
            ["pageviews", "int8"],
            ["visitors", "int8"],
            ["entries", "int8"],
            ["exits", "int8"]
        ])
    );
    assert_eq!(got["primary_key"], json!(["site", "bucket", "path"]));
    assert_eq!(got["rows"], json!([["/a", 3, true], ["/b", 2, true]]));
    stack.stop().await;
}
