//! [`MqttSink`]: publishes each row as one MQTT message and waits for the broker's
//! acknowledgements before checkpoints and the end of the run.
//!
//! The client's event loop runs as a task on the writer's [`IoRuntime`] and counts what the
//! broker acknowledged (PUBACK for QoS 1; for QoS 0, messages written to the socket). A PUBACK
//! with an error reason, or a lost connection, fails the run: rumqttc would drop unacknowledged
//! messages of a clean session on reconnecting, so going on could lose them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use rand::Rng;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop};
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::{Error, Result};
use tokio::sync::watch;

use super::{Qos, SinkConfig, TopicFrom, client};
use crate::format::message::{MessageEncoder, MessageFormat};
use crate::http::secret::Redactor;
use crate::io::IoRuntime;

/// Publishes queued for the client at most (the writer waits beyond).
const REQUEST_CAPACITY: usize = 1024;
/// How long the broker may take to acknowledge everything published before a checkpoint.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `finish` waits for the DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes rows to MQTT; see the module documentation.
#[derive(Debug)]
pub struct MqttSink {
    config: SinkConfig,
}

impl MqttSink {
    pub(crate) fn new(config: SinkConfig) -> Self {
        Self { config }
    }
}

impl Sink for MqttSink {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        let config = &self.config;
        let schema = context.schema;
        if config.format == MessageFormat::Raw {
            config.format.check_schema(&schema).map_err(Error::user)?;
        }
        let topic = match &config.topic {
            TopicFrom::Fixed(topic) => Topic::Fixed(topic.clone()),
            TopicFrom::Column(name) => Topic::Column(schema.index_of(name).map_err(|_| {
                let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Error::user(format!(
                    "options.topic_column names column `{name}`, which the stream into the MQTT sink does not \
                     have; its columns are: {}",
                    columns.join(", ")
                ))
            })?),
        };
        let io = IoRuntime::start("sluice-mqtt")?;
        let suffix: u32 = rand::rng().random();
        let client_id = format!("{}-{}-{suffix:08x}", config.client_id, context.worker.index);
        let mut redactor = Redactor::default();
        let options = config.client.options(&client_id, &mut redactor)?;
        let (client, mut events) = client::client(options, REQUEST_CAPACITY);
        config.client.connect(&io, &mut events, &redactor)?;
        let (acknowledged, progress) = watch::channel(0u64);
        let failure = Arc::new(Mutex::new(None));
        let task = AckTask { events, qos: config.qos, acknowledged, failure: failure.clone() };
        let task = Some(io.handle()?.spawn(task.run()));
        Ok(Box::new(MqttWriter {
            io,
            client,
            topic,
            qos: config.qos,
            retain: config.retain,
            url: config.client.url.clone(),
            encoder: MessageEncoder::new(config.format),
            payloads: Vec::new(),
            published: 0,
            progress,
            failure,
            task,
            dead_letters: context.dead_letters,
        }))
    }
}

/// Where a row's topic is.
enum Topic {
    Fixed(String),
    Column(usize),
}

/// Drives the client's event loop and counts acknowledged messages.
struct AckTask {
    events: EventLoop,
    qos: Qos,
    acknowledged: watch::Sender<u64>,
    failure: Arc<Mutex<Option<String>>>,
}

impl AckTask {
    async fn run(mut self) {
        let mut disconnecting = false;
        loop {
            let failed = match self.events.poll().await {
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                    disconnecting = true;
                    None
                }
                // After our DISCONNECT the broker closes the connection: everything is out.
                Err(_) if disconnecting => return,
                Ok(MqttEvent::Outgoing(Outgoing::Publish(_))) if self.qos == Qos::AtMostOnce => {
                    self.acknowledged.send_modify(|n| *n += 1);
                    None
                }
                Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                        self.acknowledged.send_modify(|n| *n += 1);
                        None
                    }
                    reason => Some(format!("the broker rejected a message ({reason:?})")),
                },
                Ok(MqttEvent::Incoming(Packet::Disconnect(disconnect))) => {
                    Some(format!("the broker disconnected ({:?})", disconnect.reason_code))
                }
                Ok(_) => None,
                Err(error) => Some(format!("the connection was lost: {}", client::describe(&error))),
            };
            if let Some(reason) = failed {
                if let Ok(mut failure) = self.failure.lock() {
                    failure.get_or_insert(reason);
                }
                // Dropping the sender wakes a writer waiting for acknowledgements.
                return;
            }
        }
    }
}

struct MqttWriter {
    io: IoRuntime,
    client: AsyncClient,
    topic: Topic,
    qos: Qos,
    retain: bool,
    url: String,
    encoder: MessageEncoder,
    payloads: Vec<Option<Vec<u8>>>,
    /// Messages handed to the client so far.
    published: u64,
    /// How many the broker has acknowledged.
    progress: watch::Receiver<u64>,
    failure: Arc<Mutex<Option<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
    dead_letters: DeadLetterSink,
}

impl MqttWriter {
    fn failed(&self) -> Result<()> {
        let failure = self.failure.lock().ok().and_then(|failure| failure.clone());
        match failure {
            None => Ok(()),
            Some(reason) => Err(Error::user(format!(
                "publishing to the MQTT broker at {} failed: {reason}; the pipeline stops so that it can resume \
                 from its last checkpoint without losing messages",
                self.url
            ))),
        }
    }

    /// Waits until the broker acknowledged everything published.
    fn wait_for_acks(&mut self) -> Result<()> {
        let published = self.published;
        let mut progress = self.progress.clone();
        let waited = self.io.block_on(async move {
            tokio::time::timeout(ACK_TIMEOUT, progress.wait_for(|acknowledged| *acknowledged >= published))
                .await
                .map(|result| result.is_ok())
        })?;
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.failed()?;
                Err(Error::internal("the MQTT sink's client task ended without a reason"))
            }
            Err(_) => Err(Error::user(format!(
                "the MQTT broker at {} did not acknowledge {} messages within {ACK_TIMEOUT:?}",
                self.url,
                published - *self.progress.borrow()
            ))),
        }
    }
}

impl SinkWriter for MqttWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.failed()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.payloads.clear();
        self.encoder.encode(batch, &mut self.payloads)?;
        let topics = match self.topic {
            Topic::Fixed(_) => None,
            Topic::Column(index) => Some(cast(batch.column(index), &DataType::Utf8)?),
        };
        let mut messages = Vec::with_capacity(self.payloads.len());
        for (row, payload) in self.payloads.iter_mut().enumerate() {
            let payload = payload.take().unwrap_or_default();
            let topic = match (&self.topic, &topics) {
                (Topic::Fixed(topic), _) => topic.clone(),
                (Topic::Column(_), Some(column)) => {
                    let value = (!column.is_null(row)).then(|| column.as_string::<i32>().value(row));
                    match value.map(|topic| (topic, client::check_topic(topic, false))) {
                        Some((topic, Ok(()))) => topic.to_owned(),
                        Some((_, Err(reason))) => {
                            let reason = format!("cannot publish: {reason}");
                            self.dead_letters.report(DeadLetter {
                                position: "mqtt".to_owned(),
                                raw: payload,
                                reason,
                            })?;
                            continue;
                        }
                        None => {
                            let reason = "the topic column is NULL".to_owned();
                            self.dead_letters.report(DeadLetter {
                                position: "mqtt".to_owned(),
                                raw: payload,
                                reason,
                            })?;
                            continue;
                        }
                    }
                }
                (Topic::Column(_), None) => return Err(Error::internal("the topic column was not read")),
            };
            messages.push((topic, payload));
        }
        let count = messages.len() as u64;
        let (client, qos, retain) = (self.client.clone(), self.qos.mqtt(), self.retain);
        self.io
            .block_on(async move {
                for (topic, payload) in messages {
                    client.publish(topic, qos, retain, payload).await?;
                }
                Ok::<_, rumqttc::v5::ClientError>(())
            })?
            .map_err(|_| {
                self.failed().err().unwrap_or_else(|| Error::internal("the MQTT sink's client task ended"))
            })?;
        self.published += count;
        Ok(())
    }

    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.wait_for_acks()?;
        self.dead_letters.flush()?;
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        self.wait_for_acks()?;
        self.dead_letters.flush()?;
        // Disconnect cleanly, so that QoS 0 messages still in the client's buffer go out.
        if self.client.try_disconnect().is_ok()
            && let Some(task) = self.task.take()
        {
            let _ = self.io.block_on(async move { tokio::time::timeout(DISCONNECT_TIMEOUT, task).await });
        }
        Ok(())
    }
}
