//! Scenarios that run against every backend.

use bytes::Bytes;
use futures::TryStreamExt;
use sluice_state::protocol::{self, ManifestState};
use sluice_state::{
    CheckpointId, CheckpointKind, CheckpointStore, Error, MANIFEST_VERSION, MULTIPART_CHUNK, Manifest,
    PartEntry, layout,
};

use crate::support::Backend;

/// A plain name and one that needs escaping.
const NODES: [&str; 2] = ["agg", "Join.1"];
const WORKERS: usize = 2;

fn content(tag: &str, id: CheckpointId, node: &str, worker: usize) -> Bytes {
    Bytes::from(format!("{tag}:{id}:{node}:{worker}"))
}

/// Writes every part of checkpoint `id` (no manifest) and returns the manifest to commit.
async fn write_parts(store: &CheckpointStore, id: CheckpointId, tag: &str) -> Manifest {
    let mut parts = Vec::new();
    for node in NODES {
        for worker in 0..WORKERS {
            let written = store.put_part(id, node, worker, content(tag, id, node, worker)).await.unwrap();
            parts.push(PartEntry {
                node: node.to_owned(),
                worker,
                path: written.path,
                bytes: written.bytes,
                duration_ms: 1,
                alignment_ms: 0,
            });
        }
    }
    let expected: Vec<(&str, usize)> =
        NODES.iter().flat_map(|node| (0..WORKERS).map(move |worker| (*node, worker))).collect();
    protocol::is_complete(&expected, &parts).unwrap();
    Manifest {
        version: MANIFEST_VERSION,
        pipeline: "test".to_owned(),
        checkpoint: id,
        kind: CheckpointKind::Periodic,
        created_at_ms: 1_700_000_000_000,
        workers: WORKERS,
        finished: false,
        parts,
        duration_ms: 5,
    }
}

/// Takes and commits the next checkpoint.
async fn take_checkpoint(store: &CheckpointStore, tag: &str) -> Manifest {
    let id = store.next_checkpoint_id().await.unwrap();
    let manifest = write_parts(store, id, tag).await;
    store.commit_manifest(&manifest).await.unwrap();
    manifest
}

/// Asserts that `store` restores `expected` and that its parts hold what `tag` wrote.
async fn assert_restores(store: &CheckpointStore, expected: &Manifest, tag: &str) {
    let restored = store.latest_complete().await.unwrap().expect("a checkpoint to restore");
    assert_eq!(&restored, expected);
    for part in &restored.parts {
        let bytes = store.get_part(&part.path).await.unwrap();
        assert_eq!(bytes, content(tag, expected.checkpoint, &part.node, part.worker), "{}", part.path);
    }
}

async fn listed_ids(store: &CheckpointStore) -> Vec<CheckpointId> {
    store.list().await.unwrap().checkpoints.iter().map(|c| c.id).collect()
}

pub async fn write_commit_and_restore(backend: &impl Backend) {
    let store = backend.open("run");
    assert_eq!(store.latest_complete().await.unwrap(), None);
    assert_eq!(store.next_checkpoint_id().await.unwrap(), 1);
    take_checkpoint(&store, "a").await;
    let second = take_checkpoint(&store, "a").await;
    assert_eq!(second.checkpoint, 2);
    assert_restores(&store, &second, "a").await;
    assert_eq!(store.next_checkpoint_id().await.unwrap(), 3);
    // A new process restores the same checkpoint.
    assert_restores(&backend.open("run"), &second, "a").await;
    // Claims are withdrawn after committing: only parts and the manifest remain.
    let listing = store.list().await.unwrap();
    for checkpoint in &listing.checkpoints {
        assert_eq!(checkpoint.objects.len(), NODES.len() * WORKERS + 1, "{:?}", checkpoint.objects);
    }
}

pub async fn second_commit_of_a_checkpoint_conflicts(backend: &impl Backend) {
    let store = backend.open("run");
    let first = take_checkpoint(&store, "first").await;
    let again = store.commit_manifest(&first).await.unwrap_err();
    assert!(again.is_conflict(), "{again}");

    // A stale writer (another handle, another nonce) finishing the same checkpoint later.
    let stale = backend.open("run");
    let stale_manifest = write_parts(&stale, first.checkpoint, "stale").await;
    let error = stale.commit_manifest(&stale_manifest).await.unwrap_err();
    assert!(matches!(error, Error::Conflict { checkpoint: 1, .. }), "{error}");
    assert!(error.to_string().contains("already committed by another writer"), "{error}");
    assert_restores(&store, &first, "first").await;

    // Its orphan parts are garbage; the winner's are not.
    let report = store.collect_garbage(1, 2).await.unwrap();
    assert_eq!(report.deleted_objects, NODES.len() * WORKERS);
    assert!(report.deleted_checkpoints.is_empty());
    let listing = store.list().await.unwrap();
    assert!(listing.checkpoints[0].objects.iter().all(|o| !o.path.contains(stale.writer_nonce())));
    assert_restores(&store, &first, "first").await;
}

pub async fn racing_writers_commit_at_most_once(backend: &impl Backend) {
    let mut restorable: Option<Manifest> = None;
    for id in 1..=6 {
        let stale = backend.open("run");
        let newer = backend.open("run");
        let stale_manifest = write_parts(&stale, id, "stale").await;
        let newer_manifest = write_parts(&newer, id, "newer").await;
        let (stale_result, newer_result) =
            tokio::join!(stale.commit_manifest(&stale_manifest), newer.commit_manifest(&newer_manifest));
        for result in [&stale_result, &newer_result] {
            if let Err(error) = result {
                assert!(error.is_conflict(), "{error}");
            }
        }
        match (stale_result.is_ok(), newer_result.is_ok()) {
            (true, true) => panic!("both writers committed checkpoint {id}"),
            (true, false) => restorable = Some(stale_manifest),
            (false, true) => restorable = Some(newer_manifest),
            (false, false) => {}
        }
        let restored = backend.open("run").latest_complete().await.unwrap();
        assert_eq!(restored, restorable, "round {id}");
    }
    // Losers' parts and claims are collected; what restores is untouched. (All rounds losing is
    // possible in theory but needs every writer to lose three randomly timed claim rounds each time.)
    let store = backend.open("run");
    store.collect_garbage(1, 100).await.unwrap();
    let kept = restorable.expect("some round had a winner");
    let listing = store.list().await.unwrap();
    assert_eq!(listing.checkpoints[0].id, kept.checkpoint, "older checkpoints are collected");
    assert_eq!(listing.checkpoints[0].objects.len(), kept.parts.len() + 1);
    assert_eq!(store.latest_complete().await.unwrap(), Some(kept));
}

pub async fn torn_manifest_is_ignored(backend: &impl Backend) {
    let store = backend.open("run");
    let first = take_checkpoint(&store, "a").await;
    take_checkpoint(&store, "a").await;
    let manifest_file = backend.files("run").join(layout::manifest_path(2));
    std::fs::write(&manifest_file, b"{\"version\": 1, \"pipel").unwrap();
    let listing = store.list().await.unwrap();
    assert!(matches!(listing.checkpoints[1].manifest, ManifestState::Torn { .. }));
    assert_restores(&store, &first, "a").await;
    assert_eq!(store.next_checkpoint_id().await.unwrap(), 3);
    // Newer than the newest restorable checkpoint: kept until a newer one completes.
    assert!(store.collect_garbage(1, 3).await.unwrap().deleted_checkpoints.is_empty());
    let third = take_checkpoint(&store, "a").await;
    let report = store.collect_garbage(1, 4).await.unwrap();
    assert_eq!(report.deleted_checkpoints, vec![1, 2]);
    assert_eq!(listed_ids(&store).await, vec![3]);
    assert_restores(&store, &third, "a").await;
}

pub async fn missing_or_truncated_parts_fall_back(backend: &impl Backend) {
    let store = backend.open("run");
    let first = take_checkpoint(&store, "a").await;
    let second = take_checkpoint(&store, "a").await;
    let third = take_checkpoint(&store, "a").await;
    std::fs::remove_file(backend.files("run").join(&third.parts[3].path)).unwrap();
    assert_restores(&store, &second, "a").await;
    std::fs::write(backend.files("run").join(&second.parts[0].path), b"ab").unwrap();
    assert_restores(&store, &first, "a").await;
}

pub async fn checkpoints_without_manifest_are_ignored_and_collected(backend: &impl Backend) {
    let store = backend.open("run");
    let first = take_checkpoint(&store, "a").await;
    write_parts(&store, 2, "crashed").await;
    assert_restores(&store, &first, "a").await;
    assert_eq!(store.next_checkpoint_id().await.unwrap(), 3);
    take_checkpoint(&store, "a").await;
    let report = store.collect_garbage(2, 4).await.unwrap();
    assert_eq!(report.deleted_checkpoints, vec![2]);
    assert_eq!(report.kept, vec![3, 1]);
    assert_eq!(listed_ids(&store).await, vec![1, 3]);
}

pub async fn gc_keeps_retained_and_in_flight_checkpoints(backend: &impl Backend) {
    let store = backend.open("run");
    for _ in 0..4 {
        take_checkpoint(&store, "a").await;
    }
    write_parts(&store, 5, "a").await;
    let report = store.collect_garbage(2, 5).await.unwrap();
    assert_eq!(report.deleted_checkpoints, vec![1, 2]);
    assert_eq!(report.deleted_objects, 2 * (NODES.len() * WORKERS + 1));
    assert_eq!(report.kept, vec![4, 3]);
    assert_eq!(listed_ids(&store).await, vec![3, 4, 5]);
    // Nothing left to do.
    assert_eq!(store.collect_garbage(2, 5).await.unwrap().deleted_objects, 0);
}

pub async fn exported_savepoint_restores_from_its_own_store(backend: &impl Backend) {
    let store = backend.open("run");
    take_checkpoint(&store, "a").await;
    let second = take_checkpoint(&store, "a").await;
    let target = backend.open("savepoint");
    let savepoint = store.export_savepoint(&second, &target).await.unwrap();
    assert_eq!(savepoint.kind, CheckpointKind::Savepoint);
    assert_eq!(savepoint.checkpoint, second.checkpoint);
    assert!(savepoint.parts.iter().all(|p| p.path.contains(target.writer_nonce())));
    assert_restores(&backend.open("savepoint"), &savepoint, "a").await;
    let again = store.export_savepoint(&second, &backend.open("savepoint")).await.unwrap_err();
    assert!(again.is_conflict(), "{again}");
}

pub async fn commit_refuses_a_manifest_whose_parts_are_missing(backend: &impl Backend) {
    let store = backend.open("run");
    let mut manifest = write_parts(&store, 1, "a").await;
    manifest.parts[1].path = layout::part_path(1, "agg", 1, "0000000000000000");
    let error = store.commit_manifest(&manifest).await.unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error}");
    assert!(error.to_string().contains("missing"), "{error}");
    let mut outside = write_parts(&store, 1, "a").await;
    outside.checkpoint = 2;
    let error = store.commit_manifest(&outside).await.unwrap_err();
    assert!(error.to_string().contains("outside"), "{error}");
    assert_eq!(store.latest_complete().await.unwrap(), None);
    let missing = store.get_part(&layout::part_path(1, "nope", 0, "x")).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
}

pub async fn large_part_round_trips(backend: &impl Backend) {
    let store = backend.open("run");
    let big: Vec<u8> = (0..65 * 1024 * 1024 + 3).map(|i: usize| (i % 251) as u8).collect();
    let big = Bytes::from(big);
    let written = store.put_part(1, "agg", 0, big.clone()).await.unwrap();
    assert_eq!(written.bytes, big.len() as u64);
    assert!(store.get_part(&written.path).await.unwrap() == big);
}

/// A part spilled to a local file larger than one multipart chunk is uploaded with a multipart
/// upload, and reads back the same as a stream and through a blocking reader.
pub async fn a_spilled_part_is_uploaded_in_chunks_and_streams_back(backend: &impl Backend) {
    let store = backend.open("run");
    let dir = tempfile::tempdir().unwrap();
    let byte = |i: usize| (i % 251) as u8;
    let size = 3 * MULTIPART_CHUNK + 12_345;
    let big = dir.path().join("big.part");
    std::fs::write(&big, (0..size).map(byte).collect::<Vec<u8>>()).unwrap();
    let written = store.put_part_file(1, "agg", 0, &big).await.unwrap();
    assert_eq!((written.bytes, written.chunks), (size as u64, 4), "a multipart upload of 4 chunks");

    let (length, mut chunks) = store.get_part_stream(&written.path).await.unwrap();
    assert_eq!(length, size as u64);
    let mut offset = 0;
    while let Some(chunk) = chunks.try_next().await.unwrap() {
        assert!(chunk.iter().enumerate().all(|(i, b)| *b == byte(offset + i)), "bytes at {offset}");
        offset += chunk.len();
    }
    assert_eq!(offset, size);

    let (runtime, path, reading) = (tokio::runtime::Handle::current(), written.path.clone(), store.clone());
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = reading.part_reader(&path, &runtime).unwrap();
        let mut buffer = vec![0; 70_000];
        let (mut total, mut same) = (0, true);
        loop {
            let n = std::io::Read::read(&mut reader, &mut buffer).unwrap();
            if n == 0 {
                return (total, same);
            }
            same &= buffer[..n].iter().enumerate().all(|(i, b)| *b == byte(total + i));
            total += n;
        }
    });
    assert_eq!(read.await.unwrap(), (size, true));

    let small = dir.path().join("small.part");
    std::fs::write(&small, b"small").unwrap();
    let written = store.put_part_file(1, "agg", 1, &small).await.unwrap();
    assert_eq!((written.bytes, written.chunks), (5, 0), "one put");
    assert!(store.get_part(&written.path).await.unwrap() == Bytes::from_static(b"small"));

    let missing = store.put_part_file(1, "agg", 2, &dir.path().join("missing")).await.unwrap_err();
    assert!(matches!(missing, Error::LocalState { .. }), "{missing}");
}
