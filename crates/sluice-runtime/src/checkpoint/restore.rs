//! Resuming a run: reads a manifest's parts and hands every node what it saved, regrouped for
//! the new parallelism (sources get every split's position, processors their key groups).
//!
//! Sources' and sinks' parts are small and read up front. Processors' parts may be larger
//! than memory: each worker streams every part of its processor when it starts, handing the
//! processor the chunks of the key groups it owns one at a time ([`ProcessorRestore::feed`]).

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Arc;

use sluice_state::{CheckpointStore, Manifest};

use super::part::{ProcessorPartReader, SinkPart, SourcePart};
use crate::connector::SplitState;
use crate::error::{Error, Result};
use crate::exchange::worker_for_key_group;
use crate::graph::{NodeKind, PipelineGraph};
use crate::processor::{EventTime, Processor};

/// How much of a part a restoring worker reads ahead.
const READ_BUFFER: usize = 1024 * 1024;

/// What a stateful processor resumes from: the parts its previous instances wrote.
#[derive(Debug, Clone)]
pub struct ProcessorRestore {
    /// The processor's node name.
    node: String,
    /// Where the parts are.
    store: CheckpointStore,
    /// The parts' paths in `store`, one per previous instance.
    pub parts: Vec<String>,
}

impl ProcessorRestore {
    /// Streams every part into `processor`, worker `index` of `peers`: the chunks of the key
    /// groups it owns, one at a time, with blocking reads on `io`. Returns the lowest
    /// watermark any previous instance had reached.
    pub fn feed(
        &self,
        processor: &mut dyn Processor,
        index: usize,
        peers: usize,
        io: &tokio::runtime::Handle,
    ) -> Result<Option<EventTime>> {
        let owned = |key_group: u32| worker_for_key_group(u64::from(key_group), peers) == index;
        let mut watermark: Option<EventTime> = None;
        for path in &self.parts {
            let reader = self.store.part_reader(path, io).map_err(|error| {
                Error::user(format!("reading {path} from {}: {error}", self.store.location()))
            })?;
            let mut part =
                ProcessorPartReader::open(BufReader::with_capacity(READ_BUFFER, reader), &self.node)?;
            watermark = match (watermark, part.watermark()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            while let Some(chunk) = part.next_chunk(owned)? {
                processor.restore(vec![chunk])?;
            }
        }
        Ok(watermark)
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
        if let NodeKind::Processor { .. } = &node.kind {
            let state = restored.processors.entry(node.name.clone()).or_insert_with(|| ProcessorRestore {
                node: node.name.clone(),
                store: store.clone(),
                parts: Vec::new(),
            });
            state.parts.push(entry.path.clone());
            continue;
        }
        let bytes = store.get_part(&entry.path).await.map_err(|error| {
            Error::user(format!("reading {} from {}: {error}", entry.path, store.location()))
        })?;
        match &node.kind {
            NodeKind::Source { .. } => {
                let part = SourcePart::decode(&bytes, &node.name)?;
                sources.entry(node.name.clone()).or_default().extend(part.splits);
            }
            NodeKind::Processor { .. } => {}
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
