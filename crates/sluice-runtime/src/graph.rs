//! The runnable shape of a pipeline: nodes with their connectors or processors, wired by
//! stream references. Built from a spec by the caller; executed by [`crate::execute`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;

use crate::connector::{Sink, Source};
use crate::dead_letter::OnError;
use crate::processor::{KeyHasher, Processor};
use crate::watermark::WatermarkStrategy;

/// One output of one node: what an input refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamRef {
    /// Index of the producing node in [`PipelineGraph::nodes`].
    pub node: usize,
    /// Index of the output of that node (always 0 except for multi-output sources).
    pub output: usize,
}

/// Name of the sink node that receives dead letters when the pipeline names a dead-letter
/// sink. It has no inputs and comes last; the runtime feeds it every worker's dead letters as
/// rows of [`crate::dead_letter::dead_letter_schema`]. Spec names cannot start with `_`.
pub const DEAD_LETTER_NODE: &str = "_dead_letters";

/// What a node does.
pub enum NodeKind {
    /// Reads records from outside.
    Source {
        /// The configured source.
        source: Arc<dyn Source>,
        /// What to do with records it cannot decode.
        on_error: OnError,
        /// How its watermarks are derived, if it has event time.
        watermark: Option<WatermarkStrategy>,
    },
    /// Transforms records.
    Processor {
        /// A configured processor, cloned onto each worker.
        processor: Mutex<Box<dyn Processor>>,
        /// Empty: inputs stay on their worker. Otherwise one key per input (the same key
        /// expression compiled against each input's schema): records are exchanged between
        /// workers by the hash of their key.
        key_by: Vec<Arc<dyn KeyHasher>>,
    },
    /// Writes records outside.
    Sink {
        /// The configured sink.
        sink: Arc<dyn Sink>,
        /// Schema of the records it receives.
        schema: SchemaRef,
    },
}

/// A pipeline node.
pub struct GraphNode {
    /// Unique name from the spec.
    pub name: String,
    /// Streams this node reads; every one refers to an earlier node.
    pub inputs: Vec<StreamRef>,
    /// What the node does.
    pub kind: NodeKind,
}

/// A pipeline ready to run: nodes in topological order.
pub struct PipelineGraph {
    /// Pipeline name.
    pub name: String,
    /// Wall-clock length of an epoch: records produced in one epoch share a timely timestamp.
    pub epoch: Duration,
    /// Directory for dead letters; each source writes under `<dir>/<source>/`.
    pub dead_letter_dir: PathBuf,
    /// The nodes, each after all nodes it reads from.
    pub nodes: Vec<GraphNode>,
    /// Where stateful processors keep keyed state while running (each instance gets its own
    /// part of it; see [`crate::processor::StateBackend::for_instance`]).
    pub state_backend: crate::processor::StateBackend,
}

impl PipelineGraph {
    /// Whether any node reads `stream`.
    pub fn is_consumed(&self, stream: StreamRef) -> bool {
        self.nodes.iter().any(|node| node.inputs.contains(&stream))
    }

    /// Checks the invariant that inputs refer to earlier nodes and existing outputs.
    pub fn check(&self) -> crate::Result<()> {
        for (index, node) in self.nodes.iter().enumerate() {
            for input in &node.inputs {
                if input.node >= index {
                    return Err(crate::Error::internal(format!(
                        "node {} reads node {} which is not before it",
                        node.name, input.node
                    )));
                }
                let outputs = match &self.nodes[input.node].kind {
                    NodeKind::Source { source, .. } => source.outputs().len(),
                    NodeKind::Processor { .. } => 1,
                    NodeKind::Sink { .. } => 0,
                };
                if input.output >= outputs {
                    return Err(crate::Error::internal(format!(
                        "node {} reads output {} of node {}, which has {outputs}",
                        node.name, input.output, self.nodes[input.node].name
                    )));
                }
            }
        }
        Ok(())
    }
}
