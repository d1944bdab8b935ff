//! Avro payloads: each message holds the Avro binary encoding of one record of a writer schema
//! declared in the spec (inline, in a file, or derived from the declared columns).
//!
//! Decoding goes through `arrow-avro` (the same release as the workspace's Arrow), straight
//! into Arrow columns, which are then fitted to the declared schema by name
//! (`format::conform`). Its streaming decoder reads framed records, so each bare payload is framed
//! with a Confluent wire header (magic byte 0, a fixed schema id) naming the declared writer
//! schema.
//! Avro data carries no type tags, so a payload is bad when it cannot be read as one whole
//! record of the writer schema: it ends early, has bytes left over, holds an impossible value
//! (a negative length, an unknown union branch, invalid UTF-8) or does not fit the declared
//! columns.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SCHEMA_METADATA_KEY, SchemaStore};
use arrow_avro::writer::format::AvroBinaryFormat;
use arrow_avro::writer::{Encoder, WriterBuilder};
use sluice_runtime::{Error, Result};

use super::conform::{Conform, Missing, describe_columns};
use super::message::BadMessage;

/// The schema id bare payloads are framed with: an unusual value, so that bytes left over after
/// a record are practically never taken for the start of a frame.
const FRAME_ID: u32 = 0x5EC0_DE01;

/// An Avro writer schema, checked: the JSON and the Arrow columns its records decode into.
#[derive(Debug, Clone)]
pub struct AvroCodec {
    schema: AvroSchema,
    decoded: SchemaRef,
}

impl AvroCodec {
    /// The Avro schema in JSON `text` (a record schema); the error says what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("the Avro schema is not valid JSON: {e}"))?;
        if value.get("type").and_then(serde_json::Value::as_str) != Some("record") {
            return Err(
                "the Avro schema must be a record (`\"type\": \"record\"` with `fields`), one field \
                        per column"
                    .to_owned(),
            );
        }
        Self::new(AvroSchema::new(value.to_string()))
    }

    /// The Avro schema of records with the columns of `schema`: nullable columns are unions
    /// with `null` first and default `null` (so a schema registry takes a new nullable column
    /// as a compatible change), timestamps are `local-timestamp-millis`.
    pub fn derive(schema: &Schema) -> std::result::Result<Self, String> {
        let bare = Schema::new(schema.fields().clone());
        let avro =
            AvroSchema::try_from(&bare).map_err(|e| format!("the columns have no Avro equivalent: {e}"))?;
        let mut json: serde_json::Value = serde_json::from_str(&avro.json_string)
            .map_err(|e| format!("the derived Avro schema is not JSON: {e}"))?;
        default_nulls(&mut json);
        Self::new(AvroSchema::new(json.to_string()))
    }

    fn new(schema: AvroSchema) -> std::result::Result<Self, String> {
        let decoder = decoder(&schema, 1).map_err(|e| format!("not a usable Avro schema: {e}"))?;
        Ok(Self { decoded: decoder.schema(), schema })
    }

    /// The Avro schema as JSON.
    pub fn json(&self) -> &str {
        &self.schema.json_string
    }

    /// Checks that records of this schema give the `declared` columns, by name, with types
    /// that convert.
    pub fn check_columns(&self, declared: &SchemaRef) -> std::result::Result<(), String> {
        Conform::plan(&self.decoded, declared, Missing::Problem).map(|_| ()).map_err(|problems| {
            format!("the Avro schema does not give the declared columns: {}", problems.join("; "))
        })
    }
}

/// Gives every record field of `schema` whose type is a union starting with `null` and that
/// has no default the default `null`, at every depth.
fn default_nulls(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(object) => {
            if let Some(serde_json::Value::Array(fields)) = object.get_mut("fields") {
                for field in fields.iter_mut().filter_map(serde_json::Value::as_object_mut) {
                    let null_first = field
                        .get("type")
                        .and_then(serde_json::Value::as_array)
                        .and_then(|branches| branches.first())
                        .is_some_and(|first| first == "null");
                    if null_first && !field.contains_key("default") {
                        field.insert("default".to_owned(), serde_json::Value::Null);
                    }
                }
            }
            object.values_mut().for_each(default_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(default_nulls),
        _ => {}
    }
}

/// A streaming decoder of records framed with [`FRAME_ID`].
fn decoder(schema: &AvroSchema, batch_size: usize) -> std::result::Result<Decoder, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(FRAME_ID), schema.clone()).map_err(|e| e.to_string())?;
    ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_batch_size(batch_size.max(1))
        .build_decoder()
        .map_err(|e| e.to_string())
}

/// Decodes bare Avro payloads into rows of a declared schema.
#[derive(Debug, Clone)]
pub(crate) struct AvroDecoder {
    codec: AvroCodec,
    /// The decoded columns to keep, in order, and how they become the declared ones.
    read: Vec<usize>,
    conform: Conform,
}

impl AvroDecoder {
    /// A decoder of `codec` records into `declared` rows; `missing` says what declared columns
    /// the records lack are.
    pub(crate) fn new(
        codec: AvroCodec,
        declared: &SchemaRef,
        missing: Missing,
    ) -> std::result::Result<Self, String> {
        let (read, conform) = Conform::plan(&codec.decoded, declared, missing).map_err(|problems| {
            format!("the Avro schema does not give the declared columns: {}", problems.join("; "))
        })?;
        Ok(Self { codec, read, conform })
    }

    /// Decodes `payloads` into one batch of the declared schema, passing each bad one to
    /// `bad`; returns the batch and, per row, the index of its payload.
    pub(crate) fn decode(
        &self,
        payloads: &[Option<&[u8]>],
        bad: &mut BadMessage<'_>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        if let Some(batch) = self.decode_all(payloads) {
            return Ok((batch, (0..payloads.len()).collect()));
        }
        // Some payload is bad: one at a time, with a fresh decoder after each failure (a
        // record that fails half-way leaves the decoder's columns uneven).
        let mut decoder = self.decoder(2)?;
        let mut good = Vec::new();
        let mut rows = Vec::new();
        let mut frame = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            let decoded = match payload {
                None => Err("the message has no payload (a tombstone or an empty message)".to_owned()),
                Some([]) => Err("the message payload is empty".to_owned()),
                Some(payload) => self.decode_one(&mut decoder, &mut frame, payload),
            };
            match decoded {
                Ok(batch) => {
                    good.push(batch);
                    rows.push(index);
                }
                Err(reason) => {
                    decoder = self.decoder(2)?;
                    bad(index, reason)?;
                }
            }
        }
        let batch = if good.is_empty() {
            RecordBatch::new_empty(self.conform_schema())
        } else {
            concat_batches(&self.conform_schema(), &good)?
        };
        Ok((batch, rows))
    }

    fn conform_schema(&self) -> SchemaRef {
        self.conform.schema().clone()
    }

    fn decoder(&self, batch_size: usize) -> Result<Decoder> {
        decoder(&self.codec.schema, batch_size)
            .map_err(|e| Error::internal(format!("building an Avro decoder for a checked schema: {e}")))
    }

    /// Every payload as one batch, if all are sound.
    fn decode_all(&self, payloads: &[Option<&[u8]>]) -> Option<RecordBatch> {
        let mut decoder = self.decoder(payloads.len() + 1).ok()?;
        let mut frame = Vec::new();
        for payload in payloads {
            let payload = payload.filter(|p| !p.is_empty())?;
            frame_into(&mut frame, payload);
            // Each frame must be exactly one record: no bytes missing, none left over.
            let room = decoder.capacity();
            if decoder.decode(&frame).ok()? != frame.len() || decoder.capacity() + 1 != room {
                return None;
            }
        }
        let batch =
            decoder.flush().ok()?.unwrap_or_else(|| RecordBatch::new_empty(self.codec.decoded.clone()));
        if batch.num_rows() != payloads.len() {
            return None;
        }
        self.conform.apply(&batch.project(&self.read).ok()?).ok()
    }

    fn decode_one(
        &self,
        decoder: &mut Decoder,
        frame: &mut Vec<u8>,
        payload: &[u8],
    ) -> std::result::Result<RecordBatch, String> {
        frame_into(frame, payload);
        let consumed = decoder.decode(frame).map_err(|e| avro_reason(&e.to_string()))?;
        let batch = decoder.flush().map_err(|e| avro_reason(&e.to_string()))?;
        let rows = batch.as_ref().map_or(0, RecordBatch::num_rows);
        let batch = match (rows, consumed == frame.len()) {
            (1, true) => batch.ok_or_else(|| "no record".to_owned())?,
            (1, false) => return Err(avro_reason("Missing magic bytes")),
            _ => {
                return Err(
                    "not valid Avro for the declared schema: the payload ends in the middle of a record"
                        .to_owned(),
                );
            }
        };
        let batch = batch.project(&self.read).map_err(|e| e.to_string())?;
        self.conform.apply(&batch)
    }
}

/// The reason for a payload the decoder refused.
fn avro_reason(error: &str) -> String {
    let error = error.strip_prefix("Parser error: ").unwrap_or(error);
    if error.contains("Missing magic bytes") {
        "not valid Avro for the declared schema: bytes are left over after one record".to_owned()
    } else if error.contains("bad varint") || error.contains("EOF") {
        // The decoder cannot tell a number cut off by the end of the payload from one that is
        // too long; both mean the bytes are not one record of the schema.
        format!(
            "not valid Avro for the declared schema: the payload ends in the middle of a record \
             or holds a malformed number ({error})"
        )
    } else {
        format!("not valid Avro for the declared schema: {error}")
    }
}

/// `frame` = the Confluent wire header for [`FRAME_ID`], then `payload`.
fn frame_into(frame: &mut Vec<u8>, payload: &[u8]) {
    frame.clear();
    super::registry::push_header(FRAME_ID, frame);
    frame.extend_from_slice(payload);
}

/// Encodes rows as bare Avro payloads of one writer schema.
pub(crate) struct AvroEncoder {
    encoder: Encoder,
    /// The writer schema, as JSON.
    writer_schema: String,
    /// How the stream's columns become the writer schema's (when it was declared, not derived).
    conform: Option<(Vec<usize>, Conform)>,
}

impl std::fmt::Debug for AvroEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroEncoder").finish_non_exhaustive()
    }
}

impl AvroEncoder {
    /// An encoder of rows with the columns of `stream` as `codec` records (`None`: derived
    /// from the stream's columns). A declared schema must name every one of its fields among
    /// the stream's columns, with a type that converts.
    pub(crate) fn new(codec: Option<&AvroCodec>, stream: &SchemaRef) -> Result<Self> {
        let derived;
        let (codec, conform) = match codec {
            Some(codec) => {
                let plan = Conform::plan(stream, &codec.decoded, Missing::Problem).map_err(|problems| {
                    Error::user(format!(
                        "the stream's columns do not fit the sink's Avro schema: {}; the stream has {}",
                        problems.join("; ").replace("it has no column", "the stream has no column"),
                        describe_columns(stream)
                    ))
                })?;
                (codec, Some(plan))
            }
            None => {
                derived =
                    AvroCodec::derive(stream).map_err(|e| Error::user(format!("format `avro`: {e}")))?;
                (&derived, None)
            }
        };
        let target = conform.as_ref().map_or_else(|| stream.clone(), |(_, c)| c.schema().clone());
        let metadata = [(SCHEMA_METADATA_KEY.to_owned(), codec.json().to_owned())].into_iter().collect();
        let schema = Schema::new_with_metadata(target.fields().clone(), metadata);
        let encoder = WriterBuilder::new(schema)
            .build_encoder::<AvroBinaryFormat>()
            .map_err(|e| Error::user(format!("format `avro`: cannot encode the stream's columns: {e}")))?;
        Ok(Self { encoder, writer_schema: codec.json().to_owned(), conform })
    }

    /// The writer schema, as JSON.
    pub(crate) fn writer_schema(&self) -> &str {
        &self.writer_schema
    }

    /// One payload per row of `batch`, appended to `out`.
    pub(crate) fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<Option<Vec<u8>>>) -> Result<()> {
        let batch = match &self.conform {
            None => batch.clone(),
            Some((read, conform)) => conform.apply(&batch.project(read)?).map_err(|problem| {
                Error::user(format!("a record does not fit the sink's Avro schema: {problem}"))
            })?,
        };
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(batch.schema().fields().clone())),
            batch.columns().to_vec(),
        )?;
        self.encoder
            .encode(&batch)
            .map_err(|e| Error::user(format!("cannot encode a record as Avro: {e}")))?;
        let rows = self.encoder.flush();
        out.extend(rows.iter().map(|row| Some(row.to_vec())));
        Ok(())
    }
}

/// The `avro` settings of a connector with `format: avro`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvroOptions {
    /// The writer schema: Avro schema JSON, as a string or written out as a map.
    pub schema: Option<serde_json::Value>,
    /// A file holding the writer schema, relative to the spec file's folder.
    pub schema_file: Option<String>,
}

/// Option names under `avro`.
pub const AVRO_OPTIONS: &[&str] = &["schema", "schema_file"];

/// The writer schema from the `avro` option (`value`) of a connector whose format is `avro`
/// when `is_avro`: `Some(None)` when none is declared (it is then derived from the columns);
/// `None` after adding diagnostics.
pub(crate) fn declared_codec(
    value: Option<&serde_json::Value>,
    is_avro: bool,
    base_dir: &std::path::Path,
    diagnostics: &mut Vec<sluice_spec::Diagnostic>,
) -> Option<Option<AvroCodec>> {
    use sluice_spec::Diagnostic;
    let Some(value) = value else {
        return Some(None);
    };
    if !is_avro {
        diagnostics.push(
            Diagnostic::new("options.avro", "only used with `format: avro`")
                .suggest("set `format: avro` or remove `avro`"),
        );
        return None;
    }
    let options = match crate::options::parse::<AvroOptions>(value, AVRO_OPTIONS, "options.avro") {
        Ok(options) => options,
        Err(errors) => {
            diagnostics.extend(errors);
            return None;
        }
    };
    let (path, text) = match (&options.schema, &options.schema_file) {
        (Some(_), Some(_)) => {
            diagnostics.push(Diagnostic::new("options.avro", "set only one of `schema` and `schema_file`"));
            return None;
        }
        (None, None) => return Some(None),
        (Some(serde_json::Value::String(text)), None) => ("options.avro.schema", text.clone()),
        (Some(map @ serde_json::Value::Object(_)), None) => ("options.avro.schema", map.to_string()),
        (Some(other), None) => {
            diagnostics.push(Diagnostic::new(
                "options.avro.schema",
                format!(
                    "expected Avro schema JSON (a string or a map), found {}",
                    crate::options::describe(other)
                ),
            ));
            return None;
        }
        (None, Some(file)) => {
            let path = crate::resolve(base_dir, file);
            match std::fs::read_to_string(&path) {
                Ok(text) => ("options.avro.schema_file", text),
                Err(error) => {
                    diagnostics.push(Diagnostic::new(
                        "options.avro.schema_file",
                        format!("cannot read \"{}\": {error}", path.display()),
                    ));
                    return None;
                }
            }
        }
    };
    match AvroCodec::parse(&text) {
        Ok(codec) => Some(Some(codec)),
        Err(message) => {
            diagnostics.push(Diagnostic::new(path, message));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type};

    fn declared() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    /// Avro's zig-zag varint of a `long`, from the specification (not from the crate under use).
    fn long(value: i64, out: &mut Vec<u8>) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push((zigzag as u8 & 0x7f) | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }

    /// A record `{name: ["null","string"], extra: int, id: long}` encoded by hand.
    fn record(id: i64, name: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        match name {
            None => long(0, &mut out),
            Some(name) => {
                long(1, &mut out);
                long(name.len() as i64, &mut out);
                out.extend_from_slice(name.as_bytes());
            }
        }
        long(7, &mut out);
        long(id, &mut out);
        out
    }

    const WRITER: &str = r#"{"type": "record", "name": "R", "fields": [
        {"name": "name", "type": ["null", "string"]},
        {"name": "extra", "type": "int"},
        {"name": "id", "type": "long"}]}"#;

    fn decode(
        decoder: &AvroDecoder,
        payloads: &[Option<&[u8]>],
    ) -> (RecordBatch, Vec<usize>, Vec<(usize, String)>) {
        let mut bad = Vec::new();
        let (batch, rows) = decoder
            .decode(payloads, &mut |index, reason| {
                bad.push((index, reason));
                Ok(())
            })
            .unwrap();
        (batch, rows, bad)
    }

    #[test]
    fn hand_encoded_records_of_a_declared_schema_decode_by_column_name() {
        let decoder =
            AvroDecoder::new(AvroCodec::parse(WRITER).unwrap(), &declared(), Missing::Problem).unwrap();
        let (one, two) = (record(-3, Some("a")), record(1 << 40, None));
        let (batch, rows, bad) = decode(&decoder, &[Some(&one), Some(&two)]);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows, [0, 1]);
        assert_eq!(batch.schema(), declared());
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values(), &[-3, 1 << 40]);
        assert_eq!(batch.column(1).as_string::<i32>().iter().collect::<Vec<_>>(), [Some("a"), None]);
    }

    #[test]
    fn bad_payloads_are_reported_by_index_with_a_reason_and_good_ones_kept() {
        let decoder =
            AvroDecoder::new(AvroCodec::parse(WRITER).unwrap(), &declared(), Missing::Problem).unwrap();
        let good = record(5, Some("ok"));
        let truncated = &good[..good.len() - 1];
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"xyz");
        let payloads: Vec<Option<&[u8]>> = vec![
            Some(&good),
            Some(b"garbage"),
            Some(truncated),
            None,
            Some(&trailing),
            Some(&[]),
            Some(&good),
        ];
        let (batch, rows, bad) = decode(&decoder, &payloads);
        assert_eq!(rows, [0, 6]);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values(), &[5, 5]);
        let indexes: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [1, 2, 3, 4, 5]);
        for (_, reason) in &bad[..2] {
            assert!(reason.starts_with("not valid Avro for the declared schema"), "{reason}");
        }
        assert!(bad[1].1.contains("ends in the middle of a record"), "{}", bad[1].1);
        assert!(bad[2].1.contains("no payload"), "{}", bad[2].1);
        assert!(bad[3].1.contains("left over"), "{}", bad[3].1);
        assert!(bad[4].1.contains("empty"), "{}", bad[4].1);
    }

    #[test]
    fn timestamp_millis_and_int_fields_convert_to_the_declared_types() {
        let writer = r#"{"type": "record", "name": "T", "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "n", "type": "int"}]}"#;
        let declared = Arc::new(Schema::new(vec![
            Field::new("at", DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None), false),
            Field::new("n", DataType::Int64, false),
        ]));
        let decoder =
            AvroDecoder::new(AvroCodec::parse(writer).unwrap(), &declared, Missing::Problem).unwrap();
        let mut payload = Vec::new();
        long(1_767_225_600_123, &mut payload);
        long(-7, &mut payload);
        let (batch, _, bad) = decode(&decoder, &[Some(&payload)]);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(batch.schema(), declared);
        let at = batch.column(0).as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(at.value(0), 1_767_225_600_123);
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), -7);
    }

    #[test]
    fn records_of_an_evolved_schema_read_missing_nullable_columns_as_null() {
        // An older writer schema without `name`, and one of a non-nullable declared column.
        let older = r#"{"type": "record", "name": "R", "fields": [{"name": "id", "type": "long"}]}"#;
        let mut payload = Vec::new();
        long(42, &mut payload);
        let decoder =
            AvroDecoder::new(AvroCodec::parse(older).unwrap(), &declared(), Missing::NullIfNullable).unwrap();
        let (batch, rows, bad) = decode(&decoder, &[Some(&payload)]);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!((rows, batch.schema()), (vec![0], declared()));
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values(), &[42]);
        assert_eq!(batch.column(1).null_count(), 1);
        // Without the evolving rule, or for a column declared not null, it is a problem.
        let error =
            AvroDecoder::new(AvroCodec::parse(older).unwrap(), &declared(), Missing::Problem).unwrap_err();
        assert!(error.contains("it has no column `name`"), "{error}");
        let strict = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let error =
            AvroDecoder::new(AvroCodec::parse(older).unwrap(), &strict, Missing::NullIfNullable).unwrap_err();
        assert!(error.contains("it has no column `name`"), "{error}");
    }

    #[test]
    fn derived_schemas_give_nullable_fields_the_default_null() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        let json: serde_json::Value =
            serde_json::from_str(AvroCodec::derive(&schema).unwrap().json()).unwrap();
        let fields = json["fields"].as_array().unwrap();
        assert_eq!((&fields[0]["name"], fields[0].get("default")), (&serde_json::json!("id"), None));
        assert_eq!(fields[1]["type"][0], "null", "{json}");
        assert_eq!(fields[1].get("default"), Some(&serde_json::Value::Null), "{json}");
    }

    #[test]
    fn records_sharing_no_column_with_the_declaration_are_not_an_evolution_of_it() {
        let other = r#"{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}"#;
        let nullable = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true)]));
        let error = AvroDecoder::new(AvroCodec::parse(other).unwrap(), &nullable, Missing::NullIfNullable)
            .unwrap_err();
        assert!(
            error.contains("it has none of the declared columns; its columns are `x` (Int64)"),
            "{error}"
        );
    }

    #[test]
    fn a_null_in_a_column_declared_not_null_is_a_bad_record() {
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let decoder = AvroDecoder::new(AvroCodec::parse(WRITER).unwrap(), &schema, Missing::Problem).unwrap();
        let (with, without) = (record(1, Some("x")), record(2, None));
        let (batch, rows, bad) = decode(&decoder, &[Some(&with), Some(&without)]);
        assert_eq!((batch.num_rows(), rows), (1, vec![0]));
        assert!(bad[0].1.contains("declare the column nullable"), "{bad:?}");
    }

    #[test]
    fn encoding_with_a_derived_or_declared_schema_then_decoding_gives_the_rows_back() {
        let batch = RecordBatch::try_new(
            declared(),
            vec![
                Arc::new(Int64Array::from(vec![1, -2, 300_000])),
                Arc::new(StringArray::from(vec![Some("a\u{e9}"), None, Some("")])),
            ],
        )
        .unwrap();
        let reordered = r#"{"type": "record", "name": "R", "fields": [
            {"name": "name", "type": ["null", "string"]}, {"name": "id", "type": "long"}]}"#;
        for codec in [None, Some(AvroCodec::parse(reordered).unwrap())] {
            let mut encoder = AvroEncoder::new(codec.as_ref(), &declared()).unwrap();
            let mut payloads = Vec::new();
            encoder.encode(&batch, &mut payloads).unwrap();
            assert_eq!(payloads.len(), 3);
            if codec.is_some() {
                // Byte for byte what the specification says for {"name": "a\u{e9}", "id": 1}.
                let mut expected = vec![2, 6];
                expected.extend_from_slice("a\u{e9}".as_bytes());
                expected.push(2);
                assert_eq!(payloads[0].as_deref(), Some(expected.as_slice()));
            }
            let reader = codec.clone().unwrap_or_else(|| AvroCodec::derive(&declared()).unwrap());
            let decoder = AvroDecoder::new(reader, &declared(), Missing::Problem).unwrap();
            let borrowed: Vec<Option<&[u8]>> = payloads.iter().map(|p| p.as_deref()).collect();
            let (decoded, _, bad) = decode(&decoder, &borrowed);
            assert!(bad.is_empty(), "{bad:?}");
            assert_eq!(decoded, batch, "{codec:?}");
        }
        // A declared writer schema with a field the stream lacks cannot be written.
        let error = AvroEncoder::new(Some(&AvroCodec::parse(WRITER).unwrap()), &declared()).unwrap_err();
        assert!(error.report().contains("the stream has no column `extra`"), "{}", error.report());
    }
}
