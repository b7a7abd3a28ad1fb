//! The PostgreSQL functions catalog queries and drivers call.
//!
//! Each answers from the same relation list as the catalog tables
//! (`obj_description`, `pg_get_constraintdef`, `to_regclass`, ...) or with
//! PostgreSQL's fixed answer for a server like this one (privileges are all
//! granted on a read-only database; sizes are 0; nothing is in recovery).
//! Functions that depend on the connection (`current_setting`,
//! `pg_backend_pid`, `current_user`) are not here: the SQL rewrite replaces
//! them with the connection's values before planning.

use super::relations::{Relation, namespace_name};
use super::types;
use super::{OWNER_NAME, PG_CATALOG_OID, PUBLIC_OID};
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, SimpleScalarUDF, Volatility};
use datafusion::prelude::SessionContext;
use std::collections::HashMap;
use std::sync::Arc;

type RowFn = dyn Fn(&[ScalarValue]) -> Result<ScalarValue> + Send + Sync;

/// A function evaluated row by row over scalars (catalog-sized inputs).
fn rowwise(name: &str, signature: Signature, ret: DataType, f: Arc<RowFn>) -> ScalarUDF {
    let ret_type = ret.clone();
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        name,
        signature,
        ret,
        Arc::new(move |args: &[ColumnarValue]| {
            if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                let scalars: Vec<ScalarValue> = args
                    .iter()
                    .filter_map(|a| match a {
                        ColumnarValue::Scalar(s) => Some(s.clone()),
                        ColumnarValue::Array(_) => None,
                    })
                    .collect();
                return Ok(ColumnarValue::Scalar(f(&scalars)?.cast_to(&ret_type)?));
            }
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let rows = arrays.first().map_or(0, |a| a.len());
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                let scalars: Result<Vec<ScalarValue>> =
                    arrays.iter().map(|a| ScalarValue::try_from_array(a, row)).collect();
                out.push(f(&scalars?)?.cast_to(&ret_type)?);
            }
            if out.is_empty() {
                return Ok(ColumnarValue::Array(datafusion::arrow::array::new_empty_array(
                    &ret_type,
                )));
            }
            Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
        }),
    ))
}

/// A function with a constant answer, whatever its arguments.
fn constant(name: &str, value: ScalarValue) -> ScalarUDF {
    let ret = value.data_type();
    rowwise(
        name,
        Signature::variadic_any(Volatility::Stable),
        ret,
        Arc::new(move |_| Ok(value.clone())),
    )
}

fn constant0(name: &str, value: ScalarValue) -> ScalarUDF {
    let ret = value.data_type();
    rowwise(
        name,
        Signature::nullary(Volatility::Stable),
        ret,
        Arc::new(move |_| Ok(value.clone())),
    )
}

/// An integer argument (any integer or oid type), `None` when NULL.
pub fn as_i64(v: &ScalarValue) -> Option<i64> {
    if v.is_null() {
        return None;
    }
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(i)) => i,
        _ => None,
    }
}

fn as_str(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.clone(),
        _ => None,
    }
}

fn text(v: Option<String>) -> ScalarValue {
    ScalarValue::Utf8(v)
}

/// PostgreSQL's reserved keywords (those `quote_ident` must quote).
pub const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// `quote_ident`: quote unless a plain lower-case identifier that is not a
/// reserved word.
pub fn quote_ident(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !RESERVED.contains(&s);
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// `parse_ident`: split a qualified identifier, folding unquoted parts to
/// lower case. `None` for a malformed name.
pub fn parse_ident(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = s.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == '.' || c.is_whitespace() {
                    break;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(parts),
            Some('.') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(_) => return None,
        }
    }
}

/// `quote_literal`: a string literal, quotes doubled (backslashes make it
/// an `E''` literal, as PostgreSQL does).
pub fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// `format(fmt, args...)` with `%s`, `%I`, `%L` and `%%`.
pub fn format_pg(fmt: &str, args: &[Option<String>]) -> Result<String, String> {
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next().ok_or("unterminated format() type specifier")?;
        if spec == '%' {
            out.push('%');
            continue;
        }
        let arg = args.get(next).ok_or("too few arguments for format()")?;
        next += 1;
        match (spec, arg) {
            ('s', Some(v)) => out.push_str(v),
            ('s', None) => {}
            ('I', Some(v)) => out.push_str(&quote_ident(v)),
            ('I', None) => return Err("null values cannot be formatted as an SQL identifier".into()),
            ('L', Some(v)) => out.push_str(&quote_literal(v)),
            ('L', None) => out.push_str("NULL"),
            (other, _) => return Err(format!("unrecognized format() type specifier \"{other}\"")),
        }
    }
    Ok(out)
}

/// Relation lookups shared by the functions and the SQL rewrite.
#[derive(Debug, Default)]
pub struct Lookup {
    by_oid: HashMap<u32, Relation>,
    by_name: HashMap<(String, String), u32>,
    /// System tables with no rows (`pg_policy`, `pg_inherits`, ...).
    empty: std::collections::HashSet<String>,
}

impl Lookup {
    pub fn new(rels: &[Relation]) -> Self {
        let mut l = Lookup::default();
        for r in rels {
            l.by_name.insert((r.schema_name().to_owned(), r.name.clone()), r.oid);
            l.by_oid.insert(r.oid, r.clone());
        }
        l
    }

    /// `'name'::regclass`: a relation by (optionally qualified) name, found
    /// on the search path (`public`, then `pg_catalog`) when unqualified.
    pub fn regclass(&self, name: &str) -> Option<u32> {
        let parts = parse_ident(name)?;
        match parts.as_slice() {
            [schema, rel] => self.by_name.get(&(schema.clone(), rel.clone())).copied(),
            [rel] => ["public", "pg_catalog"]
                .iter()
                .find_map(|s| self.by_name.get(&((*s).to_owned(), rel.clone())).copied()),
            _ => None,
        }
    }

    /// The schema an unqualified relation name resolves to when it is not
    /// one of Tally's tables: `pg_catalog` is always searched first.
    pub fn implicit_catalog(&self, name: &str) -> bool {
        !self.by_name.contains_key(&("public".to_owned(), name.to_owned()))
            && self.by_name.contains_key(&("pg_catalog".to_owned(), name.to_owned()))
    }

    /// Record that a system table has no rows.
    pub fn mark_empty(&mut self, schema: &str, name: &str) {
        self.empty.insert(format!("{schema}.{name}"));
        if schema == "pg_catalog" {
            self.empty.insert(name.to_owned());
        }
    }

    /// Whether `name` (as written in FROM, lower case) is an empty system table.
    pub fn is_empty_table(&self, name: &str) -> bool {
        self.empty.contains(name)
    }

    pub fn relation(&self, oid: u32) -> Option<&Relation> {
        self.by_oid.get(&oid)
    }

    /// `oid::regclass::text`: the name, qualified when off the search path.
    pub fn regclass_name(&self, oid: u32) -> Option<String> {
        let r = self.relation(oid)?;
        Some(match r.namespace {
            PUBLIC_OID | PG_CATALOG_OID => quote_ident(&r.name),
            ns => format!("{}.{}", namespace_name(ns), quote_ident(&r.name)),
        })
    }

    fn key_columns(&self, table: &Relation) -> String {
        table
            .primary_key
            .iter()
            .filter_map(|k| table.attributes.get(usize::try_from(*k - 1).ok()?))
            .map(|a| quote_ident(&a.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn table_of_index(&self, index_oid: u32) -> Option<&Relation> {
        self.by_oid
            .values()
            .find(|r| !r.primary_key.is_empty() && r.pkey_oid() == index_oid)
    }
}

/// Register every function on `ctx`.
pub fn register(ctx: &SessionContext, lookup: Arc<Lookup>) {
    let oid_t = DataType::UInt32;
    let u = |f: ScalarUDF| ctx.register_udf(f);
    u(rowwise(
        "format_type",
        Signature::any(2, Volatility::Stable),
        DataType::Utf8,
        Arc::new(|a| {
            let oid = as_i64(&a[0]).and_then(|o| u32::try_from(o).ok());
            let typmod = as_i64(&a[1]).and_then(|m| i32::try_from(m).ok());
            Ok(text(oid.map(|o| {
                types::format_type(o, typmod).unwrap_or_else(|| "???".to_owned())
            })))
        }),
    ));
    for name in [
        "pg_get_expr",
        "pg_get_viewdef",
        "pg_get_serial_sequence",
        "pg_get_statisticsobjdef_columns",
        "pg_get_triggerdef",
        "pg_get_function_identity_arguments",
        "pg_get_function_result",
        "pg_get_function_arguments",
        "shobj_description",
        "pg_get_partkeydef",
    ] {
        u(constant(name, ScalarValue::Utf8(None)));
    }
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "has_type_privilege",
        "pg_has_role",
        "pg_table_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_collation_is_visible",
        "pg_opclass_is_visible",
        "pg_operator_is_visible",
        "pg_conversion_is_visible",
    ] {
        u(constant(name, ScalarValue::Boolean(Some(true))));
    }
    u(constant(
        "pg_relation_is_publishable",
        ScalarValue::Boolean(Some(false)),
    ));
    for name in [
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
    ] {
        u(constant(name, ScalarValue::Int64(Some(0))));
    }
    u(constant(
        "pg_get_userbyid",
        ScalarValue::Utf8(Some(OWNER_NAME.to_owned())),
    ));
    u(constant0("pg_is_in_recovery", ScalarValue::Boolean(Some(false))));
    u(rowwise(
        "pg_encoding_to_char",
        Signature::any(1, Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|a| {
            Ok(text(as_i64(&a[0]).map(|e| match e {
                6 => "UTF8".to_owned(),
                0 => "SQL_ASCII".to_owned(),
                _ => String::new(),
            })))
        }),
    ));
    u(rowwise(
        "quote_ident",
        Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|a| Ok(text(as_str(&a[0]).map(|s| quote_ident(&s))))),
    ));
    let text_list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    u(rowwise(
        "parse_ident",
        Signature::one_of(
            vec![
                datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8]),
                datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
            ],
            Volatility::Immutable,
        ),
        text_list,
        Arc::new(|a| {
            let Some(s) = as_str(&a[0]) else {
                return Ok(ScalarValue::Null);
            };
            let parts = parse_ident(&s).ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!("string is not a valid identifier: \"{s}\""))
            })?;
            let items: Vec<ScalarValue> = parts.into_iter().map(|p| ScalarValue::Utf8(Some(p))).collect();
            Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                &items,
                &DataType::Utf8,
            )))
        }),
    ));
    u(rowwise(
        "to_regtype",
        Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        oid_t.clone(),
        Arc::new(|a| {
            Ok(ScalarValue::UInt32(
                as_str(&a[0]).and_then(|s| types::by_name(&s)).map(|t| t.oid),
            ))
        }),
    ));
    let l = lookup.clone();
    u(rowwise(
        "to_regclass",
        Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        oid_t.clone(),
        Arc::new(move |a| Ok(ScalarValue::UInt32(as_str(&a[0]).and_then(|s| l.regclass(&s))))),
    ));
    u(rowwise(
        "to_regnamespace",
        Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        oid_t.clone(),
        Arc::new(|a| {
            Ok(ScalarValue::UInt32(as_str(&a[0]).and_then(|s| match s.as_str() {
                "pg_catalog" => Some(PG_CATALOG_OID),
                "public" => Some(PUBLIC_OID),
                "information_schema" => Some(super::INFORMATION_SCHEMA_OID),
                _ => None,
            })))
        }),
    ));
    // `x::regtype::text` and `x::regclass::text` on non-constant OIDs.
    u(rowwise(
        "tally_regtype_name",
        Signature::any(1, Volatility::Stable),
        DataType::Utf8,
        Arc::new(|a| {
            Ok(text(as_i64(&a[0]).map(|o| {
                u32::try_from(o)
                    .ok()
                    .and_then(|o| types::format_type(o, None))
                    .unwrap_or_else(|| o.to_string())
            })))
        }),
    ));
    let l = lookup.clone();
    u(rowwise(
        "tally_regclass_name",
        Signature::any(1, Volatility::Stable),
        DataType::Utf8,
        Arc::new(move |a| {
            Ok(text(as_i64(&a[0]).map(|o| {
                u32::try_from(o)
                    .ok()
                    .and_then(|o| l.regclass_name(o))
                    .unwrap_or_else(|| o.to_string())
            })))
        }),
    ));
    u(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "pg_typeof",
        Signature::any(1, Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|a: &[ColumnarValue]| {
            let name = a.first().map_or("unknown", |v| match v.data_type() {
                DataType::Null => "unknown",
                dt => types::of_arrow(&dt).sql_name,
            });
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name.to_owned()))))
        }),
    )));
    let l = lookup.clone();
    u(rowwise(
        "obj_description",
        Signature::variadic_any(Volatility::Stable),
        DataType::Utf8,
        Arc::new(move |a| {
            let oid = a.first().and_then(as_i64).and_then(|o| u32::try_from(o).ok());
            Ok(text(
                oid.and_then(|o| l.relation(o))
                    .map(|r| r.doc.clone())
                    .filter(|d| !d.is_empty()),
            ))
        }),
    ));
    let l = lookup.clone();
    u(rowwise(
        "col_description",
        Signature::any(2, Volatility::Stable),
        DataType::Utf8,
        Arc::new(move |a| {
            let oid = as_i64(&a[0]).and_then(|o| u32::try_from(o).ok());
            let n = as_i64(&a[1]).and_then(|n| usize::try_from(n).ok());
            Ok(text(match (oid.and_then(|o| l.relation(o)), n) {
                (Some(r), Some(n)) if n >= 1 => {
                    r.attributes.get(n - 1).map(|a| a.doc.clone()).filter(|d| !d.is_empty())
                }
                _ => None,
            }))
        }),
    ));
    let l = lookup.clone();
    u(rowwise(
        "pg_get_constraintdef",
        Signature::variadic_any(Volatility::Stable),
        DataType::Utf8,
        Arc::new(move |a| {
            let oid = a.first().and_then(as_i64).and_then(|o| u32::try_from(o).ok());
            Ok(text(oid.and_then(|o| {
                let table = l.table_of_index(o.checked_sub(1)?)?;
                Some(format!("PRIMARY KEY ({})", l.key_columns(table)))
            })))
        }),
    ));
    let l = lookup;
    u(rowwise(
        "pg_get_indexdef",
        Signature::variadic_any(Volatility::Stable),
        DataType::Utf8,
        Arc::new(move |a| {
            let oid = a.first().and_then(as_i64).and_then(|o| u32::try_from(o).ok());
            Ok(text(oid.and_then(|o| {
                let table = l.table_of_index(o)?;
                Some(format!(
                    "CREATE UNIQUE INDEX {}_pkey ON public.{} USING btree ({})",
                    table.name,
                    quote_ident(&table.name),
                    l.key_columns(table)
                ))
            })))
        }),
    ));
    u(rowwise(
        "format",
        Signature::variadic_any(Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|a| {
            let Some(fmt) = a.first().and_then(as_str) else {
                return Ok(text(None));
            };
            let args: Vec<Option<String>> = a[1..]
                .iter()
                .map(|v| (!v.is_null()).then(|| as_str(v).unwrap_or_else(|| v.to_string())))
                .collect();
            format_pg(&fmt, &args)
                .map(|s| text(Some(s)))
                .map_err(datafusion::error::DataFusionError::Execution)
        }),
    ));
    u(rowwise(
        "quote_literal",
        Signature::any(1, Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|a| {
            Ok(text((!a[0].is_null()).then(|| {
                quote_literal(&as_str(&a[0]).unwrap_or_else(|| a[0].to_string()))
            })))
        }),
    ));
    u(rowwise(
        "json_build_object",
        Signature::variadic_any(Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|a| {
            if a.len() % 2 != 0 {
                return Err(datafusion::error::DataFusionError::Execution(
                    "argument list must have even number of elements".into(),
                ));
            }
            let mut object = serde_json::Map::new();
            for pair in a.chunks(2) {
                let key = pair[0].to_string();
                let value = match &pair[1] {
                    v if v.is_null() => serde_json::Value::Null,
                    ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(*b),
                    v => match as_i64(v) {
                        Some(i) if !matches!(v, ScalarValue::Utf8(_)) => serde_json::Value::from(i),
                        _ => serde_json::Value::String(v.to_string()),
                    },
                };
                object.insert(key, value);
            }
            Ok(text(Some(serde_json::Value::Object(object).to_string())))
        }),
    ));
    for (name, upper) in [("array_lower", false), ("array_upper", true)] {
        u(rowwise(
            name,
            Signature::any(2, Volatility::Immutable),
            DataType::Int32,
            Arc::new(move |a| {
                let len = match &a[0] {
                    ScalarValue::List(l) if !l.is_null(0) => Some(l.value(0).len()),
                    ScalarValue::LargeList(l) if !l.is_null(0) => Some(l.value(0).len()),
                    ScalarValue::FixedSizeList(l) if !l.is_null(0) => Some(l.value(0).len()),
                    _ => None,
                };
                let dim = as_i64(&a[1]);
                Ok(ScalarValue::Int32(match (len, dim) {
                    (Some(n), Some(1)) if n > 0 => Some(if upper { i32::try_from(n).unwrap_or(i32::MAX) } else { 1 }),
                    _ => None,
                }))
            }),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_quotes_like_postgresql() {
        assert_eq!(
            format_pg(
                "select %I from %I where x = %L and y = %L -- %s%%",
                &[
                    Some("Col".into()),
                    Some("t".into()),
                    Some("it's".into()),
                    None,
                    Some("done".into())
                ]
            ),
            Ok("select \"Col\" from t where x = 'it''s' and y = NULL -- done%".to_owned())
        );
        assert!(format_pg("%s %s", &[Some("a".into())]).is_err());
        assert!(format_pg("%I", &[None]).is_err());
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }

    #[test]
    fn identifiers_quote_and_parse_like_postgresql() {
        assert_eq!(quote_ident("traffic_day"), "traffic_day");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("Mixed"), "\"Mixed\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            parse_ident("public.traffic_day"),
            Some(vec!["public".to_owned(), "traffic_day".to_owned()])
        );
        assert_eq!(parse_ident("\"My.Table\""), Some(vec!["My.Table".to_owned()]));
        assert_eq!(
            parse_ident("Public . T"),
            Some(vec!["public".to_owned(), "t".to_owned()])
        );
        assert_eq!(parse_ident("a..b"), None);
        assert_eq!(parse_ident("\"open"), None);
    }
}
