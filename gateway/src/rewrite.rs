//! PostgreSQL-isms rewritten into SQL DataFusion plans, before planning.
//!
//! Clients send catalog SQL that only PostgreSQL parses the way they mean:
//! `'t'::regclass`, `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`,
//! `pg_catalog.`-qualified functions and types, bare `user`, and functions
//! whose answer belongs to the connection (`current_setting`, `set_config`,
//! `pg_backend_pid`, `current_user`). Each is rewritten on the parsed AST
//! into an equivalent DataFusion understands, with the connection's own
//! values, so nothing connection-specific lives in the shared engine. The
//! rewrite is exact: a name that does not resolve is the same error
//! PostgreSQL gives, never a silent NULL.

use crate::pg::session::SessionSettings;
use crate::pg_catalog::functions::Lookup;
use crate::pg_catalog::types;
use crate::pg_catalog::{INFORMATION_SCHEMA_OID, PG_CATALOG_OID, PUBLIC_OID};
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, CastKind, DataType as SqlType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, Value, VisitMut, VisitorMut,
};
use std::ops::ControlFlow;

/// Alias prefix given to repeated unnamed select items (`SELECT NULL,
/// NULL`); the row description names them as PostgreSQL would.
pub const DUPLICATE_PREFIX: &str = "__tally_repeat_";

/// Functions answered from the connection (replaced by literals).
const SESSION_FUNCTIONS: &[&str] = &[
    "current_user",
    "session_user",
    "user",
    "current_role",
    "current_database",
    "current_catalog",
    "current_schema",
    "current_schemas",
    "pg_backend_pid",
    "current_setting",
    "set_config",
];

/// What the rewrite needs to know about the connection.
pub struct SessionView<'a> {
    pub settings: &'a SessionSettings,
    pub user: &'a str,
    pub database: &'a str,
    pub pid: i32,
    pub lookup: &'a Lookup,
    /// The sites this connection may read (for subqueries run while
    /// planning).
    pub scope: &'a crate::tenant::TenantScope,
}

/// A rewrite refusal: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteError {
    pub code: &'static str,
    pub message: String,
}

impl RewriteError {
    fn new(code: &'static str, message: String) -> Self {
        RewriteError { code, message }
    }
}

/// Rewrite one statement in place.
pub fn rewrite(statement: &mut ast::Statement, session: &SessionView<'_>) -> Result<(), RewriteError> {
    let mut v = Rewriter { session };
    match statement.visit(&mut v) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Rewriter<'a, 'b> {
    session: &'a SessionView<'b>,
}

fn string_lit(s: impl Into<String>) -> Expr {
    Expr::Value(Value::SingleQuotedString(s.into()).with_empty_span())
}

fn number_lit(n: impl ToString) -> Expr {
    Expr::Value(Value::Number(n.to_string(), false).with_empty_span())
}

fn null_lit() -> Expr {
    Expr::Value(Value::Null.with_empty_span())
}

fn oid_type() -> SqlType {
    SqlType::IntUnsigned(None)
}

fn cast(expr: Expr, data_type: SqlType) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

/// Name parts, lower case (unquoted identifiers fold as in PostgreSQL).
fn parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) if i.quote_style.is_some() => i.value.clone(),
            ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
            other => other.to_string(),
        })
        .collect()
}

/// The function's name without a `pg_catalog.` qualifier.
fn unqualified(name: &ObjectName) -> Option<String> {
    match parts(name).as_slice() {
        [n] => Some(n.clone()),
        [schema, n] if schema == "pg_catalog" => Some(n.clone()),
        _ => None,
    }
}

fn literal_str(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s),
            _ => None,
        },
        Expr::Cast { expr, .. } => literal_str(expr),
        _ => None,
    }
}

fn literal_bool(e: &Expr) -> Option<bool> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => Some(*b),
            Value::SingleQuotedString(s) => match s.to_ascii_lowercase().as_str() {
                "t" | "true" | "on" | "yes" | "1" => Some(true),
                "f" | "false" | "off" | "no" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn function_args(f: &ast::Function) -> Vec<&Expr> {
    match &f.args {
        FunctionArguments::List(l) => l
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => Some(e),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What a type name used in a cast means here.
enum CastTarget {
    Oid(OidKind),
    Sql(SqlType),
    Keep,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OidKind {
    Class,
    Type,
    Namespace,
    Plain,
}

fn sql_type_for(name: &str) -> Option<SqlType> {
    Some(match name {
        "text" | "name" | "char" | "\"char\"" | "bpchar" | "sql_identifier" | "character_data" | "yes_or_no"
        | "json" | "jsonb" => SqlType::Text,
        "varchar" => SqlType::Varchar(None),
        "int2" | "smallint" => SqlType::SmallInt(None),
        "int4" | "integer" | "int" | "cardinal_number" => SqlType::Int(None),
        "int8" | "bigint" => SqlType::BigInt(None),
        "float4" | "real" => SqlType::Real,
        "float8" => SqlType::DoublePrecision,
        "bool" | "boolean" => SqlType::Boolean,
        "numeric" => SqlType::Numeric(ast::ExactNumberInfo::None),
        "date" => SqlType::Date,
        "timestamptz" => SqlType::Timestamp(None, ast::TimezoneInfo::Tz),
        "timestamp" => SqlType::Timestamp(None, ast::TimezoneInfo::None),
        "int2vector" => SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(
            Box::new(SqlType::SmallInt(None)),
            None,
        )),
        "oidvector" => SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(Box::new(oid_type()), None)),
        _ => return None,
    })
}

fn cast_target(dt: &SqlType) -> CastTarget {
    match dt {
        SqlType::Regclass => CastTarget::Oid(OidKind::Class),
        // JSON values are carried as text.
        SqlType::JSON | SqlType::JSONB => CastTarget::Sql(SqlType::Text),
        SqlType::Custom(name, _) => {
            let p = parts(name);
            let last = p.last().map(String::as_str).unwrap_or_default();
            let qualified_ok = p.len() == 1 || matches!(p[0].as_str(), "pg_catalog" | "information_schema");
            if !qualified_ok {
                return CastTarget::Keep;
            }
            match last {
                "regclass" => CastTarget::Oid(OidKind::Class),
                "regtype" => CastTarget::Oid(OidKind::Type),
                "regnamespace" => CastTarget::Oid(OidKind::Namespace),
                "oid" | "regproc" | "regprocedure" | "regrole" | "xid" | "regoper" => CastTarget::Oid(OidKind::Plain),
                other => sql_type_for(other).map_or(CastTarget::Keep, CastTarget::Sql),
            }
        }
        SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(inner, size)) => match cast_target(inner) {
            CastTarget::Sql(t) => {
                CastTarget::Sql(SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(Box::new(t), *size)))
            }
            CastTarget::Oid(_) => CastTarget::Sql(SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(
                Box::new(oid_type()),
                *size,
            ))),
            CastTarget::Keep => CastTarget::Keep,
        },
        _ => CastTarget::Keep,
    }
}

fn is_text_type(dt: &SqlType) -> bool {
    matches!(cast_target(dt), CastTarget::Sql(SqlType::Text | SqlType::Varchar(_))) || matches!(dt, SqlType::Text)
}

impl Rewriter<'_, '_> {
    fn setting(&self, name: &str, missing_ok: bool) -> Result<Expr, RewriteError> {
        match self.session.settings.get(name) {
            Ok(v) => Ok(string_lit(v)),
            Err(_) if missing_ok => Ok(cast(null_lit(), SqlType::Text)),
            Err(e) => Err(RewriteError::new(e.sqlstate(), e.message())),
        }
    }

    /// `'name'::regclass` and friends, resolved now.
    fn resolve_oid(&self, kind: OidKind, name: &str) -> Result<Expr, RewriteError> {
        let oid = match kind {
            OidKind::Class => self
                .session
                .lookup
                .regclass(name)
                .ok_or_else(|| RewriteError::new("42P01", format!("relation \"{name}\" does not exist")))?,
            OidKind::Type => types::by_name(name)
                .map(|t| t.oid)
                .ok_or_else(|| RewriteError::new("42704", format!("type \"{name}\" does not exist")))?,
            OidKind::Namespace => match name.trim_matches('"') {
                "pg_catalog" => PG_CATALOG_OID,
                "public" => PUBLIC_OID,
                "information_schema" => INFORMATION_SCHEMA_OID,
                _ => return Err(RewriteError::new("42704", format!("schema \"{name}\" does not exist"))),
            },
            OidKind::Plain => match name.trim().parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    return Err(RewriteError::new(
                        "22P02",
                        format!("invalid input syntax for type oid: \"{name}\""),
                    ));
                }
            },
        };
        Ok(cast(number_lit(oid), oid_type()))
    }

    /// A function whose answer belongs to the connection, or `None`.
    fn session_function(&self, name: &str, args: &[&Expr], bare: bool) -> Result<Option<Expr>, RewriteError> {
        let s = self.session;
        Ok(Some(match name {
            "current_user" | "session_user" | "user" | "current_role" | "getpgusername" => string_lit(s.user),
            "current_database" | "current_catalog" => string_lit(s.database),
            "current_schema" => string_lit("public"),
            "current_schemas" if !bare => {
                let implicit = args.first().and_then(|a| literal_bool(a)).unwrap_or(false);
                let mut items = Vec::new();
                if implicit {
                    items.push(string_lit("pg_catalog"));
                }
                items.push(string_lit("public"));
                call("make_array", items)
            }
            "pg_backend_pid" if !bare => number_lit(s.pid),
            "current_setting" if !bare => {
                let Some(setting) = args.first().and_then(|a| literal_str(a)) else {
                    return Err(RewriteError::new(
                        "0A000",
                        "current_setting needs a constant setting name".into(),
                    ));
                };
                let missing_ok = args.get(1).and_then(|a| literal_bool(a)).unwrap_or(false);
                self.setting(setting, missing_ok)?
            }
            "set_config" if !bare => {
                let (Some(setting), Some(value)) = (
                    args.first().and_then(|a| literal_str(a)),
                    args.get(1).and_then(|a| literal_str(a)),
                ) else {
                    return Err(RewriteError::new(
                        "0A000",
                        "set_config needs a constant name and value".into(),
                    ));
                };
                s.settings
                    .set(setting, value)
                    .map_err(|e| RewriteError::new(e.sqlstate(), e.message()))?;
                string_lit(value)
            }
            _ => return Ok(None),
        }))
    }

    fn rewrite_expr(&self, expr: &mut Expr) -> Result<(), RewriteError> {
        match expr {
            Expr::Identifier(id) if id.quote_style.is_none() => {
                let name = id.value.to_ascii_lowercase();
                if matches!(
                    name.as_str(),
                    "user" | "current_user" | "session_user" | "current_role" | "current_catalog" | "current_schema"
                ) && let Some(e) = self.session_function(&name, &[], true)?
                {
                    *expr = e;
                }
            }
            Expr::Collate { expr: inner, .. } => {
                let inner = std::mem::replace(inner.as_mut(), null_lit());
                *expr = inner;
                return self.rewrite_expr(expr);
            }
            Expr::BinaryOp { op, left, right } => {
                // `polroles = '{0}'`: an array literal written as a string.
                if matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq) {
                    for side in [left, right] {
                        if let Some(items) = literal_str(side).and_then(array_literal)
                            && matches!(side.as_ref(), Expr::Value(_))
                        {
                            **side = call("make_array", items.into_iter().map(array_item).collect());
                        }
                    }
                }
                if let BinaryOperator::PGCustomBinaryOperator(p) = op {
                    let symbol = p.last().map(String::as_str).unwrap_or_default();
                    *op = match symbol {
                        "~" => BinaryOperator::PGRegexMatch,
                        "~*" => BinaryOperator::PGRegexIMatch,
                        "!~" => BinaryOperator::PGRegexNotMatch,
                        "!~*" => BinaryOperator::PGRegexNotIMatch,
                        "=" => BinaryOperator::Eq,
                        "<>" | "!=" => BinaryOperator::NotEq,
                        "<" => BinaryOperator::Lt,
                        "<=" => BinaryOperator::LtEq,
                        ">" => BinaryOperator::Gt,
                        ">=" => BinaryOperator::GtEq,
                        "~~" => BinaryOperator::PGLikeMatch,
                        "||" => BinaryOperator::StringConcat,
                        other => {
                            return Err(RewriteError::new("42883", format!("operator does not exist: {other}")));
                        }
                    };
                }
            }
            Expr::Subquery(query) => {
                // Over an empty system table a scalar subquery is NULL.
                if let ast::SetExpr::Select(select) = query.body.as_ref()
                    && reads_empty_table(select, self.session.lookup)
                {
                    *expr = null_lit();
                    return Ok(());
                }
                aggregate_catalog_subquery(query);
                if let Some(guard) = hoist_outer_conjuncts(query) {
                    let subquery = std::mem::replace(expr, null_lit());
                    *expr = Expr::Case {
                        case_token: ast::helpers::attached_token::AttachedToken::empty(),
                        end_token: ast::helpers::attached_token::AttachedToken::empty(),
                        operand: None,
                        conditions: vec![ast::CaseWhen {
                            condition: guard,
                            result: subquery,
                        }],
                        else_result: None,
                    };
                }
            }
            Expr::Function(f)
                if matches!(&f.args, FunctionArguments::Subquery(_))
                    && unqualified(&f.name).as_deref() == Some("array") =>
            {
                // `array(select x ...)` -> `(select array_agg(x) ...)`.
                if let FunctionArguments::Subquery(q) = &f.args {
                    let mut q = q.clone();
                    if let ast::SetExpr::Select(select) = q.body.as_mut()
                        && let [item] = select.projection.as_mut_slice()
                        && let ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } = item
                    {
                        *e = call("array_agg", vec![e.clone()]);
                        *expr = Expr::Subquery(q);
                    }
                }
            }
            Expr::Function(f) => {
                let Some(name) = unqualified(&f.name) else {
                    return Ok(());
                };
                let bare = matches!(f.args, FunctionArguments::None);
                let args = function_args(f);
                if let Some(e) = self.session_function(&name, &args, bare)? {
                    *expr = e;
                } else if name == "generate_subscripts" && !args.is_empty() {
                    // In a select list, in lockstep with `unnest(arr)`.
                    let array = args[0].clone();
                    let upper = Expr::BinaryOp {
                        left: Box::new(cast(call("array_length", vec![array]), SqlType::BigInt(None))),
                        op: BinaryOperator::Plus,
                        right: Box::new(number_lit(1)),
                    };
                    *expr = call("unnest", vec![call("range", vec![number_lit(1), upper])]);
                } else if parts(&f.name).len() == 2 {
                    f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]);
                }
            }
            Expr::Like {
                pattern, escape_char, ..
            }
            | Expr::ILike {
                pattern, escape_char, ..
            } => {
                // DataFusion escapes with backslash only: `LIKE 'a!_%' ESCAPE
                // '!'` becomes `LIKE 'a\_%'` (a literal backslash doubled).
                let escape = escape_char.as_ref().and_then(|v| match &v.value {
                    Value::SingleQuotedString(e) => Some(e.clone()),
                    _ => None,
                });
                if let Some(escape) = escape
                    && escape != "\\"
                    && let Some(p) = literal_str(pattern)
                {
                    let mut chars = escape.chars();
                    let (Some(e), None) = (chars.next(), chars.next()) else {
                        return Err(RewriteError::new(
                            "22025",
                            "invalid escape string: it must be empty or one character".into(),
                        ));
                    };
                    **pattern = string_lit(like_pattern_with_backslash(p, e));
                    *escape_char = None;
                }
            }
            Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } => {
                // `= ANY('{a,b}')`: an array literal written as a string.
                if let Some(items) = literal_str(right).and_then(array_literal) {
                    **right = call("make_array", items.into_iter().map(array_item).collect());
                }
            }
            Expr::Cast {
                expr: inner, data_type, ..
            } => {
                // `x::regclass::text` -> the relation's (or type's) name.
                if is_text_type(data_type)
                    && let Expr::Cast {
                        expr: innermost,
                        data_type: inner_type,
                        ..
                    } = inner.as_ref()
                    && let CastTarget::Oid(kind @ (OidKind::Class | OidKind::Type)) = cast_target(inner_type)
                {
                    if let Some(name) = literal_str(innermost) {
                        // A literal round trip: resolve (and so validate) it.
                        self.resolve_oid(kind, name)?;
                        *expr = string_lit(name);
                    } else {
                        let f = if kind == OidKind::Class {
                            "tally_regclass_name"
                        } else {
                            "tally_regtype_name"
                        };
                        *expr = call(f, vec![(**innermost).clone()]);
                    }
                    return Ok(());
                }
                match cast_target(data_type) {
                    CastTarget::Oid(kind) => {
                        if let Some(name) = literal_str(inner) {
                            *expr = self.resolve_oid(kind, name)?;
                        } else {
                            *data_type = oid_type();
                        }
                    }
                    CastTarget::Sql(t) => *data_type = t,
                    CastTarget::Keep => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether a select inner-joins an empty system table, so returns no rows.
fn reads_empty_table(select: &ast::Select, lookup: &Lookup) -> bool {
    select.from.iter().any(|t| {
        std::iter::once(&t.relation)
            .chain(
                t.joins
                    .iter()
                    .filter(|j| matches!(j.join_operator, ast::JoinOperator::Join(_) | ast::JoinOperator::Inner(_)))
                    .map(|j| &j.relation),
            )
            .any(|r| matches!(r, ast::TableFactor::Table { name, args: None, .. } if lookup.is_empty_table(&parts(name).join("."))))
    })
}

/// Whether every relation a query reads is a system catalog.
fn reads_only_catalog(select: &ast::Select) -> bool {
    !select.from.is_empty()
        && select.from.iter().all(|t| {
            std::iter::once(&t.relation)
                .chain(t.joins.iter().map(|j| &j.relation))
                .all(|r| match r {
                    ast::TableFactor::Table { name, .. } => {
                        let p = parts(name);
                        match p.as_slice() {
                            [schema, _] => schema == "pg_catalog" || schema == "information_schema",
                            [n] => n.starts_with("pg_"),
                            _ => false,
                        }
                    }
                    _ => false,
                })
        })
}

/// A scalar subquery over the system catalog returns at most one row in
/// every query clients send (`(SELECT collname FROM pg_collation WHERE
/// ...)`); DataFusion only decorrelates it when it is aggregated, so its
/// single output is wrapped in `max`. User tables are left alone: there a
/// second row is an error, as in PostgreSQL.
fn aggregate_catalog_subquery(query: &mut ast::Query) {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let grouped = !matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if grouped || select.distinct.is_some() || !reads_only_catalog(select) {
        return;
    }
    if let [item] = select.projection.as_mut_slice()
        && let ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } = item
        && !matches!(e, Expr::Function(f) if matches!(unqualified(&f.name).as_deref(), Some("max" | "min" | "count" | "sum" | "array_agg" | "string_agg" | "bool_and" | "bool_or")))
    {
        *e = call("max", vec![e.clone()]);
    }
}

fn split_and(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(*left, out);
            split_and(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(*inner, out)
        }
        other => out.push(other),
    }
}

fn join_and(mut conjuncts: Vec<Expr>) -> Option<Expr> {
    let first = if conjuncts.is_empty() {
        return None;
    } else {
        conjuncts.remove(0)
    };
    Some(conjuncts.into_iter().fold(first, |l, r| Expr::BinaryOp {
        left: Box::new(l),
        op: BinaryOperator::And,
        right: Box::new(r),
    }))
}

/// Whether every column `e` names is qualified by a name outside `locals`
/// (so the conjunct depends on the outer row only).
fn only_outer(e: &Expr, locals: &[String]) -> bool {
    let mut outer = 0usize;
    let mut local = false;
    let _ = ast::visit_expressions(e, |x: &Expr| {
        match x {
            Expr::CompoundIdentifier(p) if p.len() >= 2 => {
                if locals.contains(&p[p.len() - 2].value.to_ascii_lowercase()) {
                    local = true;
                } else {
                    outer += 1;
                }
            }
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Subquery(_) => local = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    outer > 0 && !local
}

/// DataFusion cannot decorrelate a scalar subquery whose filter has a
/// conjunct on the outer row alone (`... AND a.atthasdef` in psql's `\d`).
/// Such conjuncts are taken out of the subquery and returned, so the caller
/// evaluates the subquery only `CASE WHEN` they hold: the same answer.
fn hoist_outer_conjuncts(query: &mut ast::Query) -> Option<Expr> {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let locals: Vec<String> = select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
        .filter_map(|r| match r {
            ast::TableFactor::Table { name, alias, .. } => Some(match alias {
                Some(a) => a.name.value.to_ascii_lowercase(),
                None => parts(name).last().cloned().unwrap_or_default(),
            }),
            _ => None,
        })
        .collect();
    let selection = select.selection.take()?;
    let mut conjuncts = Vec::new();
    split_and(selection, &mut conjuncts);
    let (outer, inner): (Vec<Expr>, Vec<Expr>) = conjuncts.into_iter().partition(|c| only_outer(c, &locals));
    select.selection = join_and(inner);
    join_and(outer)
}

/// pgJDBC's `getPrimaryKeys` expands `pg_index.indkey` with
/// `information_schema._pg_expandarray`, a set-returning function in the
/// select list. The one query shape it sends is rewritten to the same
/// answer with `array_position` (KEY_SEQ) and an `= ANY` join.
///
/// psql's `\d` asks for a column's collation when it differs from its
/// type's (a correlated `<>` DataFusion cannot decorrelate) and `\d+` for
/// TOAST options through a correlated `unnest`. Here every column has its
/// type's collation and no table has a TOAST table, so those parts are
/// NULL / empty by construction and are replaced by that value.
pub fn known_client_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    const PSQL_COLLATION: &str = "(SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t\n   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation";
    const PSQL_TOAST: &str = "c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x)";
    let mut sql = std::borrow::Cow::Borrowed(sql);
    if sql.contains(PSQL_COLLATION) {
        sql = std::borrow::Cow::Owned(sql.replace(PSQL_COLLATION, "NULL::text AS attcollation"));
    }
    if sql.contains(PSQL_TOAST) {
        sql = std::borrow::Cow::Owned(sql.replace(PSQL_TOAST, "c.reloptions"));
    }
    const EXPAND: &str = "information_schema._pg_expandarray(i.indkey)";
    if !sql.contains(EXPAND) || !sql.contains("(result.KEYS).x") {
        return sql;
    }
    std::borrow::Cow::Owned(
        sql.replace(
            &format!("({EXPAND}).n"),
            "CAST(array_position(i.indkey, a.attnum) AS INT)",
        )
        .replace(
            &format!("{EXPAND} AS KEYS"),
            "named_struct('x', i.indkey[CAST(array_position(i.indkey, a.attnum) AS BIGINT)], 'n', CAST(array_position(i.indkey, a.attnum) AS INT)) AS KEYS",
        )
        .replace("(result.KEYS).x", "result.KEYS['x']"),
    )
}

/// What [`select_list_in_subquery`] does with the subquery it finds.
enum InSubqueryAction {
    Take(Option<Box<ast::Query>>),
    Replace(Vec<Expr>),
}

struct SelectListInSubquery {
    target: usize,
    seen: usize,
    action: InSubqueryAction,
}

impl SelectListInSubquery {
    fn visit(&mut self, root: &mut impl VisitMut) -> ControlFlow<()> {
        ast::visit_expressions_mut(root, |e: &mut Expr| {
            if let Expr::InSubquery {
                expr,
                subquery,
                negated,
                ..
            } = e
            {
                if self.seen == self.target {
                    match &mut self.action {
                        InSubqueryAction::Take(slot) => *slot = Some(subquery.clone()),
                        InSubqueryAction::Replace(list) => {
                            *e = Expr::InList {
                                expr: expr.clone(),
                                list: std::mem::take(list),
                                negated: *negated,
                            };
                        }
                    }
                    return ControlFlow::Break(());
                }
                self.seen += 1;
            }
            ControlFlow::Continue(())
        })
    }
}

impl VisitorMut for SelectListInSubquery {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        if let Some(ast::OrderBy {
            kind: ast::OrderByKind::Expressions(items),
            ..
        }) = &mut query.order_by
        {
            for item in items {
                self.visit(&mut item.expr)?;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut ast::Select) -> ControlFlow<()> {
        for item in &mut select.projection {
            self.visit(item)?;
        }
        ControlFlow::Continue(())
    }
}

/// The `n`-th `x IN (subquery)` inside a select list or an ORDER BY
/// (pre-order), which DataFusion cannot plan there. The engine evaluates it when it stands
/// alone (does not reference the outer row) and puts back the values with
/// [`replace_select_list_in_subquery`].
pub fn select_list_in_subquery(statement: &mut ast::Statement, n: usize) -> Option<Box<ast::Query>> {
    let mut v = SelectListInSubquery {
        target: n,
        seen: 0,
        action: InSubqueryAction::Take(None),
    };
    let _ = statement.visit(&mut v);
    match v.action {
        InSubqueryAction::Take(q) => q,
        InSubqueryAction::Replace(_) => None,
    }
}

/// Replace the `n`-th select-list `IN (subquery)` by `IN (values...)`.
pub fn replace_select_list_in_subquery(statement: &mut ast::Statement, n: usize, values: Vec<Expr>) {
    let mut v = SelectListInSubquery {
        target: n,
        seen: 0,
        action: InSubqueryAction::Replace(values),
    };
    let _ = statement.visit(&mut v);
}

/// A literal for a constant value of a folded subquery.
pub fn literal_of(v: &datafusion::common::ScalarValue) -> Option<Expr> {
    use datafusion::common::ScalarValue as S;
    Some(match v {
        S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => string_lit(s.clone()),
        S::Int16(Some(i)) => number_lit(i),
        S::Int32(Some(i)) => number_lit(i),
        S::Int64(Some(i)) => number_lit(i),
        S::UInt32(Some(i)) => number_lit(i),
        S::Boolean(Some(b)) => Expr::Value(Value::Boolean(*b).with_empty_span()),
        v if v.is_null() => null_lit(),
        _ => return None,
    })
}

/// A LIKE pattern written with escape character `escape`, rewritten to
/// use backslash.
fn like_pattern_with_backslash(pattern: &str, escape: char) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            if let Some(next) = chars.next() {
                out.push('\\');
                out.push(next);
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// One element of an array literal: a number when it reads as one.
fn array_item(item: String) -> Expr {
    if item.parse::<i64>().is_ok() {
        number_lit(item)
    } else {
        string_lit(item)
    }
}

/// `{a,b,"c d"}` -> its elements (one dimension, no NULLs).
fn array_literal(s: &str) -> Option<Vec<String>> {
    let body = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    if body.trim().is_empty() {
        return Some(Vec::new());
    }
    Some(body.split(',').map(|p| p.trim().trim_matches('"').to_owned()).collect())
}

impl VisitorMut for Rewriter<'_, '_> {
    type Break = RewriteError;

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Self::Break> {
        match self.rewrite_expr(expr) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn pre_visit_select(&mut self, select: &mut ast::Select) -> ControlFlow<Self::Break> {
        // A select reading an empty system table (psql's `pg_policy`,
        // `pg_statistic_ext`, ... queries) returns no rows, so its select
        // list is never evaluated: correlated subqueries there, which
        // DataFusion may not decorrelate, are replaced by NULL.
        let reads_empty = reads_empty_table(select, self.session.lookup);
        // A selected `oid::regclass` / `::regtype` is shown as its name.
        for item in &mut select.projection {
            if let ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } = item
                && let Expr::Cast {
                    expr: inner, data_type, ..
                } = e
                && literal_str(inner).is_none()
                && let CastTarget::Oid(kind @ (OidKind::Class | OidKind::Type)) = cast_target(data_type)
            {
                let f = if kind == OidKind::Class {
                    "tally_regclass_name"
                } else {
                    "tally_regtype_name"
                };
                *e = call(f, vec![(**inner).clone()]);
            }
        }
        // A connection value selected bare keeps PostgreSQL's column name
        // (`current_user`, `pg_backend_pid`) once it becomes a literal.
        for item in &mut select.projection {
            if let ast::SelectItem::UnnamedExpr(e) = item {
                let name = match e {
                    Expr::Identifier(id) if id.quote_style.is_none() => Some(id.value.to_ascii_lowercase()),
                    Expr::Function(f) => unqualified(&f.name),
                    _ => None,
                };
                if let Some(name) = name.filter(|n| SESSION_FUNCTIONS.contains(&n.as_str())) {
                    *item = ast::SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: Ident::with_quote('"', name),
                    };
                }
            }
        }
        if reads_empty {
            for item in &mut select.projection {
                let _ = ast::visit_expressions_mut(item, |e: &mut Expr| {
                    let subquery = matches!(e, Expr::Subquery(_))
                        || matches!(e, Expr::Function(f) if matches!(f.args, FunctionArguments::Subquery(_)));
                    if subquery {
                        *e = null_lit();
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, select: &mut ast::Select) -> ControlFlow<Self::Break> {
        // PostgreSQL allows `SELECT NULL, NULL` and two columns of one name;
        // DataFusion needs unique names, so repeats get an alias that the
        // row description undoes (`__tally_repeat_<i>_<name>`).
        let mut seen = std::collections::HashSet::new();
        for (i, item) in select.projection.iter_mut().enumerate() {
            let (expr, key, wanted) = match item {
                ast::SelectItem::UnnamedExpr(e) => (e.clone(), e.to_string(), String::new()),
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    (expr.clone(), alias.value.clone(), alias.value.clone())
                }
                _ => continue,
            };
            if !seen.insert(key) {
                *item = ast::SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::with_quote('"', format!("{DUPLICATE_PREFIX}{i}_{wanted}")),
                };
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut ast::TableFactor) -> ControlFlow<Self::Break> {
        // `pg_settings` shows this session's values: a derived table over
        // the defaults with the session's SETs laid over them.
        if let ast::TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
            && unqualified(name).as_deref() == Some("pg_settings")
            && name
                .0
                .iter()
                .all(|p| matches!(p, ObjectNamePart::Identifier(i) if i.quote_style.is_none()))
        {
            let changed = self.session.settings.changed();
            if !changed.is_empty() {
                let cases: String = changed
                    .iter()
                    .map(|(k, v)| format!(" WHEN '{}' THEN '{}'", k.replace('\'', "''"), v.replace('\'', "''")))
                    .collect();
                let columns: Vec<String> = crate::pg_catalog::relations::system_columns("pg_settings")
                    .into_iter()
                    .map(|(c, _)| match c {
                        "setting" => format!("CASE name{cases} ELSE setting END AS setting"),
                        "source" => format!(
                            "CASE name{} ELSE source END AS source",
                            changed
                                .iter()
                                .map(|(k, _)| format!(" WHEN '{}' THEN 'session'", k.replace('\'', "''")))
                                .collect::<String>()
                        ),
                        other => other.to_owned(),
                    })
                    .collect();
                let sql = format!("SELECT {} FROM pg_catalog.\"pg_settings\"", columns.join(", "));
                if let Ok(mut statements) = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                    &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                    &sql,
                ) && let Some(ast::Statement::Query(query)) = statements.pop()
                {
                    *factor = ast::TableFactor::Derived {
                        lateral: false,
                        subquery: query,
                        alias: Some(alias.clone().unwrap_or_else(|| ast::TableAlias {
                            explicit: true,
                            name: Ident::new("pg_settings"),
                            columns: Vec::new(),
                            at: None,
                        })),
                        sample: None,
                    };
                }
            }
            return ControlFlow::Continue(());
        }
        let ast::TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(function) = unqualified(name) else {
            return ControlFlow::Continue(());
        };
        match function.as_str() {
            "generate_series" | "range" | "unnest" => {
                // Integer bounds from array_lower/upper are int4; the series
                // takes int8.
                for arg in &mut args.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg
                        && matches!(e, Expr::Function(f) if matches!(unqualified(&f.name).as_deref(), Some("array_lower" | "array_upper" | "array_length" | "cardinality")))
                    {
                        *e = cast(e.clone(), SqlType::BigInt(None));
                    }
                }
                // `generate_series(1, 3) AS i`: PostgreSQL names the one
                // column after the alias.
                if let Some(a) = alias
                    && a.columns.is_empty()
                {
                    a.columns = vec![ast::TableAliasColumnDef::from_name(a.name.value.clone())];
                }
            }
            "unique_visitors" | "pg_get_keywords" => {}
            _ => {
                // A scalar function in FROM (`string_to_array(...) s`) is a
                // one-row relation whose column is named after the alias.
                let column = alias
                    .as_ref()
                    .map_or_else(|| function.clone(), |a| a.name.value.clone());
                let call = format!(
                    "SELECT {}({}) AS {}",
                    function,
                    args.args.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    Ident::with_quote('"', column.clone())
                );
                let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                    &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                    &call,
                );
                if let Ok(mut statements) = parsed
                    && let Some(ast::Statement::Query(query)) = statements.pop()
                {
                    *factor = ast::TableFactor::Derived {
                        lateral: false,
                        subquery: query,
                        alias: Some(alias.clone().unwrap_or_else(|| ast::TableAlias {
                            explicit: true,
                            name: Ident::new(column),
                            columns: Vec::new(),
                            at: None,
                        })),
                        sample: None,
                    };
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<Self::Break> {
        // `FROM pg_type`: pg_catalog is implicitly first on the search path.
        if let [name] = parts(relation).as_slice()
            && self.session.lookup.implicit_catalog(name)
        {
            *relation = ObjectName(vec![
                ObjectNamePart::Identifier(Ident::new("pg_catalog")),
                ObjectNamePart::Identifier(Ident::new(name.clone())),
            ]);
        }
        // Set-returning functions named with their schema in FROM.
        if let [schema, name] = parts(relation).as_slice()
            && schema == "pg_catalog"
            && matches!(
                name.as_str(),
                "generate_series" | "unnest" | "generate_subscripts" | "pg_get_keywords"
            )
        {
            *relation = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name.clone()))]);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> Result<String, RewriteError> {
        let settings = SessionSettings::default();
        let lookup = Lookup::new(&crate::pg_catalog::relations::relations());
        let view = SessionView {
            settings: &settings,
            user: "alice",
            database: "tally",
            pid: 42,
            lookup: &lookup,
            scope: &crate::tenant::TenantScope::all(),
        };
        let mut stmts =
            Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| RewriteError::new("42601", e.to_string()))?;
        rewrite(&mut stmts[0], &view)?;
        Ok(stmts[0].to_string())
    }

    #[test]
    fn catalog_idioms_become_plain_sql() {
        assert_eq!(
            rewritten("select current_setting('server_version_num')::int/100 as version").unwrap(),
            "SELECT '160006'::INT / 100 AS version"
        );
        let oid = crate::pg_catalog::table_oid("traffic_day");
        assert_eq!(
            rewritten("select 1 from pg_catalog.pg_class c where c.oid = 'traffic_day'::regclass").unwrap(),
            format!("SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = CAST({oid} AS INT UNSIGNED)")
        );
        assert_eq!(
            rewritten("select c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default from pg_class c")
                .unwrap(),
            "SELECT c.relname ~ '^(t)$' FROM pg_catalog.pg_class c"
        );
        assert_eq!(
            rewritten("select pg_catalog.pg_backend_pid(), user, current_schemas(true)").unwrap(),
            "SELECT 42 AS \"pg_backend_pid\", 'alice' AS \"user\", make_array('pg_catalog', 'public') AS \"current_schemas\""
        );
        assert_eq!(
            rewritten("select oid::regtype::text, 'int8'::regtype from pg_type").unwrap(),
            "SELECT tally_regtype_name(oid), CAST(20 AS INT UNSIGNED) FROM pg_catalog.pg_type"
        );
        assert_eq!(
            rewritten("select x = any('{a,b}') from t").unwrap(),
            "SELECT x = ANY(make_array('a', 'b')) FROM t"
        );
    }

    #[test]
    fn like_escapes_become_backslashes() {
        assert_eq!(like_pattern_with_backslash("a/_b%", '/'), "a\\_b%");
        assert_eq!(like_pattern_with_backslash("c:\\x//", '/'), "c:\\\\x\\/");
        assert_eq!(
            rewritten("select 1 where 'a_b' like 'a!_b' escape '!'").unwrap(),
            "SELECT 1 WHERE 'a_b' LIKE 'a\\_b'"
        );
    }

    #[test]
    fn unknown_names_are_postgresql_errors() {
        assert_eq!(rewritten("select 'nope'::regclass").unwrap_err().code, "42P01");
        assert_eq!(rewritten("select 'nope'::regtype").unwrap_err().code, "42704");
        assert_eq!(rewritten("select current_setting('nope')").unwrap_err().code, "42704");
        assert_eq!(
            rewritten("select current_setting('nope', true)").unwrap(),
            "SELECT CAST(NULL AS TEXT) AS \"current_setting\""
        );
    }
}
