//! What the MQTT source and sink share: the checked broker address and credentials (`user` and
//! `password`, each may be `${env:NAME}`, resolved when a worker connects and never shown),
//! topic checks, and connecting with MQTT 5.

use std::fmt;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use crate::http::secret::{Redactor, Template};
use crate::io::IoRuntime;

/// The broker used when `url` is not set.
pub(crate) const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message accepted or sent, in bytes.
pub(crate) const MAX_PACKET_BYTES: u32 = 16 * 1024 * 1024;

/// Checked connection settings; secrets are still references here.
#[derive(Clone)]
pub(crate) struct ClientSettings {
    /// `mqtt://host:port` as written.
    pub(crate) url: String,
    host: String,
    port: u16,
    credentials: Option<(Template, Template)>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = if self.credentials.is_some() { "user and password (redacted)" } else { "none" };
        f.debug_struct("ClientSettings").field("url", &self.url).field("credentials", &credentials).finish()
    }
}

impl ClientSettings {
    /// Checks `url` and the credentials, reporting every problem to `diagnostics`.
    pub(crate) fn check(
        url: Option<&str>,
        user: Option<&str>,
        password: Option<&str>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let before = diagnostics.len();
        let url = url.map_or(DEFAULT_URL, str::trim).to_owned();
        let address = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://"));
        let parsed = address.and_then(|address| {
            let (host, port) = address.trim_end_matches('/').rsplit_once(':')?;
            let valid_host = !host.is_empty() && !host.contains(['/', '@']);
            Some((host.to_owned(), port.parse::<u16>().ok().filter(|_| valid_host)?))
        });
        if parsed.is_none() {
            let message = if url.contains('@') {
                "credentials do not belong in the URL, where they would be shown; set `user` and `password`"
                    .to_owned()
            } else if url.starts_with("mqtts://") || url.starts_with("ssl://") {
                format!("\"{url}\": TLS is not supported by the mqtt connector yet; use mqtt://host:port")
            } else {
                format!("\"{url}\" is not an MQTT broker address")
            };
            diagnostics
                .push(Diagnostic::new("options.url", message).suggest("write e.g. `mqtt://127.0.0.1:1883`"));
        }
        let mut template = |key: &str, value: Option<&str>| {
            Template::parse(value?)
                .map_err(|message| diagnostics.push(Diagnostic::new(format!("options.{key}"), message)))
                .ok()
        };
        let (user_t, password_t) = (template("user", user), template("password", password));
        let credentials = match (user, password) {
            (None, None) => None,
            (Some(_), Some(_)) => user_t.zip(password_t),
            (Some(_), None) => {
                diagnostics.push(
                    Diagnostic::new("options.password", "`user` is set but `password` is not")
                        .suggest("set `password`, e.g. `password: ${env:MQTT_PASSWORD}`"),
                );
                None
            }
            (None, Some(_)) => {
                diagnostics.push(Diagnostic::new("options.user", "`password` is set but `user` is not"));
                None
            }
        };
        let (host, port) = parsed?;
        (diagnostics.len() == before).then_some(Self { url, host, port, credentials })
    }

    /// MQTT 5 options for client `client_id`, with secrets resolved from the environment
    /// (their values are added to `redactor`).
    pub(crate) fn options(&self, client_id: &str, redactor: &mut Redactor) -> Result<MqttOptions> {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(Some(MAX_PACKET_BYTES));
        if let Some((user, password)) = &self.credentials {
            let env = |name: &str| std::env::var(name).ok();
            let resolve = |template: &Template, key: &str, redactor: &mut Redactor| {
                template
                    .resolve(&env, redactor)
                    .map_err(|message| Error::user(format!("MQTT `{key}`: {message}")))
            };
            let user = resolve(user, "user", redactor)?;
            let password = resolve(password, "password", redactor)?;
            options.set_credentials(user, password);
        }
        Ok(options)
    }

    /// Drives `events` until the broker accepts the connection; returns whether it still had a
    /// session for this client.
    pub(crate) fn connect(
        &self,
        io: &IoRuntime,
        events: &mut EventLoop,
        redactor: &Redactor,
    ) -> Result<bool> {
        let url = &self.url;
        let connected = io.block_on(async {
            tokio::time::timeout(CONNECT_TIMEOUT, async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.session_present),
                        Ok(_) => {}
                        Err(error) => return Err(error),
                    }
                }
            })
            .await
        })?;
        match connected {
            Ok(Ok(session_present)) => Ok(session_present),
            Ok(Err(error)) => Err(Error::user(format!(
                "cannot connect to the MQTT broker at {url}: {}; is it running, and are the credentials right?",
                redactor.redact(&describe(&error))
            ))),
            Err(_) => Err(Error::user(format!(
                "the MQTT broker at {url} did not accept the connection within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }
}

/// A connection error in words.
pub(crate) fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection ({code:?})"),
        other => other.to_string(),
    }
}

/// A client and its event loop, before the loop is handed to a background task.
pub(crate) fn client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options, capacity)
}

/// Checks an MQTT topic name (`filter`: whether `+` and `#` wildcards are allowed).
pub(crate) fn check_topic(topic: &str, filter: bool) -> std::result::Result<(), String> {
    if topic.is_empty() {
        return Err("the topic is empty".to_owned());
    }
    if topic.contains('\0') {
        return Err(format!("\"{topic}\" is not a valid topic: it contains a NUL character"));
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (index, level) in levels.iter().enumerate() {
        let wildcard = level.contains(['+', '#']);
        if wildcard && !filter {
            return Err(format!("\"{topic}\" holds a wildcard; messages are published to one topic"));
        }
        if wildcard && *level != "+" && *level != "#" {
            return Err(format!("\"{topic}\" is not a valid filter: `+` and `#` must fill a whole level"));
        }
        if *level == "#" && index + 1 != levels.len() {
            return Err(format!("\"{topic}\" is not a valid filter: `#` may only be the last level"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_filters_are_checked() {
        assert!(check_topic("sensors/7/temp", false).is_ok());
        assert!(check_topic("sensors/+/temp/#", true).is_ok());
        assert_eq!(
            check_topic("sensors/+", false).unwrap_err(),
            "\"sensors/+\" holds a wildcard; messages are published to one topic"
        );
        assert_eq!(
            check_topic("a/b#", true).unwrap_err(),
            "\"a/b#\" is not a valid filter: `+` and `#` must fill a whole level"
        );
        assert_eq!(
            check_topic("a/#/b", true).unwrap_err(),
            "\"a/#/b\" is not a valid filter: `#` may only be the last level"
        );
    }

    #[test]
    fn credentials_are_redacted_from_debug_output() {
        let mut diagnostics = Vec::new();
        let settings =
            ClientSettings::check(None, Some("app"), Some("${env:SLUICE_TEST_MQTT}"), &mut diagnostics)
                .unwrap();
        let shown = format!("{settings:?}");
        assert!(shown.contains("redacted") && !shown.contains("SLUICE_TEST"), "{shown}");
        let missing = settings.options("c", &mut Redactor::default()).unwrap_err().to_string();
        assert!(missing.contains("SLUICE_TEST_MQTT is not set"), "{missing}");
    }
}
