//! Every panel of every dashboard in grafana/dashboards, expanded exactly
//! as Grafana's PostgreSQL datasource expands it (template variables, then
//! `$__interval`, `$__unixEpochFrom()`, then the macros of its `macros.go`),
//! sent over the simple protocol with only `user` and `database` in the
//! startup packet (as pgx connects), after loadgen traffic. Each must
//! return rows of the shape its panel needs: a `time` column sorted
//! ascending for time series, one row for stats, and never nothing. A
//! dashboard whose query breaks fails the build.

mod common;

use chrono::{TimeZone, Utc};
use common::Stack;
use serde_json::Value;
use std::collections::HashMap;
use tokio_postgres::SimpleQueryMessage;

const SITE: &str = "shop.example";

/// The time range and interval of one dashboard load.
struct Range {
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
}

/// Go's RFC3339Nano: fraction without trailing zeros, `Z` for UTC.
fn rfc3339_nano(ms: i64) -> String {
    let t = Utc.timestamp_millis_opt(ms).single().expect("a valid time");
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{}Z", format!("{nanos:09}").trim_end_matches('0'))
    }
}

/// Grafana's gtime.FormatInterval.
fn format_interval(ms: i64) -> String {
    let (s, m, h, d, y) = (1000, 60_000, 3_600_000, 86_400_000, 365 * 86_400_000);
    match ms {
        x if x >= y => format!("{}y", x / y),
        x if x >= d => format!("{}d", x / d),
        x if x >= h => format!("{}h", x / h),
        x if x >= m => format!("{}m", x / m),
        x if x >= s => format!("{}s", x / s),
        x if x >= 1 => format!("{x}ms"),
        _ => "1ms".into(),
    }
}

/// Grafana's gtime.ParseInterval for the units dashboards use, in seconds.
fn parse_interval(s: &str) -> Result<f64, String> {
    let s = s.trim().trim_matches('\'');
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("error parsing interval {s}"))?;
    Ok(n * match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        "y" => 31_536_000.0,
        _ => return Err(format!("error parsing interval {s}")),
    })
}

/// Go's `%v` of a float64 (`%g` with the shortest representation).
fn go_float(v: f64) -> String {
    if v.abs() < 1e21 && v.abs() >= 1e-4 && (v.abs() < 1e6 || v == 0.0) {
        return format!("{v}");
    }
    let e = format!("{v:e}");
    match e.split_once('e') {
        Some((m, x)) => {
            let (sign, digits) = x.strip_prefix('-').map_or(("+", x), |d| ("-", d));
            format!("{m}e{sign}{digits:0>2}")
        }
        None => e,
    }
}

/// Template variables: `${v}`, `[[v]]`, `$v`; single values are inserted
/// with quotes doubled (the SQL datasources' interpolateVariable).
fn replace_variables(sql: &str, vars: &HashMap<String, String>) -> String {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = sql.to_owned();
    for name in names {
        let value = vars[name].replace('\'', "''");
        out = out
            .replace(&format!("${{{name}}}"), &value)
            .replace(&format!("[[{name}]]"), &value);
        let pattern = format!("${name}");
        let mut result = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&pattern) {
            let after = &rest[i + pattern.len()..];
            result.push_str(&rest[..i]);
            if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                result.push_str(&pattern);
            } else {
                result.push_str(&value);
            }
            rest = after;
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// Grafana's macro expansion (sqleng.Interpolate, then macros.go).
fn expand(sql: &str, vars: &HashMap<String, String>, r: &Range) -> Result<String, String> {
    let sql = replace_variables(sql, vars)
        .replace("$__interval_ms", &r.interval_ms.to_string())
        .replace("$__interval", &format_interval(r.interval_ms))
        .replace("$__unixEpochFrom()", &(r.from_ms / 1000).to_string())
        .replace("$__unixEpochTo()", &(r.to_ms / 1000).to_string());
    let (f, t) = (rfc3339_nano(r.from_ms), rfc3339_nano(r.to_ms));
    let mut out = String::new();
    let mut rest = sql.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(name_len);
        let (Some(args_and_tail), true) = (tail.strip_prefix('('), !name.is_empty()) else {
            out.push('$');
            rest = after;
            continue;
        };
        let close = args_and_tail
            .find(')')
            .ok_or_else(|| format!("unclosed macro ${name}"))?;
        let args: Vec<&str> = args_and_tail[..close].split(',').map(str::trim).collect();
        let group = |alias: bool| -> Result<String, String> {
            let [col, interval, ..] = args.as_slice() else {
                return Err(format!(
                    "macro {name} needs time column and interval and optional fill value"
                ));
            };
            let secs = go_float(parse_interval(interval)?);
            let g = format!("floor(extract(epoch from {col})/{secs})*{secs}");
            Ok(if alias { format!("{g} AS \"time\"") } else { g })
        };
        let expanded = match name {
            "__time" => format!("{} AS \"time\"", args[0]),
            "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", args[0]),
            "__timeFilter" => format!("{} BETWEEN '{f}' AND '{t}'", args[0]),
            "__timeFrom" => format!("'{f}'"),
            "__timeTo" => format!("'{t}'"),
            "__timeGroup" => group(false)?,
            "__timeGroupAlias" => group(true)?,
            "__unixEpochFilter" => format!("{c} >= {} AND {c} <= {}", r.from_ms / 1000, r.to_ms / 1000, c = args[0]),
            other => return Err(format!("unknown macro \"{other}\"")),
        };
        out.push_str(&expanded);
        rest = &args_and_tail[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

async fn run(c: &tokio_postgres::Client, sql: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}\n-> {e}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => columns = cols.iter().map(|c| c.name().to_owned()).collect(),
            SimpleQueryMessage::Row(r) => rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
            _ => {}
        }
    }
    (columns, rows)
}

/// A time cell as Grafana reads it: epoch seconds, or timestamptz text with
/// a space separator (a `T` fails its decoder).
fn time_value(cell: &str) -> f64 {
    if let Ok(v) = cell.parse::<f64>() {
        return v;
    }
    let t = chrono::DateTime::parse_from_str(&format!("{cell}00"), "%Y-%m-%d %H:%M:%S%.f%z")
        .unwrap_or_else(|e| panic!("time cell {cell:?} is not timestamptz text ({e})"));
    t.timestamp_millis() as f64 / 1000.0
}

#[test]
fn the_expander_matches_grafanas_worked_example() {
    let r = Range {
        from_ms: 1_714_521_600_000,
        to_ms: 1_714_543_200_123,
        interval_ms: 60_000,
    };
    let vars = HashMap::from([("site".to_owned(), "O'Brien".to_owned())]);
    assert_eq!(
        expand(
            "SELECT $__timeGroupAlias(time,'5m'), avg(value) as value FROM metric WHERE $__timeFilter(time) AND s = '$site' GROUP BY 1 ORDER BY 1",
            &vars,
            &r
        )
        .unwrap(),
        "SELECT floor(extract(epoch from time)/300)*300 AS \"time\", avg(value) as value FROM metric WHERE time BETWEEN '2024-05-01T00:00:00Z' AND '2024-05-01T06:00:00.123Z' AND s = 'O''Brien' GROUP BY 1 ORDER BY 1"
    );
    assert_eq!(
        expand("$__unixEpochFilter(ts_s) $__timeGroup(t, $__interval)", &vars, &r).unwrap(),
        "ts_s >= 1714521600 AND ts_s <= 1714543200 floor(extract(epoch from t)/60)*60"
    );
    assert_eq!(go_float(1_209_600.0), "1.2096e+06");
    assert_eq!(go_float(0.5), "0.5");
    assert!(expand("$__nope(x)", &vars, &r).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_answers_in_the_shape_it_needs() {
    let stack = Stack::start(&["shop.example", "blog.example"]).await;
    // History over the last 20 hours, then a little traffic now (realtime).
    let history = stack.loadgen(4_000, 2, 20, 7).await;
    assert!(history.accepted > 3_900, "{history:?}");
    let now = stack.loadgen(200, 1, 0, 8).await;
    assert!(now.accepted > 190, "{now:?}");
    stack.wait_caught_up(std::time::Duration::from_secs(60)).await;
    let c = stack.pg().await;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut dashboards: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("grafana/dashboards")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let json = std::fs::read_to_string(&p).expect("readable");
            (
                p.display().to_string(),
                serde_json::from_str(&json).expect("valid JSON"),
            )
        })
        .collect();
    dashboards.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(dashboards.len(), 3, "overview, content, conversions");

    let now_ms = Utc::now().timestamp_millis();
    let mut checked = 0;
    for (label, range, want_grain) in [
        (
            "last 24 hours",
            Range {
                from_ms: now_ms - 86_400_000,
                to_ms: now_ms,
                interval_ms: 60_000,
            },
            "hour",
        ),
        (
            "last 3 hours",
            Range {
                from_ms: now_ms - 3 * 3_600_000,
                to_ms: now_ms,
                interval_ms: 10_000,
            },
            "minute",
        ),
    ] {
        for (path, d) in &dashboards {
            // Variables in order, each from its own query.
            let mut vars = HashMap::new();
            for v in d["templating"]["list"].as_array().expect("variables") {
                let name = v["name"].as_str().expect("variable name").to_owned();
                let sql = expand(v["query"].as_str().expect("variable query"), &vars, &range).expect("expands");
                let (_, rows) = run(&c, &sql).await;
                let values: Vec<String> = rows.into_iter().filter_map(|r| r[0].clone()).collect();
                let value = if name == "site" {
                    assert!(values.iter().any(|s| s == SITE), "{path}: site list {values:?}");
                    SITE.to_owned()
                } else {
                    values
                        .first()
                        .cloned()
                        .unwrap_or_else(|| panic!("{path}: variable {name} has no value"))
                };
                vars.insert(name, value);
            }
            assert_eq!(vars["grain"], want_grain, "{path} {label}");
            for p in d["panels"].as_array().expect("panels") {
                let title = p["title"].as_str().unwrap_or_default();
                for t in p["targets"].as_array().expect("targets") {
                    let sql = expand(t["rawSql"].as_str().expect("rawSql"), &vars, &range)
                        .unwrap_or_else(|e| panic!("{path} / {title}: {e}"));
                    let (columns, rows) = run(&c, &sql).await;
                    let what = format!("{path} / {title} ({label})\n{sql}");
                    assert!(!rows.is_empty(), "no rows: {what}");
                    match (t["format"].as_str(), p["type"].as_str()) {
                        (Some("time_series"), _) => {
                            assert_eq!(columns.first().map(String::as_str), Some("time"), "{what}");
                            assert!(columns.len() >= 2, "{what}");
                            let times: Vec<f64> = rows
                                .iter()
                                .map(|r| time_value(r[0].as_deref().expect("time is never null")))
                                .collect();
                            assert!(times.windows(2).all(|w| w[0] <= w[1]), "time not ascending: {what}");
                            assert!(
                                times.iter().all(|t| *t * 1000.0 >= (range.from_ms - 86_400_000) as f64),
                                "{what}"
                            );
                        }
                        (_, Some("stat" | "bargauge")) => {
                            assert_eq!(rows.len(), 1, "{what}");
                            assert!(rows[0][0].is_some(), "stat value is null: {what}");
                        }
                        _ => assert!(!columns.is_empty(), "{what}"),
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 50, "{checked} panel queries checked");
    stack.stop().await;
}
