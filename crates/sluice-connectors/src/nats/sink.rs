//! [`NatsSink`]: publishes each row as one JetStream message and waits for the acknowledgements.
//!
//! Publishing does not wait for each acknowledgement: up to [`MAX_UNACKNOWLEDGED`] are
//! outstanding, then the writer waits for all of them. A checkpoint (`prepare`) and the end of
//! the run (`finish`) wait for every outstanding one, and a publish the server rejects or does
//! not acknowledge fails the run, which then resumes from its last checkpoint and publishes again:
//! at-least-once. Rows whose subject column is NULL cannot be published and are dead letters.

use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::{Error, Result};

use super::{SinkConfig, SubjectFrom};
use crate::format::message::{MessageEncoder, MessageFormat};
use crate::io::IoRuntime;

/// Publishes outstanding at most before the writer waits for their acknowledgements (below
/// the client's own limit of 5,000, past which publishing would wait forever).
const MAX_UNACKNOWLEDGED: usize = 4_000;
/// How long the server may take to acknowledge a publish.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes rows to NATS JetStream; see the module documentation.
#[derive(Debug)]
pub struct NatsSink {
    config: SinkConfig,
}

impl NatsSink {
    pub(crate) fn new(config: SinkConfig) -> Self {
        Self { config }
    }

    fn column(&self, schema: &SchemaRef, option: &str, name: &str) -> Result<usize> {
        schema.index_of(name).map_err(|_| {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::user(format!(
                "options.{option} names column `{name}`, which the stream into the NATS sink does not have; its \
                 columns are: {}",
                columns.join(", ")
            ))
        })
    }
}

impl Sink for NatsSink {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        let schema = context.schema;
        let config = &self.config;
        if config.format == MessageFormat::Raw {
            config.format.check_schema(&schema).map_err(Error::user)?;
        }
        let subject = match &config.subject {
            SubjectFrom::Fixed(subject) => Subject::Fixed(subject.clone()),
            SubjectFrom::Column(name) => Subject::Column(self.column(&schema, "subject_column", name)?),
        };
        let headers = config
            .headers
            .iter()
            .map(|(header, column)| {
                Ok((header.clone(), self.column(&schema, &format!("headers.{header}"), column)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let message_id =
            config.message_id.as_deref().map(|name| self.column(&schema, "message_id", name)).transpose()?;
        let io = IoRuntime::start("sluice-nats")?;
        let (client, _) =
            config.client.connect(&io, format!("sluice sink worker {}", context.worker.index))?;
        let js = {
            let _inside = io.enter()?;
            jetstream::ContextBuilder::new().ack_timeout(ACK_TIMEOUT).build(client)
        };
        if let Subject::Fixed(subject) = &subject {
            let url = &config.client.url;
            io.block_on(js.stream_by_subject(subject.clone()))?.map_err(|error| {
                Error::user(format!(
                    "no JetStream stream on {url} captures subject `{subject}` ({error}); create a stream whose \
                     subjects include it (Sluice does not create streams)"
                ))
            })?;
        }
        Ok(Box::new(NatsWriter {
            io,
            js,
            encoder: MessageEncoder::new(config.format),
            subject,
            headers,
            message_id,
            payloads: Vec::new(),
            unacknowledged: Vec::new(),
            dead_letters: context.dead_letters,
        }))
    }
}

/// Where a row's subject is.
enum Subject {
    Fixed(String),
    Column(usize),
}

struct NatsWriter {
    io: IoRuntime,
    js: jetstream::Context,
    encoder: MessageEncoder,
    subject: Subject,
    headers: Vec<(String, usize)>,
    message_id: Option<usize>,
    payloads: Vec<Option<Vec<u8>>>,
    /// Publishes not yet acknowledged, with their subjects.
    unacknowledged: Vec<(String, PublishAckFuture)>,
    dead_letters: DeadLetterSink,
}

/// A column's values as text (binary must be UTF-8 to be a subject or header).
fn text_column(column: &ArrayRef) -> Result<ArrayRef> {
    match column.data_type() {
        DataType::Utf8 => Ok(column.clone()),
        _ => Ok(cast(column, &DataType::Utf8)?),
    }
}

fn text(column: &ArrayRef, row: usize) -> Option<&str> {
    (!column.is_null(row)).then(|| column.as_string::<i32>().value(row))
}

impl NatsWriter {
    /// Waits for every outstanding acknowledgement; fails on the first rejected publish.
    fn wait_for_acks(&mut self) -> Result<()> {
        let outstanding = std::mem::take(&mut self.unacknowledged);
        if outstanding.is_empty() {
            return Ok(());
        }
        let results = self.io.block_on(futures::future::join_all(
            outstanding.into_iter().map(|(subject, ack)| async move { (subject, ack.await) }),
        ))?;
        let mut duplicates = 0usize;
        for (subject, result) in results {
            match result {
                Ok(ack) => duplicates += usize::from(ack.duplicate),
                Err(error) => {
                    return Err(Error::external(
                        format!(
                            "JetStream did not acknowledge a message published to `{subject}`; the pipeline stops so \
                             that it can resume from its last checkpoint without losing it"
                        ),
                        error,
                    ));
                }
            }
        }
        if duplicates > 0 {
            tracing::debug!(target: "nats", duplicates, "the stream dropped messages whose Nats-Msg-Id it had seen");
        }
        Ok(())
    }
}

impl SinkWriter for NatsWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.payloads.clear();
        self.encoder.encode(batch, &mut self.payloads)?;
        let subjects = match &self.subject {
            Subject::Fixed(_) => None,
            Subject::Column(index) => Some(text_column(batch.column(*index))?),
        };
        let headers = self
            .headers
            .iter()
            .map(|(name, column)| Ok((name.as_str(), text_column(batch.column(*column))?)))
            .collect::<Result<Vec<_>>>()?;
        let ids = self.message_id.map(|column| text_column(batch.column(column))).transpose()?;
        let mut messages = Vec::with_capacity(batch.num_rows());
        for (row, payload) in self.payloads.iter().enumerate() {
            let subject = match (&self.subject, &subjects) {
                (Subject::Fixed(subject), _) => subject.clone(),
                (Subject::Column(_), Some(column)) => match text(column, row) {
                    Some(subject) if super::client::check_subject(subject, false).is_ok() => {
                        subject.to_owned()
                    }
                    other => {
                        let reason = match other {
                            None => "the subject column is NULL".to_owned(),
                            Some(subject) => format!(
                                "cannot publish: {}",
                                super::client::check_subject(subject, false).err().unwrap_or_default()
                            ),
                        };
                        let raw = payload.clone().unwrap_or_default();
                        self.dead_letters.report(DeadLetter { position: "nats".to_owned(), raw, reason })?;
                        continue;
                    }
                },
                (Subject::Column(_), None) => return Err(Error::internal("the subject column was not read")),
            };
            let mut header_map = HeaderMap::new();
            for (name, column) in &headers {
                if let Some(value) = text(column, row) {
                    header_map.insert(*name, value);
                }
            }
            let mut message = PublishMessage::build().payload(payload.clone().unwrap_or_default().into());
            if !headers.is_empty() {
                message = message.headers(header_map);
            }
            if let Some(id) = ids.as_ref().and_then(|ids| text(ids, row)) {
                message = message.message_id(id);
            }
            messages.push((subject, message));
        }
        for chunk in messages.chunks(MAX_UNACKNOWLEDGED) {
            if self.unacknowledged.len() + chunk.len() > MAX_UNACKNOWLEDGED {
                self.wait_for_acks()?;
            }
            let js = &self.js;
            let sent = self.io.block_on(async move {
                let mut sent = Vec::with_capacity(chunk.len());
                for (subject, message) in chunk {
                    let ack = js.send_publish(subject.clone(), message.clone()).await.map_err(|error| {
                        Error::external(format!("publishing a message to NATS subject `{subject}`"), error)
                    })?;
                    sent.push((subject.clone(), ack));
                }
                Ok::<_, Error>(sent)
            })??;
            self.unacknowledged.extend(sent);
        }
        Ok(())
    }

    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.wait_for_acks()?;
        self.dead_letters.flush()?;
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        self.wait_for_acks()?;
        self.dead_letters.flush()
    }
}
