//! [`MqttSource`]: subscribes with a persistent session on worker 0 and acknowledges messages
//! once the checkpoint covering them is complete; see the module documentation of
//! [`crate::mqtt`] for the guarantees.
//!
//! The client's event loop runs as a task on the reader's [`IoRuntime`] and hands messages to
//! the worker through a bounded channel. Each snapshot is the number of messages returned so
//! far; when the checkpoint holding it is complete, every QoS 1 message up to that number is
//! acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, RetainForwardRule, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event as MqttEvent, EventLoop};
use sluice_runtime::connector::{
    Source, SourceBatch, SourceContext, SourceOutput, SourceReader, SourceStatus, SplitState,
};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::{Error, Result};
use tokio::sync::mpsc;

use super::{Column, Qos, SourceConfig, client};
use crate::format::message::MessageDecoder;
use crate::http::secret::Redactor;
use crate::io::IoRuntime;

/// Messages buffered between the client and the worker.
const CHANNEL_CAPACITY: usize = 8192;
/// Requests (acknowledgements, subscriptions) queued for the client at most.
const REQUEST_CAPACITY: usize = 4096;
/// How long to wait before polling again when no message is ready.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How long a worker without a subscription waits between polls.
const NO_SPLIT_POLL: Duration = Duration::from_millis(100);
/// How long to wait before reconnecting after the connection was lost.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long subscribing may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reader being dropped waits for its acknowledgements and DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The split's name (one subscription, read by worker 0).
const SPLIT: &str = "mqtt";

/// Reads MQTT topics; see the module documentation.
#[derive(Debug)]
pub struct MqttSource {
    config: Arc<SourceConfig>,
}

impl MqttSource {
    pub(crate) fn new(config: SourceConfig) -> Self {
        Self { config: Arc::new(config) }
    }
}

impl Source for MqttSource {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: self.config.schema.clone() }]
    }

    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        let subscription =
            if context.worker.index == 0 { Some(Subscription::open(&self.config)?) } else { None };
        Ok(Box::new(MqttReader {
            decoder: MessageDecoder::new(self.config.format, self.config.value_schema.clone()),
            config: self.config.clone(),
            subscription,
            checkpointing: context.checkpointing,
            returned: 0,
            unacknowledged: VecDeque::new(),
            ending: false,
            dead_letters: context.dead_letters,
            stop: context.stop,
        }))
    }
}

/// What the client task tells the worker.
enum Event {
    Message(Publish),
    /// The connection cannot be restored (e.g. the broker refuses the credentials).
    Failed(Error),
}

/// Worker 0's connection: the client, the task driving its event loop, and its messages.
struct Subscription {
    client: AsyncClient,
    events: mpsc::Receiver<Event>,
    closing: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    io: IoRuntime,
}

impl Subscription {
    fn open(config: &SourceConfig) -> Result<Self> {
        let io = IoRuntime::start("sluice-mqtt")?;
        let mut redactor = Redactor::default();
        let mut options = config.client.options(&config.client_id, &mut redactor)?;
        let expiry = u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(expiry))
            // Messages stay unacknowledged until a checkpoint completes: let the broker send
            // as many as MQTT allows meanwhile.
            .set_receive_maximum(Some(u16::MAX))
            .set_manual_acks(true);
        let (client, mut events) = client::client(options, REQUEST_CAPACITY);
        let session_present = config.client.connect(&io, &mut events, &redactor)?;
        let filters = filters(config);
        client
            .try_subscribe_many(filters.clone())
            .map_err(|e| Error::external("queueing the MQTT subscription", e))?;
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        // Messages of the resumed session may come before the subscription is acknowledged.
        let early = io.block_on(wait_for_suback(&mut events, &config.filters, &config.client.url))??;
        tracing::info!(
            client_id = config.client_id,
            session_present,
            filters = ?config.filters,
            "mqtt source subscribed"
        );
        let closing = Arc::new(AtomicBool::new(false));
        let task = ClientTask { events, client: client.clone(), filters, sender, closing: closing.clone() };
        let task = Some(io.handle()?.spawn(task.run(early)));
        Ok(Self { client, events: receiver, closing, task, io })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.events.close();
        // A clean DISCONNECT (the session stays) goes out after the acknowledgements queued
        // before it, so none is lost; wait a little for it.
        if self.client.try_disconnect().is_ok()
            && let Some(task) = self.task.take()
        {
            let _ = self.io.block_on(async move { tokio::time::timeout(DISCONNECT_TIMEOUT, task).await });
        }
    }
}

fn filters(config: &SourceConfig) -> Vec<Filter> {
    config
        .filters
        .iter()
        .map(|topic| {
            let mut filter = Filter::new(topic.clone(), config.qos.mqtt());
            // A resumed session keeps its subscription; retained messages come once, not at
            // every restart.
            filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
            filter
        })
        .collect()
}

/// Polls until the subscription is acknowledged; returns messages that came before.
async fn wait_for_suback(events: &mut EventLoop, filters: &[String], url: &str) -> Result<Vec<Publish>> {
    let mut early = Vec::new();
    let outcome = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(publish))) => early.push(publish),
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => return Ok(ack.return_codes),
                Ok(_) => {}
                Err(error) => return Err(client::describe(&error)),
            }
        }
    })
    .await;
    let codes = match outcome {
        Ok(Ok(codes)) => codes,
        Ok(Err(error)) => {
            return Err(Error::user(format!(
                "the MQTT broker at {url} closed the connection while subscribing: {error}"
            )));
        }
        Err(_) => {
            return Err(Error::user(format!(
                "the MQTT broker at {url} did not acknowledge the subscription"
            )));
        }
    };
    for (filter, code) in filters.iter().zip(&codes) {
        if !matches!(code, SubscribeReasonCode::Success(_)) {
            return Err(Error::user(format!(
                "the MQTT broker at {url} refused the subscription to `{filter}` ({code:?}); check the filter and \
                 the broker's access rules"
            )));
        }
    }
    Ok(early)
}

/// Drives the client's event loop: forwards messages, reconnects after a lost connection.
struct ClientTask {
    events: EventLoop,
    client: AsyncClient,
    filters: Vec<Filter>,
    sender: mpsc::Sender<Event>,
    closing: Arc<AtomicBool>,
}

impl ClientTask {
    async fn run(mut self, early: Vec<Publish>) {
        for publish in early {
            if self.sender.send(Event::Message(publish)).await.is_err() {
                return;
            }
        }
        let mut last_warning: Option<Instant> = None;
        let mut disconnecting = false;
        loop {
            match self.events.poll().await {
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
                // After our DISCONNECT the broker closes the connection: everything is out.
                Err(_) if disconnecting => return,
                Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                    if self.sender.send(Event::Message(publish)).await.is_err() {
                        return;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(target: "mqtt", session_present = ack.session_present, "source reconnected");
                    // The broker forgot the session (it expired): subscribe again.
                    if !ack.session_present
                        && let Err(error) = self.client.try_subscribe_many(self.filters.clone())
                    {
                        let error = Error::external("subscribing again after reconnecting", error);
                        let _ = self.sender.send(Event::Failed(error)).await;
                        return;
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    let error = Error::user(format!("the MQTT broker refused the connection: {code:?}"));
                    let _ = self.sender.send(Event::Failed(error)).await;
                    return;
                }
                Err(_) if self.closing.load(Ordering::Relaxed) => return,
                Err(error) => {
                    if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(
                            target: "mqtt",
                            "source connection lost: {} (reconnecting; unacknowledged messages will be redelivered)",
                            client::describe(&error)
                        );
                        last_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            }
        }
    }
}

struct MqttReader {
    config: Arc<SourceConfig>,
    decoder: MessageDecoder,
    /// Worker 0's connection; none on other workers.
    subscription: Option<Subscription>,
    checkpointing: bool,
    /// Messages returned so far (bad ones included).
    returned: u64,
    /// QoS 1 messages returned and not yet acknowledged, with their number.
    unacknowledged: VecDeque<(u64, Publish)>,
    /// Reading has ended: the positions told now belong to a checkpoint not yet complete.
    ending: bool,
    dead_letters: DeadLetterSink,
    stop: Arc<AtomicBool>,
}

impl MqttReader {
    /// Acknowledges every message numbered up to `upto`.
    fn acknowledge(&mut self, upto: u64) -> Result<()> {
        let Some(subscription) = &self.subscription else { return Ok(()) };
        let mut due = Vec::new();
        while self.unacknowledged.front().is_some_and(|(number, _)| *number <= upto) {
            if let Some((_, publish)) = self.unacknowledged.pop_front() {
                due.push(publish);
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let client = subscription.client.clone();
        subscription
            .io
            .block_on(async move {
                for publish in &due {
                    client.ack(publish).await?;
                }
                Ok::<_, rumqttc::v5::ClientError>(())
            })?
            .map_err(|e| Error::external("acknowledging MQTT messages", e))
    }

    fn build(&mut self, messages: Vec<Publish>) -> Result<Option<RecordBatch>> {
        let topics: Vec<String> =
            messages.iter().map(|m| String::from_utf8_lossy(&m.topic).into_owned()).collect();
        let payloads: Vec<Option<&[u8]>> = messages.iter().map(|m| Some(m.payload.as_ref())).collect();
        let dead_letters = &mut self.dead_letters;
        let (values, rows) = self.decoder.decode(&payloads, &mut |index, reason| {
            dead_letters.report(DeadLetter {
                position: format!("mqtt {}", topics[index]),
                raw: messages[index].payload.to_vec(),
                reason,
            })
        })?;
        for publish in messages {
            self.returned += 1;
            if publish.qos == Qos::AtLeastOnce.mqtt() {
                // Only the packet id and QoS matter for the acknowledgement.
                let ack = Publish { payload: bytes::Bytes::new(), properties: None, ..publish };
                self.unacknowledged.push_back((self.returned, ack));
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let schema = &self.config.schema;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for column in &self.config.columns {
            columns.push(match column {
                Column::Value(i) => values.column(*i).clone(),
                Column::Topic => {
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|row| topics[*row].as_str())))
                }
            });
        }
        Ok(Some(RecordBatch::try_new(schema.clone(), columns)?))
    }
}

impl SourceReader for MqttReader {
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        if self.stop.load(Ordering::Relaxed) {
            self.ending = true;
            return Ok(SourceStatus::Finished);
        }
        let Some(subscription) = self.subscription.as_mut() else {
            return Ok(SourceStatus::Idle(NO_SPLIT_POLL));
        };
        let mut messages = Vec::new();
        while messages.len() < max_rows {
            match subscription.events.try_recv() {
                Ok(Event::Message(publish)) => messages.push(publish),
                Ok(Event::Failed(error)) => return Err(error),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::internal("the MQTT client task ended without a reason"));
                }
            }
        }
        if messages.is_empty() {
            return Ok(SourceStatus::Idle(IDLE_POLL));
        }
        if let Some(batch) = self.build(messages)? {
            out.push(SourceBatch { output: 0, split: 0, batch });
        }
        if !self.checkpointing {
            // No checkpoint will ever cover these: acknowledge them as they are read.
            self.acknowledge(self.returned)?;
        }
        Ok(SourceStatus::Ready)
    }

    fn splits(&self) -> usize {
        usize::from(self.subscription.is_some())
    }

    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        Ok(match self.subscription {
            Some(_) => {
                vec![SplitState { split: SPLIT.to_owned(), position: self.returned.to_string().into_bytes() }]
            }
            None => Vec::new(),
        })
    }

    fn positions_committed(&mut self, positions: &[SplitState]) -> Result<()> {
        if self.ending {
            // The final checkpoint is not complete yet; its messages stay unacknowledged and
            // come again at the next start.
            tracing::info!(
                target: "mqtt",
                unacknowledged = self.unacknowledged.len(),
                "source stopped; messages after the last complete checkpoint will be redelivered"
            );
            return Ok(());
        }
        let Some(state) = positions.iter().find(|state| state.split == SPLIT) else { return Ok(()) };
        let upto = std::str::from_utf8(&state.position)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| Error::internal("an MQTT checkpoint marker is not a message count"))?;
        self.acknowledge(upto)
    }
}
