//! Result column names as PostgreSQL gives them (its `FigureColname`).
//!
//! DataFusion names an unaliased expression after its text
//! (`sum(events.revenue)`, `Int64(1)`); PostgreSQL names it after the
//! function (`sum`), the column (`site`), the cast's type (`int8`), `case`,
//! or `?column?`. Clients and dashboards read columns by name, so the row
//! description uses PostgreSQL's names; aliases are kept as written.

use datafusion::logical_expr::{Distinct, Expr, LogicalPlan, Projection};

/// PostgreSQL's names for the plan's output columns, or `None` to keep
/// DataFusion's (when the top of the plan is not a projection).
pub fn postgres_names(plan: &LogicalPlan) -> Option<Vec<String>> {
    let projection = top_projection(plan)?;
    if projection.expr.len() != plan.schema().fields().len() {
        return None;
    }
    Some(projection.expr.iter().map(|e| figure(e, &projection.input)).collect())
}

fn top_projection(plan: &LogicalPlan) -> Option<&Projection> {
    match plan {
        LogicalPlan::Projection(p) => Some(p),
        LogicalPlan::Sort(s) => top_projection(&s.input),
        LogicalPlan::Limit(l) => top_projection(&l.input),
        LogicalPlan::Distinct(Distinct::All(input)) => top_projection(input),
        _ => None,
    }
}

/// Find the expression of `input` (an aggregate or window below the
/// projection) that produces the column named `name`.
fn producing_expr<'a>(input: &'a LogicalPlan, name: &str) -> Option<&'a Expr> {
    let candidates: Vec<&Expr> = match input {
        LogicalPlan::Aggregate(a) => a.group_expr.iter().chain(a.aggr_expr.iter()).collect(),
        LogicalPlan::Window(w) => w.window_expr.iter().collect(),
        LogicalPlan::Filter(f) => return producing_expr(&f.input, name),
        LogicalPlan::Sort(s) => return producing_expr(&s.input, name),
        _ => return None,
    };
    candidates.into_iter().find(|e| e.schema_name().to_string() == name)
}

fn type_name(dt: &datafusion::arrow::datatypes::DataType) -> String {
    use datafusion::arrow::datatypes::DataType::*;
    match dt {
        Boolean => "bool",
        Int8 | Int16 => "int2",
        Int32 => "int4",
        Int64 => "int8",
        Float32 => "float4",
        Float64 => "float8",
        Utf8 | LargeUtf8 | Utf8View => "text",
        Date32 | Date64 => "date",
        Timestamp(_, Some(_)) => "timestamptz",
        Timestamp(_, None) => "timestamp",
        Decimal128(..) | Decimal256(..) => "numeric",
        Interval(_) => "interval",
        _ => "?column?",
    }
    .to_owned()
}

fn figure(expr: &Expr, input: &LogicalPlan) -> String {
    match expr {
        // DataFusion's planner names `count(*)` with an alias of its own.
        Expr::Alias(a) if a.name.ends_with("(*)") => figure(&a.expr, input),
        Expr::Alias(a) if a.name.starts_with(crate::rewrite::DUPLICATE_PREFIX) => {
            // `__tally_repeat_<i>_<wanted>`: the wanted name, or PostgreSQL's.
            let rest = &a.name[crate::rewrite::DUPLICATE_PREFIX.len()..];
            match rest.split_once('_') {
                Some((_, wanted)) if !wanted.is_empty() => wanted.to_owned(),
                _ => figure(&a.expr, input),
            }
        }
        Expr::Alias(a) => a.name.clone(),
        Expr::Column(c) => match producing_expr(input, &c.name) {
            Some(inner) if !matches!(inner, Expr::Column(_)) => figure(inner, input),
            _ => c.name.clone(),
        },
        Expr::ScalarFunction(f) => f.func.name().to_owned(),
        Expr::AggregateFunction(f) => f.func.name().to_owned(),
        Expr::WindowFunction(w) => w.fun.name().to_owned(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(..) => type_name(c.field.data_type()),
            inner => figure(inner, input),
        },
        Expr::TryCast(c) => figure(&c.expr, input),
        Expr::Case(_) => "case".to_owned(),
        _ => "?column?".to_owned(),
    }
}
