//! `unique_visitors(site, from, to)`: unique visitors over any range.
//!
//! Visitors cannot be summed across buckets (a visitor seen in two buckets
//! would count twice), so this table function covers `[from, to)` with the
//! fewest buckets (whole days, then whole hours, then minutes at the edges)
//! and counts the union of their HyperLogLogs with one multi-key `PFCOUNT`
//! on the Redis side. All the keys carry the site's hash tag, so this works
//! on Redis Cluster too. Minute keys exist only within their retention; an
//! edge older than that is rounded out to its whole hour. The range is
//! truncated to whole minutes.
//!
//! ```sql
//! select * from unique_visitors('shop.example', now() - interval '7 days', now());
//! ```

use crate::keymap::KeymapReader;
use crate::pushdown;
use crate::tables::UTC;
use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use schema::report::Report;
use schema::{Grain, Keyspace};
use std::fmt;
use std::sync::Arc;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// The buckets whose union covers `[from, to)` (minute-truncated); minute
/// buckets older than `minute_floor` are replaced by their hour.
pub fn covering(from: i64, to: i64, minute_floor: i64) -> Vec<(Grain, i64)> {
    let (mut t, to) = (Grain::Minute.truncate(from), Grain::Minute.truncate(to));
    let mut out: Vec<(Grain, i64)> = Vec::new();
    while t < to {
        let (grain, step) = if t % DAY == 0 && t + DAY <= to {
            (Grain::Day, DAY)
        } else if t % HOUR == 0 && t + HOUR <= to {
            (Grain::Hour, HOUR)
        } else if t < minute_floor {
            // Minute keys are gone: take the whole hour, once.
            let hour = Grain::Hour.truncate(t);
            if out.last() != Some(&(Grain::Hour, hour)) {
                out.push((Grain::Hour, hour));
            }
            t = hour + HOUR;
            continue;
        } else {
            (Grain::Minute, MINUTE)
        };
        out.push((grain, t));
        t += step;
    }
    out
}

/// Most rows the grouped form may return.
pub const MAX_STEPS: i64 = 10_000;

/// The sub-ranges of `[from, to)` cut at multiples of `step` (UTC), each
/// clipped to the range: the rows of the grouped form.
pub fn steps(from: i64, to: i64, step: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut t = from.div_euclid(step) * step;
    while t < to {
        out.push((t.max(from), (t + step).min(to)));
        t += step;
    }
    out
}

/// A step given as an interval (`interval '1 hour'`) or as text (`'hour'`,
/// `'15 minutes'`, `'1 day'`), in ms: whole minutes, at least one.
fn step_ms(v: &datafusion::common::ScalarValue) -> Option<i64> {
    use datafusion::common::ScalarValue as S;
    let ms = match v {
        S::IntervalMonthDayNano(Some(i)) if i.months == 0 => i64::from(i.days) * DAY + i.nanoseconds / 1_000_000,
        S::IntervalDayTime(Some(i)) => i64::from(i.days) * DAY + i64::from(i.milliseconds),
        S::Utf8(Some(s)) | S::Utf8View(Some(s)) | S::LargeUtf8(Some(s)) => {
            let s = s.trim().to_ascii_lowercase();
            let (n, unit) = match s.split_once(' ') {
                Some((n, unit)) => (n.trim().parse::<i64>().ok()?, unit.trim().to_owned()),
                None => (1, s),
            };
            let unit_ms = match unit.trim_end_matches('s') {
                "minute" | "min" => MINUTE,
                "hour" => HOUR,
                "day" => DAY,
                "week" => 7 * DAY,
                _ => return None,
            };
            n.checked_mul(unit_ms)?
        }
        _ => return None,
    };
    (ms >= MINUTE && ms % MINUTE == 0).then_some(ms)
}

/// The table function.
pub struct UniqueVisitorsFunction {
    reader: KeymapReader,
    minute_retention_ms: i64,
}

impl UniqueVisitorsFunction {
    pub fn new(reader: KeymapReader) -> Self {
        UniqueVisitorsFunction {
            reader,
            minute_retention_ms: 48 * HOUR,
        }
    }
}

impl fmt::Debug for UniqueVisitorsFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unique_visitors")
    }
}

fn constant(expr: &Expr) -> Result<datafusion::common::ScalarValue> {
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    match simplifier.simplify(expr.clone())? {
        Expr::Literal(v, _) => Ok(v),
        other => plan_err!("unique_visitors: argument {other} is not a constant"),
    }
}

impl TableFunctionImpl for UniqueVisitorsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 3 && exprs.len() != 4 {
            return plan_err!(
                "unique_visitors(site text, from timestamptz, to timestamptz [, step interval]) takes 3 or 4 arguments"
            );
        }
        let site = match constant(&exprs[0])? {
            datafusion::common::ScalarValue::Utf8(Some(s))
            | datafusion::common::ScalarValue::Utf8View(Some(s))
            | datafusion::common::ScalarValue::LargeUtf8(Some(s)) => s,
            other => return plan_err!("unique_visitors: site must be text, got {other}"),
        };
        let time = |i: usize| -> Result<i64> {
            let v = constant(&exprs[i])?;
            match pushdown::millis(&v) {
                Some(ms) => Ok(ms),
                None => plan_err!("unique_visitors: argument {} must be a timestamp, got {v}", i + 1),
            }
        };
        let (from_ms, to_ms) = (time(1)?, time(2)?);
        let step_ms = match exprs.get(3) {
            None => None,
            Some(e) => {
                let v = constant(e)?;
                let Some(step) = step_ms(&v) else {
                    return plan_err!(
                        "unique_visitors: step must be whole minutes (e.g. '1 hour', interval '1 day'), got {v}"
                    );
                };
                if (to_ms - from_ms) / step > MAX_STEPS {
                    return plan_err!("unique_visitors: more than {MAX_STEPS} steps; use a larger step");
                }
                Some(step)
            }
        };
        Ok(Arc::new(UniqueVisitorsTable {
            schema: Arc::new(Schema::new(vec![
                Field::new("site", DataType::Utf8, false),
                Field::new(
                    "from",
                    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                    false,
                ),
                Field::new(
                    "to",
                    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                    false,
                ),
                Field::new("visitors", DataType::Int64, false),
            ])),
            reader: self.reader.clone(),
            site,
            from_ms,
            to_ms,
            minute_retention_ms: self.minute_retention_ms,
            allowed: false,
            step_ms,
        }))
    }
}

#[derive(Clone)]
struct UniqueVisitorsTable {
    schema: SchemaRef,
    reader: KeymapReader,
    site: String,
    from_ms: i64,
    to_ms: i64,
    minute_retention_ms: i64,
    /// Whether the caller may read the site (set at scan; a site outside
    /// the grant counts 0 visitors, as if it had no data).
    allowed: bool,
    /// The grouped form: one row per step of the range.
    step_ms: Option<i64>,
}

impl fmt::Debug for UniqueVisitorsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unique_visitors({}, {}, {})", self.site, self.from_ms, self.to_ms)
    }
}

#[async_trait]
impl TableProvider for UniqueVisitorsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut me = self.clone();
        me.allowed = crate::tenant::TenantScope::of_config(state.config()).allows(&self.site);
        super::streaming_scan(self.schema.clone(), vec![Arc::new(me)], projection, limit)
    }
}

impl PartitionStream for UniqueVisitorsTable {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let me = self.clone();
        let batch = futures::stream::once(async move {
            let ks: Keyspace = me
                .reader
                .keyspace()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let now = chrono::Utc::now().timestamp_millis();
            let ranges = match me.step_ms {
                Some(step) => steps(me.from_ms, me.to_ms, step),
                None => vec![(me.from_ms, me.to_ms)],
            };
            // One PFCOUNT per range, all in one pipeline (every key carries
            // the site's hash tag, so this runs on Redis Cluster too).
            let mut pipe = redis::pipe();
            let mut counted = Vec::with_capacity(ranges.len());
            for (from, to) in &ranges {
                let keys: Vec<String> = covering(*from, *to, now - me.minute_retention_ms)
                    .into_iter()
                    .map(|(g, b)| ks.unique_key(Report::Traffic, g, &me.site, b, ""))
                    .collect();
                let count = me.allowed && !keys.is_empty();
                if count {
                    pipe.cmd("PFCOUNT").arg(&keys);
                }
                counted.push(count);
            }
            let mut answers: Vec<i64> = if counted.iter().any(|c| *c) {
                let mut conn = me.reader.conn();
                pipe.query_async(&mut conn)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
            } else {
                Vec::new()
            }
            .into_iter()
            .rev()
            .collect();
            let visitors: Vec<i64> = counted
                .iter()
                .map(|c| if *c { answers.pop().unwrap_or(0) } else { 0 })
                .collect();
            let ts = |v: Vec<i64>| {
                TimestampMicrosecondArray::from(v.into_iter().map(|ms| ms * 1000).collect::<Vec<_>>())
                    .with_timezone(UTC)
            };
            Ok(RecordBatch::try_new(
                me.schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec![me.site.clone(); ranges.len()])),
                    Arc::new(ts(ranges.iter().map(|r| r.0).collect())),
                    Arc::new(ts(ranges.iter().map(|r| r.1).collect())),
                    Arc::new(Int64Array::from(visitors)),
                ],
            )?)
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batch.boxed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_000_000_000 / DAY * DAY; // a midnight

    #[test]
    fn steps_cut_at_utc_multiples_and_clip_to_the_range() {
        assert_eq!(
            steps(T0 + 30 * MINUTE, T0 + 3 * HOUR, HOUR),
            vec![
                (T0 + 30 * MINUTE, T0 + HOUR),
                (T0 + HOUR, T0 + 2 * HOUR),
                (T0 + 2 * HOUR, T0 + 3 * HOUR)
            ]
        );
        assert_eq!(steps(T0, T0, HOUR), vec![]);
        use datafusion::common::ScalarValue as S;
        assert_eq!(step_ms(&S::Utf8(Some("hour".into()))), Some(HOUR));
        assert_eq!(step_ms(&S::Utf8(Some("15 minutes".into()))), Some(15 * MINUTE));
        assert_eq!(step_ms(&S::Utf8(Some("1 day".into()))), Some(DAY));
        assert_eq!(step_ms(&S::Utf8(Some("30 seconds".into()))), None);
        assert_eq!(step_ms(&S::Utf8(Some("fortnight".into()))), None);
    }

    #[test]
    fn covers_with_the_fewest_buckets() {
        // Two whole days.
        assert_eq!(
            covering(T0, T0 + 2 * DAY, 0),
            vec![(Grain::Day, T0), (Grain::Day, T0 + DAY)]
        );
        // 23:58 .. 01:02 the next day, all within minute retention.
        let from = T0 + DAY - 2 * MINUTE;
        let to = T0 + DAY + HOUR + 2 * MINUTE;
        assert_eq!(
            covering(from, to, 0),
            vec![
                (Grain::Minute, from),
                (Grain::Minute, from + MINUTE),
                (Grain::Hour, T0 + DAY),
                (Grain::Minute, T0 + DAY + HOUR),
                (Grain::Minute, T0 + DAY + HOUR + MINUTE),
            ]
        );
        assert!(covering(T0, T0, 0).is_empty());
        assert!(covering(T0 + DAY, T0, 0).is_empty());
    }

    #[test]
    fn old_edges_round_out_to_hours() {
        let from = T0 + 90 * MINUTE; // 01:30
        let to = T0 + 3 * HOUR;
        assert_eq!(
            covering(from, to, i64::MAX),
            vec![(Grain::Hour, T0 + HOUR), (Grain::Hour, T0 + 2 * HOUR)]
        );
    }
}
