//! The SQL table catalog: every table the gateway serves, with its columns.
//!
//! The catalog is data, not code in the gateway, so that the README's table
//! reference, the gateway's table providers and (later) `pg_catalog` and
//! `information_schema` are all generated from one list and cannot drift.

use crate::grain::Grain;
use crate::report::Report;

/// Column types, named by their PostgreSQL spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int8,
    Float8,
    Bool,
    TimestampTz,
    /// Exact decimal (`numeric(18,6)`).
    Numeric,
    /// A JSON document (`json`).
    Json,
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
            ColumnType::Numeric => "numeric",
            ColumnType::Json => "json",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub doc: &'static str,
    /// Whether the column can be NULL.
    pub nullable: bool,
}

const fn col(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        doc,
        nullable: false,
    }
}

const fn nullable(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        doc,
        nullable: true,
    }
}

/// What backs a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A report at one grain, read from the key-map.
    Aggregate { report: Report, grain: Grain },
    /// The site registry.
    Sites,
    /// The raw events, read from the shard streams.
    Events,
    /// Visitors and page views of the last minutes, per site.
    Realtime,
}

/// How far back the `realtime` table looks.
pub const REALTIME_WINDOW_MS: i64 = 5 * 60_000;

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

    /// The columns that identify a row, if any: a report's site, bucket and
    /// dimensions (one key-map field each); a site's name. Presented to
    /// clients as the table's primary key.
    pub fn primary_key(&self) -> Vec<&'static str> {
        match self.kind {
            TableKind::Aggregate { report, .. } => ["site", "bucket"]
                .into_iter()
                .chain(report.dimensions().iter().map(|d| d.name))
                .collect(),
            TableKind::Sites | TableKind::Realtime => vec!["site"],
            TableKind::Events => Vec::new(),
        }
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
            columns.extend(report.dimensions().iter().map(|d| col(d.name, Text, d.doc)));
            columns.extend(report.measures().iter().map(|m| col(m.name, m.ty, m.doc)));
            out.push(Table {
                name: format!("{}_{}", report.name(), grain.suffix()),
                kind: TableKind::Aggregate { report, grain },
                doc: format!("{} report per {}: {}", report.name(), grain.suffix(), report.doc()),
                columns,
            });
        }
    }
    out.push(Table {
        name: "events".into(),
        kind: TableKind::Events,
        doc: "raw events, straight from the shard streams".into(),
        columns: vec![
            col(
                "id",
                Text,
                "stream entry id (<arrival ms>-<seq>), then .<i> for the i-th event (from 0) of an entry of several",
            ),
            col("ts", TimestampTz, "event time"),
            col("site", Text, "site domain"),
            col("name", Text, "pageview, engagement or a custom event name"),
            col("category", Text, "pageview, engagement, ecommerce or custom"),
            col("url", Text, "page URL"),
            col("path", Text, "page path"),
            col("referrer", Text, "referrer URL"),
            col(
                "referrer_host",
                Text,
                "referrer host without www., empty for none or self-referrals",
            ),
            col(
                "source",
                Text,
                "source name: a UTM source, Google, Facebook, a referrer host, or Direct / None",
            ),
            col("channel", Text, "direct, search, social, email, paid or referral"),
            col("utm_source", Text, "utm_source (or ref/source) of the page URL"),
            col("utm_medium", Text, "utm_medium"),
            col("utm_campaign", Text, "utm_campaign"),
            col("utm_term", Text, "utm_term"),
            col("utm_content", Text, "utm_content"),
            col("visitor_id", Text, "cookieless daily visitor id (16 hex digits)"),
            col("browser", Text, "browser name"),
            col("os", Text, "operating system"),
            col("device_type", Text, "desktop, mobile, tablet or other"),
            col("country", Text, "ISO 3166-1 alpha-2 country code, empty when unknown"),
            nullable(
                "returning",
                Bool,
                "whether the browser had visited the site before (null when the sender did not say)",
            ),
            nullable(
                "session_id",
                Text,
                "session id assigned by ingest (16 hex digits), null when none",
            ),
            col("props", Json, "custom properties as a JSON object"),
            nullable("revenue", Numeric, "revenue amount (exact), null when none"),
            nullable("currency", Text, "revenue currency (ISO 4217), null when none"),
        ],
    });
    out.push(Table {
        name: "sites".into(),
        kind: TableKind::Sites,
        doc: "registered sites".into(),
        columns: vec![col("site", Text, "site domain")],
    });
    out.push(Table {
        name: "realtime".into(),
        kind: TableKind::Realtime,
        doc: "visitors and page views of the last 5 minutes (the current and the 5 previous minute buckets), per site"
            .into(),
        columns: vec![
            col("site", Text, "site domain"),
            col("visitors", Int8, "unique visitors (HyperLogLog)"),
            col("pageviews", Int8, "page views"),
        ],
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aggregate_table_starts_with_site_and_bucket() {
        let tables = tables();
        assert_eq!(tables.len(), 7 * 3 + 3);
        for t in tables.iter().filter(|t| matches!(t.kind, TableKind::Aggregate { .. })) {
            assert_eq!(t.column_index("site"), Some(0), "{}", t.name);
            assert_eq!(t.column_index("bucket"), Some(1), "{}", t.name);
        }
        assert!(tables.iter().any(|t| t.name == "traffic_minute"));
    }
}
