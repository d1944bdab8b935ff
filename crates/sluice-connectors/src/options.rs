//! Option checking shared by all connectors: every unknown key and every wrongly typed value is
//! reported at once, each at its own path, before the options struct is built.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sluice_spec::Diagnostic;

/// Checks `value` (an options map at `path`) against `known` keys and deserializes it into `T`.
///
/// `T` must accept every key on its own (all fields optional from serde's point of view), so
/// each key can be type-checked separately and all errors reported together. Required options
/// are checked by the caller after this succeeds.
pub(crate) fn parse<T: DeserializeOwned>(
    value: &Value,
    known: &[&str],
    path: &str,
) -> Result<T, Vec<Diagnostic>> {
    let empty = Map::new();
    let map = match value {
        Value::Null => &empty,
        Value::Object(map) => map,
        other => {
            return Err(vec![Diagnostic::new(
                path,
                format!("expected a map of options, found {}", describe(other)),
            )]);
        }
    };
    let mut diagnostics = Vec::new();
    for (key, item) in map {
        let key_path = join(path, key);
        if !known.contains(&key.as_str()) {
            diagnostics.push(
                Diagnostic::new(key_path, format!("unknown option \"{key}\""))
                    .suggest_closest(key, known.iter().copied()),
            );
            continue;
        }
        let single = Value::Object(Map::from_iter([(key.clone(), item.clone())]));
        if let Err(error) = serde_json::from_value::<T>(single) {
            diagnostics.push(Diagnostic::new(key_path, serde_message(&error)));
        }
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    serde_json::from_value::<T>(Value::Object(map.clone()))
        .map_err(|error| vec![Diagnostic::new(path, serde_message(&error))])
}

/// `prefix.key`, or `key` for an empty prefix.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// A connection URL given as `url`, or as `url_env` naming an environment variable that holds it
/// (a secret): its text and the option path it came from. `what` names it in messages (e.g.
/// `database URL`); `example` is a URL without a password, `example_with_password` one with.
pub(crate) fn url_or_env(
    url: Option<&str>,
    url_env: Option<&str>,
    what: &str,
    example: &str,
    example_with_password: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(String, &'static str)> {
    match (url, url_env) {
        (Some(_), Some(_)) => {
            diagnostics.push(Diagnostic::new("options.url_env", "give either `url` or `url_env`, not both"));
            None
        }
        (Some(url), None) => Some((url.to_owned(), "options.url")),
        (None, Some(name)) => match std::env::var(name) {
            Ok(url) => Some((url, "options.url_env")),
            Err(_) => {
                diagnostics.push(
                    Diagnostic::new("options.url_env", format!("environment variable \"{name}\" is not set"))
                        .suggest(format!("export it with the {what}, e.g. {example_with_password}"))
                        .missing_variable(name),
                );
                None
            }
        },
        (None, None) => {
            diagnostics.push(Diagnostic::new("options.url", "missing required option \"url\"").suggest(
                format!("give `url: {example}`, or `url_env` naming an environment variable that holds it"),
            ));
            None
        }
    }
}

/// A diagnostic for an option the connector cannot do without.
pub(crate) fn missing(path: &str, key: &str) -> Diagnostic {
    Diagnostic::new(join(path, key), format!("missing required option \"{key}\""))
}

/// serde's message without serde_json's ` at line 1 column 2` tail, which means nothing here.
fn serde_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// A JSON value's kind, for messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        rate: Option<u64>,
        name: Option<String>,
    }

    #[test]
    fn reports_every_problem_at_its_path() {
        let errors =
            parse::<Example>(&json!({"rat": 1, "name": 3, "rate": "x"}), &["rate", "name"], "options")
                .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "options.name: invalid type: integer `3`, expected a string",
                "options.rat: unknown option \"rat\"; did you mean \"rate\"?",
                "options.rate: invalid type: string \"x\", expected u64",
            ]
        );
    }

    #[test]
    fn accepts_null_as_no_options() {
        let parsed = parse::<Example>(&Value::Null, &["rate", "name"], "options").unwrap();
        assert!(parsed.rate.is_none() && parsed.name.is_none());
    }
}
