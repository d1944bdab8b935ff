//! From a spec file to a runnable graph: parse the spec, build every connector, plan every SQL
//! processor against the schemas flowing into it, and wire the graph. Every problem found on the
//! way is collected, so `sluice validate` reports them all at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use sluice_connectors::{LookupRequest, SinkRequest, SourceRequest};
use sluice_runtime::dead_letter::{OnError, dead_letter_schema};
use sluice_runtime::graph::{DEAD_LETTER_NODE, GraphNode, NodeKind, PipelineGraph, StreamRef};
use sluice_runtime::processor::{Processor, StateBackend};
use sluice_runtime::watermark::WatermarkStrategy;
use sluice_spec::{Diagnostic, InputRef, OnErrorSpec, Pipeline, StateBackendKind, StateSpec, WatermarkSpec};
use sluice_sql::{PlanOptions, SqlInput, SqlLookup, WindowUse};

/// A pipeline that passed validation.
pub struct Planned {
    /// The parsed spec.
    pub spec: Pipeline,
    /// The runnable graph.
    pub graph: PipelineGraph,
    /// The folder relative paths in the spec resolve against.
    pub base_dir: PathBuf,
}

/// Reads and plans the spec at `path`; relative paths inside it resolve against its folder.
pub fn plan_file(path: &Path) -> Result<Planned, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| vec![Diagnostic::new("", format!("cannot read {}: {error}", path.display()))])?;
    // Absolute, so dead-letter positions and error messages name files unambiguously.
    let base_dir = path
        .canonicalize()
        .ok()
        .and_then(|file| file.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    plan(&text, &base_dir)
}

/// Plans spec `text` whose relative paths resolve against `base_dir`.
pub fn plan(text: &str, base_dir: &Path) -> Result<Planned, Vec<Diagnostic>> {
    // Structural problems do not stop the check: connectors and SQL of the sound nodes are
    // checked too, so every problem is reported at once.
    let (spec, diagnostics) = sluice_spec::parse_partial(text);
    let Some(spec) = spec else { return Err(diagnostics) };
    let mut planner = Planner {
        spec: &spec,
        base_dir,
        streams: HashMap::new(),
        diagnostics,
        nodes: Vec::new(),
        lookups: Vec::new(),
        upstream_sources: HashMap::new(),
    };
    planner.sources();
    planner.lookups();
    planner.processors();
    planner.sinks();
    planner.dead_letter_sink();
    let Planner { diagnostics, nodes, .. } = planner;
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let graph = PipelineGraph {
        name: spec.name.clone(),
        epoch: Duration::from_millis(spec.epoch_ms),
        dead_letter_dir: resolve(base_dir, &spec.dead_letter.path),
        nodes,
        state_backend: state_backend(spec.state.backend, &spec.state, base_dir),
    };
    Ok(Planned { spec, graph, base_dir: base_dir.to_path_buf() })
}

/// The runtime's state backend for `backend`, with the spec's directory.
pub fn state_backend(backend: StateBackendKind, spec: &StateSpec, base_dir: &Path) -> StateBackend {
    match backend {
        StateBackendKind::Memory => StateBackend::Memory,
        StateBackendKind::RocksDb => StateBackend::RocksDb { dir: resolve(base_dir, &spec.path) },
    }
}

/// A path from the spec, resolved against the spec's folder unless absolute.
pub fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) }
}

/// The outputs of one planned node: output name → stream and schema.
type Outputs = Vec<(String, StreamRef, SchemaRef)>;

struct Planner<'a> {
    spec: &'a Pipeline,
    base_dir: &'a Path,
    /// Outputs of every node planned so far; a node that failed to plan is absent, and nodes
    /// reading it are skipped silently (their own problems show once it is fixed).
    streams: HashMap<String, Outputs>,
    diagnostics: Vec<Diagnostic>,
    nodes: Vec<GraphNode>,
    /// Lookup tables SQL may join with.
    lookups: Vec<SqlLookup>,
    /// For every planned node: the sources upstream of it, and whether each declares event
    /// time (a `watermark`).
    upstream_sources: HashMap<String, Vec<(String, bool)>>,
}

impl Planner<'_> {
    fn sources(&mut self) {
        for (index, source) in self.spec.sources.iter().enumerate() {
            let path = format!("sources[{index}]");
            let request = SourceRequest {
                pipeline: &self.spec.name,
                name: &source.name,
                options: &source.options,
                schema: source.schema.as_deref(),
                infer_schema: source.infer_schema,
                base_dir: self.base_dir,
            };
            match sluice_connectors::build_source(&source.connector, &request) {
                Ok(built) => {
                    let node = self.nodes.len();
                    let outputs = built
                        .outputs()
                        .into_iter()
                        .enumerate()
                        .map(|(output, o)| (o.name, StreamRef { node, output }, o.schema))
                        .collect();
                    self.streams.insert(source.name.clone(), outputs);
                    let on_error = match source.on_error {
                        OnErrorSpec::Fail => OnError::Fail,
                        OnErrorSpec::Drop => OnError::Drop,
                        OnErrorSpec::DeadLetter => OnError::DeadLetter,
                    };
                    let watermark = source.watermark.as_ref().and_then(|spec| {
                        self.watermark(
                            &format!("{path}.watermark"),
                            spec,
                            &self.streams[&source.name].clone(),
                        )
                    });
                    self.upstream_sources
                        .insert(source.name.clone(), vec![(source.name.clone(), watermark.is_some())]);
                    self.nodes.push(GraphNode {
                        name: source.name.clone(),
                        inputs: vec![],
                        kind: NodeKind::Source { source: built, on_error, watermark },
                    });
                }
                Err(diagnostics) => self.report(&path, diagnostics),
            }
        }
    }

    fn lookups(&mut self) {
        for (index, lookup) in self.spec.lookups.iter().enumerate() {
            let request = LookupRequest {
                name: &lookup.name,
                options: &lookup.options,
                schema: lookup.schema.as_deref(),
                base_dir: self.base_dir,
            };
            match sluice_connectors::build_lookup(&lookup.connector, &request) {
                Ok(source) => self.lookups.push(SqlLookup { table: lookup.name.clone(), source }),
                Err(diagnostics) => self.report(&format!("lookups[{index}]"), diagnostics),
            }
        }
    }

    /// Resolves a source's event-time column in each of its outputs.
    fn watermark(
        &mut self,
        path: &str,
        spec: &WatermarkSpec,
        outputs: &Outputs,
    ) -> Option<WatermarkStrategy> {
        let mut columns = Vec::new();
        for (name, _, schema) in outputs {
            let Ok(index) = schema.index_of(&spec.column) else {
                let output = if name.is_empty() { String::new() } else { format!(" (output \"{name}\")") };
                let fields = schema.fields().iter().map(|f| f.name().as_str());
                self.diagnostics.push(
                    Diagnostic::new(
                        format!("{path}.column"),
                        format!("the source has no column \"{}\"{output} for event time", spec.column),
                    )
                    .suggest_closest(&spec.column, fields),
                );
                return None;
            };
            if let Err(error) = sluice_runtime::watermark::event_times(
                &datafusion::arrow::array::new_empty_array(schema.field(index).data_type()),
            ) {
                self.diagnostics.push(Diagnostic::new(format!("{path}.column"), error.to_string()));
                return None;
            }
            columns.push(Some(index));
        }
        Some(WatermarkStrategy {
            columns,
            max_out_of_orderness: Duration::from_millis(spec.max_out_of_orderness_ms),
            idle_timeout: spec.idle_timeout_ms.map(Duration::from_millis),
        })
    }

    fn processors(&mut self) {
        for kind_and_index in self.spec.topological_order() {
            let (sluice_spec::NodeKind::Processor, index) = kind_and_index else { continue };
            let processor = &self.spec.processors[index];
            let path = format!("processors[{index}]");
            let Some(inputs) = self.resolve_inputs(&path, &processor.inputs) else { continue };
            let sql_inputs: Vec<SqlInput> = processor
                .inputs
                .iter()
                .zip(&inputs)
                .map(|(reference, (_, schema))| SqlInput {
                    table: reference.to_string(),
                    schema: schema.clone(),
                })
                .collect();
            let options = PlanOptions {
                allowed_lateness: Duration::from_millis(processor.allowed_lateness_ms),
                state_ttl: processor.state_ttl_ms.map(Duration::from_millis),
                lookups: self.lookups.clone(),
            };
            let planned = sluice_sql::plan(&processor.sql, &sql_inputs, &options);
            let mut key_by = Vec::new();
            if let Some(key) = &processor.key_by {
                for (_, schema) in &inputs {
                    match sluice_sql::compile_key(key, schema) {
                        Ok(hasher) => key_by.push(hasher),
                        Err(diagnostics) => {
                            self.report(&format!("{path}.key_by"), diagnostics);
                            break;
                        }
                    }
                }
            }
            let planned = match planned {
                Ok(planned) => planned,
                Err(diagnostics) => {
                    self.report(&format!("{path}.sql"), diagnostics);
                    continue;
                }
            };
            let mut sources: Vec<(String, bool)> = Vec::new();
            for input in &processor.inputs {
                for upstream in self.upstream_sources.get(&input.node).into_iter().flatten() {
                    if !sources.contains(upstream) {
                        sources.push(upstream.clone());
                    }
                }
            }
            if let Some(window) = planned.windows().first()
                && !sources.iter().any(|(_, event_time)| *event_time)
            {
                self.diagnostics.push(windows_need_event_time(&path, window, &sources));
                continue;
            }
            self.upstream_sources.insert(processor.name.clone(), sources);
            let node = self.nodes.len();
            let schema = planned.output_schema();
            self.streams
                .insert(processor.name.clone(), vec![(String::new(), StreamRef { node, output: 0 }, schema)]);
            self.nodes.push(GraphNode {
                name: processor.name.clone(),
                inputs: inputs.into_iter().map(|(stream, _)| stream).collect(),
                kind: NodeKind::Processor {
                    processor: Mutex::new(Box::new(planned) as Box<dyn Processor>),
                    key_by,
                },
            });
        }
    }

    fn sinks(&mut self) {
        let mut claimed: HashMap<String, String> = HashMap::new();
        for (index, sink) in self.spec.sinks.iter().enumerate() {
            let path = format!("sinks[{index}]");
            let request = SinkRequest { name: &sink.name, options: &sink.options, base_dir: self.base_dir };
            let built = sluice_connectors::build_sink(&sink.connector, &request);
            let inputs = self.resolve_inputs(&path, &sink.inputs);
            let built = match built {
                Ok(built) => built,
                Err(diagnostics) => {
                    self.report(&path, diagnostics);
                    continue;
                }
            };
            if let Some(target) = built.exclusive_target() {
                if let Some(owner) = claimed.get(&target) {
                    self.diagnostics.push(
                        Diagnostic::new(
                            format!("{path}.options"),
                            format!("sink \"{}\" writes to the same {target} as sink \"{owner}\"", sink.name),
                        )
                        .suggest("give each sink its own destination"),
                    );
                    continue;
                }
                claimed.insert(target, sink.name.clone());
            }
            let Some(inputs) = inputs else { continue };
            let schema = inputs[0].1.clone();
            if let Some((position, _)) =
                inputs.iter().enumerate().find(|(_, (_, other))| !same_fields(other, &schema))
            {
                self.diagnostics.push(
                    Diagnostic::new(
                        format!("{path}.inputs[{position}]"),
                        format!(
                            "input \"{}\" has a different schema than \"{}\"; all inputs of a sink must have the same columns",
                            sink.inputs[position], sink.inputs[0]
                        ),
                    )
                    .suggest("put a SQL processor with UNION ALL in front of the sink to align them"),
                );
                continue;
            }
            self.nodes.push(GraphNode {
                name: sink.name.clone(),
                inputs: inputs.into_iter().map(|(stream, _)| stream).collect(),
                kind: NodeKind::Sink { sink: built, schema },
            });
        }
    }

    /// The sink named under `dead_letter:`, as the last node (see [`DEAD_LETTER_NODE`]).
    fn dead_letter_sink(&mut self) {
        let Some(spec) = &self.spec.dead_letter.sink else { return };
        let request = SinkRequest { name: DEAD_LETTER_NODE, options: &spec.options, base_dir: self.base_dir };
        match sluice_connectors::build_sink(&spec.connector, &request) {
            Ok(built) => self.nodes.push(GraphNode {
                name: DEAD_LETTER_NODE.to_owned(),
                inputs: Vec::new(),
                kind: NodeKind::Sink { sink: built, schema: dead_letter_schema() },
            }),
            Err(diagnostics) => self.report("dead_letter", diagnostics),
        }
    }

    /// Resolves input references to planned streams; `None` if any is missing (reported when it
    /// is the reference's fault, silent when the upstream node itself failed to plan).
    fn resolve_inputs(&mut self, path: &str, references: &[InputRef]) -> Option<Vec<(StreamRef, SchemaRef)>> {
        let mut resolved = Vec::new();
        for (position, reference) in references.iter().enumerate() {
            let outputs = self.streams.get(&reference.node)?;
            let names: Vec<&str> =
                outputs.iter().map(|(name, _, _)| name.as_str()).filter(|n| !n.is_empty()).collect();
            let wanted = reference.output.as_deref().unwrap_or("");
            match outputs.iter().find(|(name, _, _)| name == wanted) {
                Some((_, stream, schema)) => resolved.push((*stream, schema.clone())),
                None => {
                    let at = format!("{path}.inputs[{position}]");
                    let diagnostic = if wanted.is_empty() {
                        Diagnostic::new(at, format!("\"{}\" has several outputs; name one", reference.node))
                            .suggest(format!(
                                "write one of: {}",
                                names
                                    .iter()
                                    .map(|n| format!("{}.{n}", reference.node))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                    } else if names.is_empty() {
                        Diagnostic::new(
                            at,
                            format!(
                                "\"{}\" has a single output and no output named \"{wanted}\"",
                                reference.node
                            ),
                        )
                        .suggest(format!("write \"{}\"", reference.node))
                    } else {
                        Diagnostic::new(
                            at,
                            format!("\"{}\" has no output named \"{wanted}\"", reference.node),
                        )
                        .suggest_closest(wanted, names.iter().copied())
                    };
                    self.diagnostics.push(diagnostic);
                    return None;
                }
            }
        }
        Some(resolved)
    }

    fn report(&mut self, prefix: &str, diagnostics: Vec<Diagnostic>) {
        self.diagnostics.extend(diagnostics.into_iter().map(|d| d.under(prefix)));
    }
}

/// The error for a window over inputs without event time: its windows would never close.
fn windows_need_event_time(path: &str, window: &WindowUse, sources: &[(String, bool)]) -> Diagnostic {
    let names: Vec<String> = sources.iter().map(|(name, _)| format!("\"{name}\"")).collect();
    Diagnostic::new(
        format!("{path}.sql"),
        format!(
            "{} windows close when the watermark passes their end, but no source this processor reads \
             ({}) declares event time, so they would only close when the input ends",
            window.function,
            names.join(", ")
        ),
    )
    .at(window.line, window.column)
    .suggest(
        "add `watermark: {column: <timestamp column>, max_out_of_orderness: 5s}` to the source whose \
         time the window groups by",
    )
}

fn same_fields(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}
