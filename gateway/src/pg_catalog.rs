//! A small, exact `pg_catalog` generated from Tally's table catalog.
//!
//! Clients discover tables through PostgreSQL's system catalogs (psql's
//! `\dt`, BI tools' schema browsers). The catalog here answers with the real
//! built-in OIDs where PostgreSQL has fixed ones (namespaces 11 and 2200,
//! access method 2 = heap, owner 10) and, for Tally's tables, OIDs derived
//! from a hash of the table name: stable across restarts and across
//! additions to the catalog. Functions psql calls schema-qualified are
//! registered under both names (`pg_table_is_visible` and
//! `pg_catalog.pg_table_is_visible`).

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// OID of namespace `pg_catalog`.
pub const PG_CATALOG_OID: i64 = 11;
/// OID of namespace `public`.
pub const PUBLIC_OID: i64 = 2200;
/// OID of namespace `information_schema` (as in a fresh PostgreSQL 16).
pub const INFORMATION_SCHEMA_OID: i64 = 13_181;
/// OID of the bootstrap superuser, who owns everything here.
pub const OWNER_OID: i64 = 10;
/// The name reported as owner.
pub const OWNER_NAME: &str = "tally";
/// OID of the `heap` table access method.
pub const HEAP_AM_OID: i64 = 2;

/// Stable OID of one of Tally's tables: FNV-1a of the name, placed above
/// PostgreSQL's first user OID (16384).
pub fn table_oid(name: &str) -> i64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    16_384 + i64::from(h % 1_000_000_000)
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Arc<MemTable>> {
    let schema = Arc::new(Schema::new(fields));
    let b = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![b]])?))
}

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// A constant-valued function, also callable as `pg_catalog.<name>`.
fn udf(name: &str, qualified: &'static str, args: Vec<DataType>, ret: DataType, value: ScalarValue) -> ScalarUDF {
    create_udf(
        name,
        args,
        ret,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(value.clone()))),
    )
    .with_aliases([qualified])
}

/// Register the `pg_catalog` schema and its functions.
pub fn register(ctx: &SessionContext, catalog_name: &str) -> Result<()> {
    let tables = schema::catalog::tables();
    if let Some(catalog) = ctx.catalog(catalog_name) {
        catalog.register_schema("pg_catalog", Arc::new(MemorySchemaProvider::new()))?;
    }
    let n = tables.len();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    ctx.register_table(
        "pg_catalog.pg_class",
        batch(
            vec![
                int("oid"),
                text("relname"),
                int("relnamespace"),
                int("reltype"),
                int("relowner"),
                int("relam"),
                text("relkind"),
                text("relpersistence"),
                int("relnatts"),
                Field::new("relhasindex", DataType::Boolean, false),
                Field::new("relispartition", DataType::Boolean, false),
            ],
            vec![
                Arc::new(Int64Array::from_iter_values(names.iter().map(|n| table_oid(n)))),
                Arc::new(StringArray::from(names.clone())),
                Arc::new(Int64Array::from(vec![PUBLIC_OID; n])),
                Arc::new(Int64Array::from(vec![0; n])),
                Arc::new(Int64Array::from(vec![OWNER_OID; n])),
                Arc::new(Int64Array::from(vec![HEAP_AM_OID; n])),
                Arc::new(StringArray::from(vec!["r"; n])),
                Arc::new(StringArray::from(vec!["p"; n])),
                Arc::new(Int64Array::from_iter_values(
                    tables.iter().map(|t| t.columns.len() as i64),
                )),
                Arc::new(BooleanArray::from(vec![false; n])),
                Arc::new(BooleanArray::from(vec![false; n])),
            ],
        )?,
    )?;
    ctx.register_table(
        "pg_catalog.pg_namespace",
        batch(
            vec![int("oid"), text("nspname"), int("nspowner")],
            vec![
                Arc::new(Int64Array::from(vec![
                    PG_CATALOG_OID,
                    PUBLIC_OID,
                    INFORMATION_SCHEMA_OID,
                ])),
                Arc::new(StringArray::from(vec!["pg_catalog", "public", "information_schema"])),
                Arc::new(Int64Array::from(vec![OWNER_OID; 3])),
            ],
        )?,
    )?;
    ctx.register_table(
        "pg_catalog.pg_am",
        batch(
            vec![int("oid"), text("amname"), text("amtype")],
            vec![
                Arc::new(Int64Array::from(vec![HEAP_AM_OID, 403])),
                Arc::new(StringArray::from(vec!["heap", "btree"])),
                Arc::new(StringArray::from(vec!["t", "i"])),
            ],
        )?,
    )?;
    // Every relation is in `public`, which is on the search path.
    ctx.register_udf(udf(
        "pg_table_is_visible",
        "pg_catalog.pg_table_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        ScalarValue::Boolean(Some(true)),
    ));
    ctx.register_udf(udf(
        "pg_get_userbyid",
        "pg_catalog.pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        ScalarValue::Utf8(Some(OWNER_NAME.to_owned())),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::table_oid;

    #[test]
    fn table_oids_are_stable_distinct_and_user_range() {
        let oids: std::collections::BTreeSet<i64> =
            schema::catalog::tables().iter().map(|t| table_oid(&t.name)).collect();
        assert_eq!(oids.len(), schema::catalog::tables().len());
        assert!(oids.iter().all(|o| *o >= 16_384 && *o < i64::from(u32::MAX)));
        assert_eq!(table_oid("events"), table_oid("events"));
    }
}
