//! The spec types: what a parsed, structurally valid pipeline looks like.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::{DataType, Diagnostic, graph};

/// The default length of an epoch, in milliseconds.
pub const DEFAULT_EPOCH_MS: u64 = 200;
/// The shortest and longest allowed epochs, in milliseconds.
pub const EPOCH_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=10_000;

/// A whole pipeline: sources feeding SQL processors feeding sinks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    /// Unique pipeline name: `[a-z0-9][a-z0-9_-]*`.
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// Length of an epoch of data in milliseconds, within [`EPOCH_MS_RANGE`].
    pub epoch_ms: u64,
    /// Where records that fail go.
    pub dead_letter: DeadLetterSpec,
    /// Where data comes from; at least one.
    pub sources: Vec<SourceSpec>,
    /// SQL steps, in the order written (see [`Pipeline::topological_order`] for data order).
    pub processors: Vec<ProcessorSpec>,
    /// Where data goes; at least one.
    pub sinks: Vec<SinkSpec>,
    /// Tables that SQL can look rows up in (lookup joins); not part of the data flow.
    pub lookups: Vec<LookupSpec>,
    /// Checkpointing, if enabled: without it a crash loses the pipeline's state.
    pub checkpoints: Option<CheckpointSpec>,
    /// Where keyed state lives while the pipeline runs.
    pub state: StateSpec,
}

/// Where stateful processors keep keyed state while running (checkpoints are the durable copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateSpec {
    /// Memory (default) or RocksDB.
    pub backend: StateBackendKind,
    /// RocksDB's working directory (relative to the spec's folder); `state/<pipeline name>`
    /// unless set. Its contents are replaced on every start.
    pub path: String,
}

/// A state backend, as the spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    /// In memory: fastest; state must fit in memory.
    Memory,
    /// RocksDB on local disk: for state larger than memory.
    #[serde(rename = "rocksdb")]
    RocksDb,
}

impl StateSpec {
    /// In memory, with RocksDB's directory at `state/<pipeline>` should the backend be switched.
    pub fn default_for(pipeline: &str) -> Self {
        StateSpec { backend: StateBackendKind::Memory, path: format!("state/{pipeline}") }
    }
}

impl StateBackendKind {
    /// Every backend name, as written in specs and on the command line.
    pub const NAMES: &'static [&'static str] = &["memory", "rocksdb"];

    /// The backend called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "memory" => Some(StateBackendKind::Memory),
            "rocksdb" => Some(StateBackendKind::RocksDb),
            _ => None,
        }
    }

    /// The backend's name, as written in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StateBackendKind::Memory => "memory",
            StateBackendKind::RocksDb => "rocksdb",
        }
    }
}

impl FromStr for StateBackendKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::from_name(text)
            .ok_or_else(|| format!("unknown state backend; use one of {}", Self::NAMES.join(", ")))
    }
}

/// The default checkpoint interval.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 10_000;
/// The shortest allowed checkpoint interval.
pub const MIN_CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// How many complete checkpoints are kept unless set.
pub const DEFAULT_CHECKPOINTS_RETAINED: usize = 3;

/// How and where a pipeline checkpoints its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointSpec {
    /// Time between checkpoints, in milliseconds; at least [`MIN_CHECKPOINT_INTERVAL_MS`].
    pub interval_ms: u64,
    /// A local directory (relative to the spec's folder) or `s3://bucket/prefix`;
    /// `checkpoints/<pipeline name>` unless set.
    pub location: String,
    /// Complete checkpoints kept; older ones are deleted.
    pub retain: usize,
    /// S3 endpoint, e.g. `http://127.0.0.1:9000`; `AWS_ENDPOINT_URL` unless set.
    pub endpoint: Option<String>,
    /// S3 region; `AWS_REGION` unless set.
    pub region: Option<String>,
}

/// How a source's event time and watermarks are defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatermarkSpec {
    /// The event-time column: a timestamp, or whole milliseconds since the Unix epoch.
    pub column: String,
    /// How far behind the newest event time records may still arrive, in milliseconds: the
    /// watermark is the largest event time seen minus this.
    pub max_out_of_orderness_ms: u64,
    /// A split with no record for this long stops holding the watermark back, in
    /// milliseconds; `None`: never.
    pub idle_timeout_ms: Option<u64>,
}

/// A table that SQL looks rows up in by key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LookupSpec {
    /// Table name used in SQL; unique among nodes and lookups.
    pub name: String,
    /// Connector name, e.g. `file`.
    pub connector: String,
    /// Connector options, a JSON object; checked by the connector.
    pub options: serde_json::Value,
    /// Declared fields, if any.
    pub schema: Option<Vec<FieldSpec>>,
}

/// Where dead letters are written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterSpec {
    /// Directory for dead letters; `dead-letters/<pipeline name>` unless set. With a `sink`,
    /// only dead letters that the sink itself rejects are written here.
    pub path: String,
    /// A sink connector (a Kafka topic, a table, files...) that receives the dead letters
    /// instead of the directory.
    pub sink: Option<DeadLetterSinkSpec>,
}

/// A sink connector used as the dead-letter destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterSinkSpec {
    /// Connector name, e.g. `kafka`; checked by the connectors crate.
    pub connector: String,
    /// Connector options, a JSON object; checked by the connector.
    pub options: serde_json::Value,
}

/// A node that reads from an external system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceSpec {
    /// Node name, unique in the pipeline.
    pub name: String,
    /// Connector name, e.g. `nexmark`; checked against the registry by the connectors crate.
    pub connector: String,
    /// Connector options, a JSON object; checked by the connector.
    pub options: serde_json::Value,
    /// Declared fields, if any.
    pub schema: Option<Vec<FieldSpec>>,
    /// Whether the connector should infer the schema from the data.
    pub infer_schema: bool,
    /// What to do with a record the source cannot decode.
    pub on_error: OnErrorSpec,
    /// Event time and watermarks, if the source has event time.
    pub watermark: Option<WatermarkSpec>,
}

/// One declared field of a source's schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldSpec {
    /// Field name.
    pub name: String,
    /// Field type.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Whether the field may be null; `true` unless set.
    pub nullable: bool,
}

/// What a source does with a record it cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnErrorSpec {
    /// Stop the pipeline.
    Fail,
    /// Skip the record.
    Drop,
    /// Write the record to the dead-letter directory and go on (the default).
    #[default]
    DeadLetter,
}

impl OnErrorSpec {
    /// The spellings users write, in the order they are documented.
    pub const NAMES: [&'static str; 3] = ["fail", "drop", "dead_letter"];

    /// The spelling users write.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Drop => "drop",
            Self::DeadLetter => "dead_letter",
        }
    }

    /// Parses a spelling from [`OnErrorSpec::NAMES`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "fail" => Some(Self::Fail),
            "drop" => Some(Self::Drop),
            "dead_letter" => Some(Self::DeadLetter),
            _ => None,
        }
    }
}

impl fmt::Display for OnErrorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A node that runs one SQL query over its inputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorSpec {
    /// Node name, unique in the pipeline; the query reads its inputs by their node names.
    pub name: String,
    /// Upstream nodes; at least one.
    pub inputs: Vec<InputRef>,
    /// The query; never empty.
    pub sql: String,
    /// SQL expression to partition the input by, if any.
    pub key_by: Option<String>,
    /// How long after a window's end its late records are still accepted, in milliseconds.
    pub allowed_lateness_ms: u64,
    /// Keyed state not updated for this long is dropped, in milliseconds; `None`: kept.
    pub state_ttl_ms: Option<u64>,
}

/// A node that writes to an external system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkSpec {
    /// Node name, unique in the pipeline.
    pub name: String,
    /// Connector name, e.g. `file`.
    pub connector: String,
    /// Upstream nodes; at least one.
    pub inputs: Vec<InputRef>,
    /// Connector options, a JSON object; checked by the connector.
    pub options: serde_json::Value,
}

/// A reference to an upstream node, written `node` or `node.output` (for a node with several
/// named outputs, e.g. `nx.bid`). Whether the output exists is the connector layer's check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InputRef {
    /// The upstream node's name.
    pub node: String,
    /// One of its named outputs, if given.
    pub output: Option<String>,
}

impl InputRef {
    /// A reference to a node's only output.
    pub fn node(node: impl Into<String>) -> Self {
        Self { node: node.into(), output: None }
    }

    /// A reference to one named output of a node.
    pub fn output(node: impl Into<String>, output: impl Into<String>) -> Self {
        Self { node: node.into(), output: Some(output.into()) }
    }
}

impl FromStr for InputRef {
    type Err = Diagnostic;

    /// Parses `node` or `node.output`; both parts must be non-empty. Whether `node` exists is
    /// checked by [`parse`](crate::parse), not here.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (node, output) = match text.split_once('.') {
            Some((node, output)) => (node, Some(output)),
            None => (text, None),
        };
        if node.is_empty() || output.is_some_and(str::is_empty) {
            return Err(Diagnostic::new("", format!("invalid input \"{text}\""))
                .suggest("write the node name, or node.output for a named output"));
        }
        Ok(Self { node: node.to_owned(), output: output.map(str::to_owned) })
    }
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node)?;
        if let Some(output) = &self.output {
            write!(f, ".{output}")?;
        }
        Ok(())
    }
}

impl Serialize for InputRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The three kinds of node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// An entry of `sources`.
    Source,
    /// An entry of `processors`.
    Processor,
    /// An entry of `sinks`.
    Sink,
}

impl NodeKind {
    /// The spec key listing nodes of this kind: `sources`, `processors` or `sinks`.
    pub fn section(self) -> &'static str {
        match self {
            Self::Source => "sources",
            Self::Processor => "processors",
            Self::Sink => "sinks",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Processor => "processor",
            Self::Sink => "sink",
        })
    }
}

impl Pipeline {
    /// The kind and index of the node called `name`, if there is one.
    pub fn node(&self, name: &str) -> Option<(NodeKind, usize)> {
        if let Some(index) = self.sources.iter().position(|s| s.name == name) {
            return Some((NodeKind::Source, index));
        }
        if let Some(index) = self.processors.iter().position(|p| p.name == name) {
            return Some((NodeKind::Processor, index));
        }
        let index = self.sinks.iter().position(|s| s.name == name)?;
        Some((NodeKind::Sink, index))
    }

    /// The spec path of the node called `name`, e.g. `processors[1]`, for diagnostics.
    pub fn node_path(&self, name: &str) -> Option<String> {
        self.node(name).map(|(kind, index)| format!("{}[{index}]", kind.section()))
    }

    /// Every node, in an order where each node comes after its inputs: sources in spec order,
    /// then processors in dependency order (spec order among independent ones), then sinks in
    /// spec order.
    ///
    /// [`parse`](crate::parse) rejects cycles, so for a parsed pipeline every processor comes
    /// after all of its inputs. For a hand-built pipeline with a cycle, the processors on or
    /// behind the cycle follow the others in spec order; nothing panics.
    pub fn topological_order(&self) -> Vec<(NodeKind, usize)> {
        let processors: Vec<graph::Node<'_>> = self
            .processors
            .iter()
            .map(|p| graph::Node { name: &p.name, inputs: p.inputs.iter().map(|i| &*i.node).collect() })
            .collect();
        let sources = (0..self.sources.len()).map(|i| (NodeKind::Source, i));
        let processors = graph::topological_order(&processors).into_iter().map(|i| (NodeKind::Processor, i));
        let sinks = (0..self.sinks.len()).map(|i| (NodeKind::Sink, i));
        sources.chain(processors).chain(sinks).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_refs_parse_and_display() {
        assert_eq!("bids".parse::<InputRef>().unwrap(), InputRef::node("bids"));
        assert_eq!("nx.bid".parse::<InputRef>().unwrap(), InputRef::output("nx", "bid"));
        assert_eq!(InputRef::output("nx", "bid").to_string(), "nx.bid");
        assert_eq!(InputRef::node("bids").to_string(), "bids");
        for bad in ["", ".bid", "nx."] {
            assert!(bad.parse::<InputRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn on_error_names_round_trip() {
        for name in OnErrorSpec::NAMES {
            assert_eq!(OnErrorSpec::from_name(name).map(OnErrorSpec::name), Some(name));
        }
        assert_eq!(OnErrorSpec::from_name("Drop"), None);
        assert_eq!(OnErrorSpec::default(), OnErrorSpec::DeadLetter);
    }

    fn processor(name: &str, inputs: &[&str]) -> ProcessorSpec {
        ProcessorSpec {
            name: name.into(),
            inputs: inputs.iter().map(|i| i.parse().unwrap()).collect(),
            sql: "SELECT 1".into(),
            key_by: None,
            allowed_lateness_ms: 0,
            state_ttl_ms: None,
        }
    }

    #[test]
    fn topological_order_of_a_hand_built_cycle_does_not_panic() {
        let pipeline = Pipeline {
            name: "p".into(),
            description: None,
            epoch_ms: DEFAULT_EPOCH_MS,
            dead_letter: DeadLetterSpec { path: "dl".into(), sink: None },
            sources: vec![],
            processors: vec![processor("a", &["b"]), processor("b", &["a"]), processor("c", &["x.y"])],
            sinks: vec![],
            lookups: vec![],
            checkpoints: None,
            state: StateSpec::default_for("p"),
        };
        assert_eq!(
            pipeline.topological_order(),
            vec![(NodeKind::Processor, 2), (NodeKind::Processor, 0), (NodeKind::Processor, 1)]
        );
        assert_eq!(pipeline.node_path("b"), Some("processors[1]".into()));
    }

    #[test]
    fn named_outputs_order_like_their_node() {
        let pipeline = Pipeline {
            name: "p".into(),
            description: None,
            epoch_ms: DEFAULT_EPOCH_MS,
            dead_letter: DeadLetterSpec { path: "dl".into(), sink: None },
            sources: vec![],
            processors: vec![processor("late", &["early.out"]), processor("early", &["src"])],
            sinks: vec![],
            lookups: vec![],
            checkpoints: None,
            state: StateSpec::default_for("p"),
        };
        assert_eq!(pipeline.topological_order(), vec![(NodeKind::Processor, 1), (NodeKind::Processor, 0)]);
    }
}
