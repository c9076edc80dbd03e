//! Released values: numbers, text, booleans, nulls. There is no binary variant, so a token
//! cannot be carried out of the gate even by mistake.

use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

/// One released value: a group key the contract lets be revealed, or an aggregate. There is
/// no binary variant: tokens cannot be carried.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str(""),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Float(x) => write!(f, "{x:.4}"),
            Cell::Text(s) => f.write_str(s),
        }
    }
}

/// A result column of a type the gate does not release (binary, lists, structs).
#[derive(Debug, thiserror::Error)]
#[error("a result column has a type the gate does not release ({0})")]
pub struct CellError(pub String);

pub(crate) fn cells(array: &ArrayRef) -> Result<Vec<Cell>, CellError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
        UInt64Type,
    };
    let n = array.len();
    let mut out = Vec::with_capacity(n);
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Int(i64::try_from(a.value(i)).unwrap_or(i64::MAX))
                });
            }
        }};
    }
    match array.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let floats = arrow_cast::cast(array, &DataType::Float64)
                .map_err(|_| CellError(array.data_type().to_string()))?;
            let a = floats.as_primitive::<Float64Type>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Float(a.value(i))
                });
            }
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Bool(a.value(i))
                });
            }
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::Struct(_)
        | DataType::Map(..) => {
            return Err(CellError(array.data_type().to_string()));
        }
        _ => {
            // Text group keys, dates and times: shown as text.
            let text = arrow_cast::cast(array, &DataType::Utf8)
                .map_err(|_| CellError(array.data_type().to_string()))?;
            let a = text.as_string::<i32>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Text(a.value(i).to_owned())
                });
            }
        }
    }
    Ok(out)
}
