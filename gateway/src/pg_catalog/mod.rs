//! A small, exact `pg_catalog` and `information_schema`, generated from
//! Tally's table catalog.
//!
//! Clients discover tables through PostgreSQL's system catalogs (psql's
//! `\d`, pgJDBC's DatabaseMetaData, SQLAlchemy's reflection, Grafana's table
//! list). The catalog here answers with PostgreSQL's real built-in OIDs
//! (namespaces 11 and 2200, `pg_class` 1259, the built-in types) and, for
//! Tally's tables, OIDs derived from a hash of the name: stable across
//! restarts and across additions to the catalog.
//!
//! - [`types`]: the built-in types of `pg_type`.
//! - [`relations`]: every relation and the rows of the catalog tables.
//! - [`functions`]: `format_type`, `obj_description`, `to_regclass`, ...
//! - [`builder`]: constant tables from loosely typed rows.

pub mod builder;
pub mod functions;
pub mod relations;
pub mod types;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// OID of namespace `pg_catalog`.
pub const PG_CATALOG_OID: u32 = 11;
/// OID of namespace `public`.
pub const PUBLIC_OID: u32 = 2200;
/// OID of namespace `information_schema` (as in a fresh PostgreSQL 16).
pub const INFORMATION_SCHEMA_OID: u32 = 13_181;
/// OID of the bootstrap superuser, who owns everything here.
pub const OWNER_OID: u32 = 10;
/// The name reported as owner.
pub const OWNER_NAME: &str = "tally";
/// OID of the `heap` table access method.
pub const HEAP_AM_OID: u32 = 2;

/// Stable OID of one of Tally's relations: FNV-1a of the name, placed above
/// PostgreSQL's first user OID (16384).
pub fn table_oid(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    16_385 + h % 1_000_000_000
}

/// Register `pg_catalog`, `information_schema` and the catalog functions;
/// returns the relation lookup the SQL rewrite resolves `::regclass` with.
pub fn register(
    ctx: &SessionContext,
    catalog_name: &str,
    settings: relations::SettingDefaults,
) -> Result<Arc<functions::Lookup>> {
    let rels = relations::relations();
    if let Some(catalog) = ctx.catalog(catalog_name) {
        catalog.register_schema("pg_catalog", Arc::new(MemorySchemaProvider::new()))?;
        catalog.register_schema("information_schema", Arc::new(MemorySchemaProvider::new()))?;
    }
    let mut lookup = functions::Lookup::new(&rels);
    for (schema, table) in relations::system_tables(&rels, settings) {
        let batch = table.build()?;
        if batch.num_rows() == 0 {
            lookup.mark_empty(schema, table.name);
        }
        let mem = MemTable::try_new(table.schema(), vec![vec![batch]])?;
        ctx.register_table(format!("{schema}.{}", table.name).as_str(), Arc::new(mem))?;
    }
    let lookup = Arc::new(lookup);
    functions::register(ctx, lookup.clone());
    ctx.register_udtf("pg_get_keywords", Arc::new(Keywords(keywords()?)));
    Ok(lookup)
}

/// `pg_get_keywords()`: the reserved words (those `quote_ident` quotes).
fn keywords() -> Result<Arc<MemTable>> {
    use builder::{BOOL, TEXT, TableBuilder, b, s};
    let mut t = TableBuilder::new(
        "pg_get_keywords",
        &[
            ("word", TEXT),
            ("catcode", TEXT),
            ("barelabel", BOOL),
            ("catdesc", TEXT),
            ("baredesc", TEXT),
        ],
    );
    for word in functions::RESERVED {
        t.row(vec![s(*word), s("R"), b(true), s("reserved"), s("can be bare label")]);
    }
    let batch = t.build()?;
    Ok(Arc::new(MemTable::try_new(t.schema(), vec![vec![batch]])?))
}

#[derive(Debug)]
struct Keywords(Arc<MemTable>);

impl datafusion::catalog::TableFunctionImpl for Keywords {
    fn call(&self, _args: &[datafusion::prelude::Expr]) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_oids_are_stable_distinct_and_in_the_user_range() {
        let rels = relations::relations();
        let mut oids: Vec<u32> = rels.iter().map(|r| r.oid).collect();
        oids.extend(
            rels.iter()
                .filter(|r| !r.primary_key.is_empty())
                .map(|r| r.pkey_oid() + 1),
        );
        let n = oids.len();
        oids.sort_unstable();
        oids.dedup();
        assert_eq!(oids.len(), n);
        assert!(
            rels.iter()
                .filter(|r| r.namespace == PUBLIC_OID)
                .all(|r| r.oid > 16_384)
        );
        // Pinned: clients cache OIDs, so the hash must never change.
        assert_eq!(table_oid("events"), 316_220_293);
        let class = rels.iter().find(|r| r.name == "pg_class").map(|r| r.oid);
        assert_eq!(class, Some(1259));
    }

    #[test]
    fn every_system_table_builds() {
        let rels = relations::relations();
        for (schema, t) in relations::system_tables(&rels, &[("timezone", "UTC")]) {
            let b = t.build().unwrap_or_else(|e| panic!("{schema}.{}: {e}", t.name));
            if ["pg_class", "pg_attribute", "pg_type", "columns", "tables"].contains(&t.name) {
                assert!(b.num_rows() > 0, "{}", t.name);
            }
        }
    }
}
