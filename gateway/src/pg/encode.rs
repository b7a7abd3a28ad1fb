//! Arrow results -> PostgreSQL rows.
//!
//! Each Arrow type maps to one standard PostgreSQL type OID; values are
//! encoded by pgwire in the text or binary format the client asked for per
//! column. Types without a mapping are cast to text rather than sent under an
//! OID clients do not know.

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};
use std::sync::Arc;

/// The PostgreSQL type a column of this Arrow type is sent as.
pub fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::UInt32 => Type::OID,
        DataType::Int64 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::Decimal128(_, s) if *s >= 0 && *s <= 28 => Type::NUMERIC,
        DataType::Interval(_) => Type::INTERVAL,
        DataType::List(f) => match f.data_type() {
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Type::TEXT_ARRAY,
            DataType::Int16 => Type::INT2_ARRAY,
            DataType::Int32 => Type::INT4_ARRAY,
            DataType::Int64 => Type::INT8_ARRAY,
            DataType::UInt32 => Type::OID_ARRAY,
            DataType::Boolean => Type::BOOL_ARRAY,
            _ => Type::TEXT,
        },
        _ => Type::TEXT,
    }
}

/// A one-dimensional array value (catalog `oid[]`, `text[]`, `array_agg`).
fn encode_list(enc: &mut DataRowEncoder, col: &ArrayRef, row: usize) -> PgWireResult<()> {
    let mut items = col.as_list::<i32>().value(row);
    if matches!(items.data_type(), DataType::Utf8View | DataType::LargeUtf8) {
        items = cast(&items, &DataType::Utf8).map_err(encode_err)?;
    }
    macro_rules! vec_of {
        ($t:ty, $conv:expr) => {{
            let a = items.as_primitive::<$t>();
            let v: Vec<Option<_>> = (0..a.len())
                .map(|i| (!a.is_null(i)).then(|| $conv(a.value(i))))
                .collect();
            enc.encode_field(&v)
        }};
    }
    match items.data_type() {
        DataType::Utf8 => {
            let a = items.as_string::<i32>();
            let v: Vec<Option<String>> = (0..a.len())
                .map(|i| (!a.is_null(i)).then(|| a.value(i).to_owned()))
                .collect();
            enc.encode_field(&v)
        }
        DataType::Int16 => vec_of!(Int16Type, |x: i16| x),
        DataType::Int32 => vec_of!(Int32Type, |x: i32| x),
        DataType::Int64 => vec_of!(Int64Type, |x: i64| x),
        DataType::UInt32 => vec_of!(UInt32Type, |x: u32| x),
        DataType::Boolean => {
            let a = items.as_boolean();
            let v: Vec<Option<bool>> = (0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i))).collect();
            enc.encode_field(&v)
        }
        other => Err(encode_err(format!("arrays of {other} are not supported"))),
    }
}

/// The PostgreSQL type of a result field: its Arrow type's, unless its
/// metadata names one (`json`).
pub fn field_type(f: &datafusion::arrow::datatypes::Field) -> Type {
    match f.metadata().get(crate::tables::PG_TYPE_KEY).map(String::as_str) {
        Some("json") if matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) => {
            Type::JSON
        }
        _ => pg_type(f.data_type()),
    }
}

/// Row description of a result schema.
pub fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    named_fields(schema, schema.fields().iter().map(|f| f.name().clone()), format)
}

/// Row description with the given column names (one per field).
pub fn named_fields(schema: &Schema, names: impl IntoIterator<Item = String>, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (f, name))| FieldInfo::new(name, None, None, field_type(f), format.format_for(i)))
        .collect()
}

fn encode_err(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::ApiError(e.to_string().into())
}

fn utc_from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_nanos(n)
}

/// A timestamp printed exactly as PostgreSQL prints it in text format
/// (`2026-11-26 07:36:00+00`, fraction only when non-zero, trailing zeros
/// trimmed); binary format is chrono's, which matches PostgreSQL's.
#[derive(Debug)]
struct PgTimestamp {
    at: DateTime<Utc>,
    with_zone: bool,
}

impl ToSqlText for PgTimestamp {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _f: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use std::fmt::Write;
        write!(out, "{}", self.at.format("%Y-%m-%d %H:%M:%S"))?;
        let micros = self.at.timestamp_subsec_micros();
        if micros != 0 {
            let frac = format!("{micros:06}");
            write!(out, ".{}", frac.trim_end_matches('0'))?;
        }
        if self.with_zone {
            out.extend_from_slice(b"+00");
        }
        Ok(IsNull::No)
    }
}

impl ToSql for PgTimestamp {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if self.with_zone {
            self.at.to_sql(ty, out)
        } else {
            self.at.naive_utc().to_sql(ty, out)
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TIMESTAMP | Type::TIMESTAMPTZ)
    }

    to_sql_checked!();
}

/// A float printed as PostgreSQL prints it in text format: shortest
/// round-trip digits, no `.0` on whole numbers, exponent form `1e+20` /
/// `1e-05` outside [1e-4, 1e15), `NaN` and `Infinity`.
#[derive(Debug)]
struct PgFloat(f64, bool);

/// PostgreSQL's text form of a float (`single` for float4).
pub fn float_text(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = v.abs();
    let shortest = if single {
        format!("{}", v as f32)
    } else {
        format!("{v}")
    };
    if a == 0.0 || (1e-4..1e15).contains(&a) {
        return shortest;
    }
    let e = if single {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    match e.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => shortest,
    }
}

impl ToSqlText for PgFloat {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _f: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(float_text(self.0, self.1).as_bytes());
        Ok(IsNull::No)
    }
}

impl ToSql for PgFloat {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if self.1 {
            (self.0 as f32).to_sql(ty, out)
        } else {
            self.0.to_sql(ty, out)
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::FLOAT4 | Type::FLOAT8)
    }

    to_sql_checked!();
}

/// An interval as PostgreSQL sends it: text in the default `postgres`
/// IntervalStyle (`1 year 2 mons 3 days 04:05:06.5`), binary as
/// microseconds, days and months.
#[derive(Debug)]
pub struct PgInterval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl PgInterval {
    pub fn text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let (years, months) = (self.months / 12, self.months % 12);
        let unit = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        if years != 0 {
            parts.push(unit(i64::from(years), "year", "years"));
        }
        if months != 0 {
            parts.push(unit(i64::from(months), "mon", "mons"));
        }
        if self.days != 0 {
            parts.push(unit(i64::from(self.days), "day", "days"));
        }
        if self.micros != 0 || parts.is_empty() {
            let sign = if self.micros < 0 { "-" } else { "" };
            let m = self.micros.unsigned_abs();
            let (h, rest) = (m / 3_600_000_000, m % 3_600_000_000);
            let (min, rest) = (rest / 60_000_000, rest % 60_000_000);
            let (s, frac) = (rest / 1_000_000, rest % 1_000_000);
            let mut t = format!("{sign}{h:02}:{min:02}:{s:02}");
            if frac != 0 {
                t.push_str(format!(".{frac:06}").trim_end_matches('0'));
            }
            parts.push(t);
        }
        parts.join(" ")
    }
}

impl ToSqlText for PgInterval {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _f: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.text().as_bytes());
        Ok(IsNull::No)
    }
}

impl ToSql for PgInterval {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        out.put_i64(self.micros);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

/// (months, days, nanoseconds) of an Arrow interval value.
fn interval_parts(col: &ArrayRef, row: usize) -> (i32, i32, i64) {
    use datafusion::arrow::datatypes::{
        IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType,
    };
    match col.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => (col.as_primitive::<IntervalYearMonthType>().value(row), 0, 0),
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = col.as_primitive::<IntervalDayTimeType>().value(row);
            (0, v.days, i64::from(v.milliseconds) * 1_000_000)
        }
        _ => {
            let v = col.as_primitive::<IntervalMonthDayNanoType>().value(row);
            (v.months, v.days, v.nanoseconds)
        }
    }
}

fn nanos(unit: &TimeUnit, col: &ArrayRef, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => col
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => col
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Microsecond => col
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .saturating_mul(1000),
        TimeUnit::Nanosecond => col.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

fn encode_value(enc: &mut DataRowEncoder, col: &ArrayRef, row: usize) -> PgWireResult<()> {
    if col.is_null(row) {
        return enc.encode_field(&None::<i32>);
    }
    match col.data_type() {
        DataType::Boolean => enc.encode_field(&col.as_boolean().value(row)),
        DataType::Interval(_) => {
            let (months, days, nanos) = interval_parts(col, row);
            enc.encode_field(&PgInterval {
                months,
                days,
                micros: nanos / 1000,
            })
        }
        DataType::List(_) if pg_type(col.data_type()) != Type::TEXT => encode_list(enc, col, row),
        DataType::Int8 => enc.encode_field(&i16::from(col.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => enc.encode_field(&col.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => enc.encode_field(&i16::from(col.as_primitive::<UInt8Type>().value(row))),
        DataType::Int32 => enc.encode_field(&col.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => enc.encode_field(&i32::from(col.as_primitive::<UInt16Type>().value(row))),
        DataType::Int64 => enc.encode_field(&col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => enc.encode_field(&col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => {
            let v = i64::try_from(col.as_primitive::<UInt64Type>().value(row)).map_err(encode_err)?;
            enc.encode_field(&v)
        }
        DataType::Float32 => enc.encode_field(&PgFloat(f64::from(col.as_primitive::<Float32Type>().value(row)), true)),
        DataType::Float64 => enc.encode_field(&PgFloat(col.as_primitive::<Float64Type>().value(row), false)),
        DataType::Timestamp(unit, zone) => enc.encode_field(&PgTimestamp {
            at: utc_from_nanos(nanos(unit, col, row)),
            with_zone: zone.is_some(),
        }),
        DataType::Date32 => {
            let days = col.as_primitive::<Date32Type>().value(row);
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(days))))
                .ok_or_else(|| encode_err("date out of range"))?;
            enc.encode_field(&date)
        }
        DataType::Utf8 => enc.encode_field(&col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => enc.encode_field(&col.as_string::<i64>().value(row)),
        DataType::Utf8View => enc.encode_field(&col.as_string_view().value(row)),
        DataType::Binary => enc.encode_field(&col.as_binary::<i32>().value(row)),
        DataType::LargeBinary => enc.encode_field(&col.as_binary::<i64>().value(row)),
        DataType::BinaryView => enc.encode_field(&col.as_binary_view().value(row)),
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<Decimal128Type>().value(row);
            let d = rust_decimal::Decimal::try_from_i128_with_scale(v, *scale as u32).map_err(encode_err)?;
            enc.encode_field(&d)
        }
        other => Err(encode_err(format!("no encoding for {other}"))),
    }
}

/// Normalise columns whose type has no direct encoding: cast to text (or
/// Date64 to Date32).
fn prepare_column(col: &ArrayRef) -> PgWireResult<ArrayRef> {
    let target = match col.data_type() {
        DataType::Date64 => Some(DataType::Date32),
        DataType::Float16 => Some(DataType::Float32),
        dt if pg_type(dt) == Type::TEXT && !matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            Some(DataType::Utf8)
        }
        _ => None,
    };
    match target {
        Some(t) => cast(col, &t).map_err(encode_err),
        None => Ok(col.clone()),
    }
}

/// Encode every row of a batch.
pub fn encode_batch(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .map(prepare_column)
        .collect::<PgWireResult<Vec<_>>>()?;
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(batch.num_rows());
    // JSON columns, as Utf8 once per batch.
    let json: Vec<Option<ArrayRef>> = columns
        .iter()
        .zip(fields.iter())
        .map(|(col, f)| {
            (f.datatype() == &Type::JSON)
                .then(|| cast(col, &DataType::Utf8).map_err(encode_err))
                .transpose()
        })
        .collect::<PgWireResult<_>>()?;
    for row in 0..batch.num_rows() {
        for (i, col) in columns.iter().enumerate() {
            if let Some(Some(text)) = json.get(i)
                && !col.is_null(row)
            {
                // Text and binary JSON are both the document's text.
                let doc = text.as_string::<i32>().value(row);
                let value: serde_json::Value =
                    serde_json::from_str(doc).unwrap_or_else(|_| serde_json::Value::String(doc.to_owned()));
                encoder.encode_field(&value)?;
            } else {
                encode_value(&mut encoder, col, row)?;
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn text(at: DateTime<Utc>, with_zone: bool) -> String {
        let mut out = BytesMut::new();
        PgTimestamp { at, with_zone }
            .to_sql_text(&Type::TIMESTAMPTZ, &mut out, &FormatOptions::default())
            .unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn intervals_print_as_postgresql_does() {
        let i = |months, days, micros| PgInterval { months, days, micros }.text();
        assert_eq!(i(0, 1, 7_200_000_000), "1 day 02:00:00");
        assert_eq!(
            i(14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(i(0, 7, 0), "7 days");
        assert_eq!(i(0, 0, 0), "00:00:00");
        assert_eq!(i(0, 0, -90_000_000), "-00:01:30");
    }

    #[test]
    fn floats_print_as_postgresql_does() {
        for (v, want) in [
            (1_795_096_800.0, "1795096800"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e20, "1e+20"),
            (1.2345678901234568e20, "1.2345678901234568e+20"),
            (0.00001, "1e-05"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(float_text(v, false), want, "{v}");
        }
        assert_eq!(float_text(f64::from(0.1f32), true), "0.1");
    }

    #[test]
    fn timestamps_print_as_postgresql_does() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 7, 36, 0).unwrap();
        assert_eq!(text(t, true), "2026-11-26 07:36:00+00");
        assert_eq!(text(t, false), "2026-11-26 07:36:00");
        let t = t + chrono::Duration::microseconds(500_000);
        assert_eq!(text(t, true), "2026-11-26 07:36:00.5+00");
        let t = t + chrono::Duration::microseconds(1);
        assert_eq!(text(t, true), "2026-11-26 07:36:00.500001+00");
    }

    #[test]
    fn maps_arrow_types_to_standard_oids() {
        assert_eq!(pg_type(&DataType::Int64), Type::INT8);
        assert_eq!(pg_type(&DataType::Float64), Type::FLOAT8);
        assert_eq!(pg_type(&DataType::Utf8View), Type::TEXT);
        assert_eq!(pg_type(&DataType::Boolean), Type::BOOL);
        assert_eq!(
            pg_type(&DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))),
            Type::TIMESTAMPTZ
        );
        assert_eq!(
            pg_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            Type::TIMESTAMP
        );
        assert_eq!(pg_type(&DataType::Decimal128(10, 2)), Type::NUMERIC);
        assert_eq!(pg_type(&DataType::Decimal256(60, 2)), Type::TEXT);
    }
}
