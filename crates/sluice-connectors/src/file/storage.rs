//! Where the file connector's files live: a local folder, or an S3 bucket (`s3://bucket/key`).
//!
//! The source and the sink see one interface, [`Location`], with two backends. Local files go
//! through `std::fs`, which can sync files and folders, so committed parts survive a power
//! loss. S3 goes through `object_store`, with the client configured exactly as checkpoint stores
//! configure theirs ([`sluice_state::s3_bucket_store`]: options first, then `AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`). The bucket is connected on first
//! use, so validating a spec needs neither the network nor the secrets; every error message
//! passes through a [`Redactor`] that hides the resolved secret values.
//!
//! What S3 changes: an object cannot be renamed atomically, so "rename" is a copy then a delete
//! (a crash in between leaves both, which the sink's recovery finishes); objects do not grow, so
//! following a prefix finds new objects, not new lines; a part being written is spooled to a
//! local temporary file and uploaded (in parts when big) when it is closed. Objects are read by ranges: text in chunks of 8 MiB from the
//! position, Parquet the footer and then the column chunks it needs.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Deserialize;
use sluice_spec::Diagnostic;
use sluice_state::StoreOptions;

use crate::http::secret::{Redactor, Template};
use crate::options;

/// How much of an object one ranged read fetches.
const READ_CHUNK: u64 = 8 * 1024 * 1024;
/// Objects up to this size are uploaded in one request; bigger ones in parts of this size.
const UPLOAD_CHUNK: usize = 16 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// Connection settings of `s3://` paths; each value may use `${env:NAME}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// The endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:9000`; else
    /// `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
    /// The region; else `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// The access key id; with `secret_access_key`, else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// The secret access key; never shown.
    pub secret_access_key: Option<String>,
}

/// Option names under `s3`.
pub const S3_OPTIONS: &[&str] = &["endpoint", "region", "access_key_id", "secret_access_key"];

/// A file or folder of the file connector.
#[derive(Clone)]
pub(crate) enum Location {
    /// A local path.
    Local(PathBuf),
    /// An object key (or key prefix, for a folder) in an S3 bucket; no leading or trailing `/`.
    Object { bucket: Arc<Bucket>, key: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Object { bucket, key } => write!(f, "s3://{}/{key}", bucket.name),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Location {
    /// The location of a user's `path` option: `s3://bucket/key` (with the `s3` options), or a
    /// local path relative to `base_dir`. Problems are reported at `path` of the options.
    pub(crate) fn parse(
        path: &str,
        base_dir: &Path,
        s3: Option<&serde_json::Value>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let Some((scheme, rest)) = path.split_once("://") else {
            if s3.is_some() {
                diagnostics.push(
                    Diagnostic::new("options.s3", "only used with an `s3://` path")
                        .suggest("remove `s3` or write the path as s3://bucket/key"),
                );
            }
            return Some(Location::Local(crate::resolve(base_dir, path)));
        };
        if scheme != "s3" {
            diagnostics.push(
                Diagnostic::new("options.path", format!("the scheme '{scheme}://' is not supported"))
                    .suggest("use a local path or s3://bucket/key"),
            );
            return None;
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let key = key.trim_matches('/');
        if bucket.is_empty() || bucket.chars().any(|c| c.is_whitespace() || "?#%\\".contains(c)) {
            diagnostics.push(Diagnostic::new(
                "options.path",
                format!("'{bucket}' is not a bucket name; the form is s3://bucket/key"),
            ));
            return None;
        }
        if !key.is_empty()
            && let Err(error) = ObjectPath::parse(key)
        {
            diagnostics
                .push(Diagnostic::new("options.path", format!("'{key}' is not a valid object key: {error}")));
            return None;
        }
        let settings = match s3 {
            Some(value) => match options::parse::<S3Options>(value, S3_OPTIONS, "options.s3") {
                Ok(settings) => settings,
                Err(errors) => {
                    diagnostics.extend(errors);
                    return None;
                }
            },
            None => S3Options::default(),
        };
        let mut templates = Vec::new();
        for (name, value) in [
            ("endpoint", &settings.endpoint),
            ("region", &settings.region),
            ("access_key_id", &settings.access_key_id),
            ("secret_access_key", &settings.secret_access_key),
        ] {
            match value.as_deref().map(Template::parse).transpose() {
                Ok(template) => templates.push(template),
                Err(message) => diagnostics.push(Diagnostic::new(format!("options.s3.{name}"), message)),
            }
        }
        let [endpoint, region, access_key_id, secret_access_key] = <[_; 4]>::try_from(templates).ok()?;
        if access_key_id.is_some() != secret_access_key.is_some() {
            diagnostics.push(
                Diagnostic::new(
                    "options.s3",
                    "give both `access_key_id` and `secret_access_key`, or neither",
                )
                .suggest("without them, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used"),
            );
            return None;
        }
        let settings = BucketSettings { endpoint, region, access_key_id, secret_access_key };
        let bucket = Arc::new(Bucket { name: bucket.to_owned(), settings, client: OnceLock::new() });
        Some(Location::Object { bucket, key: key.to_owned() })
    }

    /// The local path, if this is a local location.
    pub(crate) fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::Object { .. } => None,
        }
    }

    /// The file `name` inside this folder.
    pub(crate) fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(name)),
            Location::Object { bucket, key } if key.is_empty() => {
                Location::Object { bucket: bucket.clone(), key: name.to_owned() }
            }
            Location::Object { bucket, key } => {
                Location::Object { bucket: bucket.clone(), key: format!("{key}/{name}") }
            }
        }
    }

    /// The last segment of the path or key.
    pub(crate) fn file_name(&self) -> String {
        match self {
            Location::Local(path) => {
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            }
            Location::Object { key, .. } => key.rsplit('/').next().unwrap_or_default().to_owned(),
        }
    }

    /// This location's path relative to `root` (a folder that holds it), or its file name.
    pub(crate) fn relative_to(&self, root: &Location) -> String {
        match (self, root) {
            (Location::Local(path), Location::Local(root)) => match path.strip_prefix(root) {
                Ok(relative) if !relative.as_os_str().is_empty() => relative.to_string_lossy().into_owned(),
                _ => self.file_name(),
            },
            (Location::Object { key, .. }, Location::Object { key: root, .. }) => {
                match key.strip_prefix(root.as_str()).map(|rest| rest.trim_start_matches('/')) {
                    Some(relative) if !relative.is_empty() && !root.is_empty() => relative.to_owned(),
                    _ if root.is_empty() => key.clone(),
                    _ => self.file_name(),
                }
            }
            _ => self.file_name(),
        }
    }

    /// The file itself, or the regular, non-hidden files directly in the folder, in name order.
    pub(crate) fn list_files(&self) -> io::Result<Vec<Location>> {
        match self {
            Location::Local(path) => {
                if !std::fs::metadata(path)?.is_dir() {
                    return Ok(vec![self.clone()]);
                }
                let mut files = Vec::new();
                for entry in std::fs::read_dir(path)? {
                    let entry = entry?;
                    let hidden = entry.file_name().to_string_lossy().starts_with('.');
                    if !hidden && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
                        files.push(entry.path());
                    }
                }
                files.sort();
                Ok(files.into_iter().map(Location::Local).collect())
            }
            Location::Object { bucket, key } => {
                // A prefix with objects under it is a folder; only then is the key itself
                // looked up (some S3-compatible servers fail a HEAD on a "folder").
                let mut names: Vec<String> = bucket
                    .list(key)?
                    .into_iter()
                    .map(|(name, _)| name)
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                if names.is_empty() && bucket.is_empty_prefix(key)? {
                    if !key.is_empty() && bucket.head(key)?.is_some() {
                        return Ok(vec![self.clone()]);
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no object s3://{}/{key} and no objects under it", bucket.name),
                    ));
                }
                names.sort();
                Ok(names.into_iter().map(|name| self.join(&name)).collect())
            }
        }
    }

    /// Every name directly in this folder, hidden ones included (empty if it does not exist).
    pub(crate) fn entries(&self) -> io::Result<Vec<String>> {
        match self {
            Location::Local(path) => {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(path)? {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
                Ok(names)
            }
            Location::Object { bucket, key } => {
                Ok(bucket.list(key)?.into_iter().map(|(name, _)| name).collect())
            }
        }
    }

    /// A reader of the file from byte `offset`, and the file's length.
    pub(crate) fn read_from(&self, offset: u64) -> io::Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Location::Local(path) => {
                let mut file = File::open(path)?;
                let len = file.metadata()?.len();
                file.seek(SeekFrom::Start(offset))?;
                Ok((Box::new(file), len))
            }
            Location::Object { bucket, key } => {
                let Some(len) = bucket.head(key)? else {
                    return Err(io::Error::new(io::ErrorKind::NotFound, format!("no object {self}")));
                };
                let reader = ObjectReader {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    offset,
                    len,
                    chunk: Bytes::new(),
                };
                Ok((Box::new(reader), len))
            }
        }
    }

    /// The file for reading at any offset: a local file, or an object read in ranges.
    pub(crate) fn open_random_access(&self) -> io::Result<RandomAccess> {
        match self {
            Location::Local(path) => Ok(RandomAccess::File(File::open(path)?)),
            Location::Object { bucket, key } => {
                let Some(len) = bucket.head(key)? else {
                    return Err(io::Error::new(io::ErrorKind::NotFound, format!("no object {self}")));
                };
                Ok(RandomAccess::Object(ObjectRanges { bucket: bucket.clone(), key: key.clone(), len }))
            }
        }
    }

    /// Creates the folder (a no-op on S3, where folders are key prefixes).
    pub(crate) fn create_dir_all(&self) -> io::Result<()> {
        match self {
            Location::Local(path) => std::fs::create_dir_all(path),
            Location::Object { .. } => Ok(()),
        }
    }

    /// A new, empty file to write (locally at once, on S3 when it is finished).
    pub(crate) fn create(&self) -> io::Result<Output> {
        match self {
            Location::Local(path) => Ok(Output::File(File::create(path)?)),
            Location::Object { .. } => Ok(Output::Spool(tempfile::tempfile()?, self.clone())),
        }
    }

    /// The file's size, or `None` if it does not exist.
    pub(crate) fn size(&self) -> io::Result<Option<u64>> {
        match self {
            Location::Local(path) => match std::fs::metadata(path) {
                Ok(metadata) => Ok(Some(metadata.len())),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error),
            },
            Location::Object { bucket, key } => bucket.head(key),
        }
    }

    /// Renames the file to `target` (same backend): atomic locally; a copy then a delete on S3.
    pub(crate) fn rename_to(&self, target: &Location) -> io::Result<()> {
        match (self, target) {
            (Location::Local(from), Location::Local(to)) => std::fs::rename(from, to),
            (Location::Object { bucket, key }, Location::Object { key: to, .. }) => {
                bucket.run(|store| async move {
                    store.copy(&ObjectPath::from(key.as_str()), &ObjectPath::from(to.as_str())).await
                })?;
                self.remove()
            }
            _ => Err(io::Error::other(format!(
                "cannot rename {self} to {target}: they are in different stores"
            ))),
        }
    }

    /// Deletes the file; one that does not exist is not an error.
    pub(crate) fn remove(&self) -> io::Result<()> {
        let result = match self {
            Location::Local(path) => std::fs::remove_file(path),
            Location::Object { bucket, key } => {
                bucket.run(|store| async move { store.delete(&ObjectPath::from(key.as_str())).await })
            }
        };
        match result {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Makes renames and creations in this folder durable; best effort (not every platform can
    /// sync a folder), and nothing to do on S3.
    pub(crate) fn sync_dir(&self) {
        if let Location::Local(path) = self
            && let Ok(dir) = File::open(path)
        {
            let _ = dir.sync_all();
        }
    }

    /// What identifies the folder for the "one sink per folder" check.
    pub(crate) fn identity(&self) -> String {
        match self {
            // `components()` drops `.` segments and trailing slashes: `out` and `./out/` are one folder.
            Location::Local(path) => format!("folder {}", path.components().collect::<PathBuf>().display()),
            Location::Object { bucket, key } => format!("prefix s3://{}/{key}", bucket.name),
        }
    }
}

/// A file opened for reading at any offset.
pub(crate) enum RandomAccess {
    /// A local file.
    File(File),
    /// An object, read in ranged requests.
    Object(ObjectRanges),
}

/// An object of known length, read by ranges: only the parts a reader asks for are fetched.
pub(crate) struct ObjectRanges {
    bucket: Arc<Bucket>,
    key: String,
    len: u64,
}

impl ObjectRanges {
    /// The object's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `length` bytes from `start`.
    pub(crate) fn range(&self, start: u64, length: usize) -> io::Result<Bytes> {
        let range = start..start + length as u64;
        let key = &self.key;
        let bytes = self
            .bucket
            .run(|store| async move { store.get_range(&ObjectPath::from(key.as_str()), range).await })?;
        if bytes.len() != length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "asked s3://{}/{key} for {length} bytes at {start}, got {}",
                    self.bucket.name,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// A reader from byte `start` to the end.
    pub(crate) fn read_from(&self, start: u64) -> ObjectReader {
        ObjectReader {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            offset: start,
            len: self.len,
            chunk: Bytes::new(),
        }
    }
}

/// A file being written: a local file, or an object spooled to a local temporary file (deleted
/// when closed) and uploaded when finished, so memory stays small whatever the part's size.
pub(crate) enum Output {
    /// A local file.
    File(File),
    /// An object's bytes so far, and where they go.
    Spool(File, Location),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(file) | Output::Spool(file, _) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(file) | Output::Spool(file, _) => file.flush(),
        }
    }
}

impl Output {
    /// Makes the written bytes durable: syncs the local file, or uploads the object.
    pub(crate) fn finish(self) -> io::Result<()> {
        match self {
            Output::File(file) => file.sync_all(),
            Output::Spool(mut file, Location::Object { bucket, key }) => {
                file.flush()?;
                let len = file.seek(SeekFrom::End(0))?;
                file.seek(SeekFrom::Start(0))?;
                bucket.upload(&key, file, len)
            }
            Output::Spool(_, location) => Err(io::Error::other(format!("{location} is not an object"))),
        }
    }
}

/// Reads an object from an offset in ranged requests of [`READ_CHUNK`] bytes.
pub(crate) struct ObjectReader {
    bucket: Arc<Bucket>,
    key: String,
    offset: u64,
    len: u64,
    chunk: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            if self.offset >= self.len {
                return Ok(0);
            }
            let range = self.offset..self.len.min(self.offset + READ_CHUNK);
            let key = &self.key;
            self.chunk = self
                .bucket
                .run(|store| async move { store.get_range(&ObjectPath::from(key.as_str()), range).await })?;
            if self.chunk.is_empty() {
                return Ok(0);
            }
        }
        let count = buf.len().min(self.chunk.len());
        buf[..count].copy_from_slice(&self.chunk[..count]);
        self.chunk = self.chunk.slice(count..);
        self.offset += count as u64;
        Ok(count)
    }
}

/// The S3 settings as written, resolved when the bucket is first used.
struct BucketSettings {
    endpoint: Option<Template>,
    region: Option<Template>,
    access_key_id: Option<Template>,
    secret_access_key: Option<Template>,
}

/// An S3 bucket, connected on first use.
pub(crate) struct Bucket {
    name: String,
    settings: BucketSettings,
    client: OnceLock<Result<Client, String>>,
}

/// A connected bucket: the store, the runtime that drives it, and the secrets to hide.
struct Client {
    store: Arc<dyn ObjectStore>,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    redactor: Redactor,
}

impl Bucket {
    fn client(&self) -> io::Result<&Client> {
        let client = self.client.get_or_init(|| self.connect());
        client.as_ref().map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message.clone()))
    }

    fn connect(&self) -> Result<Client, String> {
        let mut redactor = Redactor::default();
        let env = |name: &str| std::env::var(name).ok();
        let mut resolve = |template: &Option<Template>, name: &str| {
            template
                .as_ref()
                .map(|template| template.resolve(&env, &mut redactor))
                .transpose()
                .map_err(|message| format!("options.s3.{name}: {message}"))
        };
        let endpoint = resolve(&self.settings.endpoint, "endpoint")?;
        let region = resolve(&self.settings.region, "region")?;
        let access_key_id = resolve(&self.settings.access_key_id, "access_key_id")?;
        let secret_access_key = resolve(&self.settings.secret_access_key, "secret_access_key")?;
        if let Some(secret) = &secret_access_key {
            redactor.add(secret);
        }
        let options = StoreOptions { endpoint, region, access_key_id, secret_access_key, allow_http: false };
        let store = sluice_state::s3_bucket_store(&self.name, &options)
            .map_err(|error| redactor.redact(&chain(&error)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-s3")
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the S3 client runtime: {error}"))?;
        Ok(Client { store, runtime: Some(runtime), redactor })
    }

    /// Runs one request, blocking; errors are I/O errors with secrets hidden (`NotFound` kept).
    fn run<T, F, Fut>(&self, request: F) -> io::Result<T>
    where
        F: FnOnce(Arc<dyn ObjectStore>) -> Fut + Send,
        Fut: Future<Output = object_store::Result<T>> + Send,
        T: Send,
    {
        let client = self.client()?;
        let Some(runtime) = &client.runtime else {
            return Err(io::Error::other("the S3 client was used after being shut down"));
        };
        let store = client.store.clone();
        let result = crate::postgres::block_on(runtime, async move { request(store).await });
        result.map_err(|error| match error {
            object_store::Error::NotFound { .. } => {
                io::Error::new(io::ErrorKind::NotFound, client.redactor.redact(&error.to_string()))
            }
            other => io::Error::other(format!(
                "{}; check that the S3 endpoint is up and the bucket, region and credentials are right \
                 (options.s3, else the AWS_* environment variables)",
                client.redactor.redact(&chain(&other))
            )),
        })
    }

    /// Uploads the `len` bytes of `file` as object `key`: in one request, or in parts for a
    /// big object (aborted if a part fails, so no half object is left).
    fn upload(&self, key: &str, mut file: File, len: u64) -> io::Result<()> {
        let path = ObjectPath::from(key);
        if len <= UPLOAD_CHUNK as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes)?;
            return self
                .run(|store| async move { store.put(&path, PutPayload::from(bytes)).await.map(|_| ()) });
        }
        self.run(|store| async move {
            let upload = store.put_multipart(&path).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK);
            let mut buffer = vec![0; READ_CHUNK as usize];
            loop {
                // A blocking read on the client's own runtime thread: nothing else waits on it.
                let read = match file.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(error) => {
                        let _ = writer.abort().await;
                        return Err(object_store::Error::Generic {
                            store: "spooled part",
                            source: Box::new(error),
                        });
                    }
                };
                if let Err(error) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                    let _ = writer.abort().await;
                    return Err(error);
                }
                writer.write(&buffer[..read]);
            }
            writer.finish().await.map(|_| ())
        })
    }

    /// The size of object `key`, or `None` if there is none.
    fn head(&self, key: &str) -> io::Result<Option<u64>> {
        match self.run(|store| async move { store.head(&ObjectPath::from(key)).await }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The objects directly under the prefix `key` (names relative to it) with their sizes.
    fn list(&self, key: &str) -> io::Result<Vec<(String, u64)>> {
        let prefix = (!key.is_empty()).then(|| ObjectPath::from(key));
        let listing = self.run(|store| async move { store.list_with_delimiter(prefix.as_ref()).await })?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(|name| (name.to_owned(), meta.size)))
            .collect())
    }

    /// Whether nothing at all (no object, no deeper prefix) is under `key`.
    fn is_empty_prefix(&self, key: &str) -> io::Result<bool> {
        let prefix = (!key.is_empty()).then(|| ObjectPath::from(key));
        let listing = self.run(|store| async move { store.list_with_delimiter(prefix.as_ref()).await })?;
        Ok(listing.objects.is_empty() && listing.common_prefixes.is_empty())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Never blocks, so it is safe wherever the last handle goes, even inside a runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An error and its causes, `: `-separated; a cause whose text is already shown (S3 client
/// errors repeat their sources in their own text) is left out.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let more = error.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = error.source();
    }
    text
}
