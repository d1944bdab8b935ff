//! The `file` connector: JSON Lines, CSV and Parquet files as a source (a file or a folder,
//! optionally followed for new files), as a sink (atomically committed part files per worker,
//! two-phase with checkpoints) and JSON Lines or CSV as a lookup table for enrichment joins (one
//! file, reloaded when it changes).

mod avro;
mod lookup;
mod parquet;
mod sink;
mod source;
mod storage;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use serde::Deserialize;
use sluice_runtime::connector::{Sink, Source};
use sluice_runtime::processor::LookupTable;
use sluice_spec::Diagnostic;

use crate::format::TextFormat;
use crate::{LookupRequest, SinkRequest, SourceRequest, arrow_schema, options, resolve};

pub use lookup::FileLookup;
pub use sink::FileSink;
pub use source::FileSource;
pub use storage::{S3_OPTIONS, S3Options};

use storage::Location;

/// How the `file` connector encodes records in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON object per line (the sink's default).
    #[default]
    Jsonl,
    /// Comma-separated values, with a header line by default.
    Csv,
    /// Apache Parquet: columnar, typed, compressed (Snappy) in row groups.
    Parquet,
    /// Apache Avro object container files (uncompressed), with the writer schema inside.
    Avro,
}

impl FileFormat {
    /// The file extension for this format.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
            FileFormat::Avro => "avro",
        }
    }

    /// The line-based encoding of this format; `None` for Parquet and Avro.
    pub fn text(self) -> Option<TextFormat> {
        match self {
            FileFormat::Jsonl => Some(TextFormat::Jsonl),
            FileFormat::Csv => Some(TextFormat::Csv),
            FileFormat::Parquet | FileFormat::Avro => None,
        }
    }
}

/// Options of the `file` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceOptions {
    /// A file, or a folder whose regular, non-hidden files are read in name order. Relative to
    /// the spec file's folder, or `s3://bucket/key` (an object, or every object directly under
    /// the prefix). Required.
    pub path: Option<String>,
    /// `jsonl`, `csv`, `parquet` or `avro`; by default from the file extension (`.jsonl`,
    /// `.ndjson`, `.json`, `.csv`, `.parquet`, `.avro`).
    pub format: Option<FileFormat>,
    /// Keep watching the folder for new files and new lines (unbounded); default `false`.
    pub follow: Option<bool>,
    /// How often to look for new data when following, in milliseconds; default 1000.
    pub poll_interval_ms: Option<u64>,
    /// CSV settings, checked as [`CsvOptions`] (kept raw here so that its keys are checked one
    /// by one too).
    pub csv: Option<serde_json::Value>,
    /// Connection settings of an `s3://` path, checked as [`S3Options`].
    pub s3: Option<serde_json::Value>,
}

/// Option names of the `file` source.
pub const SOURCE_OPTIONS: &[&str] = &["path", "format", "follow", "poll_interval_ms", "csv", "s3"];

/// CSV settings of the `file` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Whether the first line of each file names the columns (and is skipped); default `true`.
    pub header: Option<bool>,
    /// The one-character field separator; default `,`.
    pub delimiter: Option<String>,
}

/// Option names under `csv`.
pub const CSV_OPTIONS: &[&str] = &["header", "delimiter"];

/// Options of the `file` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkOptions {
    /// The folder part files are written to (created if missing), or an `s3://bucket/prefix`.
    /// Required.
    pub path: Option<String>,
    /// `jsonl` (default), `csv`, `parquet` or `avro`.
    pub format: Option<FileFormat>,
    /// Commit the open part file at the end of an epoch once it is this old; default 10,000.
    pub roll_interval_ms: Option<u64>,
    /// Commit the open part file at the end of an epoch once it is this big; default 128 MiB.
    pub roll_bytes: Option<u64>,
    /// Parquet only: the most rows in one row group; default 131,072.
    pub row_group_rows: Option<u64>,
    /// Connection settings of an `s3://` path, checked as [`S3Options`].
    pub s3: Option<serde_json::Value>,
}

/// Option names of the `file` sink.
pub const SINK_OPTIONS: &[&str] =
    &["path", "format", "roll_interval_ms", "roll_bytes", "row_group_rows", "s3"];

/// Options of the `file` lookup table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLookupOptions {
    /// The file to read, relative to the spec file's folder. Required.
    pub path: Option<String>,
    /// `jsonl` or `csv`; by default from the file extension.
    pub format: Option<FileFormat>,
    /// The column rows are looked up by. Required.
    pub key: Option<String>,
    /// How often to check whether the file changed (and reload it), in milliseconds; default
    /// 10,000. 0 checks on every lookup.
    pub reload_interval_ms: Option<u64>,
    /// CSV settings, checked as [`CsvOptions`].
    pub csv: Option<serde_json::Value>,
}

/// Option names of the `file` lookup table.
pub const LOOKUP_OPTIONS: &[&str] = &["path", "format", "key", "reload_interval_ms", "csv"];

/// What the file source was configured with, once checked.
#[derive(Debug, Clone)]
pub(crate) struct SourceConfig {
    pub location: Location,
    pub format: FileFormat,
    pub follow: bool,
    pub poll_interval_ms: u64,
    pub header: bool,
    pub delimiter: u8,
    pub schema: SchemaRef,
}

/// Builds the file source from its request.
pub fn build_source(request: &SourceRequest) -> Result<Arc<dyn Source>, Vec<Diagnostic>> {
    let options = options::parse::<FileSourceOptions>(request.options, SOURCE_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let (header, delimiter) = csv_settings(options.csv.as_ref(), &mut diagnostics);
    let Some(path) = options.path.as_deref() else {
        diagnostics.push(options::missing("options", "path"));
        return Err(diagnostics);
    };
    let Some(location) = Location::parse(path, request.base_dir, options.s3.as_ref(), &mut diagnostics)
    else {
        return Err(diagnostics);
    };
    let Some(format) = format_of(&location, options.format, &mut diagnostics) else {
        return Err(diagnostics);
    };
    if options.poll_interval_ms == Some(0) {
        diagnostics.push(Diagnostic::new("options.poll_interval_ms", "must be at least 1"));
    }
    let schema = match (request.schema, request.infer_schema) {
        (Some(fields), _) => Some(arrow_schema(fields)),
        (None, true) if !diagnostics.is_empty() => None,
        (None, true) => match source::infer_schema(&location, format, header, delimiter) {
            Ok(schema) => Some(schema),
            Err(message) => {
                diagnostics.push(Diagnostic::new("infer_schema", message));
                None
            }
        },
        (None, false) => {
            diagnostics.push(
                Diagnostic::new("schema", "the file source needs a schema")
                    .suggest("declare `schema:` or set `infer_schema: true`"),
            );
            None
        }
    };
    match schema {
        Some(schema) if diagnostics.is_empty() => Ok(Arc::new(FileSource::new(SourceConfig {
            location,
            format,
            follow: options.follow.unwrap_or(false),
            poll_interval_ms: options.poll_interval_ms.unwrap_or(1000),
            header,
            delimiter,
            schema,
        }))),
        _ => Err(diagnostics),
    }
}

/// Builds the file sink from its request.
pub fn build_sink(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let options = options::parse::<FileSinkOptions>(request.options, SINK_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let format = options.format.unwrap_or_default();
    let row_group_rows = match options.row_group_rows {
        Some(0) => {
            diagnostics.push(Diagnostic::new("options.row_group_rows", "must be at least 1"));
            0
        }
        Some(_) if format != FileFormat::Parquet => {
            diagnostics.push(
                Diagnostic::new("options.row_group_rows", "only used with `format: parquet`")
                    .suggest("remove `row_group_rows` or set `format: parquet`"),
            );
            0
        }
        Some(rows) => usize::try_from(rows).unwrap_or(usize::MAX),
        None => parquet::DEFAULT_ROW_GROUP_ROWS,
    };
    let location = match options.path.as_deref() {
        Some(path) => Location::parse(path, request.base_dir, options.s3.as_ref(), &mut diagnostics),
        None => {
            diagnostics.push(options::missing("options", "path"));
            None
        }
    };
    match location {
        Some(location) if diagnostics.is_empty() => Ok(Arc::new(FileSink::new(
            location,
            format,
            options.roll_interval_ms.unwrap_or(10_000),
            options.roll_bytes.unwrap_or(128 * 1024 * 1024),
            row_group_rows,
        ))),
        _ => Err(diagnostics),
    }
}

/// Builds the file lookup table from its request, reading the file once to check it.
pub fn build_lookup(request: &LookupRequest) -> Result<Arc<dyn LookupTable>, Vec<Diagnostic>> {
    let options = options::parse::<FileLookupOptions>(request.options, LOOKUP_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let (header, delimiter) = csv_settings(options.csv.as_ref(), &mut diagnostics);
    if options.key.is_none() {
        diagnostics.push(options::missing("options", "key"));
    }
    let Some(path) = options.path.as_deref() else {
        diagnostics.push(options::missing("options", "path"));
        return Err(diagnostics);
    };
    if path.contains("://") {
        diagnostics.push(
            Diagnostic::new("options.path", "a file lookup table reads a local file")
                .suggest("copy the table next to the spec, or use a `postgres` lookup"),
        );
        return Err(diagnostics);
    }
    let location = Location::Local(resolve(request.base_dir, path));
    let Some(format) = format_of(&location, options.format, &mut diagnostics) else {
        return Err(diagnostics);
    };
    if format.text().is_none() {
        diagnostics.push(
            Diagnostic::new(
                "options.format",
                "a file lookup table reads JSON Lines or CSV, not Parquet or Avro",
            )
            .suggest("convert the table to `jsonl` or `csv`"),
        );
        return Err(diagnostics);
    }
    let schema = match request.schema {
        Some(fields) => arrow_schema(fields),
        None => match source::infer_schema(&location, format, header, delimiter) {
            Ok(schema) => schema,
            Err(message) => {
                diagnostics.push(
                    Diagnostic::new("options.path", message)
                        .suggest("declare `schema:` for the lookup table"),
                );
                return Err(diagnostics);
            }
        },
    };
    let Some(key) = options.key else {
        return Err(diagnostics);
    };
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if !names.contains(&key.as_str()) {
        diagnostics.push(
            Diagnostic::new("options.key", format!("unknown column \"{key}\""))
                .suggest_closest(&key, names.iter().copied()),
        );
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let config =
        SourceConfig { location, format, follow: false, poll_interval_ms: 0, header, delimiter, schema };
    let reload_interval = Duration::from_millis(options.reload_interval_ms.unwrap_or(10_000));
    match FileLookup::open(config, &key, reload_interval) {
        Ok(table) => Ok(Arc::new(table)),
        Err(error) => Err(vec![Diagnostic::new("options.path", error.report())]),
    }
}

/// The CSV `header` and `delimiter` settings from the raw `csv` option; problems are added to
/// `diagnostics` and replaced by defaults.
fn csv_settings(value: Option<&serde_json::Value>, diagnostics: &mut Vec<Diagnostic>) -> (bool, u8) {
    let csv = match value {
        Some(value) => match options::parse::<CsvOptions>(value, CSV_OPTIONS, "options.csv") {
            Ok(csv) => csv,
            Err(errors) => {
                diagnostics.extend(errors);
                CsvOptions::default()
            }
        },
        None => CsvOptions::default(),
    };
    let delimiter = match csv.delimiter.as_deref() {
        None => b',',
        Some(text) if text.len() == 1 => text.as_bytes()[0],
        Some(text) => {
            diagnostics.push(Diagnostic::new(
                "options.csv.delimiter",
                format!("the delimiter must be a single ASCII character, found \"{text}\""),
            ));
            b','
        }
    };
    (csv.header.unwrap_or(true), delimiter)
}

/// The declared format, or the one of the file's extension; `None` (and a diagnostic) if
/// neither says.
fn format_of(
    path: &Location,
    declared: Option<FileFormat>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<FileFormat> {
    let format = declared.or_else(|| format_from_extension(Path::new(&path.file_name())));
    if format.is_none() {
        diagnostics.push(
            Diagnostic::new(
                "options.format",
                format!("cannot tell the format of \"{path}\" from its extension"),
            )
            .suggest("set `format: jsonl`, `format: csv`, `format: parquet` or `format: avro`"),
        );
    }
    format
}

fn format_from_extension(path: &Path) -> Option<FileFormat> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jsonl" | "ndjson" | "json" => Some(FileFormat::Jsonl),
        "csv" => Some(FileFormat::Csv),
        "parquet" => Some(FileFormat::Parquet),
        "avro" => Some(FileFormat::Avro),
        _ => None,
    }
}
