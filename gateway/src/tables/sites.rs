//! The `sites` table: the site registry.

use crate::keymap::KeymapReader;
use crate::pushdown;
use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use std::fmt;
use std::sync::Arc;

pub struct SitesTable {
    schema: SchemaRef,
    reader: KeymapReader,
}

impl SitesTable {
    pub fn new(schema: SchemaRef, reader: KeymapReader) -> Self {
        SitesTable { schema, reader }
    }
}

impl fmt::Debug for SitesTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SitesTable")
    }
}

#[async_trait]
impl TableProvider for SitesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partition = Arc::new(SitesPartition {
            schema: self.schema.clone(),
            reader: self.reader.clone(),
            scope: crate::tenant::TenantScope::of_config(state.config()),
        });
        super::streaming_scan(self.schema.clone(), vec![partition], projection, limit)
    }
}

struct SitesPartition {
    schema: SchemaRef,
    reader: KeymapReader,
    /// Only the caller's sites are listed.
    scope: crate::tenant::TenantScope,
}

impl fmt::Debug for SitesPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SitesPartition")
    }
}

impl PartitionStream for SitesPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (reader, schema, scope) = (self.reader.clone(), self.schema.clone(), self.scope.clone());
        let out_schema = schema.clone();
        let batch = futures::stream::once(async move {
            let sites = reader
                .sites(&pushdown::ScanBounds::default())
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let sites = scope.filter(sites);
            Ok(RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(sites))])?)
        });
        Box::pin(RecordBatchStreamAdapter::new(out_schema, batch.boxed()))
    }
}
