//! How each column of the `datagen` source is generated: a plan per field, checked once, then
//! applied to ranges of row numbers. Value `i` of a column depends only on the seed, the column
//! and `i`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
    StringBuilder, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::compute::kernels::cast_utils::Parser;
use arrow::compute::{cast, nullif, take};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, TimeUnit, TimestampMillisecondType};
use serde_json::Value;
use sluice_spec::Diagnostic;

use super::FieldOptions;
use crate::nexmark::model::{EventRng, mix};

/// 2024-01-01 in days since the epoch.
const DEFAULT_MIN_DATE: i64 = 19_723;
/// 2024-12-31 in days since the epoch.
const DEFAULT_MAX_DATE: i64 = 20_088;
/// 2024-01-01T00:00:00 in milliseconds.
const DEFAULT_MIN_TIMESTAMP: i64 = 1_704_067_200_000;
/// 2024-12-31T23:59:59.999 in milliseconds.
const DEFAULT_MAX_TIMESTAMP: i64 = 1_735_689_599_999;
const DEFAULT_LENGTH: usize = 8;
/// Longest generated string: a batch of 4096 such values stays far below Arrow's 2 GiB limit
/// for one string column.
const MAX_LENGTH: u64 = 64 * 1024;
const ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// How one column's values are made.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPlan {
    data_type: DataType,
    kind: Kind,
    null_rate: f64,
    /// Distinguishes the random streams of columns.
    salt: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    /// One of these values, uniformly.
    Values(ArrayRef),
    /// Integers (also dates and timestamps) in `min..=max`; `min + row` when `sequence`.
    Integer {
        min: i128,
        max: i128,
        sequence: bool,
    },
    /// Floats in `min..max`.
    Float {
        min: f64,
        max: f64,
    },
    /// Decimals in `min..=max` (as floats, scaled at generation).
    Decimal {
        min: f64,
        max: f64,
    },
    Boolean,
    /// Random text or bytes of exactly `length`.
    Text {
        length: usize,
    },
}

impl ColumnPlan {
    /// Plans column `index` of type `data_type` from its options; `path` is where its options
    /// are (`options.fields.<name>`).
    pub(crate) fn new(
        index: usize,
        field: &Field,
        options: &FieldOptions,
        path: &str,
    ) -> Result<Self, Vec<Diagnostic>> {
        let mut diagnostics = Vec::new();
        let data_type = field.data_type().clone();
        let null_rate = options.null_rate.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&null_rate) {
            diagnostics.push(Diagnostic::new(
                format!("{path}.null_rate"),
                format!("must be between 0 and 1, found {null_rate}"),
            ));
        } else if null_rate > 0.0 && !field.is_nullable() {
            diagnostics.push(
                Diagnostic::new(
                    format!("{path}.null_rate"),
                    format!("field \"{}\" is not nullable", field.name()),
                )
                .suggest("declare the field `nullable: true` or remove `null_rate`"),
            );
        }
        let kind = match &options.values {
            Some(values) => values_kind(&data_type, values, &format!("{path}.values")),
            None => range_kind(&data_type, options, path),
        };
        let kind = match kind {
            Ok(kind) if diagnostics.is_empty() => kind,
            Ok(_) => return Err(diagnostics),
            Err(errors) => {
                diagnostics.extend(errors);
                return Err(diagnostics);
            }
        };
        Ok(Self { data_type, kind, null_rate, salt: mix(index as u64 + 1) })
    }

    /// The values of rows `start..end`.
    pub(crate) fn generate(&self, seed: u64, start: u64, end: u64) -> arrow::error::Result<ArrayRef> {
        let seed = seed ^ self.salt;
        let rngs = (start..end).map(|row| EventRng::for_event(seed, row));
        let array: ArrayRef = match &self.kind {
            Kind::Values(values) => {
                let count = values.len() as u64;
                let picks: UInt32Array =
                    rngs.map(|mut rng| rng.below(count) as u32).collect::<Vec<_>>().into();
                take(values.as_ref(), &picks, None)?
            }
            Kind::Integer { min, max, sequence } => {
                let span = (max - min + 1) as u128;
                let value = |(row, mut rng): (u64, EventRng)| -> i128 {
                    let offset = if *sequence {
                        u128::from(row) % span
                    } else {
                        (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) % span
                    };
                    min + offset as i128
                };
                let values = (start..end).zip(rngs).map(value);
                self.integers(values)?
            }
            Kind::Float { min, max } => {
                let values: Float64Array =
                    rngs.map(|mut rng| min + rng.unit() * (max - min)).collect::<Vec<_>>().into();
                cast(&values, &self.data_type)?
            }
            Kind::Decimal { min, max } => {
                let DataType::Decimal128(precision, scale) = self.data_type else {
                    return Err(arrow::error::ArrowError::InvalidArgumentError(
                        "decimal plan for a non-decimal column".into(),
                    ));
                };
                let factor = 10f64.powi(i32::from(scale));
                let values: Decimal128Array = rngs
                    .map(|mut rng| ((min + rng.unit() * (max - min)) * factor).round() as i128)
                    .collect::<Vec<_>>()
                    .into();
                Arc::new(values.with_precision_and_scale(precision, scale)?)
            }
            Kind::Boolean => {
                let values: BooleanArray = rngs.map(|mut rng| Some(rng.next_u64() & 1 == 1)).collect();
                Arc::new(values)
            }
            Kind::Text { length } => self.text(rngs, *length),
        };
        self.with_nulls(array, seed, start, end)
    }

    fn integers(&self, values: impl Iterator<Item = i128>) -> arrow::error::Result<ArrayRef> {
        Ok(match &self.data_type {
            DataType::UInt64 => Arc::new(UInt64Array::from_iter_values(values.map(|v| v as u64))),
            DataType::Date32 => Arc::new(Date32Array::from_iter_values(values.map(|v| v as i32))),
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                Arc::new(TimestampMillisecondArray::from_iter_values(values.map(|v| v as i64)))
            }
            other => cast(&Int64Array::from_iter_values(values.map(|v| v as i64)), other)?,
        })
    }

    fn text(&self, rngs: impl Iterator<Item = EventRng>, length: usize) -> ArrayRef {
        let mut buffer = vec![0u8; length];
        let fill = |rng: &mut EventRng, buffer: &mut [u8]| {
            for byte in buffer {
                *byte = ALPHANUMERIC[rng.below(ALPHANUMERIC.len() as u64) as usize];
            }
        };
        if self.data_type == DataType::Binary {
            let mut builder = BinaryBuilder::new();
            for mut rng in rngs {
                fill(&mut rng, &mut buffer);
                builder.append_value(&buffer);
            }
            return Arc::new(builder.finish());
        }
        let mut builder = StringBuilder::new();
        for mut rng in rngs {
            fill(&mut rng, &mut buffer);
            // Alphanumeric ASCII is always UTF-8.
            builder.append_value(std::str::from_utf8(&buffer).unwrap_or_default());
        }
        Arc::new(builder.finish())
    }

    fn with_nulls(&self, array: ArrayRef, seed: u64, start: u64, end: u64) -> arrow::error::Result<ArrayRef> {
        if self.null_rate <= 0.0 {
            return Ok(array);
        }
        let null_seed = mix(seed ^ 0x6e75_6c6c);
        let mask: BooleanArray = (start..end)
            .map(|row| Some(EventRng::for_event(null_seed, row).unit() < self.null_rate))
            .collect();
        nullif(array.as_ref(), &mask)
    }
}

fn values_kind(data_type: &DataType, values: &[Value], path: &str) -> Result<Kind, Vec<Diagnostic>> {
    if values.is_empty() {
        return Err(vec![Diagnostic::new(path, "needs at least one value")]);
    }
    let schema = Arc::new(Schema::new(vec![Field::new("v", data_type.clone(), true)]));
    let mut diagnostics = Vec::new();
    let mut arrays = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let line = serde_json::json!({ "v": value }).to_string();
        let decoded =
            arrow::json::ReaderBuilder::new(schema.clone()).build_decoder().and_then(|mut decoder| {
                decoder.decode(line.as_bytes())?;
                decoder.flush()
            });
        match decoded {
            Ok(Some(batch)) if !value.is_null() => arrays.push(batch.column(0).clone()),
            _ => diagnostics.push(Diagnostic::new(
                format!("{path}[{i}]"),
                format!("{value} is not a valid {}", type_name(data_type)),
            )),
        }
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    arrow::compute::concat(&refs)
        .map(Kind::Values)
        .map_err(|e| vec![Diagnostic::new(path, format!("cannot use these values: {e}"))])
}

fn range_kind(data_type: &DataType, options: &FieldOptions, path: &str) -> Result<Kind, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let not_for = |key: &str, what: &str| {
        Diagnostic::new(
            format!("{path}.{key}"),
            format!("`{key}` applies to {what} fields, not {}", type_name(data_type)),
        )
    };
    let sequence = options.sequence.unwrap_or(false);
    let is_integer = integer_bounds(data_type).is_some()
        || matches!(data_type, DataType::Date32 | DataType::Timestamp(_, _));
    if sequence && !is_integer {
        diagnostics.push(not_for("sequence", "integer, date and timestamp"));
    }
    let is_text = matches!(data_type, DataType::Utf8 | DataType::Binary);
    if options.length.is_some() && !is_text {
        diagnostics.push(not_for("length", "string and binary"));
    }
    if let Some(length) = options.length.filter(|&length| length > MAX_LENGTH) {
        diagnostics.push(Diagnostic::new(
            format!("{path}.length"),
            format!("length {length} is too long; generated strings can be at most {MAX_LENGTH} bytes"),
        ));
    }
    let ranged =
        is_integer || matches!(data_type, DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _));
    if !ranged {
        for (key, value) in [("min", &options.min), ("max", &options.max)] {
            if value.is_some() {
                diagnostics.push(not_for(key, "numeric, date and timestamp"));
            }
        }
    }
    let kind = match data_type {
        DataType::Boolean => Some(Kind::Boolean),
        DataType::Utf8 | DataType::Binary => {
            Some(Kind::Text { length: options.length.map_or(DEFAULT_LENGTH, |l| l as usize) })
        }
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            let default_max = match data_type {
                DataType::Decimal128(precision, scale) => {
                    10f64.powi(i32::from(*precision) - i32::from(*scale)).min(1000.0)
                }
                _ => 1.0,
            };
            let min = float_bound(&options.min, 0.0, &format!("{path}.min"), &mut diagnostics);
            let max = float_bound(&options.max, default_max, &format!("{path}.max"), &mut diagnostics);
            if min > max {
                diagnostics.push(Diagnostic::new(
                    format!("{path}.min"),
                    format!("min ({min}) is greater than max ({max})"),
                ));
            }
            Some(if matches!(data_type, DataType::Decimal128(_, _)) {
                Kind::Decimal { min, max }
            } else {
                Kind::Float { min, max }
            })
        }
        DataType::Date32
        | DataType::Timestamp(_, _)
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => {
            let (low, high, default_min, default_max) = match data_type {
                DataType::Date32 => {
                    (i128::from(i32::MIN), i128::from(i32::MAX), DEFAULT_MIN_DATE, DEFAULT_MAX_DATE)
                }
                DataType::Timestamp(_, _) => {
                    (i128::from(i64::MIN), i128::from(i64::MAX), DEFAULT_MIN_TIMESTAMP, DEFAULT_MAX_TIMESTAMP)
                }
                other => {
                    let (low, high) = integer_bounds(other).unwrap_or((0, 0));
                    (low, high, 0, 1_000_000.min(high) as i64)
                }
            };
            let min =
                integer_bound(data_type, &options.min, default_min, &format!("{path}.min"), &mut diagnostics);
            let max =
                integer_bound(data_type, &options.max, default_max, &format!("{path}.max"), &mut diagnostics);
            for (key, value) in [("min", min), ("max", max)] {
                if !(low..=high).contains(&value) {
                    diagnostics.push(Diagnostic::new(
                        format!("{path}.{key}"),
                        format!("{value} is out of range for {}", type_name(data_type)),
                    ));
                }
            }
            if min > max {
                diagnostics.push(Diagnostic::new(
                    format!("{path}.min"),
                    format!("min ({min}) is greater than max ({max})"),
                ));
            }
            Some(Kind::Integer { min, max, sequence })
        }
        _ => {
            diagnostics.push(
                Diagnostic::new(path, format!("cannot generate {} values", type_name(data_type)))
                    .suggest("give the values to pick from with `values:`"),
            );
            None
        }
    };
    match kind {
        Some(kind) if diagnostics.is_empty() => Ok(kind),
        _ => Err(diagnostics),
    }
}

fn integer_bounds(data_type: &DataType) -> Option<(i128, i128)> {
    Some(match data_type {
        DataType::Int8 => (i128::from(i8::MIN), i128::from(i8::MAX)),
        DataType::Int16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
        DataType::Int32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        DataType::Int64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        DataType::UInt8 => (0, i128::from(u8::MAX)),
        DataType::UInt16 => (0, i128::from(u16::MAX)),
        DataType::UInt32 => (0, i128::from(u32::MAX)),
        DataType::UInt64 => (0, i128::from(u64::MAX)),
        _ => return None,
    })
}

fn float_bound(value: &Option<Value>, default: f64, path: &str, diagnostics: &mut Vec<Diagnostic>) -> f64 {
    match value {
        None => default,
        Some(Value::Number(number)) => number.as_f64().unwrap_or(default),
        Some(other) => {
            diagnostics.push(Diagnostic::new(path, format!("expected a number, found {other}")));
            default
        }
    }
}

/// A bound of an integer, date or timestamp column: a number, or for dates and timestamps also
/// text like `2024-01-31` or `2024-01-31T12:00:00`.
fn integer_bound(
    data_type: &DataType,
    value: &Option<Value>,
    default: i64,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> i128 {
    let parsed = match (value, data_type) {
        (None, _) => return i128::from(default),
        (Some(Value::Number(number)), _) => {
            number.as_i64().map(i128::from).or_else(|| number.as_u64().map(i128::from))
        }
        (Some(Value::String(text)), DataType::Date32) => Date32Type::parse(text).map(i128::from),
        (Some(Value::String(text)), DataType::Timestamp(_, _)) => {
            TimestampMillisecondType::parse(text).map(i128::from)
        }
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        let expected = match data_type {
            DataType::Date32 => "a date like \"2024-01-31\" or days since 1970-01-01",
            DataType::Timestamp(_, _) => {
                "a timestamp like \"2024-01-31T12:00:00\" or milliseconds since 1970-01-01"
            }
            _ => "an integer",
        };
        let found = value.as_ref().map(ToString::to_string).unwrap_or_default();
        diagnostics.push(Diagnostic::new(path, format!("expected {expected}, found {found}")));
        i128::from(default)
    })
}

/// The spec's spelling of an Arrow type, for messages.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 => "string".into(),
        DataType::Binary => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Decimal128(p, s) => format!("decimal({p}, {s})"),
        DataType::List(item) => format!("list<{}>", type_name(item.data_type())),
        other => other.to_string().to_lowercase(),
    }
}
