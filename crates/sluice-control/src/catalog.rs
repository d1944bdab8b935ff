//! The datasets a pipeline reads and writes, named from its connectors' options, and the rules
//! deciding whether a team may use them: pure code over facts, so it is tested without a store.
//!
//! A dataset is `<system>:<name>`: `kafka:orders`, `postgres:public.payments`,
//! `nats:ORDERS`, `mqtt:plant/+/temp`, `file:/data/in` or `file:s3://bucket/prefix`,
//! `http:https://api.example.com/v1/events`, `redis:user:{user_id}` (a key template names its
//! keyspace; a stream sink, its stream). Generators and debugging sinks read and write no
//! dataset, and neither do files at relative paths (those live in the pipeline's own folder).

use serde::Serialize;
use serde_json::Value;
use sluice_spec::Pipeline;

/// Whether a pipeline reads or writes a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Use {
    /// A source or a lookup table.
    Read,
    /// A sink.
    Write,
}

impl Use {
    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Use::Read => "read",
            Use::Write => "write",
        }
    }

    /// Parses `read` or `write`.
    pub fn parse(text: &str) -> Option<Use> {
        [Use::Read, Use::Write].into_iter().find(|u| u.name() == text)
    }
}

/// One dataset a pipeline uses, and where in the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetUse {
    /// The dataset's name.
    pub dataset: String,
    /// Read or write.
    pub using: Use,
    /// The spec path of the node, e.g. `sources[0]`.
    pub path: String,
}

/// What the catalog knows of a dataset, as far as the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The team that owns it.
    pub owner: String,
    /// `pii` datasets need an explicit read grant.
    pub classification: String,
    /// Teams granted reading.
    pub readers: Vec<String>,
    /// Teams granted writing.
    pub writers: Vec<String>,
}

/// Classification whose reading needs an explicit grant.
pub const PII: &str = "pii";

/// Every dataset `spec` reads or writes, in spec order.
pub fn uses(spec: &Pipeline) -> Vec<DatasetUse> {
    let mut found = Vec::new();
    let mut add = |names: Vec<String>, using, path: String| {
        for dataset in names {
            found.push(DatasetUse { dataset, using, path: path.clone() });
        }
    };
    for (i, source) in spec.sources.iter().enumerate() {
        add(names(&source.connector, &source.options, Use::Read), Use::Read, format!("sources[{i}]"));
    }
    for (i, lookup) in spec.lookups.iter().enumerate() {
        add(names(&lookup.connector, &lookup.options, Use::Read), Use::Read, format!("lookups[{i}]"));
    }
    for (i, sink) in spec.sinks.iter().enumerate() {
        add(names(&sink.connector, &sink.options, Use::Write), Use::Write, format!("sinks[{i}]"));
    }
    found
}

fn names(connector: &str, options: &Value, using: Use) -> Vec<String> {
    let text = |key: &str| options.get(key).and_then(Value::as_str).map(str::to_string);
    let list = |key: &str| {
        options
            .get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(str::to_string).collect::<Vec<String>>())
            .unwrap_or_default()
    };
    let (system, mut names): (&str, Vec<String>) = match connector {
        "kafka" => (
            "kafka",
            [
                text("topic").into_iter().collect(),
                list("topics"),
                text("topic_pattern").map(|p| format!("~{p}")).into_iter().collect(),
            ]
            .concat(),
        ),
        "nats" if using == Use::Read && text("stream").is_some() => {
            ("nats", text("stream").into_iter().collect())
        }
        "nats" => ("nats", [text("subject").into_iter().collect(), list("subjects")].concat()),
        "mqtt" => ("mqtt", [text("topic").into_iter().collect(), list("topics")].concat()),
        "postgres" => ("postgres", text("table").into_iter().collect()),
        "redis" if text("mode").as_deref() == Some("stream") => {
            ("redis", text("stream").into_iter().collect())
        }
        "redis" => ("redis", text("key").into_iter().collect()),
        "http" => (
            "http",
            text("url")
                .map(|url| url.split('?').next().unwrap_or_default().to_string())
                .into_iter()
                .collect(),
        ),
        "file" => (
            "file",
            text("path").filter(|path| path.starts_with('/') || path.contains("://")).into_iter().collect(),
        ),
        _ => ("", Vec::new()),
    };
    names.retain(|name| !name.is_empty());
    names.into_iter().map(|name| format!("{system}:{name}")).collect()
}

/// Why `team` may not make `using` of a dataset it does not own, or `None` when it may. Reading
/// is open unless the dataset is `pii`; writing needs ownership or a grant.
pub fn denied(team: &str, using: Use, known: &Known) -> Option<String> {
    if known.owner == team {
        return None;
    }
    let granted = match using {
        Use::Read => known.classification != PII || known.readers.iter().any(|t| t == team),
        Use::Write => known.writers.iter().any(|t| t == team),
    };
    if granted {
        return None;
    }
    Some(match using {
        Use::Read => format!(
            "team \"{team}\" may not read this {PII} dataset of team \"{}\": ask its admins for a read grant",
            known.owner
        ),
        Use::Write => format!(
            "team \"{team}\" may not write to this dataset of team \"{}\": ask its admins for a write grant",
            known.owner
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_are_named_from_connector_options() {
        let spec = sluice_spec::parse(
            "name: p
sources:
  - {name: a, connector: kafka, options: {brokers: b, topics: [orders, refunds]}, schema: [{name: x, type: int64}]}
  - {name: b, connector: datagen, options: {count: 1}, schema: [{name: x, type: int64}]}
  - {name: c, connector: file, options: {path: /data/in, format: jsonl}, schema: [{name: x, type: int64}]}
  - {name: d, connector: file, options: {path: in, format: jsonl}, schema: [{name: x, type: int64}]}
sinks:
  - {name: e, connector: postgres, inputs: [a], options: {url: 'postgres://h/db', table: public.payments}}
  - {name: f, connector: http, inputs: [b], options: {url: 'https://api.example.com/v1/events?key=1'}}
  - {name: g, connector: stdout, inputs: [c]}
  - {name: h, connector: kafka, inputs: [d], options: {brokers: b, topic: large}}
  - {name: i, connector: redis, inputs: [a], options: {url: 'redis://h', mode: hash, key: 'user:{x}'}}
  - {name: j, connector: redis, inputs: [a], options: {url: 'redis://h', mode: stream, stream: clicks}}
lookups:
  - {name: k, connector: redis, options: {url: 'redis://h', key: 'profile:{x}'}, schema: [{name: x, type: int64}]}
",
        )
        .unwrap();
        let found: Vec<(String, Use, String)> =
            uses(&spec).into_iter().map(|u| (u.dataset, u.using, u.path)).collect();
        let expected = [
            ("kafka:orders", Use::Read, "sources[0]"),
            ("kafka:refunds", Use::Read, "sources[0]"),
            ("file:/data/in", Use::Read, "sources[2]"),
            ("redis:profile:{x}", Use::Read, "lookups[0]"),
            ("postgres:public.payments", Use::Write, "sinks[0]"),
            ("http:https://api.example.com/v1/events", Use::Write, "sinks[1]"),
            ("kafka:large", Use::Write, "sinks[3]"),
            ("redis:user:{x}", Use::Write, "sinks[4]"),
            ("redis:clicks", Use::Write, "sinks[5]"),
        ];
        let expected: Vec<(String, Use, String)> =
            expected.iter().map(|(d, u, p)| (d.to_string(), *u, p.to_string())).collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn reading_is_open_except_pii_and_writing_needs_a_grant() {
        let mut known = Known {
            owner: "payments".into(),
            classification: String::new(),
            readers: vec![],
            writers: vec![],
        };
        assert_eq!(denied("payments", Use::Write, &known), None);
        assert_eq!(denied("risk", Use::Read, &known), None);
        assert!(denied("risk", Use::Write, &known).unwrap().contains("write grant"));
        known.classification = PII.into();
        assert!(denied("risk", Use::Read, &known).unwrap().contains("read grant"));
        assert_eq!(denied("payments", Use::Read, &known), None);
        known.readers.push("risk".into());
        known.writers.push("fraud".into());
        assert_eq!(denied("risk", Use::Read, &known), None);
        assert!(denied("risk", Use::Write, &known).is_some(), "a read grant is not a write grant");
        assert_eq!(denied("fraud", Use::Write, &known), None);
        assert!(denied("fraud", Use::Read, &known).is_some(), "a write grant is not a read grant");
    }
}
