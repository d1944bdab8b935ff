//! The schema registry's decisions, without I/O: which schema types exist, how a schema is
//! parsed and normalized, the compatibility levels, and whether a new schema is compatible with
//! a subject's earlier versions. The HTTP side is `api::registry` (the Confluent Schema
//! Registry REST API v1); storage is `store::registry`.
//!
//! Deduplication: two schemas are the same when their normalized forms are equal. The
//! normalized form is the schema's JSON re-serialized compactly (no whitespace) with object
//! keys sorted; it is what is stored and returned.

pub mod avro;
pub mod avro_compat;
pub mod json_schema;

pub use avro_compat::TooComplex;

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// The kinds of schema the registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaType {
    /// Apache Avro (the default when a request names no type).
    Avro,
    /// JSON Schema.
    Json,
}

impl SchemaType {
    /// Every supported type, as `GET /schemas/types` lists them.
    pub const ALL: [SchemaType; 2] = [SchemaType::Avro, SchemaType::Json];

    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
        }
    }

    /// Reads `schemaType` of a request: absent means Avro.
    pub fn from_request(name: Option<&str>) -> Result<SchemaType, String> {
        match name.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => Ok(SchemaType::Avro),
            Some("JSON") => Ok(SchemaType::Json),
            Some("PROTOBUF") => {
                Err("schemaType PROTOBUF is not supported: only AVRO and JSON are supported".into())
            }
            Some(_) => Err(format!(
                "unknown schemaType \"{}\": only AVRO and JSON are supported",
                name.unwrap_or_default()
            )),
        }
    }
}

/// A parsed schema, ready for compatibility checks.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// An Avro schema.
    Avro(avro::AvroSchema),
    /// A JSON Schema document.
    Json(Value),
}

/// A schema as submitted, checked and normalized.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Its type.
    pub schema_type: SchemaType,
    /// The normalized text (see the module documentation).
    pub normalized: String,
    /// The parsed form.
    pub parsed: Parsed,
}

impl Schema {
    /// Parses and normalizes `text` as a schema of `schema_type`; the error says what is wrong
    /// and where.
    pub fn parse(schema_type: SchemaType, text: &str) -> Result<Schema, String> {
        let json: Value = serde_json::from_str(text).map_err(|error| {
            // serde_json stops at 128 levels of nesting, which keeps parsing off the stack's end.
            if error.to_string().starts_with("recursion limit exceeded") {
                format!("the schema nests JSON more than 128 levels deep ({error}); flatten it")
            } else {
                format!("the schema is not JSON: {error}; an {} schema is JSON text", schema_type.name())
            }
        })?;
        let parsed = match schema_type {
            SchemaType::Avro => Parsed::Avro(
                avro::parse_value(&json).map_err(|error| format!("invalid Avro schema: {error}"))?,
            ),
            SchemaType::Json => Parsed::Json(
                json_schema::parse(text).map_err(|error| format!("invalid JSON Schema: {error}"))?,
            ),
        };
        // serde_json's maps are sorted by key, so this is compact and key-sorted.
        Ok(Schema { schema_type, normalized: json.to_string(), parsed })
    }

    /// Every reason `reader` cannot read what `writer` wrote (empty: it can). Both are of one
    /// type; schemas of different types never are compatible. An error when the schemas are
    /// too complex to compare.
    pub fn read_problems(writer: &Schema, reader: &Schema) -> Result<Vec<String>, TooComplex> {
        Ok(match (&writer.parsed, &reader.parsed) {
            (Parsed::Avro(w), Parsed::Avro(r)) => avro_compat::incompatibilities(w, r)?,
            (Parsed::Json(w), Parsed::Json(r)) => json_schema::incompatibilities(w, r),
            _ => vec![format!(
                "the schema types differ ({} and {})",
                writer.schema_type.name(),
                reader.schema_type.name()
            )],
        })
    }
}

/// A subject's compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// No check.
    None,
    /// The new schema reads data of the latest version (the default).
    Backward,
    /// The new schema reads data of every version.
    BackwardTransitive,
    /// The latest version reads data of the new schema.
    Forward,
    /// Every version reads data of the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
}

impl Level {
    /// Every level.
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(self, Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive)
    }

    fn backward(self) -> bool {
        matches!(self, Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive)
    }

    fn forward(self) -> bool {
        matches!(self, Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = String;

    /// Case-insensitive, as clients send both spellings.
    fn from_str(text: &str) -> Result<Level, String> {
        Level::ALL.into_iter().find(|level| level.name().eq_ignore_ascii_case(text)).ok_or_else(|| {
            format!(
                "Invalid compatibility level \"{text}\". Valid values are {}",
                Level::ALL.map(Level::name).join(", ")
            )
        })
    }
}

/// Every reason `new` may not follow `earlier` (a subject's versions, oldest first, each with
/// its version number) at `level`; empty when it may. Non-transitive levels look only at the
/// last of `earlier`. An error when the schemas are too complex to compare.
pub fn check(level: Level, new: &Schema, earlier: &[(i64, Schema)]) -> Result<Vec<String>, TooComplex> {
    let against: &[(i64, Schema)] = match earlier.last() {
        Some(last) if !level.transitive() => std::slice::from_ref(last),
        _ => earlier,
    };
    let mut problems = Vec::new();
    for (version, old) in against.iter().rev() {
        if level.backward() {
            for problem in Schema::read_problems(old, new)? {
                problems.push(format!(
                    "the new schema cannot read data written with version {version}: {problem}"
                ));
            }
        }
        if level.forward() {
            for problem in Schema::read_problems(new, old)? {
                problems.push(format!(
                    "version {version} cannot read data written with the new schema: {problem}"
                ));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> Schema {
        Schema::parse(SchemaType::Avro, text).unwrap()
    }

    fn check_ok(level: Level, new: &Schema, earlier: &[(i64, Schema)]) -> Vec<String> {
        check(level, new, earlier).unwrap()
    }

    #[test]
    fn normalization_drops_whitespace_and_orders_keys() {
        let a = avro(r#"{ "type": "record", "name": "R", "fields": [ {"name": "a", "type": "int"} ] }"#);
        let b = avro(r#"{"name":"R","fields":[{"type":"int","name":"a"}],"type":"record"}"#);
        assert_eq!(a.normalized, b.normalized);
        assert_eq!(a.normalized, r#"{"fields":[{"name":"a","type":"int"}],"name":"R","type":"record"}"#);
    }

    #[test]
    fn levels_check_the_right_directions_and_versions() {
        let v1 = avro(r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}"#);
        let v2 = avro(
            r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}]}"#,
        );
        // Adds a field without a default: old data cannot be read.
        let v3 = avro(
            r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]}"#,
        );
        let earlier = [(1, v1.clone()), (2, v2.clone())];
        assert!(check_ok(Level::Backward, &v3, &earlier).is_empty(), "v2 has b, so v3 reads v2's data");
        let problems = check_ok(Level::BackwardTransitive, &v3, &earlier);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("the new schema cannot read data written with version 1: at /fields/1")
        );
        // Drops field a that v1 needs without a default: v1 cannot read it.
        let v4 = avro(r#"{"type": "record", "name": "R", "fields": []}"#);
        assert!(check_ok(Level::Backward, &v4, &[(1, v1.clone())]).is_empty());
        let problems = check_ok(Level::Forward, &v4, &[(1, v1.clone())]);
        assert!(
            problems[0].starts_with("version 1 cannot read data written with the new schema"),
            "{problems:?}"
        );
        assert_eq!(check_ok(Level::Full, &v4, &[(1, v1.clone())]).len(), 1);
        assert!(check_ok(Level::None, &v4, &[(1, v1)]).is_empty());
    }

    #[test]
    fn json_nested_beyond_what_the_parser_takes_is_refused_plainly() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for schema_type in SchemaType::ALL {
            let message = Schema::parse(schema_type, &deep).unwrap_err();
            assert!(message.starts_with("the schema nests JSON more than 128 levels deep"), "{message}");
        }
    }

    #[test]
    fn levels_and_types_read_as_clients_send_them() {
        assert_eq!("full_transitive".parse::<Level>(), Ok(Level::FullTransitive));
        assert!("SIDEWAYS".parse::<Level>().unwrap_err().contains("Valid values are NONE, BACKWARD"));
        assert_eq!(SchemaType::from_request(None), Ok(SchemaType::Avro));
        assert_eq!(SchemaType::from_request(Some("JSON")), Ok(SchemaType::Json));
        assert!(SchemaType::from_request(Some("PROTOBUF")).unwrap_err().contains("only AVRO and JSON"));
    }
}
