use super::*;
use crate::CheckpointKind;

fn part(id: CheckpointId, node: &str, worker: usize, nonce: &str, bytes: u64) -> PartEntry {
    PartEntry {
        node: node.to_owned(),
        worker,
        path: layout::part_path(id, node, worker, nonce),
        bytes,
        duration_ms: 1,
        alignment_ms: 0,
    }
}

fn manifest(id: CheckpointId, parts: Vec<PartEntry>) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        pipeline: "p".to_owned(),
        checkpoint: id,
        kind: CheckpointKind::Periodic,
        created_at_ms: 0,
        workers: 2,
        finished: false,
        parts,
        duration_ms: 3,
    }
}

fn object(path: &str, bytes: u64) -> ListedObject {
    ListedObject { path: path.to_owned(), bytes }
}

/// Parts of two nodes on two workers, written by the writer `nonce`.
fn parts_of(id: CheckpointId, nonce: &str) -> Vec<PartEntry> {
    let mut parts = Vec::new();
    for node in ["agg", "join"] {
        for worker in 0..2 {
            parts.push(part(id, node, worker, nonce, 10 + worker as u64));
        }
    }
    parts
}

fn objects_of(parts: &[PartEntry]) -> Vec<ListedObject> {
    parts.iter().map(|p| object(&p.path, p.bytes)).collect()
}

/// A committed checkpoint whose parts all exist.
fn committed(id: CheckpointId) -> ListedCheckpoint {
    let parts = parts_of(id, "aaaa");
    let mut objects = objects_of(&parts);
    objects.push(object(&layout::manifest_path(id), 100));
    ListedCheckpoint { id, manifest: ManifestState::Valid(manifest(id, parts)), objects }
}

/// A checkpoint whose parts were (partly) written but whose manifest never was.
fn uncommitted(id: CheckpointId) -> ListedCheckpoint {
    ListedCheckpoint { id, manifest: ManifestState::Missing, objects: objects_of(&parts_of(id, "aaaa")[..2]) }
}

fn listing(checkpoints: Vec<ListedCheckpoint>) -> Listing {
    Listing { checkpoints }
}

fn chosen(listing: &Listing) -> Option<CheckpointId> {
    select_restore(listing).manifest.map(|m| m.checkpoint)
}

// ---------------------------------------------------------------- select_restore

#[test]
fn empty_store_has_nothing_to_restore() {
    let empty = Listing::default();
    assert_eq!(select_restore(&empty), RestoreChoice { manifest: None, skipped: vec![] });
}

#[test]
fn newest_complete_checkpoint_is_restored_regardless_of_listing_order() {
    let l = listing(vec![committed(3), committed(7), committed(5)]);
    assert_eq!(chosen(&l), Some(7));
    assert!(select_restore(&l).skipped.is_empty());
}

#[test]
fn torn_manifest_is_skipped_and_restore_falls_back() {
    let mut torn = committed(8);
    torn.manifest = ManifestState::Torn { reason: "EOF while parsing".to_owned() };
    let l = listing(vec![committed(7), torn]);
    let choice = select_restore(&l);
    assert_eq!(choice.manifest.map(|m| m.checkpoint), Some(7));
    assert_eq!(
        choice.skipped,
        vec![Skipped { checkpoint: 8, reason: SkipReason::TornManifest("EOF while parsing".to_owned()) }]
    );
}

#[test]
fn checkpoint_without_manifest_is_skipped() {
    let l = listing(vec![committed(1), uncommitted(2)]);
    let choice = select_restore(&l);
    assert_eq!(choice.manifest.map(|m| m.checkpoint), Some(1));
    assert_eq!(choice.skipped[0].reason, SkipReason::NoManifest);
}

#[test]
fn half_written_part_is_a_missing_part_and_is_skipped() {
    // Object stores never show a partially uploaded object, so a torn part write is a missing part.
    let mut newest = committed(9);
    let lost = newest.objects.remove(1).path;
    let l = listing(vec![committed(4), newest]);
    let choice = select_restore(&l);
    assert_eq!(choice.manifest.map(|m| m.checkpoint), Some(4));
    assert_eq!(choice.skipped[0].reason, SkipReason::MissingParts(vec![lost]));
}

#[test]
fn truncated_part_is_skipped() {
    let mut newest = committed(9);
    newest.objects[0].bytes = 3;
    let expected_path = newest.objects[0].path.clone();
    let l = listing(vec![committed(4), newest]);
    let choice = select_restore(&l);
    assert_eq!(choice.manifest.map(|m| m.checkpoint), Some(4));
    assert_eq!(
        choice.skipped[0].reason,
        SkipReason::WrongPartSize { path: expected_path, expected: 10, actual: 3 }
    );
}

#[test]
fn manifest_stored_under_another_id_is_invalid() {
    let mut moved = committed(6);
    moved.id = 12;
    let l = listing(vec![committed(2), moved]);
    assert_eq!(chosen(&l), Some(2));
    assert!(
        matches!(&select_restore(&l).skipped[0].reason, SkipReason::InvalidManifest(r) if r.contains("checkpoint 6"))
    );
}

#[test]
fn manifest_from_a_newer_format_version_is_skipped() {
    let mut newer = committed(3);
    if let ManifestState::Valid(m) = &mut newer.manifest {
        m.version = MANIFEST_VERSION + 1;
    }
    assert_eq!(chosen(&listing(vec![committed(1), newer])), Some(1));
}

#[test]
fn manifest_referencing_another_checkpoints_parts_is_invalid() {
    // Another checkpoint's parts may be garbage-collected independently, so they must not be adopted.
    let mut borrowing = committed(5);
    if let ManifestState::Valid(m) = &mut borrowing.manifest {
        m.parts[0].path = layout::part_path(4, "agg", 0, "aaaa");
    }
    let l = listing(vec![committed(4), borrowing]);
    assert_eq!(chosen(&l), Some(4));
    assert!(matches!(select_restore(&l).skipped[0].reason, SkipReason::InvalidManifest(_)));
}

#[test]
fn manifest_rules_reject_duplicates_bad_workers_and_non_part_paths() {
    let base = manifest(1, parts_of(1, "aaaa"));
    assert_eq!(validate_manifest(&base, 1), Ok(()));

    let mut twice = base.clone();
    twice.parts.push(twice.parts[0].clone());
    assert!(validate_manifest(&twice, 1).unwrap_err().contains("listed twice"));

    let mut two_parts_one_slot = base.clone();
    two_parts_one_slot.parts.push(part(1, "agg", 0, "bbbb", 1));
    assert!(validate_manifest(&two_parts_one_slot, 1).unwrap_err().contains("two parts"));

    let mut bad_worker = base.clone();
    bad_worker.workers = 1;
    assert!(validate_manifest(&bad_worker, 1).unwrap_err().contains("worker 1"));

    let mut points_at_manifest = base.clone();
    points_at_manifest.parts[0].path = layout::manifest_path(1);
    assert!(validate_manifest(&points_at_manifest, 1).unwrap_err().contains("outside"));

    let mut version_zero = base;
    version_zero.version = 0;
    assert!(validate_manifest(&version_zero, 1).is_err());
}

#[test]
fn nothing_restorable_reports_every_reason_newest_first() {
    let mut torn = committed(3);
    torn.manifest = ManifestState::Torn { reason: "garbage".to_owned() };
    let l = listing(vec![uncommitted(1), torn, uncommitted(2)]);
    let choice = select_restore(&l);
    assert_eq!(choice.manifest, None);
    let ids: Vec<_> = choice.skipped.iter().map(|s| s.checkpoint).collect();
    assert_eq!(ids, vec![3, 2, 1]);
}

#[test]
fn skip_reasons_read_well() {
    assert_eq!(
        SkipReason::MissingParts(vec!["a".into(), "b".into()]).to_string(),
        "2 part(s) listed in the manifest are missing: a, b"
    );
    assert!(SkipReason::NoManifest.to_string().contains("never committed"));
}

// ---------------------------------------------------------------- is_complete

#[test]
fn complete_when_every_slot_has_exactly_one_part() {
    let expected = [("agg", 0), ("agg", 1), ("join", 0), ("join", 1)];
    assert_eq!(is_complete(&expected, &parts_of(1, "n")), Ok(()));
    let none: [(&str, usize); 0] = [];
    assert_eq!(is_complete(&none, &[]), Ok(()));
    let owned = vec![("agg".to_owned(), 0)];
    assert_eq!(is_complete(&owned, &[part(1, "agg", 0, "n", 1)]), Ok(()));
}

#[test]
fn incomplete_reports_missing_unexpected_and_duplicated_slots() {
    let expected = [("agg", 0), ("agg", 1), ("join", 0)];
    let parts = vec![part(1, "agg", 0, "n", 1), part(1, "agg", 0, "m", 1), part(1, "sink", 0, "n", 1)];
    let missing = is_complete(&expected, &parts).unwrap_err();
    assert_eq!(missing.missing, vec![("agg".to_owned(), 1), ("join".to_owned(), 0)]);
    assert_eq!(missing.unexpected, vec![("sink".to_owned(), 0)]);
    assert_eq!(missing.duplicated, vec![("agg".to_owned(), 0)]);
    assert_eq!(
        missing.to_string(),
        "checkpoint is incomplete: missing parts: agg[1], join[0]; unexpected parts: sink[0]; \
         duplicated parts: agg[0]"
    );
}

// ---------------------------------------------------------------- next_id

#[test]
fn next_id_is_above_every_id_complete_or_not() {
    assert_eq!(next_id(&Listing::default()), 1);
    assert_eq!(next_id(&listing(vec![committed(4), uncommitted(9), committed(7)])), 10);
    let mut torn = committed(11);
    torn.manifest = ManifestState::Torn { reason: String::new() };
    assert_eq!(next_id(&listing(vec![committed(4), torn])), 12);
    assert_eq!(next_id(&listing(vec![uncommitted(u64::MAX)])), u64::MAX);
}

// ---------------------------------------------------------------- plan_gc

#[test]
fn gc_keeps_the_newest_retained_checkpoints_and_deletes_older_ones() {
    let l = listing(vec![committed(1), committed(2), committed(3), committed(4)]);
    let plan = plan_gc(&l, 2, 5);
    assert_eq!(plan.delete_checkpoints, vec![1, 2]);
    assert_eq!(plan.kept, vec![4, 3]);
    assert!(plan.delete_objects.is_empty());
}

#[test]
fn gc_with_retain_zero_still_keeps_the_only_restorable_checkpoint() {
    let l = listing(vec![committed(1), committed(2)]);
    let plan = plan_gc(&l, 0, 3);
    assert_eq!(plan.delete_checkpoints, vec![1]);
    assert_eq!(plan.kept, vec![2]);
}

#[test]
fn gc_keeps_everything_when_nothing_is_restorable() {
    let mut torn = committed(2);
    torn.manifest = ManifestState::Torn { reason: String::new() };
    let l = listing(vec![uncommitted(1), torn, uncommitted(3)]);
    assert_eq!(plan_gc(&l, 1, 10), GcPlan::default());
}

#[test]
fn gc_deletes_incomplete_checkpoints_older_than_the_newest_restorable_only() {
    let mut missing_part = committed(3);
    missing_part.objects.remove(0);
    let l = listing(vec![uncommitted(1), committed(2), missing_part, committed(4), uncommitted(5)]);
    let plan = plan_gc(&l, 5, 100);
    assert_eq!(plan.delete_checkpoints, vec![1, 3]);
    assert_eq!(plan.kept, vec![4, 2]);
}

#[test]
fn gc_never_touches_in_flight_ids() {
    let mut stale_parts = committed(6);
    stale_parts.objects.push(object(&layout::part_path(6, "agg", 0, "bbbb"), 5));
    let l = listing(vec![committed(1), uncommitted(2), committed(5), stale_parts, uncommitted(7)]);
    // The current run started at 5: 5, 6 and 7 may still be written, even the complete ones.
    let plan = plan_gc(&l, 1, 5);
    assert_eq!(plan.kept, vec![6]);
    assert_eq!(plan.delete_checkpoints, vec![1, 2]);
    assert!(plan.delete_objects.is_empty(), "objects of in-flight checkpoint 6 must not be touched");
}

#[test]
fn gc_counts_in_flight_complete_checkpoints_toward_retention() {
    let l = listing(vec![committed(1), committed(2), committed(3)]);
    let plan = plan_gc(&l, 2, 3);
    assert_eq!(plan.delete_checkpoints, vec![1]);
    assert_eq!(plan.kept, vec![3, 2]);
}

#[test]
fn gc_deletes_unreferenced_objects_inside_kept_checkpoints() {
    let mut kept = committed(4);
    let stale_part = layout::part_path(4, "agg", 0, "bbbb");
    let claim = layout::claim_path(4, "aaaa");
    kept.objects.push(object(&stale_part, 7));
    kept.objects.push(object(&claim, 2));
    let plan = plan_gc(&listing(vec![kept]), 3, 5);
    assert_eq!(plan.delete_objects, vec![stale_part, claim]);
    assert!(plan.delete_checkpoints.is_empty());
}

#[test]
fn gc_with_a_large_retain_keeps_all_complete_checkpoints() {
    let l = listing(vec![committed(1), committed(2)]);
    let plan = plan_gc(&l, usize::MAX, u64::MAX);
    assert_eq!(plan.kept, vec![2, 1]);
    assert!(plan.delete_checkpoints.is_empty());
}

// ---------------------------------------------------------------- claims and racing writers

#[test]
fn claim_wins_only_when_alone() {
    let mine = object(&layout::claim_path(3, "aaaa"), 2);
    let theirs = object(&layout::claim_path(3, "bbbb"), 2);
    let a_part = object(&layout::part_path(3, "agg", 0, "aaaa"), 2);
    assert_eq!(claim_outcome(3, &[mine.clone(), a_part.clone()], "aaaa"), ClaimOutcome::Won);
    assert_eq!(
        claim_outcome(3, &[mine, theirs.clone()], "aaaa"),
        ClaimOutcome::Lost { others: vec!["bbbb".to_owned()] }
    );
    assert_eq!(claim_outcome(3, &[theirs, a_part], "aaaa"), ClaimOutcome::Vanished);
    // A claim for another checkpoint does not count.
    let other_checkpoint = object(&layout::claim_path(4, "bbbb"), 2);
    assert_eq!(
        claim_outcome(3, &[object(&layout::claim_path(3, "aaaa"), 2), other_checkpoint], "aaaa"),
        ClaimOutcome::Won
    );
}

/// A model of one checkpoint directory on a store whose create-only put is a non-atomic
/// check-then-write (s3s-fs 0.14.1), and of writers running `commit_manifest` against it, retries
/// included. Every interleaving of their storage requests is explored.
mod race {
    use std::collections::{BTreeSet, HashSet};

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Step {
        CheckManifest,
        PutClaim,
        ListClaims,
        /// Withdraw the claim, then retry (`true`) or report a conflict.
        Withdraw(bool),
        CreateCheck,
        CreateWrite,
        DropClaim,
        Done(bool),
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Writer {
        nonce: &'static str,
        step: Step,
        retries: u8,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
    struct Store {
        /// The nonces of the claims present.
        claims: BTreeSet<&'static str>,
        /// The nonce of the writer whose manifest is stored.
        manifest: Option<&'static str>,
    }

    const ID: CheckpointId = 5;

    impl Store {
        fn claim_objects(&self) -> Vec<ListedObject> {
            self.claims.iter().map(|nonce| object(&layout::claim_path(ID, nonce), 2)).collect()
        }

        /// The listing once every writer has written its parts.
        fn listing(&self, writers: &[Writer]) -> Listing {
            let manifest = match self.manifest {
                None => ManifestState::Missing,
                Some(nonce) => ManifestState::Valid(manifest(ID, parts_of(ID, nonce))),
            };
            let mut objects = self.claim_objects();
            if self.manifest.is_some() {
                objects.push(object(&layout::manifest_path(ID), 100));
            }
            for w in writers {
                objects.extend(objects_of(&parts_of(ID, w.nonce)));
            }
            Listing { checkpoints: vec![ListedCheckpoint { id: ID, manifest, objects }] }
        }
    }

    /// Advances `writer` by one storage request; the same logic as `commit_manifest`.
    fn advance(writer: &mut Writer, store: &mut Store) {
        writer.step = match writer.step {
            Step::CheckManifest if store.manifest.is_some() => Step::Done(false),
            Step::CheckManifest => Step::PutClaim,
            Step::PutClaim => {
                store.claims.insert(writer.nonce);
                Step::ListClaims
            }
            Step::ListClaims => match claim_outcome(ID, &store.claim_objects(), writer.nonce) {
                ClaimOutcome::Won => Step::CreateCheck,
                ClaimOutcome::Lost { .. } | ClaimOutcome::Vanished => Step::Withdraw(writer.retries > 0),
            },
            Step::Withdraw(retry) => {
                store.claims.remove(writer.nonce);
                if retry {
                    writer.retries -= 1;
                    Step::CheckManifest
                } else {
                    Step::Done(false)
                }
            }
            Step::CreateCheck if store.manifest.is_some() => Step::Withdraw(false),
            Step::CreateCheck => Step::CreateWrite,
            Step::CreateWrite => {
                // The non-atomic store overwrites whatever arrived since the check.
                store.manifest = Some(writer.nonce);
                Step::DropClaim
            }
            Step::DropClaim => {
                store.claims.remove(writer.nonce);
                Step::Done(true)
            }
            Step::Done(won) => Step::Done(won),
        };
    }

    /// Explores every interleaving of the writers' steps (each state once) and checks the
    /// invariants in every final state. Returns the number of distinct final states.
    fn explore(writers: &[Writer]) -> usize {
        let mut seen = HashSet::new();
        let mut pending = vec![(writers.to_vec(), Store::default())];
        let mut ends = 0;
        while let Some((writers, store)) = pending.pop() {
            if !seen.insert((writers.clone(), store.clone())) {
                continue;
            }
            let runnable: Vec<usize> =
                (0..writers.len()).filter(|&i| !matches!(writers[i].step, Step::Done(_))).collect();
            if runnable.is_empty() {
                ends += 1;
                check_end(&writers, &store);
            }
            for i in runnable {
                let (mut writers, mut store) = (writers.clone(), store.clone());
                advance(&mut writers[i], &mut store);
                pending.push((writers, store));
            }
        }
        ends
    }

    fn check_end(writers: &[Writer], store: &Store) {
        let winners: Vec<&str> =
            writers.iter().filter(|w| w.step == Step::Done(true)).map(|w| w.nonce).collect();
        assert!(winners.len() <= 1, "two writers were told they committed: {winners:?}");
        // The stored manifest is the winner's; the others were told Conflict.
        assert_eq!(store.manifest, winners.first().copied(), "{writers:?}");
        assert!(store.claims.is_empty(), "every claim is withdrawn: {store:?}");
        let listing = store.listing(writers);
        if let Some(winner) = winners.first() {
            let restored = select_restore(&listing).manifest.expect("the committed checkpoint is restorable");
            assert!(restored.parts.iter().all(|p| p.path.ends_with(&format!("-{winner}.part"))));
            // Garbage collection removes the losers' parts and leaves the winner's.
            let plan = plan_gc(&listing, 1, ID + 1);
            assert_eq!(plan.delete_objects.len(), 4 * (writers.len() - 1));
            assert!(plan.delete_objects.iter().all(|p| !p.contains(winner)));
        } else {
            assert_eq!(select_restore(&listing).manifest, None);
        }
    }

    fn writers(nonces: &[&'static str], retries: u8) -> Vec<Writer> {
        nonces.iter().map(|&nonce| Writer { nonce, step: Step::CheckManifest, retries }).collect()
    }

    #[test]
    fn stale_writer_racing_a_newer_one_never_both_commit_in_any_interleaving() {
        let ends = explore(&writers(&["stale", "newer"], 2));
        assert!(ends >= 3, "explored {ends} final states");
    }

    #[test]
    fn three_racing_writers_never_both_commit_in_any_interleaving() {
        let ends = explore(&writers(&["aaaa", "bbbb", "cccc"], 2));
        assert!(ends >= 4, "explored {ends} final states");
    }

    #[test]
    fn a_late_writer_gets_a_conflict_after_the_winner_committed() {
        let mut store = Store::default();
        let mut first = writers(&["first"], 0).remove(0);
        while !matches!(first.step, Step::Done(_)) {
            advance(&mut first, &mut store);
        }
        assert_eq!(first.step, Step::Done(true));
        // Even if the late writer missed the manifest in its first check, the create-only put stops it.
        let mut late = writers(&["late"], 2).remove(0);
        late.step = Step::PutClaim;
        while !matches!(late.step, Step::Done(_)) {
            advance(&mut late, &mut store);
        }
        assert_eq!(late.step, Step::Done(false));
        assert_eq!(store.manifest, Some("first"));
        assert!(store.claims.is_empty());
    }
}
