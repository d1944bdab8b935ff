//! Arrow types to PostgreSQL and back.
//!
//! | Arrow | PostgreSQL column (created) | sent as |
//! |---|---|---|
//! | Int8, Int16, UInt8 | `smallint` | `int2[]` |
//! | Int32, UInt16 | `integer` | `int4[]` |
//! | Int64, UInt32 | `bigint` | `int8[]` |
//! | UInt64 | `numeric(20,0)` | `text[]`, cast to `numeric` |
//! | Float16, Float32 | `real` | `float4[]` |
//! | Float64 | `double precision` | `float8[]` |
//! | Boolean | `boolean` | `bool[]` |
//! | Utf8, LargeUtf8, Utf8View | `text` | `text[]` |
//! | Binary, LargeBinary, BinaryView, FixedSizeBinary | `bytea` | `bytea[]` |
//! | Date32, Date64 | `date` | days since 1970 as `int4[]` |
//! | Timestamp without / with a time zone | `timestamp` / `timestamptz` | microseconds since 1970 as `int8[]` (nanoseconds are truncated) |
//! | Decimal128(p, s), Decimal256(p, s) | `numeric(p,s)` | `text[]`, cast to `numeric` |
//! | List, LargeList, FixedSizeList, Struct, Map | `jsonb` | JSON text as `text[]`, cast to `jsonb` |
//!
//! Lists become `jsonb` rather than PostgreSQL arrays: arrays of arrays must be rectangular in
//! PostgreSQL, and a JSON value keeps nested lists and structs as they are.
//!
//! Reading (the lookup table) goes the other way: `smallint`, `integer`, `bigint`, `real`,
//! `double precision`, `boolean`, `bytea`, `date` map to their Arrow type, `timestamp` and
//! `timestamptz` to millisecond timestamps (UTC), `numeric(p,s)` to `Decimal128(p, s)`, and
//! every other type (text, `numeric` without a precision, JSON, UUID, arrays...) to its text
//! form as `Utf8`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema, TimeUnit,
};
use sluice_runtime::{Error, Result};
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

/// How a column's values are sent to PostgreSQL: the array parameter's type, and the SQL
/// expression that turns one element (`c`) into the column's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `int2[]`.
    Int2,
    /// `int4[]`.
    Int4,
    /// `int8[]`.
    Int8,
    /// `float4[]`.
    Float4,
    /// `float8[]`.
    Float8,
    /// `bool[]`.
    Bool,
    /// `text[]`.
    Text,
    /// `bytea[]`.
    Bytea,
    /// Days since 1970-01-01 as `int4[]`.
    Date,
    /// Microseconds since 1970-01-01 as `int8[]`; `zoned` for `timestamptz`.
    Timestamp {
        /// Whether the Arrow type has a time zone.
        zoned: bool,
    },
    /// Decimal text as `text[]`, cast to `numeric`.
    Numeric,
    /// JSON text as `text[]`, cast to `jsonb`.
    Json,
}

impl Wire {
    /// How values of `data_type` are sent; `None` if they cannot be.
    pub fn of(data_type: &DataType) -> Option<Wire> {
        use DataType::*;
        Some(match data_type {
            Int8 | Int16 | UInt8 => Wire::Int2,
            Int32 | UInt16 => Wire::Int4,
            Int64 | UInt32 => Wire::Int8,
            UInt64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => Wire::Numeric,
            Float16 | Float32 => Wire::Float4,
            Float64 => Wire::Float8,
            Boolean => Wire::Bool,
            Utf8 | LargeUtf8 | Utf8View => Wire::Text,
            Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => Wire::Bytea,
            Date32 | Date64 => Wire::Date,
            Timestamp(_, zone) => Wire::Timestamp { zoned: zone.is_some() },
            List(_) | LargeList(_) | FixedSizeList(..) | Struct(_) | Map(..) => Wire::Json,
            _ => return None,
        })
    }

    /// The parameter's array type.
    pub fn array_type(self) -> &'static str {
        match self {
            Wire::Int2 => "int2[]",
            Wire::Int4 | Wire::Date => "int4[]",
            Wire::Int8 | Wire::Timestamp { .. } => "int8[]",
            Wire::Float4 => "float4[]",
            Wire::Float8 => "float8[]",
            Wire::Bool => "bool[]",
            Wire::Text | Wire::Numeric | Wire::Json => "text[]",
            Wire::Bytea => "bytea[]",
        }
    }

    /// The SQL turning element `column` of the unnested parameter into the value.
    pub fn value_sql(self, column: &str) -> String {
        match self {
            Wire::Date => format!("(DATE '1970-01-01' + {column})"),
            Wire::Timestamp { zoned: false } => {
                format!("(TIMESTAMP '1970-01-01' + {column} * INTERVAL '1 microsecond')")
            }
            Wire::Timestamp { zoned: true } => {
                format!("(TIMESTAMPTZ '1970-01-01 00:00:00+00' + {column} * INTERVAL '1 microsecond')")
            }
            Wire::Numeric => format!("{column}::numeric"),
            Wire::Json => format!("{column}::jsonb"),
            _ => column.to_owned(),
        }
    }

    /// The PostgreSQL types (as `regtype` names them) a column may have to take these values.
    fn accepted(self) -> &'static [&'static str] {
        const INTEGERS: &[&str] = &["smallint", "integer", "bigint", "numeric", "real", "double precision"];
        const TEXT: &[&str] = &["text", "character varying", "character", "citext"];
        match self {
            Wire::Int2 | Wire::Int4 | Wire::Int8 => INTEGERS,
            Wire::Float4 | Wire::Float8 => &["real", "double precision", "numeric"],
            Wire::Bool => &["boolean"],
            Wire::Text => TEXT,
            Wire::Bytea => &["bytea"],
            Wire::Date => &["date", "timestamp without time zone", "timestamp with time zone"],
            Wire::Timestamp { .. } => &["timestamp without time zone", "timestamp with time zone"],
            Wire::Numeric => &["numeric", "real", "double precision"],
            Wire::Json => &["jsonb", "json"],
        }
    }

    /// Whether a column of PostgreSQL type `column_type` (a `regtype` name) takes these values.
    pub fn fits(self, column_type: &str) -> bool {
        self.accepted().contains(&column_type)
    }
}

/// The column type `CREATE TABLE` gives an Arrow type (see the module table).
pub fn column_type(data_type: &DataType) -> Option<String> {
    use DataType::*;
    Some(match data_type {
        Int8 | Int16 | UInt8 => "smallint".into(),
        Int32 | UInt16 => "integer".into(),
        Int64 | UInt32 => "bigint".into(),
        UInt64 => "numeric(20,0)".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) if *s >= 0 => {
            format!("numeric({p},{s})")
        }
        Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => "numeric".into(),
        Timestamp(_, None) => "timestamp".into(),
        Timestamp(_, Some(_)) => "timestamptz".into(),
        other => match Wire::of(other)? {
            Wire::Float4 => "real".into(),
            Wire::Float8 => "double precision".into(),
            Wire::Bool => "boolean".into(),
            Wire::Text => "text".into(),
            Wire::Bytea => "bytea".into(),
            Wire::Date => "date".into(),
            Wire::Json => "jsonb".into(),
            _ => return None,
        },
    })
}

/// One column's values converted for binding; borrowed by the query that binds them.
pub struct Prepared(ArrayRef);

impl Prepared {
    /// Converts `array` to what `wire` sends.
    pub fn new(wire: Wire, array: &ArrayRef) -> Result<Self> {
        let converted = match wire {
            Wire::Int2 => cast(array, &DataType::Int16)?,
            Wire::Int4 => cast(array, &DataType::Int32)?,
            Wire::Int8 => cast(array, &DataType::Int64)?,
            Wire::Float4 => cast(array, &DataType::Float32)?,
            Wire::Float8 => cast(array, &DataType::Float64)?,
            Wire::Bool => cast(array, &DataType::Boolean)?,
            Wire::Text | Wire::Numeric => cast(array, &DataType::Utf8)?,
            Wire::Bytea => cast(array, &DataType::Binary)?,
            Wire::Date => cast(&cast(array, &DataType::Date32)?, &DataType::Int32)?,
            Wire::Timestamp { .. } => {
                let zone = match array.data_type() {
                    DataType::Timestamp(_, zone) => zone.clone(),
                    _ => None,
                };
                let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, zone))?;
                cast(&micros, &DataType::Int64)?
            }
            Wire::Json => Arc::new(json_texts(array)?),
        };
        Ok(Self(converted))
    }

    /// Binds the values as the next parameter of `query`.
    pub fn bind<'q>(&'q self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        let array = &self.0;
        match array.data_type() {
            DataType::Int16 => query.bind(array.as_primitive::<Int16Type>().iter().collect::<Vec<_>>()),
            DataType::Int32 => query.bind(array.as_primitive::<Int32Type>().iter().collect::<Vec<_>>()),
            DataType::Int64 => query.bind(array.as_primitive::<Int64Type>().iter().collect::<Vec<_>>()),
            DataType::Float32 => query.bind(array.as_primitive::<Float32Type>().iter().collect::<Vec<_>>()),
            DataType::Float64 => query.bind(array.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()),
            DataType::Boolean => query.bind(array.as_boolean().iter().collect::<Vec<_>>()),
            DataType::Binary => query.bind(array.as_binary::<i32>().iter().collect::<Vec<_>>()),
            // `new` converts to one of the above or Utf8.
            _ => query.bind(array.as_string::<i32>().iter().collect::<Vec<_>>()),
        }
    }
}

/// Each value of a nested array as JSON text (null stays null).
fn json_texts(array: &ArrayRef) -> Result<StringArray> {
    let field = Field::new("v", array.data_type().clone(), true);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array.clone()])?;
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buffer);
        writer.write(&batch)?;
        writer.finish()?;
    }
    let text = String::from_utf8(buffer)
        .map_err(|e| Error::internal(format!("Arrow's JSON writer wrote invalid UTF-8: {e}")))?;
    let mut values = Vec::with_capacity(array.len());
    for line in text.lines() {
        let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| Error::internal(format!("Arrow's JSON writer wrote invalid JSON: {e}")))?;
        values.push(match row.remove("v") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(value.to_string()),
        });
    }
    if values.len() != array.len() {
        return Err(Error::internal("Arrow's JSON writer wrote a line count other than the row count"));
    }
    Ok(StringArray::from(values))
}

/// The Arrow type a lookup reads a PostgreSQL column of type `base` (a `regtype` name, e.g.
/// `numeric`) as; `formatted` is the type with its modifiers (`numeric(12,2)`).
pub fn arrow_type_of(base: &str, formatted: &str) -> DataType {
    match base {
        "smallint" => DataType::Int16,
        "integer" => DataType::Int32,
        "bigint" => DataType::Int64,
        "real" => DataType::Float32,
        "double precision" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "bytea" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp without time zone" | "timestamp with time zone" => {
            DataType::Timestamp(TimeUnit::Millisecond, None)
        }
        "numeric" => numeric_modifiers(formatted)
            .filter(|(precision, _)| (1..=38).contains(precision))
            .map_or(DataType::Utf8, |(precision, scale)| DataType::Decimal128(precision, scale)),
        _ => DataType::Utf8,
    }
}

/// `(p, s)` of `numeric(p,s)` or `numeric(p)`.
fn numeric_modifiers(formatted: &str) -> Option<(u8, i8)> {
    let inner = formatted.strip_prefix("numeric(")?.strip_suffix(')')?;
    let mut parts = inner.split(',').map(str::trim);
    let precision = parts.next()?.parse().ok()?;
    let scale = parts.next().map_or(Some(0), |s| s.parse().ok())?;
    Some((precision, scale))
}

/// How a lookup selects a column to read it as an Arrow type: the SQL over `column` and the
/// Rust type it is decoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `::int2`.
    Int2,
    /// `::int4`.
    Int4,
    /// `::int8`.
    Int8,
    /// `::float4`.
    Float4,
    /// `::float8`.
    Float8,
    /// `::bool`.
    Bool,
    /// `::text`.
    Text,
    /// `::bytea`.
    Bytea,
    /// Days since 1970 as `int4`.
    Date,
    /// Microseconds since 1970 as `int8`.
    Micros,
}

impl Read {
    /// How to read a column declared (or inferred) as `data_type`; `None` if it cannot be.
    pub fn of(data_type: &DataType) -> Option<Read> {
        use DataType::*;
        Some(match data_type {
            Int8 | Int16 | UInt8 => Read::Int2,
            Int32 | UInt16 => Read::Int4,
            Int64 | UInt32 => Read::Int8,
            Float16 | Float32 => Read::Float4,
            Float64 => Read::Float8,
            Boolean => Read::Bool,
            Utf8 | LargeUtf8 | Utf8View | UInt64 | Decimal128(..) | Decimal256(..) => Read::Text,
            Binary | LargeBinary | BinaryView => Read::Bytea,
            Date32 | Date64 => Read::Date,
            Timestamp(..) => Read::Micros,
            _ => return None,
        })
    }

    /// The select expression reading `column` (already quoted).
    pub fn select_sql(self, column: &str) -> String {
        match self {
            Read::Int2 => format!("{column}::int2"),
            Read::Int4 => format!("{column}::int4"),
            Read::Int8 => format!("{column}::int8"),
            Read::Float4 => format!("{column}::float4"),
            Read::Float8 => format!("{column}::float8"),
            Read::Bool => format!("{column}::bool"),
            Read::Text => format!("{column}::text"),
            Read::Bytea => format!("{column}::bytea"),
            Read::Date => format!("({column}::date - DATE '1970-01-01')"),
            Read::Micros => format!("floor(extract(epoch FROM {column}) * 1000000)::int8"),
        }
    }

    /// Column `index` of `rows` as an array of `data_type`.
    pub fn column(
        self,
        rows: &[sqlx::postgres::PgRow],
        index: usize,
        data_type: &DataType,
    ) -> Result<ArrayRef> {
        use arrow::array::{
            BinaryArray, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
        };
        use sqlx::Row;
        fn values<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
            rows: &'r [sqlx::postgres::PgRow],
            index: usize,
        ) -> Result<Vec<Option<T>>> {
            rows.iter()
                .map(|row| {
                    row.try_get::<Option<T>, _>(index).map_err(|e| {
                        Error::internal(format!("decoding column {index} of a looked-up row: {e}"))
                    })
                })
                .collect()
        }
        let read: ArrayRef = match self {
            Read::Int2 => Arc::new(Int16Array::from(values::<i16>(rows, index)?)),
            Read::Int4 => Arc::new(Int32Array::from(values::<i32>(rows, index)?)),
            Read::Int8 => Arc::new(Int64Array::from(values::<i64>(rows, index)?)),
            Read::Float4 => Arc::new(Float32Array::from(values::<f32>(rows, index)?)),
            Read::Float8 => Arc::new(Float64Array::from(values::<f64>(rows, index)?)),
            Read::Bool => Arc::new(BooleanArray::from(values::<bool>(rows, index)?)),
            Read::Text => Arc::new(StringArray::from(values::<String>(rows, index)?)),
            Read::Bytea => Arc::new(BinaryArray::from_iter(values::<Vec<u8>>(rows, index)?)),
            Read::Date => {
                Arc::new(arrow::array::PrimitiveArray::<Date32Type>::from(values::<i32>(rows, index)?))
            }
            Read::Micros => {
                Arc::new(arrow::array::TimestampMicrosecondArray::from(values::<i64>(rows, index)?))
            }
        };
        if read.data_type() == data_type {
            return Ok(read);
        }
        cast(&read, data_type).map_err(|e| {
            Error::user(format!(
                "a looked-up value of column {index} does not fit the declared type {data_type}: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_modifiers_are_read_from_the_formatted_type() {
        assert_eq!(arrow_type_of("numeric", "numeric(12,2)"), DataType::Decimal128(12, 2));
        assert_eq!(arrow_type_of("numeric", "numeric(7)"), DataType::Decimal128(7, 0));
        assert_eq!(arrow_type_of("numeric", "numeric"), DataType::Utf8);
        assert_eq!(arrow_type_of("numeric", "numeric(60,2)"), DataType::Utf8);
        assert_eq!(arrow_type_of("uuid", "uuid"), DataType::Utf8);
    }

    #[test]
    fn every_type_that_can_be_sent_has_a_column_type() {
        let types = [
            DataType::Int8,
            DataType::UInt64,
            DataType::Float16,
            DataType::Utf8View,
            DataType::FixedSizeBinary(4),
            DataType::Date64,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            DataType::Decimal128(10, 3),
            DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
        ];
        for data_type in types {
            let wire = Wire::of(&data_type).unwrap();
            let column = column_type(&data_type).unwrap();
            let base = column.split('(').next().unwrap().replace("timestamptz", "timestamp with time zone");
            let base = if base == "timestamp" { "timestamp without time zone".to_owned() } else { base };
            assert!(wire.fits(&base), "{data_type}: {wire:?} must fit the column it creates ({column})");
        }
        assert_eq!(Wire::of(&DataType::Null), None);
    }
}
