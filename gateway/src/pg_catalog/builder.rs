//! A small builder for constant catalog tables.
//!
//! System tables are written as column lists plus rows of loosely typed
//! values; each value is cast to its column's type when the table is built,
//! so a row can say `int(0)` for an `oid`, an `int2` or an `int4` column
//! alike, and `Null` for a typed NULL.

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, ScalarValue};
use std::sync::Arc;

/// `oid` (PostgreSQL's unsigned 32-bit object id).
pub const OID: DataType = DataType::UInt32;
/// `name`, `text`, `"char"` and the information_schema domains.
pub const TEXT: DataType = DataType::Utf8;
pub const BOOL: DataType = DataType::Boolean;
pub const INT2: DataType = DataType::Int16;
pub const INT4: DataType = DataType::Int32;
pub const INT8: DataType = DataType::Int64;
pub const FLOAT4: DataType = DataType::Float32;

/// `oid[]` / `oidvector`.
pub fn oids() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(OID, true)))
}

/// `int2[]` / `int2vector`.
pub fn int2s() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(INT2, true)))
}

/// `text[]` / `name[]` / `aclitem[]`.
pub fn texts() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(TEXT, true)))
}

/// One cell before it is cast to its column's type.
#[derive(Debug, Clone)]
pub enum V {
    Null,
    Int(i64),
    Str(String),
    Bool(bool),
    Float(f64),
    Ints(Vec<i64>),
    Strs(Vec<String>),
}

pub fn int(v: impl Into<i64>) -> V {
    V::Int(v.into())
}

pub fn s(v: impl Into<String>) -> V {
    V::Str(v.into())
}

pub fn b(v: bool) -> V {
    V::Bool(v)
}

impl V {
    fn to_scalar(&self, dt: &DataType) -> Result<ScalarValue> {
        let list = |items: Vec<ScalarValue>, elem: &DataType| -> Result<ScalarValue> {
            Ok(ScalarValue::List(ScalarValue::new_list_nullable(&items, elem)))
        };
        let raw = match self {
            V::Null => return ScalarValue::try_from(dt),
            V::Int(i) => ScalarValue::Int64(Some(*i)),
            V::Str(s) => ScalarValue::Utf8(Some(s.clone())),
            V::Bool(b) => ScalarValue::Boolean(Some(*b)),
            V::Float(f) => ScalarValue::Float64(Some(*f)),
            V::Ints(_) | V::Strs(_) if !matches!(dt, DataType::List(_)) => {
                return ScalarValue::try_from(dt);
            }
            V::Ints(items) => {
                let DataType::List(f) = dt else {
                    unreachable!("checked above")
                };
                let cast: Result<Vec<ScalarValue>> = items
                    .iter()
                    .map(|i| ScalarValue::Int64(Some(*i)).cast_to(f.data_type()))
                    .collect();
                return list(cast?, f.data_type());
            }
            V::Strs(items) => {
                let DataType::List(f) = dt else {
                    unreachable!("checked above")
                };
                let cast: Vec<ScalarValue> = items.iter().map(|i| ScalarValue::Utf8(Some(i.clone()))).collect();
                return list(cast, f.data_type());
            }
        };
        raw.cast_to(dt)
    }
}

/// A constant table under construction.
pub struct TableBuilder {
    pub name: &'static str,
    fields: Vec<Field>,
    rows: Vec<Vec<V>>,
}

impl TableBuilder {
    pub fn new(name: &'static str, columns: &[(&'static str, DataType)]) -> Self {
        TableBuilder {
            name,
            fields: columns.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect(),
            rows: Vec::new(),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.fields.clone()))
    }

    /// Add a row; missing trailing cells are NULL.
    pub fn row(&mut self, mut cells: Vec<V>) -> &mut Self {
        cells.resize(self.fields.len(), V::Null);
        self.rows.push(cells);
        self
    }

    pub fn build(&self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.fields.len());
        for (i, f) in self.fields.iter().enumerate() {
            if self.rows.is_empty() {
                columns.push(new_empty_array(f.data_type()));
                continue;
            }
            let values: Result<Vec<ScalarValue>> = self.rows.iter().map(|r| r[i].to_scalar(f.data_type())).collect();
            columns.push(ScalarValue::iter_to_array(values?)?);
        }
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_take_their_column_types() {
        let mut t = TableBuilder::new("t", &[("oid", OID), ("n", INT2), ("names", texts()), ("keys", int2s())]);
        t.row(vec![int(7), int(3), V::Strs(vec!["a".into()]), V::Ints(vec![1, 2])]);
        t.row(vec![int(8)]);
        let b = t.build().unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).data_type(), &OID);
        assert_eq!(b.column(3).data_type(), &int2s());
        assert!(b.column(1).is_null(1));
        let empty = TableBuilder::new("e", &[("x", OID)]).build().unwrap();
        assert_eq!(empty.num_rows(), 0);
    }
}
