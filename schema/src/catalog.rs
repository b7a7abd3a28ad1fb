//! The SQL table catalog: every table the gateway serves, with its columns.
//!
//! The catalog is data, not code in the gateway, so that the README's table
//! reference, the gateway's table providers and (later) `pg_catalog` and
//! `information_schema` are all generated from one list and cannot drift.

use crate::grain::Grain;

/// Column types, named by their PostgreSQL spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int8,
    Float8,
    Bool,
    TimestampTz,
}

impl ColumnType {
    /// PostgreSQL type name as `format_type` prints it.
    pub const fn pg_name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Int8 => "bigint",
            ColumnType::Float8 => "double precision",
            ColumnType::Bool => "boolean",
            ColumnType::TimestampTz => "timestamp with time zone",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub doc: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column { name, ty, doc }
}

/// The pre-aggregated reports, each served at three grains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Report {
    /// Site-level counters and unique visitors.
    Traffic,
    /// Per-path counters.
    Pages,
}

impl Report {
    pub const ALL: [Report; 2] = [Report::Traffic, Report::Pages];

    pub const fn name(self) -> &'static str {
        match self {
            Report::Traffic => "traffic",
            Report::Pages => "pages",
        }
    }

    /// Columns after `site` and `bucket`.
    pub fn columns(self) -> Vec<Column> {
        use ColumnType::*;
        match self {
            Report::Traffic => vec![
                col("pageviews", Int8, "page views in the bucket"),
                col(
                    "events",
                    Int8,
                    "all events in the bucket (page views and custom events)",
                ),
                col(
                    "visitors",
                    Int8,
                    "unique visitors in the bucket (HyperLogLog, 0.81% standard error); use unique_visitors() across buckets",
                ),
            ],
            Report::Pages => vec![
                col("path", Text, "URL path of the page"),
                col("pageviews", Int8, "page views of this path in the bucket"),
            ],
        }
    }
}

/// What backs a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A report at one grain, read from the key-map.
    Aggregate { report: Report, grain: Grain },
    /// The site registry.
    Sites,
}

/// One SQL table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub kind: TableKind,
    pub doc: String,
    pub columns: Vec<Column>,
}

impl Table {
    /// Position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// Every table the gateway serves, in a stable order.
pub fn tables() -> Vec<Table> {
    use ColumnType::*;
    let mut out = Vec::new();
    for report in Report::ALL {
        for grain in Grain::ALL {
            let mut columns = vec![
                col("site", Text, "site domain"),
                col("bucket", TimestampTz, "start of the bucket (UTC)"),
            ];
            columns.extend(report.columns());
            out.push(Table {
                name: format!("{}_{}", report.name(), grain.suffix()),
                kind: TableKind::Aggregate { report, grain },
                doc: format!("{} report per {}", report.name(), grain.suffix()),
                columns,
            });
        }
    }
    out.push(Table {
        name: "sites".into(),
        kind: TableKind::Sites,
        doc: "registered sites".into(),
        columns: vec![col("site", Text, "site domain")],
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aggregate_table_starts_with_site_and_bucket() {
        let tables = tables();
        assert_eq!(tables.len(), 7);
        for t in tables.iter().filter(|t| matches!(t.kind, TableKind::Aggregate { .. })) {
            assert_eq!(t.column_index("site"), Some(0), "{}", t.name);
            assert_eq!(t.column_index("bucket"), Some(1), "{}", t.name);
        }
        assert!(tables.iter().any(|t| t.name == "traffic_minute"));
    }
}
