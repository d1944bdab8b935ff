//! The storage edge: a checkpoint store on a local directory or an S3-compatible bucket.
//!
//! Every decision is taken by [`protocol`](crate::protocol); this module only gathers facts and
//! carries out plans.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use tracing::{debug, info, warn};

use crate::protocol::{self, ClaimOutcome, ListedCheckpoint, ListedObject, Listing, ManifestState};
use crate::{CheckpointId, CheckpointKind, Error, Manifest, PartEntry, Result, layout};

/// Objects larger than this are uploaded in chunks of this size with a multipart upload (S3
/// refuses single puts above 5 GiB and chunks below 5 MiB but the last). A streamed upload
/// holds at most `MULTIPART_CONCURRENCY + 1` chunks and one read in memory, whatever the size
/// of the object.
pub const MULTIPART_CHUNK: usize = 5 * 1024 * 1024;
const MULTIPART_CONCURRENCY: usize = 2;
/// How much of a file a streamed upload reads at once.
const FILE_READ: usize = 1024 * 1024;
/// How often a writer tries to claim a checkpoint when racing writers all lost a round.
const CLAIM_ATTEMPTS: u64 = 3;
/// The random back-off between claim attempts, multiplied by the attempt number.
const CLAIM_BACKOFF_MS: std::ops::Range<u64> = 10..150;
/// How many parts a savepoint export copies at once.
const COPY_CONCURRENCY: usize = 8;

/// Connection options for `s3://` locations; ignored for local directories.
///
/// Missing values fall back to the environment: `AWS_ENDPOINT_URL`, `AWS_REGION` (default
/// `us-east-1`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` when the
/// keys come from the environment). Without keys, the default AWS credential chain is used (for
/// example an instance profile). With an endpoint, buckets are addressed path-style
/// (`<endpoint>/<bucket>/<key>`), as S3-compatible servers expect.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// The S3 endpoint URL, e.g. `http://127.0.0.1:9000`; `None` for AWS.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (implied when the endpoint starts with `http://`).
    pub allow_http: bool,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Where a part was written; goes into the manifest's [`PartEntry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartRef {
    /// Object path relative to the store root.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// How many chunks a multipart upload sent; 0 when the part was written in one put.
    pub chunks: u64,
}

/// A part being read with blocking reads; see [`CheckpointStore::part_reader`].
pub struct PartReader {
    runtime: tokio::runtime::Handle,
    chunks: BoxStream<'static, Result<Bytes>>,
    current: Bytes,
}

impl Read for PartReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.chunks.next()) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(std::io::Error::other(error)),
                None => return Ok(0),
            }
        }
        let length = buffer.len().min(self.current.len());
        buffer[..length].copy_from_slice(&self.current.split_to(length));
        Ok(length)
    }
}

/// What [`CheckpointStore::collect_garbage`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Checkpoints deleted entirely, oldest first.
    pub deleted_checkpoints: Vec<CheckpointId>,
    /// Objects deleted (inside deleted checkpoints and unreferenced ones inside kept checkpoints).
    pub deleted_objects: usize,
    /// Restorable checkpoints kept, newest first.
    pub kept: Vec<CheckpointId>,
}

/// A checkpoint store: a local directory or an `s3://bucket/prefix`. Cheap to clone; clones share
/// the connection and the writer nonce.
///
/// Each [`open`](Self::open) draws a random writer nonce that goes into the names of the parts and
/// claims it writes, so two runs (or a stale and a newer writer) never write the same object.
#[derive(Clone)]
pub struct CheckpointStore {
    inner: Arc<Inner>,
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    location: String,
    nonce: String,
}

impl fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("location", &self.inner.location)
            .field("nonce", &self.inner.nonce)
            .finish()
    }
}

impl CheckpointStore {
    /// Opens the store at `location`: a local directory (absolute or relative, created if needed),
    /// `file:///absolute/path`, or `s3://bucket/optional/prefix`. Connects lazily: a wrong
    /// endpoint or credentials show up on the first operation.
    pub fn open(location: &str, options: &StoreOptions) -> Result<Self> {
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(invalid_location(
                location,
                "it is empty; give a directory path or s3://bucket/prefix",
                None,
            ));
        }
        let objects = match trimmed.split_once("://") {
            Some(("s3", rest)) => open_s3(location, rest, options)?,
            Some(("file", path)) => open_local(location, path)?,
            Some((scheme, _)) => {
                return Err(invalid_location(
                    location,
                    &format!(
                        "the scheme '{scheme}://' is not supported; use a local directory path, \
                         file:///absolute/path or s3://bucket/prefix"
                    ),
                    None,
                ));
            }
            None => open_local(location, trimmed)?,
        };
        let nonce = format!("{:016x}", rand::random::<u64>());
        debug!(location, nonce, "opened checkpoint store");
        Ok(Self { inner: Arc::new(Inner { objects, location: location.to_owned(), nonce }) })
    }

    /// The location as given to [`open`](Self::open).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// This handle's writer nonce (part of every part and claim path it writes).
    pub fn writer_nonce(&self) -> &str {
        &self.inner.nonce
    }

    /// Writes the state of `node` on `worker` for `checkpoint`, at a path unique to this writer.
    /// Writing the same part again (a retry) overwrites this writer's previous attempt.
    pub async fn put_part(
        &self,
        checkpoint: CheckpointId,
        node: &str,
        worker: usize,
        bytes: Bytes,
    ) -> Result<PartRef> {
        let size = bytes.len() as u64;
        self.put_part_stream(checkpoint, node, worker, size, futures::stream::iter([Ok(bytes)])).await
    }

    /// Like [`put_part`](Self::put_part), with the part's bytes read from the local file `file`
    /// as they are uploaded: memory use is bounded (see [`MULTIPART_CHUNK`]) whatever the size
    /// of the file. Errors reading the file are [`Error::LocalState`].
    pub async fn put_part_file(
        &self,
        checkpoint: CheckpointId,
        node: &str,
        worker: usize,
        file: &std::path::Path,
    ) -> Result<PartRef> {
        let local = |error: &dyn fmt::Display| Error::LocalState {
            dir: file.display().to_string(),
            reason: format!("cannot read the checkpoint part spilled here: {error}"),
        };
        let opened = std::fs::File::open(file).map_err(|e| local(&e))?;
        let size = opened.metadata().map_err(|e| local(&e))?.len();
        let chunks = futures::stream::try_unfold(opened, move |opened| async move {
            let read = tokio::task::spawn_blocking(move || {
                let mut chunk = Vec::with_capacity(FILE_READ);
                let read = (&opened).take(FILE_READ as u64).read_to_end(&mut chunk);
                read.map(|_| (opened, chunk))
            });
            let (opened, chunk) = read.await.map_err(|e| local(&e))?.map_err(|e| local(&e))?;
            Ok((!chunk.is_empty()).then(|| (Bytes::from(chunk), opened)))
        });
        self.put_part_stream(checkpoint, node, worker, size, chunks).await
    }

    async fn put_part_stream(
        &self,
        checkpoint: CheckpointId,
        node: &str,
        worker: usize,
        size: u64,
        chunks: impl Stream<Item = Result<Bytes>> + Send,
    ) -> Result<PartRef> {
        if node.is_empty() {
            return Err(self.invalid_request("a part needs a node name, got an empty one".to_owned()));
        }
        let path = layout::part_path(checkpoint, node, worker, &self.inner.nonce);
        let chunks = self.write_stream(&path, size, chunks).await?;
        debug!(
            location = self.location(),
            checkpoint,
            node,
            worker,
            bytes = size,
            chunks,
            "wrote checkpoint part"
        );
        Ok(PartRef { path, bytes: size, chunks })
    }

    /// Reads a part by its path relative to the store root (as recorded in a [`PartEntry`]).
    pub async fn get_part(&self, path: &str) -> Result<Bytes> {
        let object = self.object_path(path)?;
        let result = match self.inner.objects.get(&object).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        };
        result.map_err(|error| self.read_error(path, error))
    }

    /// Reads a part as a stream of chunks, with its size: memory use is bounded whatever the
    /// size of the part.
    pub async fn get_part_stream(&self, path: &str) -> Result<(u64, BoxStream<'static, Result<Bytes>>)> {
        let object = self.object_path(path)?;
        let result = self.inner.objects.get(&object).await.map_err(|error| self.read_error(path, error))?;
        let size = result.meta.size;
        let (store, path) = (self.clone(), path.to_owned());
        let chunks = result.into_stream().map_err(move |error| store.read_error(&path, error));
        Ok((size, chunks.boxed()))
    }

    /// Reads a part as a blocking [`Read`], for threads that are not the async runtime's: each
    /// read waits on `runtime` for the next chunk of the object. Memory use is bounded whatever
    /// the size of the part. Read errors are [`std::io::Error`]s wrapping this crate's
    /// [`Error`].
    pub fn part_reader(&self, path: &str, runtime: &tokio::runtime::Handle) -> Result<PartReader> {
        let (_, chunks) = runtime.block_on(self.get_part_stream(path))?;
        Ok(PartReader { runtime: runtime.clone(), chunks, current: Bytes::new() })
    }

    /// Commits `manifest`, which makes its checkpoint complete. Create-only: returns
    /// [`Error::Conflict`] if the checkpoint already has a manifest or another writer is committing
    /// it at the same time; then this writer must not commit output for it. Returns
    /// [`Error::InvalidRequest`] if the manifest breaks the protocol's rules or a part it lists is
    /// not in storage with the recorded size.
    ///
    /// On [`Error::Storage`] the outcome is unknown (the manifest may or may not have been
    /// written): do not commit output; the next restore decides.
    pub async fn commit_manifest(&self, manifest: &Manifest) -> Result<()> {
        let id = manifest.checkpoint;
        protocol::validate_manifest(manifest, id)
            .map_err(|reason| self.invalid_request(format!("cannot commit checkpoint {id}: {reason}")))?;
        let manifest_path = layout::manifest_path(id);
        let mut attempt = 1;
        loop {
            let objects = self.list_checkpoint(id).await?;
            if objects.iter().any(|o| o.path == manifest_path) {
                return Err(self.conflict(id, "its manifest already exists".to_owned()));
            }
            protocol::check_parts(manifest, &objects)
                .map_err(|reason| self.invalid_request(format!("cannot commit checkpoint {id}: {reason}")))?;
            match self.claim(id).await {
                Ok(()) => break,
                // Racing writers may all lose a round; back off for a random while so one wins the next.
                Err(Error::Conflict { .. }) if attempt < CLAIM_ATTEMPTS => {
                    let jitter = rand::random_range(CLAIM_BACKOFF_MS.clone()) * attempt;
                    debug!(
                        location = self.location(),
                        checkpoint = id,
                        attempt,
                        jitter,
                        "lost claim race, retrying"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }

        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|error| self.invalid_request(format!("cannot serialize manifest {id}: {error}")))?;
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let put = self.inner.objects.put_opts(&self.object_path(&manifest_path)?, body.into(), options).await;
        match put {
            Ok(_) => {
                self.withdraw_claim(id).await;
                info!(
                    location = self.location(),
                    checkpoint = id,
                    parts = manifest.parts.len(),
                    "committed checkpoint"
                );
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                // A retried request may have found its own first attempt: that is a success.
                let ours = matches!(self.read_manifest(id).await?, ManifestState::Valid(m) if m == *manifest);
                self.withdraw_claim(id).await;
                if ours {
                    Ok(())
                } else {
                    Err(self.conflict(id, "another writer's manifest was created first".to_owned()))
                }
            }
            // The claim stays: whether the manifest was written is unknown, so nobody else may win.
            Err(error) => Err(self.storage_error("write", &manifest_path, error)),
        }
    }

    /// Lists every checkpoint with its objects and parsed manifest: the facts for [`protocol`].
    pub async fn list(&self) -> Result<Listing> {
        let metas: Vec<_> = self
            .inner
            .objects
            .list(None)
            .try_collect()
            .await
            .map_err(|e| self.storage_error("list", "", e))?;
        let mut by_id: BTreeMap<CheckpointId, Vec<ListedObject>> = BTreeMap::new();
        for meta in metas {
            let path = meta.location.as_ref();
            match layout::checkpoint_of(path) {
                Some(id) => by_id
                    .entry(id)
                    .or_default()
                    .push(ListedObject { path: path.to_owned(), bytes: meta.size }),
                None => {
                    debug!(location = self.location(), path, "ignoring object outside checkpoint directories")
                }
            }
        }
        let checkpoints = futures::stream::iter(by_id)
            .map(|(id, objects)| async move {
                let has_manifest = objects.iter().any(|o| o.path == layout::manifest_path(id));
                let manifest =
                    if has_manifest { self.read_manifest(id).await? } else { ManifestState::Missing };
                Ok::<_, Error>(ListedCheckpoint { id, manifest, objects })
            })
            .buffered(COPY_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(Listing { checkpoints })
    }

    /// The newest complete checkpoint (see [`protocol::select_restore`]), logging why newer ones
    /// were skipped.
    pub async fn latest_complete(&self) -> Result<Option<Manifest>> {
        let listing = self.list().await?;
        let choice = protocol::select_restore(&listing);
        for skipped in &choice.skipped {
            warn!(
                location = self.location(),
                checkpoint = skipped.checkpoint,
                reason = %skipped.reason,
                "skipping checkpoint on restore"
            );
        }
        Ok(choice.manifest.cloned())
    }

    /// An id strictly greater than every checkpoint id in storage, complete or not (1 for an empty
    /// store).
    pub async fn next_checkpoint_id(&self) -> Result<CheckpointId> {
        let listing = self.list().await?;
        if listing.checkpoints.iter().any(|c| c.id == CheckpointId::MAX) {
            return Err(self.invalid_request(format!(
                "a checkpoint with the largest possible id {} exists; remove it by hand",
                CheckpointId::MAX
            )));
        }
        Ok(protocol::next_id(&listing))
    }

    /// Deletes what [`protocol::plan_gc`] plans: keeps the newest `retain` (at least one)
    /// complete checkpoints and never touches ids `>= in_flight_from`.
    pub async fn collect_garbage(&self, retain: usize, in_flight_from: CheckpointId) -> Result<GcReport> {
        let listing = self.list().await?;
        let plan = protocol::plan_gc(&listing, retain, in_flight_from);
        let mut report = GcReport { kept: plan.kept.clone(), ..GcReport::default() };
        for id in &plan.delete_checkpoints {
            let Some(checkpoint) = listing.checkpoints.iter().find(|c| c.id == *id) else { continue };
            // The manifest goes first: a checkpoint half deleted by a crash is then merely incomplete.
            let manifest = layout::manifest_path(*id);
            let mut paths: Vec<&str> = checkpoint.objects.iter().map(|o| o.path.as_str()).collect();
            paths.sort_by_key(|path| *path != manifest);
            for path in paths {
                self.delete(path).await?;
                report.deleted_objects += 1;
            }
            report.deleted_checkpoints.push(*id);
        }
        for path in &plan.delete_objects {
            self.delete(path).await?;
            report.deleted_objects += 1;
        }
        if report.deleted_objects > 0 {
            info!(
                location = self.location(),
                deleted_checkpoints = ?report.deleted_checkpoints,
                deleted_objects = report.deleted_objects,
                kept = ?report.kept,
                "collected checkpoint garbage"
            );
        }
        Ok(report)
    }

    /// Copies the parts of `manifest` (a checkpoint of this store) into `target` and commits a
    /// [`CheckpointKind::Savepoint`] manifest there that points at the copies. Returns that
    /// manifest. A savepoint is a store holding one checkpoint: opening it and calling
    /// [`latest_complete`](Self::latest_complete) restores it.
    pub async fn export_savepoint(&self, manifest: &Manifest, target: &CheckpointStore) -> Result<Manifest> {
        let id = manifest.checkpoint;
        protocol::validate_manifest(manifest, id)
            .map_err(|reason| self.invalid_request(format!("cannot export checkpoint {id}: {reason}")))?;
        // Owned entries: a future borrowing them through a closure is not `Send` for every
        // lifetime, which spawning it on a runtime needs.
        let parts: Vec<PartEntry> = futures::stream::iter(manifest.parts.clone())
            .map(|part| async move {
                let (size, chunks) = self.get_part_stream(&part.path).await?;
                if size != part.bytes {
                    return Err(Error::Corrupt {
                        location: self.location().to_owned(),
                        path: part.path.clone(),
                        reason: format!("it has {size} bytes but the manifest records {}", part.bytes),
                    });
                }
                let copy = target.put_part_stream(id, &part.node, part.worker, size, chunks).await?;
                Ok(PartEntry { path: copy.path, ..part })
            })
            .buffered(COPY_CONCURRENCY)
            .try_collect()
            .await?;
        let savepoint = Manifest { kind: CheckpointKind::Savepoint, parts, ..manifest.clone() };
        target.commit_manifest(&savepoint).await?;
        info!(from = self.location(), to = target.location(), checkpoint = id, "exported savepoint");
        Ok(savepoint)
    }

    /// Writes this writer's claim on `checkpoint` and decides it (see [`protocol::claim_outcome`]).
    async fn claim(&self, checkpoint: CheckpointId) -> Result<()> {
        let path = layout::claim_path(checkpoint, &self.inner.nonce);
        self.write(&path, Bytes::from(format!("{{\"writer\":\"{}\"}}", self.inner.nonce))).await?;
        let objects = self.list_checkpoint(checkpoint).await?;
        match protocol::claim_outcome(checkpoint, &objects, &self.inner.nonce) {
            ClaimOutcome::Won => Ok(()),
            ClaimOutcome::Lost { others } => {
                self.withdraw_claim(checkpoint).await;
                Err(self.conflict(
                    checkpoint,
                    format!("writer(s) {} are committing it concurrently", others.join(", ")),
                ))
            }
            ClaimOutcome::Vanished => Err(self.conflict(
                checkpoint,
                "this writer's claim was deleted while committing (by garbage collection of another run?)"
                    .to_owned(),
            )),
        }
    }

    /// Best effort: a leftover claim only blocks this id for other writers and is collected later.
    async fn withdraw_claim(&self, checkpoint: CheckpointId) {
        let path = layout::claim_path(checkpoint, &self.inner.nonce);
        if let Err(error) = self.delete(&path).await {
            warn!(location = self.location(), checkpoint, error = %error, "could not withdraw checkpoint claim");
        }
    }

    async fn list_checkpoint(&self, checkpoint: CheckpointId) -> Result<Vec<ListedObject>> {
        let dir = layout::checkpoint_dir(checkpoint);
        let prefix = self.object_path(&dir)?;
        let metas: Vec<_> = self
            .inner
            .objects
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|error| self.storage_error("list", &dir, error))?;
        Ok(metas.into_iter().map(|m| ListedObject { path: m.location.to_string(), bytes: m.size }).collect())
    }

    async fn read_manifest(&self, checkpoint: CheckpointId) -> Result<ManifestState> {
        let path = layout::manifest_path(checkpoint);
        match self.get_part(&path).await {
            Ok(body) => Ok(match serde_json::from_slice::<Manifest>(&body) {
                Ok(manifest) => ManifestState::Valid(manifest),
                Err(error) => ManifestState::Torn { reason: error.to_string() },
            }),
            // Deleted between listing and reading (garbage collection).
            Err(Error::NotFound { .. }) => Ok(ManifestState::Missing),
            Err(error) => Err(error),
        }
    }

    async fn write(&self, path: &str, bytes: Bytes) -> Result<()> {
        let size = bytes.len() as u64;
        self.write_stream(path, size, futures::stream::iter([Ok(bytes)])).await.map(drop)
    }

    /// Writes the `size` bytes of `chunks` to `path`: in one put if they fit in one
    /// [`MULTIPART_CHUNK`], else with a multipart upload that holds at most a few chunks in
    /// memory. Returns how many chunks a multipart upload sent (0 for one put).
    async fn write_stream(
        &self,
        path: &str,
        size: u64,
        chunks: impl Stream<Item = Result<Bytes>> + Send,
    ) -> Result<u64> {
        let object = self.object_path(path)?;
        let store = &self.inner.objects;
        let mut chunks = std::pin::pin!(chunks);
        let mut written = 0u64;
        if size <= MULTIPART_CHUNK as u64 {
            let mut payload = Vec::new();
            while let Some(chunk) = chunks.try_next().await? {
                written += chunk.len() as u64;
                payload.push(chunk);
            }
            self.check_streamed(path, size, written)?;
            let put = store.put(&object, payload.into_iter().collect::<PutPayload>()).await;
            return put.map(|_| 0).map_err(|error| self.storage_error("write", path, error));
        }
        let upload = store.put_multipart(&object).await.map_err(|e| self.storage_error("write", path, e))?;
        let mut upload = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        let mut fed = async {
            while let Some(chunk) = chunks.try_next().await? {
                upload
                    .wait_for_capacity(MULTIPART_CONCURRENCY)
                    .await
                    .map_err(|e| self.storage_error("write", path, e))?;
                written += chunk.len() as u64;
                upload.put(chunk);
            }
            self.check_streamed(path, size, written)
        }
        .await;
        if fed.is_ok() {
            fed = upload.finish().await.map(drop).map_err(|e| self.storage_error("write", path, e));
        } else {
            let _ = upload.abort().await;
        }
        fed.map(|()| size.div_ceil(MULTIPART_CHUNK as u64))
    }

    /// A stream that was to write `size` bytes to `path` gave `written`.
    fn check_streamed(&self, path: &str, size: u64, written: u64) -> Result<()> {
        if written == size {
            return Ok(());
        }
        Err(Error::Corrupt {
            location: self.location().to_owned(),
            path: path.to_owned(),
            reason: format!("its source gave {written} bytes instead of the {size} announced"),
        })
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.inner.objects.delete(&self.object_path(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.storage_error("delete", path, error)),
        }
    }

    /// Parses a store-relative path, refusing anything that is not already canonical (empty
    /// segments, `.` or `..`, characters object stores escape).
    fn object_path(&self, path: &str) -> Result<Path> {
        match Path::parse(path) {
            Ok(parsed) if parsed.as_ref() == path && !path.is_empty() => Ok(parsed),
            Ok(_) => Err(self.invalid_request(format!("'{path}' is not a canonical object path"))),
            Err(error) => Err(self.invalid_request(format!("'{path}' is not a valid object path: {error}"))),
        }
    }

    fn invalid_request(&self, reason: String) -> Error {
        Error::InvalidRequest { location: self.location().to_owned(), reason }
    }

    fn conflict(&self, checkpoint: CheckpointId, detail: String) -> Error {
        Error::Conflict { checkpoint, location: self.location().to_owned(), detail }
    }

    fn read_error(&self, path: &str, error: object_store::Error) -> Error {
        match error {
            object_store::Error::NotFound { .. } => {
                Error::NotFound { location: self.location().to_owned(), path: path.to_owned() }
            }
            error => self.storage_error("read", path, error),
        }
    }

    fn storage_error(&self, operation: &'static str, path: &str, source: object_store::Error) -> Error {
        Error::Storage {
            operation,
            location: self.location().to_owned(),
            path: path.to_owned(),
            source: Box::new(source),
        }
    }
}

fn invalid_location(
    location: &str,
    reason: &str,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::InvalidLocation { location: location.to_owned(), reason: reason.to_owned(), source }
}

fn open_local(location: &str, path: &str) -> Result<Arc<dyn ObjectStore>> {
    if path.is_empty() {
        return Err(invalid_location(location, "the directory path is empty", None));
    }
    std::fs::create_dir_all(path).map_err(|error| {
        invalid_location(location, "cannot create the checkpoint directory", Some(Box::new(error)))
    })?;
    let store = LocalFileSystem::new_with_prefix(path).map_err(|error| {
        invalid_location(location, "cannot use the checkpoint directory", Some(Box::new(error)))
    })?;
    Ok(Arc::new(store.with_automatic_cleanup(true)))
}

fn open_s3(location: &str, rest: &str, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let s3 = s3_client(location, bucket, options)?;
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(Arc::new(s3));
    }
    let prefix = Path::parse(prefix).map_err(|error| {
        invalid_location(location, &format!("'{prefix}' is not a valid key prefix"), Some(Box::new(error)))
    })?;
    Ok(Arc::new(PrefixStore::new(s3, prefix)))
}

/// A client of the S3 bucket `bucket`, configured as checkpoint stores are: from `options`,
/// then the standard AWS environment variables (see [`StoreOptions`]). For other users of
/// S3, such as the file connector, so that every S3 client of Sluice is configured alike.
/// Errors are [`Error::InvalidLocation`] for `s3://<bucket>`.
pub fn s3_bucket_store(bucket: &str, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    Ok(Arc::new(s3_client(&format!("s3://{bucket}"), bucket, options)?))
}

fn s3_client(location: &str, bucket: &str, options: &StoreOptions) -> Result<object_store::aws::AmazonS3> {
    let bad_bucket = bucket.is_empty() || bucket.chars().any(|c| c.is_whitespace() || "?#%\\".contains(c));
    if bad_bucket {
        return Err(invalid_location(
            location,
            &format!("'{bucket}' is not a bucket name; the form is s3://bucket/optional/prefix"),
            None,
        ));
    }
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
    let endpoint = options.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
    let region =
        options.region.clone().or_else(|| env("AWS_REGION")).unwrap_or_else(|| "us-east-1".to_owned());
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_region(region);
    if let Some(endpoint) = &endpoint {
        let allow_http = options.allow_http || endpoint.starts_with("http://");
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(allow_http);
    } else {
        builder = builder.with_allow_http(options.allow_http);
    }
    let keys_from_options = options.access_key_id.is_some() || options.secret_access_key.is_some();
    let (key, secret) = if keys_from_options {
        (options.access_key_id.clone(), options.secret_access_key.clone())
    } else {
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    };
    match (key, secret) {
        (Some(key), Some(secret)) => {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret);
            if let Some(token) = env("AWS_SESSION_TOKEN").filter(|_| !keys_from_options) {
                builder = builder.with_token(token);
            }
        }
        (None, None) => {}
        _ => {
            return Err(invalid_location(
                location,
                "give both an access key id and a secret access key, or neither to use the default AWS \
                 credential chain",
                None,
            ));
        }
    }
    builder
        .build()
        .map_err(|error| invalid_location(location, "cannot configure the S3 client", Some(Box::new(error))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_and_unsupported_locations_are_user_errors_that_say_the_fix() {
        let options = StoreOptions::default();
        for (location, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("gs://bucket/x", "'gs://' is not supported"),
            ("s3://", "not a bucket name"),
            ("s3:///prefix", "not a bucket name"),
            ("s3://bucket/a//b", "not a valid key prefix"),
        ] {
            let error = CheckpointStore::open(location, &options).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::User, "{location}");
            assert!(error.to_string().contains(needle), "{location}: {error}");
        }
    }

    #[test]
    fn half_given_credentials_are_rejected() {
        let options = StoreOptions { access_key_id: Some("key".into()), ..StoreOptions::default() };
        let error = CheckpointStore::open("s3://bucket", &options).unwrap_err();
        assert!(error.to_string().contains("both an access key id and a secret access key"), "{error}");
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let options = StoreOptions { secret_access_key: Some("hunter2".into()), ..StoreOptions::default() };
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn local_directories_are_created_and_each_open_gets_its_own_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("a/b");
        let location = location.to_str().unwrap();
        let first = CheckpointStore::open(location, &StoreOptions::default()).unwrap();
        let second = CheckpointStore::open(&format!("file://{location}"), &StoreOptions::default()).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(first.location(), location);
        assert_ne!(first.writer_nonce(), second.writer_nonce());
        assert!(layout::is_valid_nonce(first.writer_nonce()));
        assert_eq!(first.clone().writer_nonce(), first.writer_nonce());
    }

    #[test]
    fn non_canonical_part_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
        for path in ["", "/chk-0000000001/x", "chk-0000000001//x", "../etc/passwd", "a/./b"] {
            assert!(matches!(store.object_path(path), Err(Error::InvalidRequest { .. })), "{path}");
        }
        assert!(store.object_path("chk-0000000001/agg/0-ab.part").is_ok());
    }
}
