//! Reading a spec: YAML text → [`serde_yaml::Value`] → the spec types, walking the value by hand
//! so that every problem is reported, in document order, instead of only the first.
//!
//! Each reader method reports what is wrong with its part and returns what it could read; a
//! node is built only if reading it reported nothing. Optional keys set to `null` (`key:` with
//! no value) count as absent.

use serde_yaml::{Mapping, Value};

use crate::graph;
use crate::model::{DEFAULT_EPOCH_MS, EPOCH_MS_RANGE};
use crate::{
    CheckpointSpec, DEFAULT_CHECKPOINT_INTERVAL_MS, DEFAULT_CHECKPOINTS_RETAINED, DataType,
    DeadLetterSinkSpec, DeadLetterSpec, Diagnostic, FieldSpec, InputRef, LookupSpec,
    MIN_CHECKPOINT_INTERVAL_MS, NodeKind, OnErrorSpec, Pipeline, ProcessorSpec, SinkSpec, SourceSpec,
    StateBackendKind, StateSpec, WatermarkSpec, parse_duration, parse_watermark_sql,
};

const PIPELINE_KEYS: &[&str] = &[
    "name",
    "description",
    "epoch_ms",
    "dead_letter",
    "checkpoints",
    "state",
    "sources",
    "processors",
    "sinks",
    "lookups",
];
const CHECKPOINT_KEYS: &[&str] = &["interval", "location", "retain", "endpoint", "region"];
const STATE_KEYS: &[&str] = &["backend", "path"];
const WATERMARK_KEYS: &[&str] = &["column", "max_out_of_orderness", "idle_timeout"];
const LOOKUP_KEYS: &[&str] = &["name", "connector", "connection", "options", "schema"];
const DEAD_LETTER_KEYS: &[&str] = &["path", "connector", "connection", "options"];
const SOURCE_KEYS: &[&str] =
    &["name", "connector", "connection", "options", "schema", "infer_schema", "on_error", "watermark"];
const FIELD_KEYS: &[&str] = &["name", "type", "nullable"];
const PROCESSOR_KEYS: &[&str] = &["name", "inputs", "sql", "key_by", "allowed_lateness", "state_ttl"];
const SINK_KEYS: &[&str] = &["name", "connector", "connection", "inputs", "options"];

/// Parses a pipeline spec and checks its structure: known keys, value types, names, and that
/// inputs name existing nodes without cycles. Connector options and SQL are checked elsewhere.
///
/// On failure, returns every problem found, in document order: each mapping's problems in the
/// order of its keys, followed by the required keys it lacks; the top level's missing keys come
/// after all nodes, and cycles among processors come last. A YAML syntax error is reported
/// alone, with an empty path and the line and column of the error.
pub fn parse(yaml: &str) -> Result<Pipeline, Vec<Diagnostic>> {
    match parse_partial(yaml) {
        (Some(pipeline), diagnostics) if diagnostics.is_empty() => Ok(pipeline),
        (_, diagnostics) if !diagnostics.is_empty() => Err(diagnostics),
        _ => Err(vec![Diagnostic::new("", "internal error: the spec was rejected without a reason")]),
    }
}

/// Like [`parse`], but also returns the part of the pipeline that could be read despite the
/// problems: nodes with a problem of their own are left out, the rest are kept. Validation uses
/// it to check connectors and SQL of the sound nodes in the same pass, so every problem is
/// reported at once. A pipeline returned with diagnostics must not be run.
pub fn parse_partial(yaml: &str) -> (Option<Pipeline>, Vec<Diagnostic>) {
    let mut document: Value = match serde_yaml::from_str(yaml) {
        Ok(document) => document,
        Err(error) => return (None, vec![syntax_error(&error)]),
    };
    // `<<: *defaults` merge keys, so shared node settings can be written once.
    if let Err(error) = document.apply_merge() {
        return (None, vec![syntax_error(&error)]);
    }
    let mut reader = Reader::new(&document);
    let pipeline = reader.pipeline(&document);
    reader.cycles();
    (pipeline, reader.diagnostics)
}

fn syntax_error(error: &serde_yaml::Error) -> Diagnostic {
    let mut message = error.to_string();
    let Some(location) = error.location() else {
        return Diagnostic::new("", format!("invalid YAML: {message}"));
    };
    // The location is reported separately; drop its first mention from the message.
    let mention = format!(" at line {} column {}", location.line(), location.column());
    if let Some(start) = message.find(&mention) {
        message.replace_range(start..start + mention.len(), "");
    }
    Diagnostic::new("", format!("invalid YAML: {message}")).at(location.line(), location.column())
}

/// A node name as written, before anything else is checked: for duplicates and references.
struct NamedNode<'v> {
    name: &'v str,
    kind: NodeKind,
    path: String,
}

struct Reader<'v> {
    diagnostics: Vec<Diagnostic>,
    /// Every node with a string name, in document order.
    nodes: Vec<NamedNode<'v>>,
    /// Every processor as far as it could be read, for cycle detection.
    processors: Vec<ProcessorEdges>,
}

/// A processor's name and input node names ("" where unreadable), by position in the spec.
struct ProcessorEdges {
    name: String,
    inputs: Vec<String>,
}

impl<'v> Reader<'v> {
    fn new(document: &'v Value) -> Self {
        Self { diagnostics: Vec::new(), nodes: named_nodes(document), processors: Vec::new() }
    }

    fn report(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn pipeline(&mut self, document: &'v Value) -> Option<Pipeline> {
        let map = match document {
            Value::Mapping(map) => map,
            Value::Null => {
                self.report(Diagnostic::new(
                    "",
                    "the spec is empty; a pipeline needs a name, sources and sinks",
                ));
                return None;
            }
            other => {
                self.type_error("", "a mapping with name, sources and sinks", other);
                return None;
            }
        };
        let before = self.diagnostics.len();
        let (mut name, mut description, mut epoch_ms, mut dead_letter) = (None, None, None, None);
        let (mut sources, mut processors, mut sinks) = (Vec::new(), Vec::new(), Vec::new());
        let (mut lookups, mut checkpoints, mut state) = (Vec::new(), None, None);
        for (key, value) in map {
            let Some(key) = self.known_key("", key, PIPELINE_KEYS) else {
                continue;
            };
            match key {
                "name" => name = self.pipeline_name(value),
                "description" if !value.is_null() => {
                    description = self.string("description", value).map(str::to_owned);
                }
                "epoch_ms" if !value.is_null() => epoch_ms = self.epoch_ms(value),
                "dead_letter" if !value.is_null() => dead_letter = self.dead_letter(value),
                "sources" => sources = self.nodes(NodeKind::Source, value, Self::source),
                "processors" => processors = self.nodes(NodeKind::Processor, value, Self::processor),
                "sinks" => sinks = self.nodes(NodeKind::Sink, value, Self::sink),
                "lookups" if !value.is_null() => lookups = self.lookups(value),
                "checkpoints" => checkpoints = Some(value),
                "state" if !value.is_null() => state = Some(value),
                _ => {}
            }
        }
        self.require("", map, &["name"]);
        for (key, kind) in [("sources", "source"), ("sinks", "sink")] {
            if !map.contains_key(key) {
                self.report(Diagnostic::new(
                    "",
                    format!("missing required key \"{key}\" (a pipeline needs at least one {kind})"),
                ));
            }
        }
        // With problems, keep what was read (for `parse_partial`); a name is still needed.
        let name: String = match name {
            Some(name) => name,
            None if self.diagnostics.len() > before => String::new(),
            None => return None,
        };
        let (dead_letter_path, dead_letter_sink) = dead_letter.unwrap_or_default();
        let dead_letter = DeadLetterSpec {
            path: dead_letter_path.unwrap_or_else(|| format!("dead-letters/{name}")),
            sink: dead_letter_sink,
        };
        let checkpoints = checkpoints.and_then(|value| self.checkpoints(value, &name));
        let state = match state {
            Some(value) => self.state(value, &name).unwrap_or_else(|| StateSpec::default_for(&name)),
            None => StateSpec::default_for(&name),
        };
        Some(Pipeline {
            name,
            description,
            epoch_ms: epoch_ms.unwrap_or(DEFAULT_EPOCH_MS),
            dead_letter,
            sources,
            processors,
            sinks,
            lookups,
            checkpoints,
            state,
        })
    }

    fn state(&mut self, value: &Value, pipeline: &str) -> Option<StateSpec> {
        let mut spec = StateSpec::default_for(pipeline);
        let map = self.mapping("state", value, "a mapping with backend and path")?;
        let before = self.diagnostics.len();
        for (key, value) in map {
            let Some(key) = self.known_key("state", key, STATE_KEYS) else {
                continue;
            };
            let at = join("state", key);
            match key {
                "backend" => {
                    let Some(name) = self.non_empty_string(&at, value, "state backend") else { continue };
                    match StateBackendKind::from_name(&name) {
                        Some(backend) => spec.backend = backend,
                        None => {
                            let diagnostic = Diagnostic::new(at, format!("unknown state backend \"{name}\""));
                            let suggested =
                                diagnostic.suggest_closest(&name, StateBackendKind::NAMES.iter().copied());
                            self.report(match suggested.suggestion {
                                Some(_) => suggested,
                                None => suggested.suggest("use memory (the default) or rocksdb"),
                            });
                        }
                    }
                }
                "path" => {
                    if let Some(path) = self.non_empty_string(&at, value, "state directory") {
                        spec.path = path;
                    }
                }
                _ => {}
            }
        }
        (self.diagnostics.len() == before).then_some(spec)
    }

    fn checkpoints(&mut self, value: &Value, pipeline: &str) -> Option<CheckpointSpec> {
        let mut spec = CheckpointSpec {
            interval_ms: DEFAULT_CHECKPOINT_INTERVAL_MS,
            location: format!("checkpoints/{pipeline}"),
            retain: DEFAULT_CHECKPOINTS_RETAINED,
            endpoint: None,
            region: None,
        };
        if value.is_null() {
            return Some(spec);
        }
        let map = self.mapping("checkpoints", value, "a mapping with interval, location, retain")?;
        let before = self.diagnostics.len();
        for (key, value) in map {
            let Some(key) = self.known_key("checkpoints", key, CHECKPOINT_KEYS) else {
                continue;
            };
            let at = join("checkpoints", key);
            match key {
                "interval" => {
                    if let Some(ms) = self.duration_ms(&at, value) {
                        if ms < MIN_CHECKPOINT_INTERVAL_MS {
                            self.report(Diagnostic::new(
                                at,
                                format!("the checkpoint interval must be at least 1s, found {ms}ms"),
                            ));
                        } else {
                            spec.interval_ms = ms;
                        }
                    }
                }
                "location" => {
                    if let Some(location) = self.non_empty_string(&at, value, "checkpoint location") {
                        spec.location = location;
                    }
                }
                "retain" => match value.as_u64() {
                    Some(retain) if retain >= 1 => spec.retain = retain as usize,
                    _ => self.report(Diagnostic::new(
                        at,
                        format!(
                            "expected a whole number of checkpoints of at least 1, found {}",
                            describe(value)
                        ),
                    )),
                },
                "endpoint" => spec.endpoint = self.non_empty_string(&at, value, "S3 endpoint"),
                "region" => spec.region = self.non_empty_string(&at, value, "S3 region"),
                _ => {}
            }
        }
        (self.diagnostics.len() == before).then_some(spec)
    }

    /// A duration written like `5s` or `500ms`, in milliseconds.
    fn duration_ms(&mut self, path: &str, value: &Value) -> Option<u64> {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => {
                self.report(
                    Diagnostic::new(path, format!("duration {number} has no unit"))
                        .suggest(format!("write \"{number}ms\" or \"{number}s\"")),
                );
                return None;
            }
            other => {
                self.type_error(path, "a duration like 5s or 500ms", other);
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(duration) => Some(duration.as_millis() as u64),
            Err(message) => {
                self.report(Diagnostic::new(path, message));
                None
            }
        }
    }

    fn watermark(&mut self, path: &str, value: &Value) -> Option<WatermarkSpec> {
        if let Value::String(text) = value {
            return match parse_watermark_sql(text) {
                Ok((column, delay)) => Some(WatermarkSpec {
                    column,
                    max_out_of_orderness_ms: delay.as_millis() as u64,
                    idle_timeout_ms: None,
                }),
                Err(message) => {
                    self.report(Diagnostic::new(path, message));
                    None
                }
            };
        }
        let map = self.mapping(
            path,
            value,
            "a mapping with column, max_out_of_orderness and idle_timeout, or Flink's \
             \"FOR ts AS ts - INTERVAL '5' SECOND\"",
        )?;
        let before = self.diagnostics.len();
        let mut spec =
            WatermarkSpec { column: String::new(), max_out_of_orderness_ms: 0, idle_timeout_ms: None };
        for (key, value) in map {
            let Some(key) = self.known_key(path, key, WATERMARK_KEYS) else {
                continue;
            };
            let at = join(path, key);
            match key {
                "column" => {
                    spec.column = self.non_empty_string(&at, value, "event-time column").unwrap_or_default()
                }
                "max_out_of_orderness" => {
                    spec.max_out_of_orderness_ms = self.duration_ms(&at, value).unwrap_or_default();
                }
                "idle_timeout" if !value.is_null() => spec.idle_timeout_ms = self.duration_ms(&at, value),
                _ => {}
            }
        }
        self.require(path, map, &["column"]);
        (self.diagnostics.len() == before).then_some(spec)
    }

    fn lookups(&mut self, value: &'v Value) -> Vec<LookupSpec> {
        let Some(items) = self.sequence("lookups", value, "a list of lookup tables") else {
            return Vec::new();
        };
        let mut lookups = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("lookups[{index}]");
            let Some(map) = self.mapping(&path, item, "a mapping describing a lookup table") else {
                continue;
            };
            let before = self.diagnostics.len();
            let mut spec = LookupSpec {
                name: String::new(),
                connector: String::new(),
                options: empty_options(),
                schema: None,
            };
            for (key, value) in map {
                let Some(key) = self.known_key(&path, key, LOOKUP_KEYS) else {
                    continue;
                };
                let at = join(&path, key);
                match key {
                    "name" => spec.name = self.lookup_name(&at, value).unwrap_or_default(),
                    "connector" => spec.connector = self.connector(&at, value).unwrap_or_default(),
                    "connection" => self.unresolved_connection(&at, value),
                    "options" => spec.options = self.options(&at, value).unwrap_or_else(empty_options),
                    "schema" if !value.is_null() => spec.schema = self.schema(&at, value),
                    _ => {}
                }
            }
            self.require(&path, map, &["name", "connector"]);
            if self.diagnostics.len() == before {
                lookups.push(spec);
            }
        }
        lookups
    }

    fn lookup_name(&mut self, path: &str, value: &Value) -> Option<String> {
        let name = self.string(path, value)?;
        if !is_node_name(name) {
            let diagnostic = Diagnostic::new(
                path,
                format!("invalid lookup table name \"{name}\" (use lowercase letters, digits and '_')"),
            );
            self.report(with_try(diagnostic, &node_name_like(name)));
            return None;
        }
        if self.nodes.iter().any(|node| node.name == name) {
            self.report(Diagnostic::new(
                path,
                format!("\"{name}\" is already the name of a node; lookup tables need their own names"),
            ));
            return None;
        }
        Some(name.to_owned())
    }

    fn pipeline_name(&mut self, value: &Value) -> Option<String> {
        let name = self.string("name", value)?;
        if is_pipeline_name(name) {
            return Some(name.to_owned());
        }
        let diagnostic = Diagnostic::new(
            "name",
            format!(
                "invalid pipeline name \"{name}\" (use lowercase letters, digits, '-' and '_', \
                 starting with a letter or digit)"
            ),
        );
        self.report(with_try(diagnostic, &pipeline_name_like(name)));
        None
    }

    fn epoch_ms(&mut self, value: &Value) -> Option<u64> {
        let Value::Number(number) = value else {
            self.type_error("epoch_ms", "a whole number of milliseconds", value);
            return None;
        };
        let (low, high) = (EPOCH_MS_RANGE.start(), EPOCH_MS_RANGE.end());
        let out_of_range = format!("epoch_ms must be between {low} and {high}, found {number}");
        match number.as_u64() {
            Some(ms) if EPOCH_MS_RANGE.contains(&ms) => Some(ms),
            Some(_) => {
                self.report(Diagnostic::new("epoch_ms", out_of_range));
                None
            }
            None if number.is_i64() => {
                self.report(Diagnostic::new("epoch_ms", out_of_range));
                None
            }
            None => {
                self.report(Diagnostic::new(
                    "epoch_ms",
                    format!("expected a whole number of milliseconds, found {number}"),
                ));
                None
            }
        }
    }

    /// Reads `dead_letter`: a folder (`path`) and/or a sink (`connector`, `options`).
    fn dead_letter(&mut self, value: &Value) -> Option<(Option<String>, Option<DeadLetterSinkSpec>)> {
        let map = self.mapping("dead_letter", value, "a mapping with the dead-letter path or connector")?;
        let (mut path, mut connector, mut options) = (None, None, None);
        for (key, value) in map {
            match self.known_key("dead_letter", key, DEAD_LETTER_KEYS) {
                Some("path") if !value.is_null() => {
                    path = self.non_empty_string("dead_letter.path", value, "dead-letter path");
                }
                Some("connector") => {
                    connector = self.non_empty_string("dead_letter.connector", value, "sink connector name");
                }
                Some("connection") => self.unresolved_connection("dead_letter.connection", value),
                Some("options") if !value.is_null() => options = self.options("dead_letter.options", value),
                _ => {}
            }
        }
        if options.is_some()
            && connector.is_none()
            && !map.contains_key("connector")
            && !map.contains_key("connection")
        {
            self.report(
                Diagnostic::new("dead_letter.options", "options without a connector")
                    .suggest("name the sink connector that receives dead letters, e.g. `connector: kafka`"),
            );
        }
        let sink = connector.map(|connector| DeadLetterSinkSpec {
            connector,
            options: options.unwrap_or_else(empty_options),
        });
        Some((path, sink))
    }

    /// Reads `sources`, `processors` or `sinks`: a list of mappings, each read by `read_node`.
    fn nodes<T>(
        &mut self,
        kind: NodeKind,
        value: &'v Value,
        read_node: fn(&mut Self, &str, &'v Mapping) -> Option<T>,
    ) -> Vec<T> {
        let section = kind.section();
        let items: &[Value] = match value {
            Value::Null => &[],
            other => match self.sequence(section, other, &format!("a list of {section}")) {
                Some(items) => items,
                None => return Vec::new(),
            },
        };
        if items.is_empty() && kind != NodeKind::Processor {
            self.report(Diagnostic::new(section, format!("a pipeline needs at least one {kind}")));
        }
        let mut nodes = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("{section}[{index}]");
            let Some(map) = self.mapping(&path, item, &format!("a mapping describing a {kind}")) else {
                continue;
            };
            if let Some(node) = read_node(self, &path, map) {
                nodes.push(node);
            }
        }
        nodes
    }

    fn source(&mut self, path: &str, map: &'v Mapping) -> Option<SourceSpec> {
        let before = self.diagnostics.len();
        let mut spec = SourceSpec {
            name: String::new(),
            connector: String::new(),
            options: empty_options(),
            schema: None,
            infer_schema: false,
            on_error: OnErrorSpec::default(),
            watermark: None,
        };
        for (key, value) in map {
            let Some(key) = self.known_key(path, key, SOURCE_KEYS) else {
                continue;
            };
            let at = join(path, key);
            match key {
                "name" => spec.name = self.node_name(path, value).unwrap_or_default(),
                "connector" => {
                    spec.connector = self.connector(&at, value).unwrap_or_default();
                }
                "connection" => self.unresolved_connection(&at, value),
                "options" => spec.options = self.options(&at, value).unwrap_or_else(empty_options),
                "schema" if !value.is_null() => spec.schema = self.schema(&at, value),
                "infer_schema" if !value.is_null() => {
                    spec.infer_schema = self.boolean(&at, value).unwrap_or_default();
                }
                "on_error" if !value.is_null() => {
                    spec.on_error = self.on_error(&at, value).unwrap_or_default();
                }
                "watermark" if !value.is_null() => spec.watermark = self.watermark(&at, value),
                _ => {}
            }
        }
        self.require(path, map, &["name", "connector"]);
        (self.diagnostics.len() == before).then_some(spec)
    }

    fn processor(&mut self, path: &str, map: &'v Mapping) -> Option<ProcessorSpec> {
        let before = self.diagnostics.len();
        let own_name = map.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut spec = ProcessorSpec {
            name: String::new(),
            inputs: Vec::new(),
            sql: String::new(),
            key_by: None,
            allowed_lateness_ms: 0,
            state_ttl_ms: None,
        };
        let mut edges = ProcessorEdges { name: own_name.to_owned(), inputs: Vec::new() };
        for (key, value) in map {
            let Some(key) = self.known_key(path, key, PROCESSOR_KEYS) else {
                continue;
            };
            let at = join(path, key);
            match key {
                "name" => spec.name = self.node_name(path, value).unwrap_or_default(),
                "inputs" => {
                    let inputs = self.inputs(&at, value, NodeKind::Processor, own_name);
                    edges.inputs = inputs.iter().map(input_node).collect();
                    spec.inputs = inputs.into_iter().flatten().collect();
                }
                "sql" => spec.sql = self.non_empty_string(&at, value, "SQL query").unwrap_or_default(),
                "key_by" if !value.is_null() => {
                    spec.key_by = self.non_empty_string(&at, value, "key_by expression");
                }
                "allowed_lateness" if !value.is_null() => {
                    spec.allowed_lateness_ms = self.duration_ms(&at, value).unwrap_or_default();
                }
                "state_ttl" if !value.is_null() => spec.state_ttl_ms = self.duration_ms(&at, value),
                _ => {}
            }
        }
        self.require(path, map, &["name", "inputs", "sql"]);
        self.processors.push(edges);
        (self.diagnostics.len() == before).then_some(spec)
    }

    fn sink(&mut self, path: &str, map: &'v Mapping) -> Option<SinkSpec> {
        let before = self.diagnostics.len();
        let own_name = map.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut spec = SinkSpec {
            name: String::new(),
            connector: String::new(),
            inputs: Vec::new(),
            options: empty_options(),
        };
        for (key, value) in map {
            let Some(key) = self.known_key(path, key, SINK_KEYS) else {
                continue;
            };
            let at = join(path, key);
            match key {
                "name" => spec.name = self.node_name(path, value).unwrap_or_default(),
                "connector" => spec.connector = self.connector(&at, value).unwrap_or_default(),
                "connection" => self.unresolved_connection(&at, value),
                "inputs" => {
                    let inputs = self.inputs(&at, value, NodeKind::Sink, own_name);
                    spec.inputs = inputs.into_iter().flatten().collect();
                }
                "options" => spec.options = self.options(&at, value).unwrap_or_else(empty_options),
                _ => {}
            }
        }
        self.require(path, map, &["name", "connector", "inputs"]);
        (self.diagnostics.len() == before).then_some(spec)
    }

    /// Reads a node's `name`: a valid identifier not used by an earlier node.
    fn node_name(&mut self, node_path: &str, value: &Value) -> Option<String> {
        let path = join(node_path, "name");
        let name = self.string(&path, value)?;
        if !is_node_name(name) {
            let diagnostic = Diagnostic::new(
                &path,
                format!(
                    "invalid node name \"{name}\" (use letters, digits and '_', not starting \
                     with a digit)"
                ),
            );
            self.report(with_try(diagnostic, &node_name_like(name)));
            return None;
        }
        let first = self.nodes.iter().find(|node| node.name == name).map(|node| &node.path);
        if let Some(first) = first.filter(|first| **first != node_path) {
            let message = format!("duplicate node name \"{name}\" (also {first})");
            self.report(Diagnostic::new(&path, message));
            return None;
        }
        Some(name.to_owned())
    }

    /// A `connection` the control plane has not resolved (see [`crate::resolve_connections`]):
    /// the spec cannot run as written.
    fn unresolved_connection(&mut self, path: &str, value: &Value) {
        let name = value.as_str().unwrap_or("?");
        self.report(
            Diagnostic::new(
                path,
                format!("connection \"{name}\" is a profile kept by the control plane, which fills in its connector and options"),
            )
            .suggest("deploy the spec through the control plane (`sluice apply`), or write `connector` and `options` here to run it locally"),
        );
    }

    fn connector(&mut self, path: &str, value: &Value) -> Option<String> {
        self.non_empty_string(path, value, "connector name")
    }

    fn options(&mut self, path: &str, value: &Value) -> Option<serde_json::Value> {
        if value.is_null() {
            return Some(empty_options());
        }
        let map = self.mapping(path, value, "a mapping of connector options")?;
        match serde_json::to_value(map) {
            Ok(options) => Some(options),
            Err(error) => {
                self.report(Diagnostic::new(path, format!("options cannot be read as JSON: {error}")));
                None
            }
        }
    }

    fn on_error(&mut self, path: &str, value: &Value) -> Option<OnErrorSpec> {
        let name = self.string(path, value)?;
        let on_error = OnErrorSpec::from_name(name);
        if on_error.is_none() {
            let message = format!("unknown on_error value \"{name}\" (expected fail, drop or dead_letter)");
            self.report(Diagnostic::new(path, message).suggest_closest(name, OnErrorSpec::NAMES));
        }
        on_error
    }

    fn schema(&mut self, path: &str, value: &Value) -> Option<Vec<FieldSpec>> {
        let items = self.sequence(path, value, "a list of fields")?;
        let before = self.diagnostics.len();
        let mut fields: Vec<FieldSpec> = Vec::new();
        let mut names: Vec<(&str, String)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let field_path = format!("{path}[{index}]");
            let Some(map) = self.mapping(&field_path, item, "a mapping with a field's name and type") else {
                continue;
            };
            if let Some(name) = map.get("name").and_then(Value::as_str) {
                names.push((name, field_path.clone()));
            }
            if let Some(field) = self.field(&field_path, map, &names) {
                fields.push(field);
            }
        }
        (self.diagnostics.len() == before).then_some(fields)
    }

    /// Reads one schema field; `names` are the field names so far, this one last.
    fn field(&mut self, path: &str, map: &Mapping, names: &[(&str, String)]) -> Option<FieldSpec> {
        let before = self.diagnostics.len();
        let (mut name, mut data_type, mut nullable) = (None, None, true);
        for (key, value) in map {
            let Some(key) = self.known_key(path, key, FIELD_KEYS) else {
                continue;
            };
            let at = join(path, key);
            match key {
                "name" => name = self.field_name(&at, value, path, names),
                "type" => data_type = self.data_type(&at, value),
                "nullable" if !value.is_null() => nullable = self.boolean(&at, value).unwrap_or(true),
                _ => {}
            }
        }
        self.require(path, map, &["name", "type"]);
        if self.diagnostics.len() > before {
            return None;
        }
        Some(FieldSpec { name: name?, data_type: data_type?, nullable })
    }

    fn field_name(
        &mut self,
        path: &str,
        value: &Value,
        field_path: &str,
        names: &[(&str, String)],
    ) -> Option<String> {
        let name = self.non_empty_string(path, value, "field name")?;
        let first = names.iter().find(|(other, _)| *other == name).map(|(_, path)| path);
        if let Some(first) = first.filter(|first| *first != field_path) {
            let first = first.rsplit('.').next().unwrap_or(first);
            self.report(Diagnostic::new(path, format!("duplicate field name \"{name}\" (also {first})")));
            return None;
        }
        Some(name)
    }

    fn data_type(&mut self, path: &str, value: &Value) -> Option<DataType> {
        let text = self.string(path, value)?;
        match text.parse::<DataType>() {
            Ok(data_type) => Some(data_type),
            Err(diagnostic) => {
                self.report(diagnostic.under(path));
                None
            }
        }
    }

    /// Reads `inputs` of a node of `kind` named `own_name`. Returns one entry per list item, `None`
    /// where the item is not a valid reference.
    fn inputs(&mut self, path: &str, value: &Value, kind: NodeKind, own_name: &str) -> Vec<Option<InputRef>> {
        if let Value::String(text) = value {
            let diagnostic = Diagnostic::new(path, "expected a list of inputs, found a string");
            self.report(diagnostic.suggest(format!("write [{text}]")));
            return Vec::new();
        }
        let Some(items) = self.sequence(path, value, "a list of inputs") else {
            return Vec::new();
        };
        if items.is_empty() {
            self.report(Diagnostic::new(path, format!("a {kind} needs at least one input")));
        }
        let mut inputs: Vec<Option<InputRef>> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            let input = self.input(&item_path, item, kind, own_name);
            if let Some(input) = &input
                && let Some(first) = inputs.iter().position(|other| other.as_ref() == Some(input))
            {
                let message = format!("duplicate input \"{input}\" (also inputs[{first}])");
                self.report(Diagnostic::new(&item_path, message));
            }
            inputs.push(input);
        }
        inputs
    }

    fn input(&mut self, path: &str, value: &Value, kind: NodeKind, own_name: &str) -> Option<InputRef> {
        let text = self.string(path, value)?;
        let input = match text.parse::<InputRef>() {
            Ok(input) => input,
            Err(diagnostic) => {
                self.report(diagnostic.under(path));
                return None;
            }
        };
        let node = &input.node;
        let target = self.nodes.iter().find(|named| named.name == node).map(|named| named.kind);
        let problem = match target {
            None => {
                let readable = self
                    .nodes
                    .iter()
                    .filter(|named| named.kind != NodeKind::Sink && named.name != own_name)
                    .filter(|named| is_node_name(named.name))
                    .map(|named| named.name);
                Diagnostic::new(path, format!("unknown input \"{node}\"")).suggest_closest(node, readable)
            }
            Some(NodeKind::Sink) => {
                Diagnostic::new(path, format!("input \"{node}\" is a sink; sinks have no output"))
            }
            Some(_) if kind == NodeKind::Processor && node == own_name => {
                Diagnostic::new(path, format!("processor \"{node}\" cannot read its own output"))
            }
            Some(_) => return Some(input),
        };
        self.report(problem);
        None
    }

    /// Reports cycles among processors, one diagnostic per cycle at the input that closes it.
    fn cycles(&mut self) {
        let nodes: Vec<graph::Node<'_>> = self
            .processors
            .iter()
            .map(|p| graph::Node { name: &p.name, inputs: p.inputs.iter().map(String::as_str).collect() })
            .collect();
        for cycle in graph::cycles(&nodes) {
            let names: Vec<&str> = cycle.nodes.iter().map(|&i| &*self.processors[i].name).collect();
            let start = cycle.nodes[0];
            let message = format!("cycle: {} -> {}", names.join(" -> "), names[0]);
            let path = format!("processors[{start}].inputs[{}]", cycle.closing_input);
            self.diagnostics.push(Diagnostic::new(path, message));
        }
    }

    /// Checks a mapping key: returns it if it is one of `allowed`, else reports it.
    fn known_key<'k>(&mut self, path: &str, key: &'k Value, allowed: &[&str]) -> Option<&'k str> {
        if let Some(key) = key.as_str().filter(|key| allowed.contains(key)) {
            return Some(key);
        }
        let text = match key {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            Value::Null => "null".to_owned(),
            other => {
                self.type_error(path, "keys that are strings", other);
                return None;
            }
        };
        let diagnostic = Diagnostic::new(join(path, &text), format!("unknown key \"{text}\""));
        let suggested = diagnostic.clone().suggest_closest(&text, allowed.iter().copied());
        self.report(match suggested.suggestion {
            Some(_) => suggested,
            None => diagnostic.suggest(format!("allowed keys: {}", allowed.join(", "))),
        });
        None
    }

    /// Reports each of `keys` missing from `map`.
    fn require(&mut self, path: &str, map: &Mapping, keys: &[&str]) {
        // A node naming a connection gets its connector from it (and is reported as unresolved).
        let named_elsewhere = |key: &str| key == "connector" && map.contains_key("connection");
        for key in keys.iter().filter(|key| !map.contains_key(**key) && !named_elsewhere(key)) {
            self.report(Diagnostic::new(path, format!("missing required key \"{key}\"")));
        }
    }

    fn type_error(&mut self, path: &str, expected: &str, found: &Value) {
        self.report(Diagnostic::new(path, format!("expected {expected}, found {}", describe(found))));
    }

    fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
        let text = value.as_str();
        if text.is_none() {
            self.type_error(path, "a string", value);
        }
        text
    }

    fn non_empty_string(&mut self, path: &str, value: &Value, what: &str) -> Option<String> {
        let text = self.string(path, value)?;
        if text.trim().is_empty() {
            self.report(Diagnostic::new(path, format!("{what} is empty")));
            return None;
        }
        Some(text.to_owned())
    }

    fn boolean(&mut self, path: &str, value: &Value) -> Option<bool> {
        let flag = value.as_bool();
        if flag.is_none() {
            self.type_error(path, "true or false", value);
        }
        flag
    }

    fn mapping<'a>(&mut self, path: &str, value: &'a Value, expected: &str) -> Option<&'a Mapping> {
        let map = value.as_mapping();
        if map.is_none() {
            self.type_error(path, expected, value);
        }
        map
    }

    fn sequence<'a>(&mut self, path: &str, value: &'a Value, expected: &str) -> Option<&'a [Value]> {
        let items = value.as_sequence().map(Vec::as_slice);
        if items.is_none() {
            self.type_error(path, expected, value);
        }
        items
    }
}

/// Every node with a string name, in document order, read before anything is checked so that
/// inputs can refer to nodes further down.
fn named_nodes(document: &Value) -> Vec<NamedNode<'_>> {
    let Some(map) = document.as_mapping() else {
        return Vec::new();
    };
    let mut nodes = Vec::new();
    for (key, value) in map {
        let kind = match key.as_str() {
            Some("sources") => NodeKind::Source,
            Some("processors") => NodeKind::Processor,
            Some("sinks") => NodeKind::Sink,
            _ => continue,
        };
        let Some(items) = value.as_sequence() else {
            continue;
        };
        for (index, item) in items.iter().enumerate() {
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                let path = format!("{}[{index}]", kind.section());
                nodes.push(NamedNode { name, kind, path });
            }
        }
    }
    nodes
}

/// The node an input item refers to, or "" if it is not a valid reference.
fn input_node(input: &Option<InputRef>) -> String {
    input.as_ref().map(|input| input.node.clone()).unwrap_or_default()
}

fn empty_options() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn with_try(diagnostic: Diagnostic, candidate: &str) -> Diagnostic {
    if candidate.is_empty() { diagnostic } else { diagnostic.suggest(format!("try \"{candidate}\"")) }
}

/// `[a-z0-9][a-z0-9_-]*`
fn is_pipeline_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn is_node_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A valid pipeline name close to `name`, or "" if there is none worth suggesting.
fn pipeline_name_like(name: &str) -> String {
    let lowered: String = name
        .trim()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
        .collect();
    let candidate = lowered.trim_start_matches(['-', '_']).to_owned();
    if is_pipeline_name(&candidate) { candidate } else { String::new() }
}

/// A valid node name close to `name`, or "" if there is none worth suggesting.
fn node_name_like(name: &str) -> String {
    let replaced: String =
        name.trim().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let candidate =
        if replaced.starts_with(|c: char| c.is_ascii_digit()) { format!("_{replaced}") } else { replaced };
    if is_node_name(&candidate) && candidate.chars().any(|c| c != '_') { candidate } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_names() {
        for good in ["a", "0", "big-bids", "big_bids_2", "9-lives"] {
            assert!(is_pipeline_name(good), "{good}");
        }
        for bad in ["", "-a", "_a", "Big", "a b", "a.b", "ä"] {
            assert!(!is_pipeline_name(bad), "{bad}");
        }
        assert_eq!(pipeline_name_like("Big Bids"), "big-bids");
        assert_eq!(pipeline_name_like("--x"), "x");
        assert_eq!(pipeline_name_like("!!!"), "");
    }

    #[test]
    fn node_names() {
        for good in ["a", "_", "_a9", "Bids", "nx_bid"] {
            assert!(is_node_name(good), "{good}");
        }
        for bad in ["", "9a", "a-b", "a.b", "a b", "é"] {
            assert!(!is_node_name(bad), "{bad}");
        }
        assert_eq!(node_name_like("my-src"), "my_src");
        assert_eq!(node_name_like("9lives"), "_9lives");
        assert_eq!(node_name_like("--"), "");
    }

    #[test]
    fn syntax_errors_drop_the_repeated_location_from_the_message() {
        let error = serde_yaml::from_str::<Value>("a: [1, 2\nb: 3\n").unwrap_err();
        let diagnostic = syntax_error(&error);
        assert_eq!(diagnostic.location, Some(crate::Location { line: 2, column: 2 }));
        assert!(!diagnostic.message.contains("at line 2 column 2"), "{}", diagnostic.message);
        assert!(diagnostic.message.starts_with("invalid YAML: did not find expected"));
    }

    #[test]
    fn merge_keys_are_applied_before_checking_keys() {
        let yaml = "name: p\nsources:\n  - &src {name: s, connector: c}\n\
                    sinks:\n  - {<<: *src, name: o, inputs: [s]}\n";
        let pipeline = parse(yaml).unwrap();
        assert_eq!(pipeline.sinks[0].connector, "c");
        assert_eq!(pipeline.sinks[0].name, "o");
    }

    #[test]
    fn bad_merge_is_reported_not_panicked() {
        let diagnostics = parse("name: p\n<<: 3\n").unwrap_err();
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].message.starts_with("invalid YAML: expected a mapping"), "{:?}", diagnostics);
    }
}
