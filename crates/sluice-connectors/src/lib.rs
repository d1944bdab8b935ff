//! Sluice's connectors: the sources, sinks and lookup tables a pipeline spec can name, and the
//! one registry that lists them ([`source_connectors`], [`sink_connectors`],
//! [`lookup_connectors`], [`build_source`], [`build_sink`], [`build_lookup`]).
//!
//! Owns: each connector's options (checked with every problem reported at once, as
//! [`Diagnostic`]s relative to the source or sink node), its reading or writing, and the mapping
//! of declared schemas to Arrow ([`arrow_schema`]). One folder per connector.
//!
//! May depend on: `sluice-spec` (field types, diagnostics), `sluice-runtime` (the connector
//! traits, errors, dead letters), `sluice-state` (only to configure S3 clients as checkpoint
//! stores do), Arrow and Parquet. Knows nothing about SQL or the graph.

pub mod blackhole;
pub mod datagen;
pub mod file;
pub mod format;
pub mod http;
mod io;
pub mod kafka;
mod lookup_cache;
pub mod mqtt;
pub mod nats;
pub mod nexmark;
mod options;
pub mod postgres;
pub mod redis;
mod schedule;
pub mod stdout;
pub mod testing;

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use sluice_runtime::connector::{Sink, Source};
use sluice_runtime::processor::LookupTable;
use sluice_spec::{DataType, Diagnostic, FieldSpec};

/// Everything a source connector gets from the spec.
#[derive(Debug, Clone, Copy)]
pub struct SourceRequest<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The source node's name.
    pub name: &'a str,
    /// The node's `options` map, unchecked (`null` when absent).
    pub options: &'a serde_json::Value,
    /// The declared `schema`, if any.
    pub schema: Option<&'a [FieldSpec]>,
    /// Whether the user asked to infer the schema from the data.
    pub infer_schema: bool,
    /// The folder relative paths are resolved against (the spec file's folder).
    pub base_dir: &'a Path,
}

/// Everything a sink connector gets from the spec.
#[derive(Debug, Clone, Copy)]
pub struct SinkRequest<'a> {
    /// The sink node's name.
    pub name: &'a str,
    /// The node's `options` map, unchecked (`null` when absent).
    pub options: &'a serde_json::Value,
    /// The folder relative paths are resolved against (the spec file's folder).
    pub base_dir: &'a Path,
}

/// Everything a lookup-table connector gets from the spec.
#[derive(Debug, Clone, Copy)]
pub struct LookupRequest<'a> {
    /// The lookup node's name.
    pub name: &'a str,
    /// The node's `options` map, unchecked (`null` when absent).
    pub options: &'a serde_json::Value,
    /// The declared `schema`, if any; connectors that can infer one do so when it is absent.
    pub schema: Option<&'a [FieldSpec]>,
    /// The folder relative paths are resolved against (the spec file's folder).
    pub base_dir: &'a Path,
}

/// Names of the source connectors, sorted.
pub fn source_connectors() -> &'static [&'static str] {
    &["datagen", "file", "kafka", "mqtt", "nats", "nexmark"]
}

/// Names of the sink connectors, sorted.
pub fn sink_connectors() -> &'static [&'static str] {
    &["blackhole", "file", "http", "kafka", "mqtt", "nats", "postgres", "redis", "stdout"]
}

/// Names of the lookup-table connectors, sorted.
pub fn lookup_connectors() -> &'static [&'static str] {
    &["file", "postgres", "redis"]
}

/// Builds the source `connector` from its request; every problem is reported, with paths
/// relative to the source node (`connector`, `options.x`, `schema`).
pub fn build_source(connector: &str, request: &SourceRequest) -> Result<Arc<dyn Source>, Vec<Diagnostic>> {
    match connector {
        "datagen" => datagen::build(request),
        "file" => file::build_source(request),
        "kafka" => kafka::build_source(request),
        "mqtt" => mqtt::build_source(request),
        "nats" => nats::build_source(request),
        "nexmark" => nexmark::build(request),
        other => Err(vec![unknown_connector(other, source_connectors())]),
    }
}

/// Builds the sink `connector` from its request; every problem is reported, with paths
/// relative to the sink node.
pub fn build_sink(connector: &str, request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    match connector {
        "blackhole" => blackhole::build(request),
        "file" => file::build_sink(request),
        "http" => http::build(request),
        "kafka" => kafka::build_sink(request),
        "mqtt" => mqtt::build_sink(request),
        "nats" => nats::build_sink(request),
        "postgres" => postgres::build_sink(request),
        "redis" => redis::build_sink(request),
        "stdout" => stdout::build(request),
        other => Err(vec![unknown_connector(other, sink_connectors())]),
    }
}

/// Builds the lookup table `connector` from its request; every problem is reported, with paths
/// relative to the lookup node (`connector`, `options.x`, `schema`).
pub fn build_lookup(
    connector: &str,
    request: &LookupRequest,
) -> Result<Arc<dyn LookupTable>, Vec<Diagnostic>> {
    match connector {
        "file" => file::build_lookup(request),
        "postgres" => postgres::build_lookup(request),
        "redis" => redis::build_lookup(request),
        other => Err(vec![unknown_connector(other, lookup_connectors())]),
    }
}

fn unknown_connector(name: &str, known: &[&str]) -> Diagnostic {
    Diagnostic::new("connector", format!("unknown connector \"{name}\""))
        .suggest_closest(name, known.iter().copied())
}

/// The Arrow schema of declared fields.
pub fn arrow_schema(fields: &[FieldSpec]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|field| Field::new(&field.name, arrow_type(&field.data_type), field.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// The Arrow type of a declared type: timestamps are milliseconds without a time zone, dates
/// `Date32`, decimals `Decimal128`, lists of nullable items.
pub fn arrow_type(data_type: &DataType) -> ArrowType {
    match data_type {
        DataType::Boolean => ArrowType::Boolean,
        DataType::Int8 => ArrowType::Int8,
        DataType::Int16 => ArrowType::Int16,
        DataType::Int32 => ArrowType::Int32,
        DataType::Int64 => ArrowType::Int64,
        DataType::UInt8 => ArrowType::UInt8,
        DataType::UInt16 => ArrowType::UInt16,
        DataType::UInt32 => ArrowType::UInt32,
        DataType::UInt64 => ArrowType::UInt64,
        DataType::Float32 => ArrowType::Float32,
        DataType::Float64 => ArrowType::Float64,
        DataType::Utf8 => ArrowType::Utf8,
        DataType::Binary => ArrowType::Binary,
        DataType::Date => ArrowType::Date32,
        DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Millisecond, None),
        DataType::Decimal { precision, scale } => ArrowType::Decimal128(*precision, *scale),
        DataType::List(item) => ArrowType::List(Arc::new(Field::new_list_field(arrow_type(item), true))),
    }
}

/// Resolves a user path against the spec's folder.
fn resolve(base_dir: &Path, path: &str) -> std::path::PathBuf {
    let path = Path::new(path);
    if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_connector_suggests_the_closest() {
        let request = SourceRequest {
            pipeline: "p",
            name: "s",
            options: &serde_json::Value::Null,
            schema: None,
            infer_schema: false,
            base_dir: Path::new("."),
        };
        let errors = build_source("nexmrk", &request).err().unwrap_or_default();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["connector: unknown connector \"nexmrk\"; did you mean \"nexmark\"?"]
        );
    }
}
