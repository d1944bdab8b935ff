//! JSON Schema: validity and a conservative compatibility check.
//!
//! A JSON Schema is valid here when it is a JSON object or a boolean, and wherever a subschema
//! says `type`, it names JSON Schema types: one of `null`, `boolean`, `object`, `array`,
//! `number`, `string`, `integer`, or a non-empty array of them without repeats (as a validator
//! refuses `{"type": 5}`; other keywords are not checked further). Compatibility asks whether every document the writer's schema accepts is accepted
//! by the reader's; the check only answers "yes" when it can prove it with these rules, and
//! otherwise answers "no" with the reason (it never accepts what it cannot prove):
//!
//! 1. Equal schemas (as JSON values) are compatible.
//! 2. A reader of `true` or `{}` (annotations aside) accepts everything; a writer of `false`
//!    produces nothing.
//! 3. Annotations (`title`, `description`, `$schema`, `$id`, `$comment`, `default`,
//!    `examples`) are ignored. Any other keyword than `type`, `properties`, `required` and
//!    `additionalProperties` makes the pair unprovable (incompatible), unless rule 1 applies.
//! 4. Schemas without `properties`, `required` and `additionalProperties` are compared by
//!    `type`: every writer type must be a reader type (`integer` is read as `number`); a
//!    missing `type` means any type.
//! 5. Object schemas (`"type": "object"` in both): every property the reader requires, the
//!    writer requires; a property in both is compared recursively; a property only the reader
//!    describes must be one the writer cannot produce (writer `additionalProperties: false`)
//!    or one the writer's `additionalProperties` schema is compatible with; a property only
//!    the writer describes must be allowed by the reader's `additionalProperties` (absent or
//!    `true`, or a schema compatible with the writer's property); the writer's
//!    `additionalProperties` (absent means `true`) must be compatible with the reader's.

use serde_json::{Map, Value};

/// Keywords that do not constrain documents.
const ANNOTATIONS: &[&str] = &["title", "description", "$schema", "$id", "$comment", "default", "examples"];
/// Keywords the check understands.
const CHECKED: &[&str] = &["type", "properties", "required", "additionalProperties"];

/// The types a JSON Schema `type` may name.
const TYPE_NAMES: &[&str] = &["null", "boolean", "object", "array", "number", "string", "integer"];
/// Keywords whose value is a subschema.
const SUBSCHEMA: &[&str] = &[
    "additionalProperties",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "items",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
];
/// Keywords whose value is an array of subschemas.
const SUBSCHEMA_ARRAYS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];
/// Keywords whose value is an object of subschemas.
const SUBSCHEMA_MAPS: &[&str] =
    &["properties", "patternProperties", "definitions", "$defs", "dependentSchemas", "dependencies"];

/// Checks that `text` is a JSON Schema: a JSON object or boolean whose `type`s name types. The
/// error says where (a JSON pointer) and what is wrong.
pub fn parse(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
    match value {
        Value::Object(_) | Value::Bool(_) => {
            check_types_named(&value, "#")?;
            Ok(value)
        }
        other => Err(format!("a JSON Schema is a JSON object or a boolean, not {other}")),
    }
}

/// Checks every `type` in `schema` and its subschemas.
fn check_types_named(schema: &Value, path: &str) -> Result<(), String> {
    let Value::Object(object) = schema else { return Ok(()) };
    if object.contains_key("type") {
        type_names(object).map_err(|reason| format!("at {path}/type: {reason}"))?;
    }
    for (keyword, value) in object {
        let here = format!("{path}/{keyword}");
        if SUBSCHEMA.contains(&keyword.as_str()) {
            check_types_named(value, &here)?;
        }
        if SUBSCHEMA_ARRAYS.contains(&keyword.as_str())
            && let Value::Array(items) = value
        {
            for (index, item) in items.iter().enumerate() {
                check_types_named(item, &format!("{here}/{index}"))?;
            }
        }
        if SUBSCHEMA_MAPS.contains(&keyword.as_str())
            && let Value::Object(entries) = value
        {
            for (name, entry) in entries {
                check_types_named(entry, &format!("{here}/{name}"))?;
            }
        }
    }
    Ok(())
}

/// The names of `type` (`None`: no `type`, any type), or why `type` names no types.
fn type_names(schema: &Map<String, Value>) -> Result<Option<Vec<String>>, String> {
    let fix = format!("\"type\" is one of {} or a non-empty array of them", TYPE_NAMES.join(", "));
    let named = |value: &Value| match value.as_str() {
        Some(name) if TYPE_NAMES.contains(&name) => Ok(name.to_string()),
        _ => Err(format!("{value} is not a type; {fix}")),
    };
    match schema.get("type") {
        None => Ok(None),
        Some(Value::Array(names)) if names.is_empty() => Err(format!("an empty array names no type; {fix}")),
        Some(Value::Array(names)) => {
            let names = names.iter().map(named).collect::<Result<Vec<_>, _>>()?;
            match names.iter().enumerate().find(|(index, name)| names[..*index].contains(name)) {
                Some((_, twice)) => Err(format!("type \"{twice}\" appears twice")),
                None => Ok(Some(names)),
            }
        }
        Some(one) => Ok(Some(vec![named(one)?])),
    }
}

/// Every reason a document valid under `writer` might not be valid under `reader` (empty when
/// compatibility is proven).
pub fn incompatibilities(writer: &Value, reader: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check(writer, reader, "#", &mut problems);
    problems
}

fn constraints(schema: &Map<String, Value>) -> Map<String, Value> {
    schema
        .iter()
        .filter(|(key, _)| !ANNOTATIONS.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn accepts_everything(schema: &Value) -> bool {
    match schema {
        Value::Bool(accepts) => *accepts,
        Value::Object(object) => constraints(object).is_empty(),
        _ => false,
    }
}

/// The names of `type`, `None` for any type; only called once both schemas' `type`s are known
/// to be well-formed (see [`check`]).
fn types(schema: &Map<String, Value>) -> Option<Vec<String>> {
    type_names(schema).ok().flatten()
}

fn check(writer: &Value, reader: &Value, path: &str, problems: &mut Vec<String>) {
    if writer == reader || accepts_everything(reader) || *writer == Value::Bool(false) {
        return;
    }
    let (Value::Object(w), Value::Object(r)) = (writer, reader) else {
        problems.push(format!(
            "at {path}: the reader's schema {reader} rejects documents the writer's {writer} accepts"
        ));
        return;
    };
    let (w, r) = (constraints(w), constraints(r));
    for (schema, whose) in [(&w, "writer"), (&r, "reader")] {
        if let Some(keyword) = schema.keys().find(|key| !CHECKED.contains(&key.as_str())) {
            problems.push(format!(
                "at {path}: the {whose}'s schema uses \"{keyword}\", which the compatibility check does not compare (it compares only type, properties, required and additionalProperties), so compatibility cannot be proven"
            ));
            return;
        }
    }
    // Stored schemas were checked when registered; this keeps a malformed `type` (which would
    // name no types, and so seem to pass every comparison) from ever being taken as proof.
    for (schema, whose) in [(&w, "writer"), (&r, "reader")] {
        if let Err(reason) = type_names(schema) {
            problems.push(format!(
                "at {path}/type: the {whose}'s \"type\" is malformed ({reason}), so compatibility cannot be proven"
            ));
            return;
        }
    }
    let is_object = |schema: &Map<String, Value>| types(schema).is_some_and(|t| t == ["object"]);
    let structural = |schema: &Map<String, Value>| {
        schema.contains_key("properties")
            || schema.contains_key("required")
            || schema.contains_key("additionalProperties")
    };
    if !structural(&w) && !structural(&r) {
        check_types(&w, &r, path, problems);
    } else if is_object(&w) && is_object(&r) {
        check_objects(&w, &r, path, problems);
    } else {
        problems.push(format!(
            "at {path}: properties, required and additionalProperties are compared only when both schemas say \"type\": \"object\""
        ));
    }
}

fn check_types(
    writer: &Map<String, Value>,
    reader: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let Some(reader_types) = types(reader) else { return };
    let Some(writer_types) = types(writer) else {
        problems.push(format!("at {path}: the writer allows any type but the reader only {reader_types:?}"));
        return;
    };
    for written in writer_types {
        let read = reader_types.contains(&written)
            || (written == "integer" && reader_types.iter().any(|t| t == "number"));
        if !read {
            problems.push(format!(
                "at {path}: the writer allows type \"{written}\" but the reader only {reader_types:?}"
            ));
        }
    }
}

fn object_map(schema: &Map<String, Value>, keyword: &str) -> Map<String, Value> {
    schema.get(keyword).and_then(Value::as_object).cloned().unwrap_or_default()
}

fn required(schema: &Map<String, Value>) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn check_objects(
    writer: &Map<String, Value>,
    reader: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let (writer_properties, reader_properties) =
        (object_map(writer, "properties"), object_map(reader, "properties"));
    let writer_required = required(writer);
    for name in required(reader) {
        if !writer_required.contains(&name) {
            problems.push(format!(
                "at {path}: property \"{name}\" is required by the reader but not by the writer, so documents without it would be rejected"
            ));
        }
    }
    let writer_additional = writer.get("additionalProperties").cloned().unwrap_or(Value::Bool(true));
    let reader_additional = reader.get("additionalProperties").cloned().unwrap_or(Value::Bool(true));
    for (name, reader_property) in &reader_properties {
        let property_path = format!("{path}/properties/{name}");
        match writer_properties.get(name) {
            Some(writer_property) => check(writer_property, reader_property, &property_path, problems),
            None => check(&writer_additional, reader_property, &property_path, problems),
        }
    }
    for (name, writer_property) in &writer_properties {
        if !reader_properties.contains_key(name) {
            let property_path = format!("{path}/properties/{name}");
            if reader_additional == Value::Bool(false) {
                problems.push(format!(
                    "at {property_path}: the writer allows property \"{name}\" but the reader does not (additionalProperties: false)"
                ));
            } else {
                check(writer_property, &reader_additional, &property_path, problems);
            }
        }
    }
    check(&writer_additional, &reader_additional, &format!("{path}/additionalProperties"), problems);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_objects_and_booleans_are_schemas() {
        assert!(parse("{}").is_ok());
        assert!(parse("true").is_ok());
        assert!(parse("[1]").unwrap_err().contains("a JSON object or a boolean"));
        assert!(parse("{").unwrap_err().contains("not JSON"));
        assert!(parse(r#"{"type": ["string", "null"], "properties": {"a": {"type": "integer"}}}"#).is_ok());
    }

    #[test]
    fn a_type_that_names_no_types_is_refused_with_where() {
        for (schema, expected) in [
            (r#"{"type": 5}"#, "at #/type: 5 is not a type; \"type\" is one of null, boolean"),
            (r#"{"type": []}"#, "at #/type: an empty array names no type"),
            (r#"{"type": "strng"}"#, "at #/type: \"strng\" is not a type"),
            (r#"{"type": ["string", 1]}"#, "at #/type: 1 is not a type"),
            (r#"{"type": ["string", "string"]}"#, "type \"string\" appears twice"),
            (
                r#"{"type": "object", "properties": {"a": {"type": {"x": 1}}}}"#,
                "at #/properties/a/type: {\"x\":1} is not a type",
            ),
            (r#"{"items": [{"type": "string"}, {"type": null}]}"#, "at #/items/1/type: null is not a type"),
            (r#"{"anyOf": [{"not": {"type": false}}]}"#, "at #/anyOf/0/not/type"),
        ] {
            let message = parse(schema).unwrap_err();
            assert!(message.contains(expected), "{schema}: {message}");
        }
        // Were one stored before this check, it proves nothing: writer {"type": 5} once read as
        // "no types", compatible with every reader.
        let found = incompatibilities(&json!({"type": 5}), &json!({"type": "string"}));
        assert!(found[0].contains("the writer's \"type\" is malformed"), "{found:?}");
        let found = incompatibilities(&json!({"type": "string"}), &json!({"type": []}));
        assert!(found[0].contains("the reader's \"type\" is malformed"), "{found:?}");
    }

    /// (writer, reader, compatible).
    #[test]
    fn the_rules_as_a_table() {
        let person =
            json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        let table = [
            (person.clone(), person.clone(), true),
            (person.clone(), json!({}), true),
            (person.clone(), json!(true), true),
            (json!(false), person.clone(), true),
            (json!({"type": "integer"}), json!({"type": "number"}), true),
            (json!({"type": "number"}), json!({"type": "integer"}), false),
            (json!({"type": "string"}), json!({"type": ["string", "null"]}), true),
            (json!({}), json!({"type": "string"}), false),
            // A new optional property: readers without additionalProperties false accept it.
            (
                person.clone(),
                json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name"]}),
                false, // the writer's open content could carry "age" of any type
            ),
            (
                json!({"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": false}),
                json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}),
                true,
            ),
            // A new required property is not readable from old data.
            (
                json!({"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": false}),
                json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["age"]}),
                false,
            ),
            // A removed property under a closed reader is refused; under an open reader, fine.
            (
                person.clone(),
                json!({"type": "object", "properties": {}, "additionalProperties": false}),
                false,
            ),
            (person.clone(), json!({"type": "object", "properties": {}}), true),
            // A changed property type.
            (person.clone(), json!({"type": "object", "properties": {"name": {"type": "integer"}}}), false),
            // Keywords the check does not understand make it refuse.
            (json!({"type": "string", "maxLength": 3}), json!({"type": "string"}), false),
            (json!({"type": "string", "maxLength": 3}), json!({"type": "string", "maxLength": 3}), true),
            // Annotations do not matter.
            (json!({"type": "string", "title": "a"}), json!({"type": "string", "description": "b"}), true),
        ];
        for (writer, reader, compatible) in table {
            let found = incompatibilities(&writer, &reader);
            assert_eq!(found.is_empty(), compatible, "writer {writer} / reader {reader}: {found:?}");
        }
    }

    #[test]
    fn reasons_say_where_and_why() {
        let found = incompatibilities(
            &json!({"type": "object", "properties": {"name": {"type": "string"}}}),
            &json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        );
        assert_eq!(
            found,
            [
                "at #: property \"name\" is required by the reader but not by the writer, so documents without it would be rejected"
            ]
        );
        let found = incompatibilities(&json!({"type": "string", "pattern": "a"}), &json!({"type": "string"}));
        assert!(found[0].contains("uses \"pattern\""), "{found:?}");
    }
}
