//! The `realtime` table: visitors and page views of the last five minutes,
//! one row per site (sites without traffic show zeros).
//!
//! Computed at query time from the minute buckets: one `PFCOUNT` over the
//! covering minute HyperLogLogs (one slot, so it works on Redis Cluster) and
//! the page view counters, read per site. A `site` filter is pushed down.

use crate::keymap::KeymapReader;
use crate::pushdown::{self, ScanBounds};
use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
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
use std::fmt;
use std::sync::Arc;

pub struct RealtimeTable {
    schema: SchemaRef,
    reader: KeymapReader,
}

impl RealtimeTable {
    pub fn new(schema: SchemaRef, reader: KeymapReader) -> Self {
        RealtimeTable { schema, reader }
    }
}

impl fmt::Debug for RealtimeTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RealtimeTable")
    }
}

#[async_trait]
impl TableProvider for RealtimeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // No time column: only the site filter narrows the read.
        Ok(pushdown::support(filters, ""))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut bounds = pushdown::analyze_on(filters, "");
        crate::tenant::TenantScope::of_config(state.config()).confine(&mut bounds);
        let partition = Arc::new(RealtimePartition {
            schema: self.schema.clone(),
            reader: self.reader.clone(),
            bounds,
        });
        super::streaming_scan(self.schema.clone(), vec![partition], projection, limit)
    }
}

struct RealtimePartition {
    schema: SchemaRef,
    reader: KeymapReader,
    bounds: ScanBounds,
}

impl fmt::Debug for RealtimePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RealtimePartition({:?})", self.bounds.sites)
    }
}

impl PartitionStream for RealtimePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (reader, bounds, schema) = (self.reader.clone(), self.bounds.clone(), self.schema.clone());
        let out_schema = schema.clone();
        let external = |e| DataFusionError::External(Box::new(e));
        let batch = futures::stream::once(async move {
            let ks = reader.keyspace().await.map_err(external)?;
            let mut sites = reader.sites(&bounds).await.map_err(external)?;
            sites.sort();
            let now = chrono::Utc::now().timestamp_millis();
            let (mut visitors, mut pageviews) = (Vec::new(), Vec::new());
            for site in &sites {
                let row = reader.read_realtime(ks, site, now).await.map_err(external)?;
                visitors.push(row.visitors);
                pageviews.push(row.pageviews);
            }
            Ok(RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(sites)),
                    Arc::new(Int64Array::from(visitors)),
                    Arc::new(Int64Array::from(pageviews)),
                ],
            )?)
        });
        Box::pin(RecordBatchStreamAdapter::new(out_schema, batch.boxed()))
    }
}
