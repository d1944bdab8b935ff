//! Column types as users spell them in a source's `schema`, e.g. `int64`, `decimal(10, 2)`,
//! `list<string>`. Parsing is case-insensitive and accepts a few common aliases; [`Display`]
//! always gives the canonical lowercase spelling, which parses back to the same type.
//!
//! [`Display`]: std::fmt::Display

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::Diagnostic;

/// The largest decimal precision (digits in total), as in Arrow's `Decimal128`.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// The type of one field of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `boolean` (alias `bool`).
    Boolean,
    /// `int8`.
    Int8,
    /// `int16`.
    Int16,
    /// `int32` (alias `int`).
    Int32,
    /// `int64` (alias `bigint`).
    Int64,
    /// `uint8`.
    UInt8,
    /// `uint16`.
    UInt16,
    /// `uint32`.
    UInt32,
    /// `uint64`.
    UInt64,
    /// `float32` (alias `float`).
    Float32,
    /// `float64` (alias `double`).
    Float64,
    /// `string`: UTF-8 text (aliases `varchar`, `text`).
    Utf8,
    /// `binary`: raw bytes.
    Binary,
    /// `date`: a calendar day.
    Date,
    /// `timestamp`: milliseconds since the Unix epoch, without a time zone (alias
    /// `timestamp(3)`).
    Timestamp,
    /// `decimal(p, s)`: `precision` digits in total (1..=38), `scale` of them after the point
    /// (0..=precision).
    Decimal {
        /// Digits in total.
        precision: u8,
        /// Digits after the decimal point.
        scale: i8,
    },
    /// `list<T>`: a list of values of one type.
    List(Box<DataType>),
}

/// Every spelling without parameters that [`DataType::from_str`] accepts, canonical names
/// first, with the type it means.
const SIMPLE_TYPES: &[(&str, DataType)] = &[
    ("boolean", DataType::Boolean),
    ("int8", DataType::Int8),
    ("int16", DataType::Int16),
    ("int32", DataType::Int32),
    ("int64", DataType::Int64),
    ("uint8", DataType::UInt8),
    ("uint16", DataType::UInt16),
    ("uint32", DataType::UInt32),
    ("uint64", DataType::UInt64),
    ("float32", DataType::Float32),
    ("float64", DataType::Float64),
    ("string", DataType::Utf8),
    ("binary", DataType::Binary),
    ("date", DataType::Date),
    ("timestamp", DataType::Timestamp),
    ("bool", DataType::Boolean),
    ("int", DataType::Int32),
    ("bigint", DataType::Int64),
    ("float", DataType::Float32),
    ("double", DataType::Float64),
    ("varchar", DataType::Utf8),
    ("text", DataType::Utf8),
];

/// Type constructors that take parameters, for suggestions.
const PARAMETERIZED_TYPES: &[&str] = &["decimal", "list"];

/// How an unknown type's diagnostic lists the known ones when no spelling is close.
const KNOWN_TYPES: &str = "boolean, int8, int16, int32, int64, uint8, uint16, uint32, uint64, \
                           float32, float64, string, binary, date, timestamp, decimal(p, s), list<T>";

impl DataType {
    /// The canonical names of the types without parameters, in the order they are documented.
    pub fn simple_type_names() -> impl Iterator<Item = &'static str> {
        SIMPLE_TYPES[..15].iter().map(|(name, _)| *name)
    }
}

impl FromStr for DataType {
    type Err = Diagnostic;

    /// Parses a type spelling, ignoring case and whitespace around names and parameters. The
    /// error is a [`Diagnostic`] with an empty path; callers put it [`under`](Diagnostic::under)
    /// the field it came from.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lowered = text.trim().to_lowercase();
        parse_type(&lowered)
    }
}

fn parse_type(text: &str) -> Result<DataType, Diagnostic> {
    if let Some((name, args)) = split_parameters(text, '(', ')') {
        return match name {
            "decimal" => parse_decimal(text, args),
            "timestamp" if args.trim() == "3" => Ok(DataType::Timestamp),
            "timestamp" => Err(Diagnostic::new(
                "",
                format!("unsupported type \"{text}\": timestamps have millisecond precision"),
            )
            .suggest("write timestamp or timestamp(3)")),
            _ => Err(unknown_type(text, name)),
        };
    }
    if let Some((name, element)) = split_parameters(text, '<', '>') {
        return match name {
            "list" => Ok(DataType::List(Box::new(parse_type(element.trim())?))),
            _ => Err(unknown_type(text, name)),
        };
    }
    match SIMPLE_TYPES.iter().find(|(name, _)| *name == text) {
        Some((_, data_type)) => Ok(data_type.clone()),
        None if text == "decimal" => {
            Err(Diagnostic::new("", "decimal needs a precision and a scale")
                .suggest("write e.g. decimal(10, 2)"))
        }
        None if text == "list" => {
            Err(Diagnostic::new("", "list needs an element type").suggest("write e.g. list<string>"))
        }
        None => Err(unknown_type(text, text)),
    }
}

/// Splits `name(args)` or `name<args>` into its name and the text between the brackets.
fn split_parameters(text: &str, open: char, close: char) -> Option<(&str, &str)> {
    let inner = text.strip_suffix(close)?;
    let (name, args) = inner.split_once(open)?;
    Some((name.trim(), args))
}

fn parse_decimal(text: &str, args: &str) -> Result<DataType, Diagnostic> {
    let invalid = |why: String| Diagnostic::new("", format!("invalid type \"{text}\": {why}"));
    let parts: Vec<&str> = args.split(',').map(str::trim).collect();
    let [precision, scale] = parts[..] else {
        return Err(
            invalid("decimal takes a precision and a scale".into()).suggest("write e.g. decimal(10, 2)")
        );
    };
    let max = MAX_DECIMAL_PRECISION;
    let precision = match precision.parse::<u8>() {
        Ok(p) if (1..=max).contains(&p) => p,
        _ => return Err(invalid(format!("precision must be between 1 and {max}"))),
    };
    let scale = match scale.parse::<u8>() {
        Ok(s) if s <= precision => s,
        _ => {
            return Err(invalid(format!("scale must be between 0 and the precision ({precision})")));
        }
    };
    // `scale <= precision <= 38`, so it fits in an i8.
    let scale = i8::try_from(scale).unwrap_or(i8::MAX);
    Ok(DataType::Decimal { precision, scale })
}

fn unknown_type(text: &str, name: &str) -> Diagnostic {
    let spellings =
        SIMPLE_TYPES.iter().map(|(spelling, _)| *spelling).chain(PARAMETERIZED_TYPES.iter().copied());
    let diagnostic = Diagnostic::new("", format!("unknown type \"{text}\""));
    let suggested = diagnostic.clone().suggest_closest(name, spellings);
    if suggested.suggestion.is_some() {
        suggested
    } else {
        diagnostic.suggest(format!("known types: {KNOWN_TYPES}"))
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decimal { precision, scale } => write!(f, "decimal({precision}, {scale})"),
            Self::List(element) => write!(f, "list<{element}>"),
            Self::Boolean => f.write_str("boolean"),
            Self::Int8 => f.write_str("int8"),
            Self::Int16 => f.write_str("int16"),
            Self::Int32 => f.write_str("int32"),
            Self::Int64 => f.write_str("int64"),
            Self::UInt8 => f.write_str("uint8"),
            Self::UInt16 => f.write_str("uint16"),
            Self::UInt32 => f.write_str("uint32"),
            Self::UInt64 => f.write_str("uint64"),
            Self::Float32 => f.write_str("float32"),
            Self::Float64 => f.write_str("float64"),
            Self::Utf8 => f.write_str("string"),
            Self::Binary => f.write_str("binary"),
            Self::Date => f.write_str("date"),
            Self::Timestamp => f.write_str("timestamp"),
        }
    }
}

impl Serialize for DataType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DataType, String> {
        text.parse::<DataType>().map_err(|d| d.to_string())
    }

    #[test]
    fn canonical_names_round_trip_through_display() {
        for name in DataType::simple_type_names() {
            let parsed = parse(name).unwrap();
            assert_eq!(parsed.to_string(), name);
        }
        assert_eq!(DataType::simple_type_names().count(), 15);
    }

    #[test]
    fn parameterized_types_display_canonically() {
        assert_eq!(parse("DECIMAL(10,2)").unwrap().to_string(), "decimal(10, 2)");
        assert_eq!(parse(" List < Decimal( 5 , 0 ) > ").unwrap().to_string(), "list<decimal(5, 0)>");
        assert_eq!(parse("list<list<text>>").unwrap().to_string(), "list<list<string>>");
    }

    #[test]
    fn decimal_bounds_are_inclusive() {
        assert_eq!(parse("decimal(38, 38)"), Ok(DataType::Decimal { precision: 38, scale: 38 }));
        assert_eq!(parse("decimal(1, 0)"), Ok(DataType::Decimal { precision: 1, scale: 0 }));
        assert_eq!(
            parse("decimal(0, 0)"),
            Err("invalid type \"decimal(0, 0)\": precision must be between 1 and 38".into())
        );
        assert_eq!(
            parse("decimal(39,0)"),
            Err("invalid type \"decimal(39,0)\": precision must be between 1 and 38".into())
        );
        assert_eq!(
            parse("decimal(5,-1)"),
            Err("invalid type \"decimal(5,-1)\": scale must be between 0 and the precision (5)".into())
        );
    }

    #[test]
    fn unknown_types_suggest_the_closest_spelling() {
        assert_eq!(parse("list<strng>"), Err("unknown type \"strng\"; did you mean \"string\"?".into()));
        assert_eq!(parse("lst<string>"), Err("unknown type \"lst<string>\"; did you mean \"list\"?".into()));
    }

    #[test]
    fn serializes_as_its_spelling() {
        let json = serde_json::to_string(&DataType::List(Box::new(DataType::Utf8))).unwrap();
        assert_eq!(json, "\"list<string>\"");
    }
}
