//! The scenarios against a local directory store.

use crate::scenarios;
use crate::support::LocalBackend;

macro_rules! local_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            scenarios::$name(&LocalBackend::new()).await;
        }
    )*};
}

local_tests!(
    write_commit_and_restore,
    second_commit_of_a_checkpoint_conflicts,
    racing_writers_commit_at_most_once,
    torn_manifest_is_ignored,
    missing_or_truncated_parts_fall_back,
    checkpoints_without_manifest_are_ignored_and_collected,
    gc_keeps_retained_and_in_flight_checkpoints,
    exported_savepoint_restores_from_its_own_store,
    commit_refuses_a_manifest_whose_parts_are_missing,
    large_part_round_trips,
    a_spilled_part_is_uploaded_in_chunks_and_streams_back,
);
