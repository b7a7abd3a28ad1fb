//! Bind parameters: PostgreSQL wire values -> DataFusion scalars.
//!
//! A parameter's wire type is the client's (if it named one at Parse) or the
//! one the gateway inferred and announced at Describe. The decoded value is
//! then cast to the type DataFusion inferred for the placeholder, so
//! `WHERE bucket >= $1` works whether the client sent text or timestamptz.

use crate::error::user_error;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::error::PgWireResult;

/// Inferred placeholder types `$1..$n`, in order (`None` = unknown).
pub fn inferred_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let map = plan
        .get_parameter_types()
        .map_err(|e| user_error("42P18", e.message().into_owned()))?;
    let mut out: Vec<Option<DataType>> = Vec::new();
    for (name, ty) in map {
        let Some(i) = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i >= 1)
        else {
            return Err(user_error(
                "42P02",
                format!("unsupported placeholder {name}; use $1, $2, ..."),
            ));
        };
        if out.len() < i {
            out.resize(i, None);
        }
        out[i - 1] = ty;
    }
    Ok(out)
}

/// Wire type to announce for an inferred type.
pub fn wire_type(dt: Option<&DataType>) -> Type {
    match dt {
        Some(dt) => match crate::pg::encode::pg_type(dt) {
            Type::BYTEA => Type::TEXT,
            t => t,
        },
        None => Type::TEXT,
    }
}

fn decode_one<S: Clone>(portal: &Portal<S>, i: usize, ty: &Type) -> PgWireResult<ScalarValue> {
    macro_rules! get {
        ($t:ty) => {
            portal.parameter::<$t>(i, ty)?
        };
    }
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(get!(bool)),
        Type::INT2 => ScalarValue::Int16(get!(i16)),
        Type::INT4 => ScalarValue::Int32(get!(i32)),
        Type::INT8 => ScalarValue::Int64(get!(i64)),
        Type::FLOAT4 => ScalarValue::Float32(get!(f32)),
        Type::FLOAT8 => ScalarValue::Float64(get!(f64)),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            get!(DateTime<FixedOffset>).map(|d| d.timestamp_micros()),
            Some(crate::tables::UTC.into()),
        ),
        Type::TIMESTAMP => {
            ScalarValue::TimestampMicrosecond(get!(NaiveDateTime).map(|d| d.and_utc().timestamp_micros()), None)
        }
        Type::DATE => ScalarValue::Date32(
            get!(NaiveDate).map(|d| (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32),
        ),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => ScalarValue::Utf8(get!(String)),
        ref other => {
            return Err(user_error(
                "0A000",
                format!("parameter ${} has unsupported type {}", i + 1, other.name()),
            ));
        }
    })
}

/// Decode every parameter of a portal, cast to the inferred types.
pub fn decode<S: Clone>(portal: &Portal<S>, inferred: &[Option<DataType>]) -> PgWireResult<Vec<ScalarValue>> {
    (0..portal.parameter_len())
        .map(|i| {
            let inferred_ty = inferred.get(i).cloned().flatten();
            let ty = portal
                .statement
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| wire_type(inferred_ty.as_ref()));
            let value = decode_one(portal, i, &ty)?;
            match inferred_ty {
                Some(dt) if value.data_type() != dt => value
                    .cast_to(&dt)
                    .map_err(|e| user_error("22P02", format!("parameter ${}: {}", i + 1, e.message()))),
                _ => Ok(value),
            }
        })
        .collect()
}
