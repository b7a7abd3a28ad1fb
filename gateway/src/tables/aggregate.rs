//! A report table at one grain (`traffic_hour`, `pages_day`, ...).
//!
//! Filters on `site` and `bucket` are accepted as `Inexact`: they bound the
//! keys read, and DataFusion re-checks them on the rows. Execution reads one
//! site at a time and emits one record batch per site, so memory is bounded
//! by the largest site's range rather than the whole answer.

use crate::keymap::{KeymapReader, ReportRow};
use crate::pushdown::{self, ScanBounds};
use crate::tables::UTC;
use crate::tenant::TenantScope;
use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
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
use futures::{StreamExt, TryStreamExt};
use schema::Grain;
use schema::catalog::ColumnType;
use schema::report::{MeasureKind, Report};
use std::fmt;
use std::sync::Arc;

pub struct AggregateTable {
    schema: SchemaRef,
    report: Report,
    grain: Grain,
    reader: KeymapReader,
}

impl fmt::Debug for AggregateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AggregateTable({}_{})", self.report.name(), self.grain)
    }
}

impl AggregateTable {
    pub fn new(schema: SchemaRef, report: Report, grain: Grain, reader: KeymapReader) -> Self {
        AggregateTable {
            schema,
            report,
            grain,
            reader,
        }
    }
}

#[async_trait]
impl TableProvider for AggregateTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown::support(filters, pushdown::BUCKET))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut bounds = pushdown::analyze(filters);
        TenantScope::of_config(state.config()).confine(&mut bounds);
        // Visitors columns cost a PFCOUNT per row: count them only when the
        // query reads one (or a filter needs one).
        let dims = 2 + self.report.dimensions().len();
        let unique_column = |i: &usize| {
            *i >= dims
                && self
                    .report
                    .measures()
                    .get(*i - dims)
                    .is_some_and(|m| matches!(m.kind, MeasureKind::Unique(_)))
        };
        let with_uniques = projection.is_none_or(|p| p.iter().any(unique_column))
            || filters.iter().any(|f| {
                f.column_refs()
                    .iter()
                    .any(|c| self.schema.index_of(c.name()).is_ok_and(|i| unique_column(&i)))
            });
        let partition = Arc::new(AggregatePartition {
            schema: self.schema.clone(),
            report: self.report,
            grain: self.grain,
            reader: self.reader.clone(),
            bounds,
            with_uniques,
        });
        super::streaming_scan(self.schema.clone(), vec![partition], projection, limit)
    }
}

struct AggregatePartition {
    schema: SchemaRef,
    report: Report,
    grain: Grain,
    reader: KeymapReader,
    bounds: ScanBounds,
    with_uniques: bool,
}

impl fmt::Debug for AggregatePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AggregatePartition({}_{}, {:?})",
            self.report.name(),
            self.grain,
            self.bounds
        )
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl PartitionStream for AggregatePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (reader, bounds, report, grain, schema, with_uniques) = (
            self.reader.clone(),
            self.bounds.clone(),
            self.report,
            self.grain,
            self.schema.clone(),
            self.with_uniques,
        );
        let setup_reader = reader.clone();
        let setup_bounds = bounds.clone();
        let batches = futures::stream::once(async move {
            let ks = setup_reader.keyspace().await.map_err(external)?;
            let sites = setup_reader.sites(&setup_bounds).await.map_err(external)?;
            Ok::<_, DataFusionError>(futures::stream::iter(
                sites.into_iter().map(move |s| Ok::<_, DataFusionError>((ks, s))),
            ))
        })
        .try_flatten()
        .and_then({
            let schema = schema.clone();
            move |(ks, site)| {
                let (reader, bounds, schema) = (reader.clone(), bounds.clone(), schema.clone());
                async move {
                    let rows = reader
                        .read_site(ks, report, grain, &site, &bounds, with_uniques)
                        .await
                        .map_err(external)?;
                    rows_to_batch(&schema, report, &site, &rows)
                }
            }
        })
        .try_filter(|b| futures::future::ready(b.num_rows() > 0));
        Box::pin(RecordBatchStreamAdapter::new(schema, batches.boxed()))
    }
}

fn bucket_array(ms: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(ms.map(|m| m * 1000)).with_timezone(UTC))
}

fn rows_to_batch(schema: &SchemaRef, report: Report, site: &str, rows: &[ReportRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(site, n))),
        bucket_array(rows.iter().map(|r| r.bucket_ms)),
    ];
    for d in 0..report.dimensions().len() {
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.dims.get(d).map_or("", String::as_str)),
        )));
    }
    for (i, m) in report.measures().iter().enumerate() {
        let values = rows.iter().map(|r| r.values.get(i).copied().unwrap_or(0));
        columns.push(match m.ty {
            // Revenue is kept in millionths: exactly numeric(18,6).
            ColumnType::Numeric => {
                Arc::new(Decimal128Array::from_iter_values(values.map(i128::from)).with_precision_and_scale(18, 6)?)
            }
            _ => Arc::new(Int64Array::from_iter_values(values)),
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
