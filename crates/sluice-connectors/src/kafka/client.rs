//! What Kafka consumers and producers share: checked client settings (brokers, passed-through
//! librdkafka properties with `${env:NAME}` references, redacted when shown) and the client
//! context that routes librdkafka's logs to `tracing` and keeps what its statistics say.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

/// Which kind of client the settings are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// A consumer in this group.
    Consumer { group: String },
    /// A producer.
    Producer,
}

/// Properties Sluice sets itself, with the option to use instead (if any).
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `brokers`"),
    ("metadata.broker.list", "set `brokers`"),
    ("group.id", "set `group_id`"),
    ("enable.auto.commit", "offsets are committed after each checkpoint"),
    ("enable.auto.offset.store", "offsets are committed after each checkpoint"),
    ("enable.partition.eof", "`stop_at: latest` ends a bounded read"),
    ("statistics.interval.ms", "Sluice reads statistics for the lag metric"),
    ("auto.offset.reset", "Sluice reads from its own positions and never skips records silently"),
];

/// Checked settings of a Kafka client.
#[derive(Clone)]
pub(crate) struct ClientSettings {
    pub(crate) brokers: String,
    pub(crate) role: Role,
    /// Passed-through properties, values as written (secrets still as `${env:NAME}`).
    properties: Vec<(String, String)>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: Vec<(&str, &str)> =
            self.properties.iter().map(|(k, v)| (k.as_str(), shown(k, v))).collect();
        f.debug_struct("ClientSettings")
            .field("brokers", &self.brokers)
            .field("role", &self.role)
            .field("properties", &properties)
            .finish()
    }
}

/// A property's value as it may be shown: secrets are never shown.
fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    let secret = ["password", "secret", "key", "token", "jaas"].iter().any(|word| key.contains(word));
    if secret { "<redacted>" } else { value }
}

impl ClientSettings {
    /// Checks `brokers` and `properties`, reporting problems to `diagnostics`.
    pub(crate) fn check(
        brokers: Option<&str>,
        properties: Option<&BTreeMap<String, serde_json::Value>>,
        role: Role,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let before = diagnostics.len();
        let brokers = match brokers.map(str::trim) {
            None => {
                diagnostics.push(
                    Diagnostic::new("options.brokers", "missing required option \"brokers\"")
                        .suggest("list the bootstrap brokers, e.g. `brokers: 127.0.0.1:9092`"),
                );
                None
            }
            Some(brokers) => {
                let bad: Vec<&str> = brokers
                    .split(',')
                    .map(str::trim)
                    .filter(|b| {
                        b.rsplit_once(':')
                            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
                    })
                    .collect();
                if brokers.is_empty() || !bad.is_empty() {
                    diagnostics.push(
                        Diagnostic::new(
                            "options.brokers",
                            format!("\"{brokers}\" is not a list of host:port"),
                        )
                        .suggest("write e.g. `127.0.0.1:9092` or `kafka-1:9092,kafka-2:9092`"),
                    );
                }
                Some(brokers.to_owned())
            }
        };
        let mut checked = Vec::new();
        for (key, value) in properties.into_iter().flatten() {
            let path = format!("options.properties.{key}");
            if let Some((_, instead)) = OWNED.iter().find(|(owned, _)| owned == key) {
                diagnostics.push(Diagnostic::new(path, format!("Sluice sets `{key}` itself: {instead}")));
                continue;
            }
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    diagnostics.push(Diagnostic::new(
                        path,
                        format!(
                            "expected a string, number or boolean, found {}",
                            crate::options::describe(other)
                        ),
                    ));
                    continue;
                }
            };
            if let Some(name) = env_reference(&text)
                && name.is_empty()
            {
                diagnostics.push(Diagnostic::new(path, "`${env:}` names no environment variable"));
                continue;
            }
            checked.push((key.clone(), text));
        }
        let brokers = brokers?;
        (diagnostics.len() == before).then_some(Self { brokers, role, properties: checked })
    }

    /// The librdkafka configuration, with `${env:NAME}` references resolved (an error names a
    /// missing variable, never a value).
    pub(crate) fn config(&self) -> Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("statistics.interval.ms", "1000");
        config.set_log_level(RDKafkaLogLevel::Warning);
        match &self.role {
            Role::Consumer { group } => {
                config
                    .set("group.id", group)
                    .set("enable.auto.commit", "false")
                    .set("enable.auto.offset.store", "false")
                    .set("enable.partition.eof", "false")
                    // A position the brokers do not have is an error, never a silent jump to
                    // the end (librdkafka's default), which would lose the records in between.
                    .set("auto.offset.reset", "error")
                    // librdkafka waits up to 500 ms for a fetch to fill by default; a stream
                    // processor wants records as they come (overridable in `properties`).
                    .set("fetch.wait.max.ms", "50");
            }
            Role::Producer => {
                config
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("partitioner", "murmur2_random");
            }
        }
        for (key, value) in &self.properties {
            let value = match env_reference(value) {
                Some(name) => std::env::var(name).map_err(|_| {
                    Error::user(format!(
                        "Kafka property `{key}` refers to the environment variable {name}, which is not set"
                    ))
                })?,
                None => value.clone(),
            };
            config.set(key, value);
        }
        Ok(config)
    }
}

/// Whether a librdkafka warning is routine rather than a problem: the idempotent producer asked
/// for its producer id over a bootstrap connection that librdkafka itself then retired (it
/// replaces bootstrap brokers with those the cluster advertises) and asks again over another.
/// Seen once or twice at the start of most runs with a Kafka sink; delivery is unaffected.
fn routine(facility: &str, message: &str) -> bool {
    facility == "GETPID" && message.contains("Broker handle destroyed without termination")
}

/// `NAME` of a value that is exactly `${env:NAME}`.
fn env_reference(value: &str) -> Option<&str> {
    value.strip_prefix("${env:")?.strip_suffix('}')
}

/// The client context: librdkafka's logs and errors go to `tracing`; statistics give each
/// partition's high watermark (for the lag metric); producer delivery failures are kept.
#[derive(Default)]
pub(crate) struct Context {
    /// `(topic, partition)` → high watermark offset, from the latest statistics.
    pub(crate) high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// Delivery failures since last taken: how many, and the first error.
    pub(crate) failed: AtomicU64,
    pub(crate) first_failure: Mutex<Option<String>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "kafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning if routine(facility, message) => {
                tracing::debug!(target: "kafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "kafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "kafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "kafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors (a broker restarting) are retried by librdkafka.
        tracing::warn!(target: "kafka", %error, "{reason}");
    }

    fn stats(&self, statistics: Statistics) {
        let Ok(mut marks) = self.high_watermarks.lock() else { return };
        for (name, topic) in statistics.topics {
            for (partition, stats) in topic.partitions {
                if partition >= 0 && stats.hi_offset >= 0 {
                    marks.insert((name.clone(), partition), stats.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result
            && self.failed.fetch_add(1, Ordering::Relaxed) == 0
            && let Ok(mut first) = self.first_failure.lock()
        {
            *first = Some(error.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(brokers: Option<&str>, properties: serde_json::Value) -> (Option<ClientSettings>, Vec<String>) {
        let properties: Option<BTreeMap<String, serde_json::Value>> =
            serde_json::from_value(properties).unwrap();
        let mut diagnostics = Vec::new();
        let settings = ClientSettings::check(brokers, properties.as_ref(), Role::Producer, &mut diagnostics);
        (settings, diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn only_the_retired_bootstrap_connection_warning_is_routine() {
        // The message as librdkafka 2.x words it (seen in `sluice bench kafka`).
        let seen = "Failed to acquire idempotence PID from broker 127.0.0.1:9092/bootstrap: Local: Broker \
                    handle destroyed without termination: retrying";
        assert!(routine("GETPID", seen));
        assert!(!routine(
            "GETPID",
            "Failed to acquire idempotence PID from broker b:9092/1: Local: Timed out: retrying"
        ));
        assert!(!routine("FAIL", seen));
    }

    #[test]
    fn secrets_are_resolved_at_open_and_never_shown() {
        let (settings, errors) = check(
            Some("127.0.0.1:9092"),
            json!({"sasl.password": "${env:SLUICE_TEST_KAFKA_SECRET}", "linger.ms": 5}),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let settings = settings.unwrap();
        let shown = format!("{settings:?}");
        assert!(shown.contains("<redacted>") && shown.contains("linger.ms"), "{shown}");
        let missing = settings.config().err().unwrap().to_string();
        assert!(missing.contains("SLUICE_TEST_KAFKA_SECRET") && missing.contains("not set"), "{missing}");
    }

    #[test]
    fn bad_brokers_and_owned_properties_are_reported() {
        let (_, errors) = check(Some("localhost"), json!({"group.id": "x", "acks": ["all"]}));
        assert_eq!(
            errors,
            [
                "options.brokers: \"localhost\" is not a list of host:port; write e.g. `127.0.0.1:9092` or \
                 `kafka-1:9092,kafka-2:9092`",
                "options.properties.acks: expected a string, number or boolean, found a list",
                "options.properties.group.id: Sluice sets `group.id` itself: set `group_id`",
            ]
        );
    }
}
