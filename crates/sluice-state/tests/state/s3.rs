//! The scenarios against a real S3-compatible server (`s3s-fs`) on loopback, one server per test.

use crate::scenarios;
use crate::support::S3sFs;

macro_rules! s3_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(server) = S3sFs::start() else { return };
            scenarios::$name(&server).await;
        }
    )*};
}

s3_tests!(
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

/// A plain `object_store` client of the test bucket, to see what the server stored.
fn bucket(server: &S3sFs) -> object_store::aws::AmazonS3 {
    let options = server.options();
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(crate::support::BUCKET)
        .with_region("us-east-1")
        .with_endpoint(options.endpoint.unwrap())
        .with_allow_http(true)
        .with_access_key_id(options.access_key_id.unwrap())
        .with_secret_access_key(options.secret_access_key.unwrap())
        .build()
        .unwrap()
}

/// s3s-fs 0.14.1 checks `If-None-Match: *` before writing (not atomically, see the crate docs):
/// a create-only put of an existing object fails, which `commit_manifest` relies on as its second
/// line of defence.
#[tokio::test]
async fn s3s_fs_refuses_a_second_create_only_put() {
    use object_store::{ObjectStore, PutMode, PutOptions};

    let Some(server) = S3sFs::start() else { return };
    let s3 = bucket(&server);
    let path = object_store::path::Path::from("create-only");
    let create = || PutOptions { mode: PutMode::Create, ..PutOptions::default() };
    s3.put_opts(&path, "first".into(), create()).await.unwrap();
    let second = s3.put_opts(&path, "second".into(), create()).await.unwrap_err();
    assert!(matches!(second, object_store::Error::AlreadyExists { .. }), "{second}");
}

/// The server itself says a large spilled part arrived as a multipart upload: s3s-fs gives
/// such objects the ETag `<md5 of the parts' md5s>-<number of parts>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_spilled_part_reaches_the_server_as_a_multipart_upload() {
    use object_store::ObjectStoreExt;

    use crate::support::Backend;

    let Some(server) = S3sFs::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("part");
    std::fs::write(&file, vec![7u8; 2 * sluice_state::MULTIPART_CHUNK + 1]).unwrap();
    let written = server.open("run").put_part_file(1, "agg", 0, &file).await.unwrap();
    assert_eq!(written.chunks, 3);
    let object = object_store::path::Path::from(format!("runs/run/{}", written.path));
    let e_tag = bucket(&server).head(&object).await.unwrap().e_tag.unwrap();
    assert!(e_tag.trim_matches('"').ends_with("-3"), "ETag {e_tag}");
}
