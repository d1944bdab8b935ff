//! Keyed exchange: rows with equal keys meet on the same worker.
//!
//! A key's hash picks one of [`MAX_KEY_GROUPS`] key groups, and key groups are spread evenly
//! over workers. Later, keyed state is stored per key group so it can be redistributed when the
//! parallelism changes. Splitting a batch by key (which evaluates user expressions and can
//! fail) happens in the `key_by` operator; the [`RouteByDestination`] distributor then only
//! moves each already-split batch to its worker.

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use timely::communication::Push;
use timely::dataflow::channels::pact::DistributorPact;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::{Message, Stamp};

use crate::batch::{BROADCAST, Batch};
use crate::error::Result;

/// Fixed number of key groups: the maximum parallelism of a keyed operator.
pub const MAX_KEY_GROUPS: u64 = 128;

/// The key group of a key hash.
pub fn key_group(hash: u64) -> u64 {
    hash % MAX_KEY_GROUPS
}

/// The worker owning `key_group` among `peers` workers (contiguous ranges of key groups).
pub fn worker_for_key_group(key_group: u64, peers: usize) -> usize {
    (key_group * peers as u64 / MAX_KEY_GROUPS) as usize
}

/// Splits `batch` into one batch per destination worker, given one key hash per row.
pub fn split_by_hash(batch: &RecordBatch, hashes: &[u64], peers: usize) -> Result<Vec<Batch>> {
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); peers];
    for (row, hash) in hashes.iter().enumerate() {
        rows[worker_for_key_group(key_group(*hash), peers)].push(row as u32);
    }
    let mut out = Vec::new();
    for (worker, indices) in rows.into_iter().enumerate() {
        if indices.len() == batch.num_rows() {
            out.push(Batch::routed(batch.clone(), worker));
        } else if !indices.is_empty() {
            let part = take_record_batch(batch, &UInt32Array::from(indices))?;
            out.push(Batch::routed(part, worker));
        }
    }
    Ok(out)
}

/// A distributor that sends each batch whole to the worker named in it, and a copy of a
/// broadcast batch (marks, control messages) to every worker.
#[derive(Debug, Default)]
pub struct RouteByDestination;

impl Distributor<Batch> for RouteByDestination {
    fn partition<T: Clone, P: Push<Message<T, Batch>>>(
        &mut self,
        container: &mut Batch,
        stamp: &Stamp<T>,
        pushers: &mut [P],
    ) {
        if container.destination() == BROADCAST {
            for pusher in pushers.iter_mut() {
                let mut copy = container.copy_for_one();
                Message::push_at(&mut copy, stamp.clone(), pusher);
            }
            return;
        }
        let destination = container.destination().min(pushers.len() - 1);
        Message::push_at(container, stamp.clone(), &mut pushers[destination]);
    }

    fn flush<T: Clone, P: Push<Message<T, Batch>>>(&mut self, _stamp: &Stamp<T>, _pushers: &mut [P]) {}
}

/// The parallelization contract for keyed exchange.
pub fn keyed_pact() -> DistributorPact<impl FnOnce(usize) -> RouteByDestination> {
    DistributorPact(|_peers: usize| RouteByDestination)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn key_groups_cover_all_workers_evenly() {
        for peers in 1..=8 {
            let mut counts = vec![0; peers];
            for group in 0..MAX_KEY_GROUPS {
                counts[worker_for_key_group(group, peers)] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "peers {peers}: {counts:?}");
        }
    }

    #[test]
    fn split_keeps_every_row_once_and_equal_hashes_together() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let keys: Vec<i64> = (0..1000).map(|i| i % 37).collect();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys.clone()))]).unwrap();
        let hashes: Vec<u64> = keys.iter().map(|k| (*k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let parts = split_by_hash(&batch, &hashes, 3).unwrap();
        let mut seen = Vec::new();
        let mut owner = std::collections::HashMap::new();
        for part in &parts {
            let column =
                part.records().unwrap().column(0).as_any().downcast_ref::<Int64Array>().unwrap().clone();
            for value in column.iter().flatten() {
                seen.push(value);
                assert_eq!(*owner.entry(value).or_insert(part.destination()), part.destination());
            }
            assert!(!column.is_empty());
        }
        seen.sort();
        let mut expected = keys;
        expected.sort();
        assert_eq!(seen, expected);
    }
}
