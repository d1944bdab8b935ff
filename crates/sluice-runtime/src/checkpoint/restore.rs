//! Resuming a run: reads a manifest's parts and hands every node what it saved, regrouped for
//! the new parallelism (sources get every split's position, processors their key groups).

use std::collections::HashMap;
use std::sync::Arc;

use sluice_state::{CheckpointStore, Manifest};

use super::part::{ProcessorPart, SinkPart, SourcePart};
use crate::connector::SplitState;
use crate::error::{Error, Result};
use crate::exchange::worker_for_key_group;
use crate::graph::{NodeKind, PipelineGraph};
use crate::processor::{EventTime, KeyGroupState};

/// What a stateful processor resumes from.
#[derive(Debug, Clone, Default)]
pub struct ProcessorRestore {
    /// The lowest watermark any of its instances had reached.
    pub watermark: Option<EventTime>,
    /// All key groups, from all previous instances.
    pub key_groups: Vec<KeyGroupState>,
}

impl ProcessorRestore {
    /// The key groups that worker `index` of `peers` owns.
    pub fn owned_by(&self, index: usize, peers: usize) -> Vec<KeyGroupState> {
        self.key_groups
            .iter()
            .filter(|state| worker_for_key_group(u64::from(state.key_group), peers) == index)
            .cloned()
            .collect()
    }
}

/// The state of a whole pipeline at one checkpoint, by node name.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The manifest it came from.
    pub manifest: Manifest,
    /// Every split's position, per source.
    pub sources: HashMap<String, Arc<Vec<SplitState>>>,
    /// Per stateful processor.
    pub processors: HashMap<String, ProcessorRestore>,
    /// Per sink: what each previous worker prepared, indexed by that worker.
    pub sinks: HashMap<String, Arc<Vec<Vec<u8>>>>,
}

/// Reads every part of `manifest` from `store` and regroups them by node of `graph`.
pub async fn load(store: &CheckpointStore, manifest: Manifest, graph: &PipelineGraph) -> Result<Restored> {
    let mut restored = Restored {
        manifest: manifest.clone(),
        sources: HashMap::new(),
        processors: HashMap::new(),
        sinks: HashMap::new(),
    };
    let mut sources: HashMap<String, Vec<SplitState>> = HashMap::new();
    let mut sinks: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for entry in &manifest.parts {
        let Some(node) = graph.nodes.iter().find(|node| node.name == entry.node) else {
            return Err(Error::user(format!(
                "checkpoint {} holds state of node \"{}\", which pipeline \"{}\" no longer has; \
                 restore it with the pipeline it was taken from, or start fresh (--fresh)",
                manifest.checkpoint, entry.node, graph.name
            )));
        };
        let bytes = store.get_part(&entry.path).await.map_err(|error| {
            Error::user(format!("reading {} from {}: {error}", entry.path, store.location()))
        })?;
        match &node.kind {
            NodeKind::Source { .. } => {
                let part = SourcePart::decode(&bytes, &node.name)?;
                sources.entry(node.name.clone()).or_default().extend(part.splits);
            }
            NodeKind::Processor { .. } => {
                let part = ProcessorPart::decode(&bytes, &node.name)?;
                let state = restored.processors.entry(node.name.clone()).or_default();
                state.watermark = match (state.watermark, part.watermark) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                state.key_groups.extend(part.key_groups);
            }
            NodeKind::Sink { .. } => {
                let part = SinkPart::decode(&bytes, &node.name)?;
                let prepared = sinks.entry(node.name.clone()).or_default();
                let worker = entry.worker;
                if prepared.len() <= worker {
                    prepared.resize(worker + 1, Vec::new());
                }
                prepared[worker] = part.prepared;
            }
        }
    }
    restored.sources = sources.into_iter().map(|(name, splits)| (name, Arc::new(splits))).collect();
    restored.sinks = sinks.into_iter().map(|(name, prepared)| (name, Arc::new(prepared))).collect();
    Ok(restored)
}
