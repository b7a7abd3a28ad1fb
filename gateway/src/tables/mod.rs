//! DataFusion table providers over the key-map, generated from the catalog.
//!
//! Each table of `schema::catalog` becomes one provider: the report tables
//! read buckets through [`crate::keymap::KeymapReader`], `sites` reads the
//! registry. Providers resolve their keys at execution time (not at planning
//! time), so a prepared statement re-reads fresh data on every execution.

pub mod aggregate;
pub mod events;
pub mod realtime;
pub mod sites;
pub mod unique_visitors;

use crate::keymap::KeymapReader;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use schema::catalog::{self, ColumnType, TableKind};
use std::sync::Arc;

/// The timezone tag of every `timestamptz` column.
pub const UTC: &str = "+00:00";

/// Arrow type of a catalog column type.
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Text => DataType::Utf8,
        ColumnType::Int8 => DataType::Int64,
        ColumnType::Float8 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        ColumnType::Numeric => DataType::Decimal128(18, 6),
        ColumnType::Json => DataType::Utf8,
    }
}

/// Field metadata naming a PostgreSQL type the Arrow type alone does not
/// tell (`json` columns are Arrow strings).
pub const PG_TYPE_KEY: &str = "tally.pg_type";

/// Arrow schema of a catalog table.
pub fn arrow_schema(table: &catalog::Table) -> SchemaRef {
    Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|c| {
                let field = Field::new(c.name, arrow_type(c.ty), c.nullable);
                match c.ty {
                    // JSON travels as text; the wire type comes from here.
                    ColumnType::Json => {
                        field.with_metadata([(PG_TYPE_KEY.to_owned(), "json".to_owned())].into_iter().collect())
                    }
                    _ => field,
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// One provider per catalog table, by name.
pub fn providers(reader: &KeymapReader) -> Vec<(String, Arc<dyn TableProvider>)> {
    catalog::tables()
        .into_iter()
        .map(|t| {
            let provider: Arc<dyn TableProvider> = match t.kind {
                TableKind::Aggregate { report, grain } => Arc::new(aggregate::AggregateTable::new(
                    arrow_schema(&t),
                    report,
                    grain,
                    reader.clone(),
                )),
                TableKind::Sites => Arc::new(sites::SitesTable::new(arrow_schema(&t), reader.clone())),
                TableKind::Events => Arc::new(events::EventsTable::new(arrow_schema(&t), reader.conn())),
                TableKind::Realtime => Arc::new(realtime::RealtimeTable::new(arrow_schema(&t), reader.clone())),
            };
            (t.name, provider)
        })
        .collect()
}

/// The scan plan of a provider: lazily executed partitions, projected.
pub fn streaming_scan(
    schema: SchemaRef,
    partitions: Vec<Arc<dyn PartitionStream>>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(StreamingTableExec::try_new(
        schema,
        partitions,
        projection,
        Vec::new(),
        false,
        limit,
    )?))
}
