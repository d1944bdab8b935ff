//! Message formats: how the payload of one message (a Kafka record, a NATS or MQTT message)
//! holds one record, for the connectors of messaging systems.
//!
//! [`MessageDecoder`] turns payloads into one batch, handing each payload it cannot decode to
//! the caller with the reason, so the source can apply its `on_error` policy and attach the
//! message's metadata (key, partition, offset...) to exactly the rows that were kept.
//! [`MessageEncoder`] turns each row of a batch into one payload.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::LineDelimitedWriter;
use serde::Deserialize;
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use super::avro::{AvroCodec, AvroDecoder, AvroEncoder};
use super::conform::Missing;
use super::{Delimited, decode_records};

/// How one message's payload encodes one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// One JSON object (the default). Fields the schema does not declare are ignored.
    #[default]
    Json,
    /// One CSV line without a header, columns in schema order.
    Csv,
    /// The payload itself, as the schema's single value column: a string (`utf8`, which must
    /// be valid UTF-8) or bytes (`binary`).
    Raw,
    /// The Avro binary encoding of one record of a writer schema (see [`AvroCodec`]).
    Avro,
}

/// Names of the message formats, for messages.
pub const MESSAGE_FORMATS: &[&str] = &["json", "csv", "raw", "avro"];

impl MessageFormat {
    /// The format's name in specs.
    pub fn name(self) -> &'static str {
        match self {
            MessageFormat::Json => "json",
            MessageFormat::Csv => "csv",
            MessageFormat::Raw => "raw",
            MessageFormat::Avro => "avro",
        }
    }

    /// A diagnostic at `options.format` if this is Avro on `connector`, which does not take
    /// Avro's schema options (only the `kafka` connector does).
    pub(crate) fn unsupported_avro(self, connector: &str) -> Option<Diagnostic> {
        (self == MessageFormat::Avro).then(|| {
            Diagnostic::new(
                "options.format",
                format!("the {connector} connector does not read or write Avro yet"),
            )
            .suggest("use json, csv or raw here; Avro messages are supported on the kafka connector")
        })
    }

    /// Checks that `schema` (the columns decoded from the payload) suits this format: `raw`
    /// needs exactly one `utf8` or `binary` column.
    pub fn check_schema(self, schema: &SchemaRef) -> std::result::Result<(), String> {
        if self != MessageFormat::Raw {
            return Ok(());
        }
        match schema.fields().as_ref() {
            [field] if matches!(field.data_type(), DataType::Utf8 | DataType::Binary) => Ok(()),
            fields => Err(format!(
                "format `raw` puts the whole payload in one column, so the schema (without metadata \
                 columns) must have exactly one column of type `utf8` or `binary`; it has {}",
                describe_columns(fields.iter().map(|f| (f.name().as_str(), f.data_type())))
            )),
        }
    }
}

fn describe_columns<'a>(columns: impl Iterator<Item = (&'a str, &'a DataType)>) -> String {
    let columns: Vec<String> = columns.map(|(name, data_type)| format!("`{name}` ({data_type})")).collect();
    if columns.is_empty() { "none".to_owned() } else { columns.join(", ") }
}

/// What [`MessageDecoder::decode`] does with a payload it cannot decode: gets the payload's
/// index and the reason.
pub type BadMessage<'a> = dyn FnMut(usize, String) -> Result<()> + 'a;

/// Decodes payloads of one format into records of one schema.
#[derive(Debug, Clone)]
pub struct MessageDecoder {
    format: MessageFormat,
    schema: SchemaRef,
    /// For `avro`.
    avro: Option<AvroDecoder>,
}

impl MessageDecoder {
    /// A decoder of `format` payloads into `schema` rows; the schema must pass
    /// [`MessageFormat::check_schema`]. Avro needs its writer schema: see [`Self::avro`].
    pub fn new(format: MessageFormat, schema: SchemaRef) -> Self {
        Self { format, schema, avro: None }
    }

    /// A decoder of Avro payloads of `codec` records into `schema` rows; the error says which
    /// declared columns the Avro schema does not give. With `evolving`, declared nullable
    /// columns that the records lack are null (records of an evolved writer schema).
    pub fn avro(codec: AvroCodec, schema: SchemaRef, evolving: bool) -> std::result::Result<Self, String> {
        let missing = if evolving { Missing::NullIfNullable } else { Missing::Problem };
        let avro = AvroDecoder::new(codec, &schema, missing)?;
        Ok(Self { format: MessageFormat::Avro, schema, avro: Some(avro) })
    }

    /// The schema of decoded rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `payloads` (`None`: a message without a payload, such as a Kafka tombstone) into
    /// one batch. Each payload that cannot be decoded is passed to `bad` with its index and the
    /// reason, and left out; returns the batch and, per row, the index of its payload.
    pub fn decode(
        &self,
        payloads: &[Option<&[u8]>],
        bad: &mut BadMessage<'_>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        match (self.format, &self.avro) {
            (MessageFormat::Raw, _) => return self.decode_raw(payloads, bad),
            (MessageFormat::Avro, Some(avro)) => return avro.decode(payloads, bad),
            (MessageFormat::Avro, None) => {
                return Err(Error::internal("an Avro message decoder was built without its schema"));
            }
            _ => {}
        }
        let all_present = payloads.iter().all(|p| p.is_some_and(|p| !p.is_empty()));
        if all_present {
            let mut bytes = Vec::with_capacity(payloads.iter().flatten().map(|p| p.len() + 1).sum());
            for payload in payloads.iter().flatten() {
                bytes.extend_from_slice(payload);
                bytes.push(b'\n');
            }
            if let Ok(batch) = self.decode_bytes(&bytes, payloads.len())
                && batch.num_rows() == payloads.len()
            {
                return Ok((batch, (0..payloads.len()).collect()));
            }
        }
        let mut good = Vec::new();
        let mut rows = Vec::new();
        let mut single = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            let decoded = match payload {
                None => Err("the message has no payload (a tombstone or an empty message)".to_owned()),
                Some([]) => Err("the message payload is empty".to_owned()),
                Some(payload) => {
                    single.clear();
                    single.extend_from_slice(payload);
                    single.push(b'\n');
                    match self.decode_bytes(&single, 1) {
                        Ok(batch) if batch.num_rows() == 1 => Ok(batch),
                        Ok(batch) => Err(format!(
                            "the payload holds {} records; each message must hold exactly one",
                            batch.num_rows()
                        )),
                        Err(error) => Err(decode_reason(&error)),
                    }
                }
            };
            match decoded {
                Ok(batch) => {
                    good.push(batch);
                    rows.push(index);
                }
                Err(reason) => bad(index, reason)?,
            }
        }
        let batch = if good.is_empty() {
            RecordBatch::new_empty(self.schema.clone())
        } else {
            concat_batches(&self.schema, &good)?
        };
        Ok((batch, rows))
    }

    fn decode_raw(
        &self,
        payloads: &[Option<&[u8]>],
        bad: &mut BadMessage<'_>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let binary = self.schema.field(0).data_type() == &DataType::Binary;
        let mut rows = Vec::with_capacity(payloads.len());
        let column: ArrayRef = if binary {
            rows.extend(0..payloads.len());
            Arc::new(BinaryArray::from_iter(payloads.iter().copied()))
        } else {
            let mut values = Vec::with_capacity(payloads.len());
            for (index, payload) in payloads.iter().enumerate() {
                match payload.map(std::str::from_utf8) {
                    Some(Err(error)) => bad(
                        index,
                        format!("the payload is not valid UTF-8 ({error}); use a `binary` column for bytes"),
                    )?,
                    Some(Ok(text)) => {
                        values.push(Some(text));
                        rows.push(index);
                    }
                    None => {
                        values.push(None);
                        rows.push(index);
                    }
                }
            }
            Arc::new(StringArray::from(values))
        };
        if !self.schema.field(0).is_nullable() && column.null_count() > 0 {
            // Report messages without a payload rather than failing the whole batch.
            let mut kept_rows = Vec::with_capacity(rows.len());
            let mut keep = Vec::with_capacity(rows.len());
            for (row, index) in rows.iter().enumerate() {
                if column.is_null(row) {
                    bad(
                        *index,
                        format!(
                            "the message has no payload but column `{}` is not nullable",
                            self.schema.field(0).name()
                        ),
                    )?;
                    keep.push(false);
                } else {
                    keep.push(true);
                    kept_rows.push(*index);
                }
            }
            let column = arrow::compute::filter(&column, &keep.into())?;
            return Ok((RecordBatch::try_new(self.schema.clone(), vec![column])?, kept_rows));
        }
        Ok((RecordBatch::try_new(self.schema.clone(), vec![column])?, rows))
    }

    fn decode_bytes(&self, bytes: &[u8], rows: usize) -> std::result::Result<RecordBatch, ArrowError> {
        let format = match self.format {
            MessageFormat::Json => Delimited::Json,
            MessageFormat::Csv => Delimited::Csv(b','),
            MessageFormat::Raw | MessageFormat::Avro => {
                return Err(ArrowError::InvalidArgumentError("raw and avro are decoded apart".into()));
            }
        };
        decode_records(format, &self.schema, bytes, rows, "messages")
    }
}

/// Encodes each row of a batch as one message payload.
#[derive(Debug)]
pub struct MessageEncoder {
    format: MessageFormat,
    /// For `avro`.
    avro: Option<AvroEncoder>,
}

impl MessageEncoder {
    /// An encoder of `format` payloads; for `raw`, batches must pass
    /// [`MessageFormat::check_schema`]. Avro needs the stream's schema: see [`Self::avro`].
    pub fn new(format: MessageFormat) -> Self {
        Self { format, avro: None }
    }

    /// An encoder of rows with the columns of `stream` as Avro records of `codec` (`None`: a
    /// schema derived from the columns).
    pub fn avro(codec: Option<&AvroCodec>, stream: &SchemaRef) -> Result<Self> {
        Ok(Self { format: MessageFormat::Avro, avro: Some(AvroEncoder::new(codec, stream)?) })
    }

    /// For `avro`: the writer schema (JSON) payloads are encoded with.
    pub fn avro_schema(&self) -> Option<&str> {
        self.avro.as_ref().map(AvroEncoder::writer_schema)
    }

    /// One payload per row of `batch` (`None` for a NULL `raw` value), appended to `out`.
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<Option<Vec<u8>>>) -> Result<()> {
        match self.format {
            MessageFormat::Avro => match &mut self.avro {
                Some(avro) => avro.encode(batch, out)?,
                None => return Err(Error::internal("an Avro message encoder was built without its schema")),
            },
            MessageFormat::Json => {
                let mut bytes = Vec::new();
                let mut writer = LineDelimitedWriter::new(&mut bytes);
                writer.write(batch)?;
                writer.finish()?;
                // JSON escapes newlines inside strings, so every line is one row.
                out.extend(
                    bytes.split(|b| *b == b'\n').take(batch.num_rows()).map(|line| Some(line.to_vec())),
                );
            }
            MessageFormat::Csv => {
                for row in 0..batch.num_rows() {
                    let mut bytes = Vec::new();
                    let mut writer = arrow::csv::WriterBuilder::new().with_header(false).build(&mut bytes);
                    writer.write(&batch.slice(row, 1))?;
                    drop(writer);
                    if bytes.last() == Some(&b'\n') {
                        bytes.pop();
                    }
                    out.push(Some(bytes));
                }
            }
            MessageFormat::Raw => {
                let column = batch.column(0);
                match column.data_type() {
                    DataType::Utf8 => {
                        out.extend(column.as_string::<i32>().iter().map(|v| v.map(|v| v.as_bytes().to_vec())))
                    }
                    DataType::Binary => {
                        out.extend(column.as_binary::<i32>().iter().map(|v| v.map(<[u8]>::to_vec)))
                    }
                    other => {
                        return Err(Error::user(format!(
                            "format `raw` writes one `utf8` or `binary` column, but the stream's column `{}` is {other}",
                            batch.schema().field(0).name()
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A short reason for a record that failed to decode, without Arrow's error-kind prefix; says
/// first when the input is not JSON at all, as opposed to JSON that does not fit the schema.
pub(crate) fn decode_reason(error: &ArrowError) -> String {
    let text = error.to_string();
    let text = ["Json error: ", "Csv error: ", "Parser error: ", "Invalid argument error: "]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(&text);
    if text.starts_with("Encountered ") { format!("not valid JSON: {text}") } else { text.to_owned() }
}

/// The declared `schema` of a messaging source, which `connector` needs: reported at `schema`
/// when absent.
pub(crate) fn required_schema(
    fields: Option<&[sluice_spec::FieldSpec]>,
    connector: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<SchemaRef> {
    if fields.is_none() {
        diagnostics.push(
            Diagnostic::new("schema", format!("the {connector} source needs a schema"))
                .suggest("declare `schema:` with the payload's fields (and any metadata columns)"),
        );
    }
    fields.map(crate::arrow_schema)
}

/// A kind of message metadata that a messaging source can put in a column of its own
/// (`options.metadata: {column: what}`), or a column of the decoded payload.
pub(crate) trait MetadataColumn: Sized {
    /// How to fix an unknown metadata name, e.g. "use one of key, topic or headers".
    const KNOWN: &'static str;

    /// The column holding payload column `n`.
    fn value(n: usize) -> Self;

    /// The metadata called `what` in `options.metadata`, if there is one.
    fn parse(what: &str) -> Option<Self>;

    /// Whether a column of `data_type` can hold this metadata.
    fn accepts(&self, data_type: &DataType) -> bool;

    /// The types that can hold this metadata, for messages.
    fn types(&self) -> &'static str;
}

/// Where each output column of a messaging source comes from (a kind of metadata, or the
/// payload), and the schema of the payload's columns, decoded with `format`. Problems are
/// reported at `options.metadata.<column>` and `options.format`.
pub(crate) fn message_columns<C: MetadataColumn>(
    schema: &SchemaRef,
    metadata: Option<&std::collections::BTreeMap<String, String>>,
    format: MessageFormat,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Vec<C>, SchemaRef)> {
    let none = std::collections::BTreeMap::new();
    let metadata = metadata.unwrap_or(&none);
    let before = diagnostics.len();
    for (column, what) in metadata {
        let path = format!("options.metadata.{column}");
        let Some(kind) = C::parse(what) else {
            diagnostics.push(Diagnostic::new(path, format!("unknown metadata \"{what}\"")).suggest(C::KNOWN));
            continue;
        };
        match schema.field_with_name(column) {
            Err(_) => diagnostics.push(
                Diagnostic::new(path, format!("the schema has no column `{column}`"))
                    .suggest("declare the column in `schema:` with its type"),
            ),
            Ok(field) if !kind.accepts(field.data_type()) => diagnostics.push(Diagnostic::new(
                path,
                format!(
                    "metadata `{what}` fills a column of type {}, but `{column}` is {}",
                    kind.types(),
                    field.data_type()
                ),
            )),
            Ok(_) => {}
        }
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    let mut value_fields: Vec<arrow::datatypes::Field> = Vec::new();
    for field in schema.fields() {
        match metadata.get(field.name()).and_then(|what| C::parse(what)) {
            Some(kind) => columns.push(kind),
            None => {
                columns.push(C::value(value_fields.len()));
                value_fields.push(field.as_ref().clone());
            }
        }
    }
    let value_schema = Arc::new(arrow::datatypes::Schema::new(value_fields));
    if let Err(message) = format.check_schema(&value_schema) {
        diagnostics.push(Diagnostic::new("options.format", message));
    }
    (diagnostics.len() == before).then_some((columns, value_schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn decode(
        format: MessageFormat,
        schema: SchemaRef,
        payloads: &[Option<&[u8]>],
    ) -> (RecordBatch, Vec<usize>, Vec<(usize, String)>) {
        let mut bad = Vec::new();
        let (batch, rows) = MessageDecoder::new(format, schema)
            .decode(payloads, &mut |index, reason| {
                bad.push((index, reason));
                Ok(())
            })
            .unwrap();
        (batch, rows, bad)
    }

    #[test]
    fn json_payloads_decode_in_one_batch_and_bad_ones_are_reported_by_index() {
        let payloads: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id": 1, "name": "a"}"#),
            Some(b"{not json"),
            None,
            Some(br#"{"id": "x"}"#),
            Some(b"{\"id\": 2,\n \"extra\": true}"),
            Some(br#"{"id": 3} {"id": 4}"#),
        ];
        let (batch, rows, bad) = decode(MessageFormat::Json, schema(), &payloads);
        assert_eq!(rows, [0, 4]);
        assert_eq!(batch.column(0).as_primitive::<arrow::datatypes::Int64Type>().values(), &[1, 2]);
        let indexes: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [1, 2, 3, 5]);
        assert!(bad[0].1.starts_with("not valid JSON"), "{}", bad[0].1);
        assert!(bad[1].1.contains("no payload"), "{}", bad[1].1);
        assert!(bad[2].1.contains("id"), "{}", bad[2].1);
        assert!(bad[3].1.contains("2 records"), "{}", bad[3].1);
    }

    #[test]
    fn csv_and_raw_payloads() {
        let (batch, rows, bad) =
            decode(MessageFormat::Csv, schema(), &[Some(b"1,a"), Some(b"x,b"), Some(b"2,")]);
        assert_eq!((rows, batch.num_rows(), bad.len()), (vec![0, 2], 2, 1));
        let text = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
        let (batch, rows, bad) = decode(MessageFormat::Raw, text, &[Some(b"hi"), Some(&[0xff, 0xfe]), None]);
        assert_eq!(rows, [0, 2]);
        assert_eq!(batch.column(0).as_string::<i32>().iter().collect::<Vec<_>>(), [Some("hi"), None]);
        assert!(bad[0].1.contains("UTF-8"), "{}", bad[0].1);
        let strict = Arc::new(Schema::new(vec![Field::new("bytes", DataType::Binary, false)]));
        let (batch, rows, bad) = decode(MessageFormat::Raw, strict, &[Some(&[0xff]), None]);
        assert_eq!((batch.num_rows(), rows, bad.len()), (1, vec![0], 1));
    }

    #[test]
    fn raw_needs_one_text_or_bytes_column() {
        let error = MessageFormat::Raw.check_schema(&schema()).unwrap_err();
        assert!(error.contains("`id` (Int64), `name` (Utf8)"), "{error}");
        assert!(MessageFormat::Json.check_schema(&schema()).is_ok());
    }

    #[test]
    fn encoding_then_decoding_gives_the_rows_back() {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a\nb"), None, Some("c,\"d\"")])),
            ],
        )
        .unwrap();
        for format in [MessageFormat::Json, MessageFormat::Csv] {
            let mut payloads = Vec::new();
            MessageEncoder::new(format).encode(&batch, &mut payloads).unwrap();
            assert_eq!(payloads.len(), 3, "{format:?}");
            let borrowed: Vec<Option<&[u8]>> = payloads.iter().map(|p| p.as_deref()).collect();
            let (decoded, rows, bad) = decode(format, schema(), &borrowed);
            assert!(bad.is_empty(), "{format:?}: {bad:?}");
            assert_eq!((decoded.num_rows(), rows.len()), (3, 3));
            assert_eq!(decoded.column(0), batch.column(0), "{format:?}");
            // CSV cannot tell an empty string from NULL; JSON keeps both.
            if format == MessageFormat::Json {
                assert_eq!(decoded, batch);
            }
        }
    }
}
