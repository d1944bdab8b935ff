//! Connections: reusable connector profiles (a Kafka cluster, a database, an HTTP endpoint) that
//! nodes name with `connection: NAME` instead of repeating the connector and its options.
//!
//! The control plane keeps a team's connections and resolves a spec with [`resolve_connections`]
//! before checking or running it: each node that names a connection gets the connection's
//! connector, and its own `options` laid over the connection's (maps merge key by key, the
//! node's value wins). A spec with `connection` keys left in it is not runnable on its own;
//! the parser says so.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use serde_yaml::{Mapping, Value};

use crate::{Diagnostic, closest};

/// A connection as resolution needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// The connector every node using it gets, e.g. `kafka`.
    pub connector: String,
    /// Options shared by every node using it, a JSON object.
    pub options: Map<String, Json>,
}

/// The sections whose entries (or, for `dead_letter`, whose mapping) may name a connection.
const NODE_SECTIONS: &[&str] = &["sources", "sinks", "lookups"];

/// The spec path and connection name of every `connection` key in `yaml`, in document order.
/// Unreadable YAML names none (parsing reports it).
pub fn connections_used(yaml: &str) -> Vec<(String, String)> {
    let Some(document) = document(yaml) else { return Vec::new() };
    node_maps(&document)
        .into_iter()
        .filter_map(|(path, map)| {
            let name = map.get("connection")?.as_str()?;
            Some((path, name.to_owned()))
        })
        .collect()
}

/// `yaml` with every `connection: NAME` replaced by the connection's connector and options
/// from `connections`. A spec that names no connection is returned unchanged (same text);
/// otherwise the result is the resolved document re-written as YAML (comments are not kept).
///
/// Every unknown connection, every `connection` that is not a string and every node whose
/// `connector` contradicts its connection is reported, at its path.
pub fn resolve_connections(
    yaml: &str,
    connections: &BTreeMap<String, Connection>,
) -> Result<String, Vec<Diagnostic>> {
    let Some(mut document) = document(yaml) else { return Ok(yaml.to_owned()) };
    if node_maps(&document).iter().all(|(_, map)| !map.contains_key("connection")) {
        return Ok(yaml.to_owned());
    }
    let mut diagnostics = Vec::new();
    for (path, map) in node_maps_mut(&mut document) {
        let Some(value) = map.remove("connection") else { continue };
        let at = format!("{path}.connection");
        let Some(name) = value.as_str() else {
            diagnostics.push(Diagnostic::new(at, "expected the name of a connection (a string)"));
            continue;
        };
        let Some(connection) = connections.get(name) else {
            let message = if connections.is_empty() {
                format!("unknown connection \"{name}\"; the team has no connections yet")
            } else {
                format!("unknown connection \"{name}\"")
            };
            let diagnostic = Diagnostic::new(at, message);
            diagnostics.push(match closest(name, connections.keys().map(String::as_str)) {
                Some(best) => diagnostic.suggest(format!("did you mean \"{best}\"?")),
                None => diagnostic.suggest(format!(
                    "create it first (POST /api/v1/teams/<team>/connections), or write `connector` and \
                     `options` here; known connections: {}",
                    list(connections.keys())
                )),
            });
            continue;
        };
        match map.get("connector").and_then(Value::as_str) {
            Some(own) if own != connection.connector => {
                diagnostics.push(
                    Diagnostic::new(
                        format!("{path}.connector"),
                        format!(
                            "connector \"{own}\" contradicts connection \"{name}\", which is a \"{}\" connection",
                            connection.connector
                        ),
                    )
                    .suggest("remove `connector`: the connection sets it"),
                );
                continue;
            }
            _ => {}
        }
        map.insert(Value::from("connector"), Value::from(connection.connector.clone()));
        let own = map.remove("options").unwrap_or(Value::Null);
        let own = match own {
            Value::Null => Json::Object(Map::new()),
            Value::Mapping(_) => match serde_json::to_value(&own) {
                Ok(json) => json,
                Err(error) => {
                    diagnostics.push(Diagnostic::new(
                        format!("{path}.options"),
                        format!("options cannot be read as JSON: {error}"),
                    ));
                    continue;
                }
            },
            // Leave a wrongly typed `options` for the parser to report in its usual words.
            other => {
                map.insert(Value::from("options"), other);
                continue;
            }
        };
        let mut merged = Json::Object(connection.options.clone());
        overlay(&mut merged, own);
        match serde_yaml::to_value(&merged) {
            Ok(options) => {
                map.insert(Value::from("options"), options);
            }
            Err(error) => diagnostics.push(Diagnostic::new(
                format!("{path}.options"),
                format!("the merged options cannot be written as YAML: {error}"),
            )),
        }
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    serde_yaml::to_string(&document)
        .map_err(|error| vec![Diagnostic::new("", format!("the resolved spec cannot be written: {error}"))])
}

/// Lays `top` over `base`: maps merge key by key (recursively), anything else replaces.
fn overlay(base: &mut Json, top: Json) {
    match (base, top) {
        (Json::Object(base), Json::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(existing) => overlay(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, top) => *base = top,
    }
}

fn document(yaml: &str) -> Option<Value> {
    let mut document: Value = serde_yaml::from_str(yaml).ok()?;
    document.apply_merge().ok()?;
    Some(document)
}

/// Each node mapping that may name a connection, with its spec path.
fn node_maps(document: &Value) -> Vec<(String, &Mapping)> {
    let mut maps = Vec::new();
    for section in NODE_SECTIONS {
        if let Some(items) = document.get(section).and_then(Value::as_sequence) {
            for (index, item) in items.iter().enumerate() {
                if let Some(map) = item.as_mapping() {
                    maps.push((format!("{section}[{index}]"), map));
                }
            }
        }
    }
    if let Some(map) = document.get("dead_letter").and_then(Value::as_mapping) {
        maps.push(("dead_letter".to_owned(), map));
    }
    maps
}

fn node_maps_mut(document: &mut Value) -> Vec<(String, &mut Mapping)> {
    let Some(top) = document.as_mapping_mut() else { return Vec::new() };
    let mut maps = Vec::new();
    for (key, value) in top.iter_mut() {
        let Some(key) = key.as_str() else { continue };
        if key == "dead_letter" {
            if let Some(map) = value.as_mapping_mut() {
                maps.push(("dead_letter".to_owned(), map));
            }
        } else if NODE_SECTIONS.contains(&key)
            && let Some(items) = value.as_sequence_mut()
        {
            for (index, item) in items.iter_mut().enumerate() {
                if let Some(map) = item.as_mapping_mut() {
                    maps.push((format!("{key}[{index}]"), map));
                }
            }
        }
    }
    maps
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kafka() -> BTreeMap<String, Connection> {
        let options = json!({"brokers": "10.0.0.1:9092", "properties": {"security.protocol": "SASL_SSL"}});
        let Json::Object(options) = options else { unreachable!() };
        BTreeMap::from([("prod-kafka".to_owned(), Connection { connector: "kafka".into(), options })])
    }

    #[test]
    fn a_spec_without_connections_is_returned_as_written() {
        let yaml = "# mine\nname: p\nsources: [{name: a, connector: nexmark}]\n";
        assert_eq!(resolve_connections(yaml, &kafka()).unwrap(), yaml);
        assert!(connections_used(yaml).is_empty());
    }

    #[test]
    fn node_options_are_laid_over_the_connection() {
        let yaml = "name: p
sources:
  - name: orders
    connection: prod-kafka
    options: {topic: orders, properties: {fetch.min.bytes: '1'}}
sinks:
  - {name: out, connection: prod-kafka, connector: kafka, inputs: [orders], options: {topic: out, brokers: 'b:1'}}
";
        assert_eq!(
            connections_used(yaml),
            vec![
                ("sources[0]".to_owned(), "prod-kafka".to_owned()),
                ("sinks[0]".into(), "prod-kafka".into())
            ]
        );
        let resolved: Value = serde_yaml::from_str(&resolve_connections(yaml, &kafka()).unwrap()).unwrap();
        let source = &resolved["sources"][0];
        assert_eq!(source.get("connection"), None);
        assert_eq!(source["connector"], Value::from("kafka"));
        let options: Json = serde_json::to_value(&source["options"]).unwrap();
        assert_eq!(
            options,
            json!({"brokers": "10.0.0.1:9092", "topic": "orders",
                   "properties": {"security.protocol": "SASL_SSL", "fetch.min.bytes": "1"}})
        );
        let sink: Json = serde_json::to_value(&resolved["sinks"][0]["options"]).unwrap();
        assert_eq!(sink["brokers"], json!("b:1"), "the node's own value wins");
    }

    #[test]
    fn dead_letters_and_lookups_may_name_connections() {
        let yaml = "name: p
dead_letter: {connection: prod-kafka, options: {topic: dlq}}
lookups: [{name: t, connection: prod-kafka}]
sources: []
";
        let resolved: Value = serde_yaml::from_str(&resolve_connections(yaml, &kafka()).unwrap()).unwrap();
        assert_eq!(resolved["dead_letter"]["connector"], Value::from("kafka"));
        assert_eq!(resolved["dead_letter"]["options"]["topic"], Value::from("dlq"));
        assert_eq!(resolved["lookups"][0]["options"]["brokers"], Value::from("10.0.0.1:9092"));
    }

    #[test]
    fn every_bad_reference_is_reported_at_its_path() {
        let yaml = "name: p
sources:
  - {name: a, connection: prod-kafak}
  - {name: b, connection: 7}
sinks:
  - {name: c, connection: prod-kafka, connector: postgres, inputs: [a]}
";
        let diagnostics = resolve_connections(yaml, &kafka()).unwrap_err();
        let found: Vec<(&str, &str, Option<&str>)> = diagnostics
            .iter()
            .map(|d| (d.path.as_str(), d.message.as_str(), d.suggestion.as_deref()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "sources[0].connection",
                    "unknown connection \"prod-kafak\"",
                    Some("did you mean \"prod-kafka\"?")
                ),
                ("sources[1].connection", "expected the name of a connection (a string)", None),
                (
                    "sinks[0].connector",
                    "connector \"postgres\" contradicts connection \"prod-kafka\", which is a \"kafka\" connection",
                    Some("remove `connector`: the connection sets it"),
                ),
            ]
        );
        let none = resolve_connections(yaml, &BTreeMap::new()).unwrap_err();
        assert_eq!(none[0].message, "unknown connection \"prod-kafak\"; the team has no connections yet");
        assert!(none[0].suggestion.as_deref().unwrap().ends_with("known connections: none"));
    }
}
