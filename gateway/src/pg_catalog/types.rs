//! PostgreSQL's built-in types, with their real OIDs.
//!
//! Drivers look types up by OID (pgJDBC's TypeInfoCache, psycopg's
//! `TypeInfo.fetch`, Npgsql's type loading) and by name (`to_regtype`,
//! `format_type`), so `pg_type` lists the base types Tally's results can
//! carry, their array types and the few pseudo and reg* types catalog
//! queries name. OIDs and attributes are those of PostgreSQL 16.

use datafusion::arrow::datatypes::DataType;
use schema::catalog::ColumnType;

/// One row of `pg_type`.
#[derive(Debug, Clone, Copy)]
pub struct PgType {
    pub oid: u32,
    pub name: &'static str,
    /// `typlen`: bytes, -1 for varlena, -2 for C strings.
    pub len: i16,
    pub by_val: bool,
    /// `typtype`: b(ase), p(seudo).
    pub kind: char,
    pub category: char,
    /// Element type of an array type (0 otherwise).
    pub elem: u32,
    /// Array type of this type (0 if none).
    pub array: u32,
    /// The name `format_type` prints (SQL spelling).
    pub sql_name: &'static str,
    /// `typalign`.
    pub align: char,
}

// One row of the type table; the arguments are its columns, in order.
#[allow(clippy::too_many_arguments)]
const fn base(
    oid: u32,
    name: &'static str,
    len: i16,
    by_val: bool,
    category: char,
    array: u32,
    sql_name: &'static str,
    align: char,
) -> PgType {
    PgType {
        oid,
        name,
        len,
        by_val,
        kind: 'b',
        category,
        elem: 0,
        array,
        sql_name,
        align,
    }
}

const fn array(oid: u32, name: &'static str, elem: u32, sql_name: &'static str, align: char) -> PgType {
    PgType {
        oid,
        name,
        len: -1,
        by_val: false,
        kind: 'b',
        category: 'A',
        elem,
        array: 0,
        sql_name,
        align,
    }
}

const fn pseudo(oid: u32, name: &'static str, len: i16, array: u32) -> PgType {
    PgType {
        oid,
        name,
        len,
        by_val: false,
        kind: 'p',
        category: 'P',
        elem: 0,
        array,
        sql_name: name,
        align: 'i',
    }
}

/// Every type in `pg_type`, by OID.
pub const TYPES: &[PgType] = &[
    base(16, "bool", 1, true, 'B', 1000, "boolean", 'c'),
    base(17, "bytea", -1, false, 'U', 1001, "bytea", 'i'),
    base(18, "char", 1, true, 'Z', 1002, "\"char\"", 'c'),
    base(19, "name", 64, false, 'S', 1003, "name", 'c'),
    base(20, "int8", 8, true, 'N', 1016, "bigint", 'd'),
    base(21, "int2", 2, true, 'N', 1005, "smallint", 's'),
    base(22, "int2vector", -1, false, 'A', 1006, "int2vector", 'i'),
    base(23, "int4", 4, true, 'N', 1007, "integer", 'i'),
    base(24, "regproc", 4, true, 'N', 1008, "regproc", 'i'),
    base(25, "text", -1, false, 'S', 1009, "text", 'i'),
    base(26, "oid", 4, true, 'N', 1028, "oid", 'i'),
    base(30, "oidvector", -1, false, 'A', 1013, "oidvector", 'i'),
    base(114, "json", -1, false, 'U', 199, "json", 'i'),
    base(700, "float4", 4, true, 'N', 1021, "real", 'i'),
    base(701, "float8", 8, true, 'N', 1022, "double precision", 'd'),
    pseudo(705, "unknown", -2, 0),
    base(1042, "bpchar", -1, false, 'S', 1014, "character", 'i'),
    base(1043, "varchar", -1, false, 'S', 1015, "character varying", 'i'),
    base(1082, "date", 4, true, 'D', 1182, "date", 'i'),
    base(1083, "time", 8, true, 'D', 1183, "time without time zone", 'd'),
    base(
        1114,
        "timestamp",
        8,
        true,
        'D',
        1115,
        "timestamp without time zone",
        'd',
    ),
    base(1184, "timestamptz", 8, true, 'D', 1185, "timestamp with time zone", 'd'),
    base(1186, "interval", 16, false, 'T', 1187, "interval", 'd'),
    base(1700, "numeric", -1, false, 'N', 1231, "numeric", 'i'),
    base(2205, "regclass", 4, true, 'N', 2210, "regclass", 'i'),
    base(2206, "regtype", 4, true, 'N', 2211, "regtype", 'i'),
    base(2950, "uuid", 16, false, 'U', 2951, "uuid", 'c'),
    base(3802, "jsonb", -1, false, 'U', 3807, "jsonb", 'i'),
    base(4089, "regnamespace", 4, true, 'N', 4090, "regnamespace", 'i'),
    pseudo(2249, "record", -1, 2287),
    pseudo(2275, "cstring", -2, 1263),
    pseudo(2276, "any", 4, 0),
    pseudo(2277, "anyarray", -1, 0),
    pseudo(2278, "void", 4, 0),
    pseudo(2283, "anyelement", 4, 0),
    array(199, "_json", 114, "json[]", 'i'),
    array(1000, "_bool", 16, "boolean[]", 'i'),
    array(1001, "_bytea", 17, "bytea[]", 'i'),
    array(1002, "_char", 18, "\"char\"[]", 'i'),
    array(1003, "_name", 19, "name[]", 'd'),
    array(1005, "_int2", 21, "smallint[]", 'i'),
    array(1006, "_int2vector", 22, "int2vector[]", 'i'),
    array(1007, "_int4", 23, "integer[]", 'i'),
    array(1008, "_regproc", 24, "regproc[]", 'i'),
    array(1009, "_text", 25, "text[]", 'i'),
    array(1013, "_oidvector", 30, "oidvector[]", 'i'),
    array(1014, "_bpchar", 1042, "character[]", 'i'),
    array(1015, "_varchar", 1043, "character varying[]", 'i'),
    array(1016, "_int8", 20, "bigint[]", 'd'),
    array(1021, "_float4", 700, "real[]", 'i'),
    array(1022, "_float8", 701, "double precision[]", 'd'),
    array(1028, "_oid", 26, "oid[]", 'i'),
    array(1115, "_timestamp", 1114, "timestamp without time zone[]", 'd'),
    array(1182, "_date", 1082, "date[]", 'i'),
    array(1183, "_time", 1083, "time without time zone[]", 'd'),
    array(1185, "_timestamptz", 1184, "timestamp with time zone[]", 'd'),
    array(1187, "_interval", 1186, "interval[]", 'd'),
    array(1231, "_numeric", 1700, "numeric[]", 'i'),
    array(1263, "_cstring", 2275, "cstring[]", 'i'),
    array(2210, "_regclass", 2205, "regclass[]", 'i'),
    array(2211, "_regtype", 2206, "regtype[]", 'i'),
    array(2287, "_record", 2249, "record[]", 'd'),
    array(2951, "_uuid", 2950, "uuid[]", 'i'),
    array(3807, "_jsonb", 3802, "jsonb[]", 'i'),
    array(4090, "_regnamespace", 4089, "regnamespace[]", 'i'),
];

/// A type by OID.
pub fn by_oid(oid: u32) -> Option<&'static PgType> {
    TYPES.iter().find(|t| t.oid == oid)
}

/// A type by any name PostgreSQL accepts for it (`int8`, `bigint`,
/// `pg_catalog.int8`, `double precision`, `character varying`, `text[]`).
pub fn by_name(name: &str) -> Option<&'static PgType> {
    let n = name.trim().trim_matches('"').to_ascii_lowercase();
    let n = n.strip_prefix("pg_catalog.").unwrap_or(&n);
    let alias = match n {
        "integer" | "int" => "int4",
        "smallint" => "int2",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" => "bpchar",
        "decimal" => "numeric",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "time without time zone" => "time",
        other => other,
    };
    if let Some(elem) = alias.strip_suffix("[]") {
        let elem = by_name(elem)?;
        return by_oid(elem.array);
    }
    TYPES.iter().find(|t| t.name == alias)
}

/// `format_type(oid, typmod)`: the SQL spelling, with `numeric(p,s)` and
/// `character varying(n)` modifiers.
pub fn format_type(oid: u32, typmod: Option<i32>) -> Option<String> {
    let t = by_oid(oid)?;
    Some(match (t.oid, typmod) {
        (1700, Some(m)) if m >= 4 => {
            let m = m - 4;
            format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff)
        }
        (1043 | 1042, Some(m)) if m >= 4 => format!("{}({})", t.sql_name, m - 4),
        _ => t.sql_name.to_owned(),
    })
}

/// The PostgreSQL type of a catalog column.
pub fn of_column(ty: ColumnType) -> &'static PgType {
    let oid = match ty {
        ColumnType::Text => 25,
        ColumnType::Int8 => 20,
        ColumnType::Float8 => 701,
        ColumnType::Bool => 16,
        ColumnType::TimestampTz => 1184,
        ColumnType::Numeric => 1700,
        ColumnType::Json => 114,
    };
    by_oid(oid).unwrap_or(&TYPES[0])
}

/// `atttypmod` of a catalog column (`numeric(18,6)` for exact decimals).
pub fn typmod_of_column(ty: ColumnType) -> i32 {
    match ty {
        ColumnType::Numeric => ((18 << 16) | 6) + 4,
        _ => -1,
    }
}

/// The PostgreSQL type an Arrow column is presented as (system tables).
pub fn of_arrow(dt: &DataType) -> &'static PgType {
    let oid = match dt {
        DataType::Boolean => 16,
        DataType::Int8 | DataType::Int16 => 21,
        DataType::Int32 => 23,
        DataType::Int64 => 20,
        DataType::UInt32 => 26,
        DataType::Float32 => 700,
        DataType::Float64 => 701,
        DataType::Timestamp(_, Some(_)) => 1184,
        DataType::Timestamp(_, None) => 1114,
        DataType::Date32 => 1082,
        DataType::Decimal128(..) => 1700,
        DataType::List(f) => match f.data_type() {
            DataType::UInt32 => 1028,
            DataType::Int16 => 1005,
            DataType::Int64 => 1016,
            _ => 1009,
        },
        _ => 25,
    };
    by_oid(oid).unwrap_or(&TYPES[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_oids_and_arrays_agree() {
        assert_eq!(by_name("bigint").map(|t| t.oid), Some(20));
        assert_eq!(by_name("pg_catalog.timestamptz").map(|t| t.oid), Some(1184));
        assert_eq!(by_name("text[]").map(|t| t.oid), Some(1009));
        assert_eq!(
            format_type(1700, Some(typmod_of_column(ColumnType::Numeric))).as_deref(),
            Some("numeric(18,6)")
        );
        assert_eq!(format_type(1184, None).as_deref(), Some("timestamp with time zone"));
        for t in TYPES {
            if t.array != 0 {
                let a = by_oid(t.array).unwrap_or_else(|| panic!("array of {}", t.name));
                assert_eq!(a.elem, t.oid, "{}", t.name);
            }
            if t.elem != 0 {
                assert_eq!(by_oid(t.elem).map(|e| e.array), Some(t.oid), "{}", t.name);
            }
        }
        let mut oids: Vec<u32> = TYPES.iter().map(|t| t.oid).collect();
        oids.sort_unstable();
        oids.dedup();
        assert_eq!(oids.len(), TYPES.len());
    }
}
