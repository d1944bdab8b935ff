//! An MQTT client for tests: publishes, and collects what a subscription receives,
//! independently of the `mqtt` connector. Talks to the machine's broker at `127.0.0.1:1883`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// The broker the tests use.
pub const URL: &str = "mqtt://127.0.0.1:1883";

/// One message a [`Subscriber`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Whether the broker sent it as a retained message.
    pub retain: bool,
}

/// Whether the broker answers. When it does not: panics if `CI` is set, otherwise warns
/// loudly and returns false, so the calling test skips.
pub fn available() -> bool {
    super::server_answers(
        1883,
        "MQTT (Mosquitto)",
        "mosquitto -d -c /etc/mosquitto/mosquitto.conf (see .ci/run)",
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("start a runtime")
}

/// Publishes `payloads` to `topic` with QoS 1 and waits until the broker acknowledged all.
pub fn publish(topic: &str, payloads: &[Vec<u8>]) {
    publish_with(1883, topic, payloads, false);
}

/// [`publish`] to the broker on `127.0.0.1:port`.
pub fn publish_to(port: u16, topic: &str, payloads: &[Vec<u8>]) {
    publish_with(port, topic, payloads, false);
}

/// Removes the retained message of each topic (an empty retained message does that).
pub fn clear_retained(topics: &[String]) {
    for topic in topics {
        publish_with(1883, topic, &[Vec::new()], true);
    }
}

fn publish_with(port: u16, topic: &str, payloads: &[Vec<u8>], retain: bool) {
    let runtime = runtime();
    let id = super::unique_name("test-publisher");
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 100);
    let (acknowledged, mut progress) = tokio::sync::watch::channel(0usize);
    runtime.spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acknowledged.send_modify(|n| *n += 1),
                Ok(_) => {}
                Err(error) => panic!("test publisher: {error}"),
            }
        }
    });
    let count = payloads.len();
    runtime.block_on(async {
        for payload in payloads {
            client.publish(topic, QoS::AtLeastOnce, retain, payload.clone()).await.expect("publish");
        }
        tokio::time::timeout(Duration::from_secs(60), progress.wait_for(|n| *n >= count))
            .await
            .expect("the broker acknowledges in time")
            .expect("the publisher runs");
    });
    runtime.shutdown_background();
}

/// A subscription collecting every message it receives, in a background task.
pub struct Subscriber {
    /// Runs the subscription until the subscriber is dropped.
    _runtime: tokio::runtime::Runtime,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    /// Subscribes to `filter` with QoS 1 and a clean session; returns once the broker
    /// acknowledged the subscription.
    pub fn start(filter: &str) -> Self {
        let runtime = runtime();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let filter = filter.to_owned();
        runtime.spawn(async move {
            let mut options = MqttOptions::new(super::unique_name("test-subscriber"), "127.0.0.1", 1883);
            options.set_max_packet_size(Some(16 * 1024 * 1024));
            let (client, mut events) = AsyncClient::new(options, 100);
            client.subscribe(filter, QoS::AtLeastOnce).await.expect("subscribe");
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let message = Received {
                            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                            payload: publish.payload.to_vec(),
                            retain: publish.retain,
                        };
                        sink.lock().expect("lock").push(message);
                    }
                    Ok(_) => {}
                    Err(error) => panic!("test subscriber: {error}"),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("the broker acknowledges the subscription");
        Self { _runtime: runtime, received }
    }

    /// What was received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until at least `count` messages arrived (or `timeout` passed), then a little
    /// longer so that extra messages would show; returns them all.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        while self.received.lock().expect("lock").len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.received()
    }
}

/// Creates the persistent session a source with `client_id` will resume: subscribed to
/// `filter` with QoS 1, kept for `expiry_secs` seconds. The broker queues messages for it
/// from now on, so a pipeline started later misses none.
pub fn create_session(client_id: &str, filter: &str, expiry_secs: u32) {
    let runtime = runtime();
    runtime.block_on(async {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", 1883);
        options.set_clean_start(false).set_session_expiry_interval(Some(expiry_secs));
        let (client, mut events) = AsyncClient::new(options, 10);
        client.subscribe(filter, QoS::AtLeastOnce).await.expect("subscribe");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return,
                    Ok(_) => {}
                    Err(error) => panic!("creating a session: {error}"),
                }
            }
        })
        .await
        .expect("the broker acknowledges the subscription");
        client.disconnect().await.expect("disconnect");
        // Let the DISCONNECT go out before the connection is dropped.
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    });
    runtime.shutdown_background();
}

/// A Mosquitto broker of a test's own on a free loopback port, keeping its sessions in a
/// temporary folder across restarts; stopped on drop. For tests that restart the broker.
pub struct PrivateBroker {
    child: Option<std::process::Child>,
    /// The broker's port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateBroker {
    /// Starts a broker, or returns `None` (after a loud warning) when Mosquitto is not installed
    /// and `CI` is not set.
    pub fn start() -> Option<Self> {
        if !std::path::Path::new("/usr/sbin/mosquitto").exists() {
            let help =
                "/usr/sbin/mosquitto is missing; install it with `apt-get install mosquitto` or run .ci/run";
            if std::env::var_os("CI").is_some() {
                panic!("{help}");
            }
            eprintln!("\n!!!!!!!!\n!!! SKIPPING MQTT BROKER RESTART TESTS: {help}\n!!!!!!!!\n");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary folder");
        let port = super::free_port();
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write the broker's configuration");
        let mut broker = Self { child: None, port, dir };
        broker.spawn();
        Some(broker)
    }

    fn spawn(&mut self) {
        let log =
            std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("create the broker log");
        let child = std::process::Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        super::wait_for_listener(self.port, "the private broker");
    }

    /// Stops the broker with SIGTERM (it saves its sessions), waits `down`, starts it again.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    fn stop(&mut self) {
        super::terminate(self.child.take());
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
