//! The `events` table: raw events read from the shard streams.
//!
//! A filter on `site` selects the shard streams to read (all 16 without
//! one) and filters rows early; a filter on `ts` becomes the `XRANGE` id
//! range. Stream ids are arrival times, and an event's own time may lie up to
//! 72 hours before its arrival (back-dated) or 5 minutes after it (clock
//! skew), so the id range is widened by those windows; DataFusion re-applies
//! the exact filter. Each shard is one partition, read in chunks of
//! [`CHUNK`] entries, so a query over millions of events streams with
//! bounded memory. An entry holds one event or several written together
//! (`schema::entry`), which are rows of their own.

use crate::pushdown::{self, ScanBounds};
use crate::tables::UTC;
use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use schema::entry;
use schema::report::revenue_micros;
use schema::source::{Source, Utm};
use schema::store::RedisConn;
use schema::{Event, Shard};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// Entries per XRANGE call (an entry holds up to a hundred events).
pub const CHUNK: usize = 250;
/// The time column of the table.
const TS: &str = "ts";
/// How far back a client timestamp may lie before its arrival.
const MAX_BACKDATE_MS: i64 = 72 * 3_600_000;
/// How far ahead of its arrival a client timestamp may lie.
const MAX_SKEW_MS: i64 = 5 * 60_000;

pub struct EventsTable {
    schema: SchemaRef,
    conn: RedisConn,
}

impl EventsTable {
    pub fn new(schema: SchemaRef, conn: RedisConn) -> Self {
        EventsTable { schema, conn }
    }
}

impl fmt::Debug for EventsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventsTable")
    }
}

/// The XRANGE id bounds for an event-time range.
pub fn id_range(bounds: &ScanBounds) -> (String, String) {
    let start = bounds
        .from_ms
        .map_or_else(|| "-".to_owned(), |ms| (ms - MAX_SKEW_MS).max(0).to_string());
    let end = bounds
        .to_ms
        .map_or_else(|| "+".to_owned(), |ms| ms.saturating_add(MAX_BACKDATE_MS).to_string());
    (start, end)
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown::support(filters, TS))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut bounds = pushdown::analyze_on(filters, TS);
        // Only the caller's sites: fewer shards, and rows of other sites
        // sharing a shard are dropped.
        crate::tenant::TenantScope::of_config(state.config()).confine(&mut bounds);
        let shards: BTreeSet<Shard> = match &bounds.sites {
            Some(sites) => sites.iter().map(|s| Shard::of_site(s)).collect(),
            None => Shard::all().collect(),
        };
        let (start, end) = id_range(&bounds);
        let partitions: Vec<Arc<dyn PartitionStream>> = shards
            .into_iter()
            .map(|shard| {
                Arc::new(ShardPartition {
                    schema: self.schema.clone(),
                    conn: self.conn.clone(),
                    shard,
                    sites: bounds.sites.clone(),
                    start: start.clone(),
                    end: end.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        super::streaming_scan(self.schema.clone(), partitions, projection, limit)
    }
}

struct ShardPartition {
    schema: SchemaRef,
    conn: RedisConn,
    shard: Shard,
    sites: Option<BTreeSet<String>>,
    start: String,
    end: String,
}

impl fmt::Debug for ShardPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventsPartition({} {}..{})", self.shard, self.start, self.end)
    }
}

/// Where a partition's reading stands.
struct Cursor {
    conn: RedisConn,
    next: Option<String>,
}

impl PartitionStream for ShardPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, stream, end, sites) = (
            self.schema.clone(),
            self.shard.stream_key(),
            self.end.clone(),
            self.sites.clone(),
        );
        let start = Cursor {
            conn: self.conn.clone(),
            next: Some(self.start.clone()),
        };
        let batch_schema = schema.clone();
        let batches = futures::stream::unfold(start, move |mut cur| {
            let (stream, end, sites, schema) = (stream.clone(), end.clone(), sites.clone(), batch_schema.clone());
            async move {
                let from = cur.next.take()?;
                let entries = match entry::range(&mut cur.conn, &stream, &from, &end, CHUNK).await {
                    Ok(entries) => entries,
                    Err(e) => return Some((Err(DataFusionError::External(Box::new(e))), cur)),
                };
                if entries.len() == CHUNK
                    && let Some(last) = entries.last()
                {
                    cur.next = Some(format!("({}", last.id));
                }
                let mut rows: Vec<(String, Event)> = Vec::with_capacity(entries.len());
                for entry in entries {
                    if let Err(err) = &entry.events {
                        tracing::warn!(id = %entry.id, error = %err, "skipping undecodable stream entry");
                        continue;
                    }
                    rows.extend(
                        entry
                            .into_events_with_ids()
                            .into_iter()
                            .flatten()
                            .filter(|(_, e)| sites.as_ref().is_none_or(|s| s.contains(&e.site))),
                    );
                }
                Some((rows_to_batch(&schema, &rows), cur))
            }
        })
        .filter(|b| futures::future::ready(b.as_ref().map_or(true, |b| b.num_rows() > 0)));
        Box::pin(RecordBatchStreamAdapter::new(schema, batches.boxed()))
    }
}

/// A text column borrowed from `items` (no per-cell allocation).
fn text<'a, T>(items: &'a [T], f: impl Fn(&'a T) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(items.iter().map(f)))
}

fn rows_to_batch(schema: &SchemaRef, rows: &[(String, Event)]) -> Result<RecordBatch> {
    // UTM tags are parsed once per row and feed the source classification.
    let derived: Vec<(Source, Utm)> = rows.iter().map(|(_, e)| e.source_and_utm()).collect();
    let columns: Vec<ArrayRef> = vec![
        text(rows, |(id, _)| id),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|(_, e)| e.ts_ms.saturating_mul(1000)))
                .with_timezone(UTC),
        ),
        text(rows, |(_, e)| &e.site),
        text(rows, |(_, e)| &e.name),
        text(rows, |(_, e)| e.category().as_str()),
        text(rows, |(_, e)| &e.url),
        text(rows, |(_, e)| e.path()),
        text(rows, |(_, e)| &e.referrer),
        text(&derived, |(s, _)| &s.referrer_host),
        text(&derived, |(s, _)| &s.name),
        text(&derived, |(s, _)| s.channel.as_str()),
        text(&derived, |(_, u)| &u.source),
        text(&derived, |(_, u)| &u.medium),
        text(&derived, |(_, u)| &u.campaign),
        text(&derived, |(_, u)| &u.term),
        text(&derived, |(_, u)| &u.content),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, e)| format!("{:016x}", e.visitor_id)),
        )),
        text(rows, |(_, e)| &e.browser),
        text(rows, |(_, e)| &e.os),
        text(rows, |(_, e)| e.device.as_str()),
        text(rows, |(_, e)| &e.country),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|(_, e)| e.returning))),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|(_, e)| (e.session_id != 0).then(|| format!("{:016x}", e.session_id))),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, e)| e.props_json()))),
        Arc::new(
            Decimal128Array::from_iter(rows.iter().map(|(_, e)| {
                e.revenue
                    .as_ref()
                    .and_then(|r| revenue_micros(&r.amount))
                    .map(i128::from)
            }))
            .with_precision_and_scale(18, 6)?,
        ),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|(_, e)| e.revenue.as_ref().map(|r| r.currency.as_str())),
        )),
    ];
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters_widen_to_arrival_windows() {
        let b = ScanBounds {
            sites: None,
            from_ms: Some(1_000_000_000),
            to_ms: Some(2_000_000_000),
        };
        assert_eq!(id_range(&b), ("999700000".to_owned(), "2259200000".to_owned()));
        assert_eq!(id_range(&ScanBounds::default()), ("-".to_owned(), "+".to_owned()));
    }
}
