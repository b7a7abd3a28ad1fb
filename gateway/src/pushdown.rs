//! Which keys a query needs: filters on `site` and `bucket` -> scan bounds.
//!
//! The gateway never scans the keyspace. A table scan computes the exact set
//! of keys to read from the sites and time range its filters allow. Filters
//! are only *narrowing* hints (reported to DataFusion as `Inexact`, so it
//! re-applies them to the rows): the bounds derived here must contain every
//! row that could match, nothing more is required.

use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use std::collections::BTreeSet;

/// The column names the analysis understands.
pub const SITE: &str = "site";
pub const BUCKET: &str = "bucket";

/// What the filters allow. `None` means unconstrained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanBounds {
    pub sites: Option<BTreeSet<String>>,
    /// Inclusive lower bound on `bucket`, ms since epoch.
    pub from_ms: Option<i64>,
    /// Inclusive upper bound on `bucket`, ms since epoch.
    pub to_ms: Option<i64>,
}

impl ScanBounds {
    fn restrict_sites(&mut self, sites: BTreeSet<String>) {
        self.sites = Some(match self.sites.take() {
            Some(prev) => prev.intersection(&sites).cloned().collect(),
            None => sites,
        });
    }

    fn lower(&mut self, ms: i64) {
        self.from_ms = Some(self.from_ms.map_or(ms, |p| p.max(ms)));
    }

    fn upper(&mut self, ms: i64) {
        self.to_ms = Some(self.to_ms.map_or(ms, |p| p.min(ms)));
    }
}

/// True if `expr` narrows the scan (so it is worth pushing down).
pub fn narrows(expr: &Expr) -> bool {
    narrows_on(expr, BUCKET)
}

/// Bounds implied by the conjunction of `filters`.
pub fn analyze(filters: &[Expr]) -> ScanBounds {
    analyze_on(filters, BUCKET)
}

/// What a table tells DataFusion about `filters`: `Inexact` for those that
/// bound the scan on `site` or `time_column` (DataFusion re-checks them),
/// `Unsupported` for the rest.
pub fn support(filters: &[&Expr], time_column: &str) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if narrows_on(f, time_column) {
                TableProviderFilterPushDown::Inexact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// [`narrows`] with another time column (e.g. `ts` of `events`).
pub fn narrows_on(expr: &Expr, time_column: &str) -> bool {
    let mut b = ScanBounds::default();
    apply(expr, &mut b, time_column);
    b != ScanBounds::default()
}

/// [`analyze`] with another time column.
pub fn analyze_on(filters: &[Expr], time_column: &str) -> ScanBounds {
    let mut b = ScanBounds::default();
    for f in filters {
        apply(f, &mut b, time_column);
    }
    b
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        Expr::Cast(c) => literal(&c.expr),
        Expr::TryCast(c) => literal(&c.expr),
        _ => None,
    }
}

fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

/// A literal as milliseconds since epoch, rounding towards the given side so
/// the bound stays inclusive of every matching bucket.
pub(crate) fn millis(v: &ScalarValue) -> Option<i64> {
    let nanos_to_ms = |n: i64| n.div_euclid(1_000_000);
    match v {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Some(*ms),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(us.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(nanos_to_ms(*ns)),
        ScalarValue::Date32(Some(d)) => Some(i64::from(*d) * 86_400_000),
        ScalarValue::Date64(Some(ms)) => Some(*ms),
        other => text(other)
            .and_then(|s| string_to_timestamp_nanos(s).ok())
            .map(nanos_to_ms),
    }
}

fn apply(expr: &Expr, b: &mut ScanBounds, time: &str) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::And => {
            apply(left, b, time);
            apply(right, b, time);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            // Normalise to `column op literal`.
            let (col, op, lit) = match (column_name(left), literal(right), column_name(right), literal(left)) {
                (Some(c), Some(l), _, _) => (c, *op, l),
                (_, _, Some(c), Some(l)) => match op.swap() {
                    Some(swapped) => (c, swapped, l),
                    None => return,
                },
                _ => return,
            };
            match (col, op) {
                (SITE, Operator::Eq) => {
                    if let Some(s) = text(lit) {
                        b.restrict_sites(BTreeSet::from([s.to_owned()]));
                    }
                }
                (c, op) if c == time => {
                    let Some(ms) = millis(lit) else { return };
                    match op {
                        Operator::Eq => {
                            b.lower(ms);
                            b.upper(ms);
                        }
                        Operator::Gt | Operator::GtEq => b.lower(ms),
                        Operator::Lt | Operator::LtEq => b.upper(ms),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if column_name(expr) == Some(time) => {
            if let Some(ms) = literal(low).and_then(millis) {
                b.lower(ms);
            }
            if let Some(ms) = literal(high).and_then(millis) {
                b.upper(ms);
            }
        }
        Expr::InList(list) if !list.negated && column_name(&list.expr) == Some(SITE) => {
            let sites: Option<BTreeSet<String>> = list
                .list
                .iter()
                .map(|e| literal(e).and_then(text).map(str::to_owned))
                .collect();
            if let Some(sites) = sites {
                b.restrict_sites(sites);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};
    use datafusion::prelude::in_list;

    fn ts(s: &str) -> i64 {
        string_to_timestamp_nanos(s).unwrap() / 1_000_000
    }

    #[test]
    fn site_equality_and_in_list() {
        let b = analyze(&[col("site").eq(lit("a.io"))]);
        assert_eq!(b.sites, Some(BTreeSet::from(["a.io".to_owned()])));
        let b = analyze(&[
            in_list(col("site"), vec![lit("a.io"), lit("b.io")], false),
            lit("b.io").eq(col("site")),
        ]);
        assert_eq!(b.sites, Some(BTreeSet::from(["b.io".to_owned()])));
        assert_eq!(
            analyze(&[in_list(col("site"), vec![lit("a")], true)]),
            ScanBounds::default()
        );
    }

    #[test]
    fn bucket_ranges_from_comparisons_between_and_strings() {
        let from = ts("2026-11-20T00:00:00Z");
        let to = ts("2026-11-26T06:00:00.123Z");
        let b = analyze(&[col("bucket").between(lit("2026-11-20T00:00:00Z"), lit("2026-11-26T06:00:00.123Z"))]);
        assert_eq!((b.from_ms, b.to_ms), (Some(from), Some(to)));
        let b = analyze(&[
            col("bucket").gt_eq(lit(ScalarValue::TimestampMicrosecond(
                Some(from * 1000),
                Some("+00:00".into()),
            ))),
            lit(ScalarValue::TimestampNanosecond(Some(to * 1_000_000), None)).gt(col("bucket")),
        ]);
        assert_eq!((b.from_ms, b.to_ms), (Some(from), Some(to)));
        let b = analyze(&[col("bucket")
            .gt(lit("2026-11-20 00:00:00"))
            .and(col("site").eq(lit("x.io")))]);
        assert_eq!(b.from_ms, Some(from));
        assert!(b.sites.is_some());
    }

    #[test]
    fn ignores_what_it_cannot_bound() {
        assert!(!narrows(&col("pageviews").gt(lit(3))));
        assert!(!narrows(&col("site").like(lit("a%"))));
        assert!(!narrows(&col("site").eq(lit("a")).or(col("site").eq(lit("b")))));
        assert!(narrows(&col("site").eq(lit("a"))));
    }
}
