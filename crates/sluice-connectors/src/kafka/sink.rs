//! [`KafkaSink`]: writes each row as one record with an idempotent producer per worker.
//!
//! Delivery is at-least-once: with checkpoints, a checkpoint is only taken once every record
//! before it has been acknowledged by the brokers (`acks=all`), and a record that cannot be
//! delivered within librdkafka's delivery timeout fails the pipeline, which then resumes from
//! the last checkpoint and writes it again. The idempotent producer keeps librdkafka's own
//! retries (e.g. while a broker restarts) from duplicating records.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::{Error, Result};

use super::client::{ClientSettings, Context};
use crate::format::avro::AvroCodec;
use crate::format::message::{MessageEncoder, MessageFormat};
use crate::format::registry::{self, RegistrySettings};

/// How long waiting for acknowledgements may take: longer than librdkafka's default delivery
/// timeout (5 minutes), after which undelivered records are reported as failed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(330);
/// How long to wait for room when the producer's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

/// Writes records to a Kafka topic; see the module documentation.
#[derive(Debug)]
pub struct KafkaSink {
    client: ClientSettings,
    topic: String,
    format: MessageFormat,
    /// For `avro`: the declared writer schema (else derived from the stream's columns).
    avro: Option<AvroCodec>,
    /// Register the writer schema here and put its id before each payload.
    registry: Option<RegistrySettings>,
    key: Option<String>,
    headers: BTreeMap<String, String>,
}

impl KafkaSink {
    pub(crate) fn new(
        client: ClientSettings,
        topic: String,
        format: MessageFormat,
        avro: Option<AvroCodec>,
        registry: Option<RegistrySettings>,
        key: Option<String>,
        headers: BTreeMap<String, String>,
    ) -> Self {
        Self { client, topic, format, avro, registry, key, headers }
    }

    fn column(&self, schema: &SchemaRef, option: &str, name: &str) -> Result<usize> {
        schema.index_of(name).map_err(|_| {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::user(format!(
                "options.{option} names column `{name}`, which the stream into the Kafka sink does not have; \
                 its columns are: {}",
                columns.join(", ")
            ))
        })
    }
}

impl Sink for KafkaSink {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        let schema = context.schema;
        if self.format == MessageFormat::Raw {
            self.format.check_schema(&schema).map_err(Error::user)?;
        }
        let encoder = match self.format {
            MessageFormat::Avro => MessageEncoder::avro(self.avro.as_ref(), &schema)?,
            format => MessageEncoder::new(format),
        };
        let key = self.key.as_deref().map(|name| self.column(&schema, "key", name)).transpose()?;
        let headers = self
            .headers
            .iter()
            .map(|(header, column)| {
                Ok((header.clone(), self.column(&schema, &format!("headers.{header}"), column)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let producer: BaseProducer<Context> =
            self.client
                .config()?
                .create_with_context(Context::default())
                .map_err(|e| Error::external("creating the Kafka producer", e))?;
        let metadata =
            producer.client().fetch_metadata(Some(&self.topic), Duration::from_secs(15)).map_err(|e| {
                Error::external(
                    format!(
                        "reading topic metadata from the Kafka brokers {} (are they running?)",
                        self.client.brokers
                    ),
                    e,
                )
            })?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(Error::user(format!(
                "Kafka topic `{}` does not exist on the brokers {}; create it first (Sluice does not create topics)",
                self.topic, self.client.brokers
            )));
        }
        // Registered once the topic is known to exist, so a typo registers nothing.
        let schema_id = match &self.registry {
            None => None,
            Some(settings) => {
                let writer = registry::writer_schema(settings, encoder.avro_schema(), &schema)?;
                Some(registry::writer_id(settings, &self.topic, writer)?)
            }
        };
        Ok(Box::new(KafkaWriter {
            producer,
            topic: self.topic.clone(),
            encoder,
            schema_id,
            key,
            headers,
            payloads: Vec::new(),
        }))
    }
}

struct KafkaWriter {
    producer: BaseProducer<Context>,
    topic: String,
    encoder: MessageEncoder,
    /// With a registry: the writer schema's id, put before each payload.
    schema_id: Option<u32>,
    key: Option<usize>,
    headers: Vec<(String, usize)>,
    payloads: Vec<Option<Vec<u8>>>,
}

impl KafkaWriter {
    /// Fails if any record could not be delivered.
    fn check_deliveries(&self) -> Result<()> {
        let context = self.producer.context();
        let failed = context.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = context.first_failure.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        Err(Error::user(format!(
            "{failed} records could not be delivered to Kafka topic `{}` (first error: {first}); the pipeline \
             stops so that it can resume from its last checkpoint without losing them",
            self.topic
        )))
    }

    /// Waits until every record sent so far is acknowledged.
    fn flush(&self) -> Result<()> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| {
            Error::external(format!("waiting for Kafka topic `{}` to acknowledge records", self.topic), e)
        })?;
        self.check_deliveries()
    }
}

/// A column's values as bytes: binary as is, anything else as its text.
fn bytes_of(column: &ArrayRef) -> Result<ArrayRef> {
    match column.data_type() {
        DataType::Binary | DataType::Utf8 => Ok(column.clone()),
        _ => Ok(cast(column, &DataType::Utf8)?),
    }
}

fn value(column: &ArrayRef, row: usize) -> Option<&[u8]> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Binary => column.as_binary::<i32>().value(row),
        _ => column.as_string::<i32>().value(row).as_bytes(),
    })
}

impl SinkWriter for KafkaWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.payloads.clear();
        self.encoder.encode(batch, &mut self.payloads)?;
        if let Some(id) = self.schema_id {
            self.payloads.iter_mut().flatten().for_each(|payload| registry::frame(id, payload));
        }
        let key = self.key.map(|k| bytes_of(batch.column(k))).transpose()?;
        let headers = self
            .headers
            .iter()
            .map(|(name, column)| Ok((name.as_str(), bytes_of(batch.column(*column))?)))
            .collect::<Result<Vec<_>>>()?;
        for (row, payload) in self.payloads.iter().enumerate() {
            let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(&self.topic);
            if let Some(payload) = payload {
                record = record.payload(payload.as_slice());
            }
            if let Some(key) = key.as_ref().and_then(|k| value(k, row)) {
                record = record.key(key);
            }
            if !headers.is_empty() {
                let mut owned = OwnedHeaders::new_with_capacity(headers.len());
                for (name, column) in &headers {
                    owned = owned.insert(Header { key: name, value: value(column, row) });
                }
                record = record.headers(owned);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        self.producer.poll(QUEUE_FULL_WAIT);
                    }
                    Err((error, _)) => {
                        return Err(Error::external(
                            format!("sending a record to Kafka topic `{}`", self.topic),
                            error,
                        ));
                    }
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        self.check_deliveries()
    }

    fn epoch_complete(&mut self, _epoch: u64) -> Result<()> {
        self.producer.poll(Duration::ZERO);
        self.check_deliveries()
    }

    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.flush()?;
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}
