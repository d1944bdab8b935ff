//! Kafka with a schema registry, end to end. Confluent's own Python serializers
//! (`registry_kafka_clients.py`) write Avro payloads of two schema versions and JSON Schema
//! payloads into topics of a real broker. A `sluice run` pipeline reads them through a team's
//! registry on a real `sluice server`, transforms them, and writes Avro and JSON with schemas
//! it registers itself. Confluent's deserializers then read that output back, validating the
//! JSON against the schema Sluice registered. Poison payloads land in the dead-letter topic with
//! their reasons, an incompatible sink schema and columns no schema gives stop a run with the
//! reason, and the expected rows are computed here, independently of both.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use sluice_connectors::testing::{Outgoing, Tansu};

use super::control::Server;
use super::schema_registry::python;
use super::*;

/// Runs the clients script with `args`, `input` on its stdin; its output lines as JSON.
fn clients(python: &Path, args: &[&str], input: &str) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/registry_kafka_clients.py");
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_success(&output, &format!("the Confluent clients script ({})", args[0]));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Order `i` as the script builds it, with `note` for orders written with schema v2.
fn order(i: i64) -> (String, f64, Option<String>) {
    let note = (i >= 300 && i % 3 == 0).then(|| format!("n{i}"));
    (format!("c{}", i % 13), (i % 50) as f64 * 1.5, note)
}

/// One spec: `sources`, `processors` and `sinks` YAML under a common head.
fn spec(brokers: &str, body: &str) -> String {
    format!(
        "name: registry\nepoch_ms: 100\ncheckpoints: {{interval: 1s, location: state}}\n\
         dead_letter: {{connector: kafka, options: {{brokers: \"{brokers}\", topic: dead-letters}}}}\n{body}"
    )
}

fn run(dir: &Path, spec: &str, token: &str) -> std::process::Output {
    std::fs::write(dir.join("pipeline.yaml"), spec).unwrap();
    run_command(dir, &[]).env("REGISTRY_TOKEN", token).output().expect("run sluice")
}

#[test]
fn confluent_serializers_feed_a_pipeline_and_read_its_output_through_a_sluice_registry() {
    let Some(python) = python() else { return };
    let broker = Tansu::start().expect("tansu is needed for the Kafka tests (run .ci/run to install it)");
    for (topic, partitions) in
        [("orders", 2), ("orders-json", 1), ("enriched", 1), ("enriched-json", 1), ("dead-letters", 1)]
    {
        broker.create_topic(topic, partitions);
    }
    let data = tempfile::tempdir().unwrap();
    let server = Server::start("server", data.path(), free_port());
    let token = server.token.clone().expect("the first start prints an admin token");
    let url = format!("http://127.0.0.1:{}/api/v1/teams/default/registry", server.port);

    // The clients serialize, registering orders-value v1 and v2 and orders-json-value.
    let produced = clients(&python, &["produce", &url, &token], "");
    let payloads = |topic: &str| -> Vec<Vec<u8>> {
        produced.iter().filter(|p| p["topic"] == topic).map(|p| hex(p["hex"].as_str().unwrap())).collect()
    };
    let (mut orders, mut orders_json) = (payloads("orders"), payloads("orders-json"));
    assert_eq!((orders.len(), orders_json.len()), (500, 300));
    let truncated = orders[7][..orders[7].len() - 3].to_vec();
    orders.extend([br#"{"id": 1}"#.to_vec(), vec![0, 0x7f, 0xff, 0xff, 0xf0, 2, 2], truncated]);
    orders_json.push(br#"{"id": 2, "customer": "c2", "amount": 3.0}"#.to_vec());
    for (topic, payloads) in [("orders", &orders), ("orders-json", &orders_json)] {
        let records: Vec<Outgoing<'_>> =
            payloads.iter().map(|p| (None, Some(p.as_slice()), &[][..])).collect();
        broker.produce(topic, &records);
    }

    let brokers = broker.brokers();
    let basic = format!("{{url: \"{url}\", username: sluice, password: \"${{env:REGISTRY_TOKEN}}\"}}");
    let bearer = format!("{{url: \"{url}\", token: \"${{env:REGISTRY_TOKEN}}\"}}");
    let orders_source = |columns: &str| {
        format!(
            "  - name: orders\n    connector: kafka\n    options: {{brokers: \"{brokers}\", topic: orders, \
             stop_at: latest, format: avro, registry: {basic}}}\n    schema: [{{name: id, type: int64, nullable: false}}, \
             {{name: customer, type: string, nullable: false}}, {{name: amount, type: float64, nullable: false}}, \
             {{name: note, type: string}}{columns}]\n"
        )
    };
    let body = format!(
        "sources:\n{}  - name: orders_json\n    connector: kafka\n    options: {{brokers: \"{brokers}\", \
         topic: orders-json, stop_at: latest, format: json, registry: {bearer}}}\n    schema: [{{name: id, type: int64, \
         nullable: false}}, {{name: customer, type: string, nullable: false}}, {{name: amount, type: float64, \
         nullable: false}}]\nprocessors:\n  - {{name: big, inputs: [orders], sql: \"SELECT id, customer, amount * 2 AS \
         doubled, note FROM orders WHERE amount >= 30\"}}\n  - {{name: small, inputs: [orders_json], sql: \"SELECT id, \
         upper(customer) AS customer, amount FROM orders_json WHERE amount < 30\"}}\nsinks:\n  - {{name: out, connector: \
         kafka, inputs: [big], options: {{brokers: \"{brokers}\", topic: enriched, format: avro, registry: {basic}}}}}\n  \
         - {{name: out_json, connector: kafka, inputs: [small], options: {{brokers: \"{brokers}\", topic: enriched-json, \
         format: json, registry: {bearer}}}}}\n",
        orders_source("")
    );
    let dir = tempfile::tempdir().unwrap();
    assert_success(&run(dir.path(), &spec(&brokers, &body), &token), "the registry pipeline");

    // Confluent's deserializers read what the sinks wrote, with the schemas they registered.
    let read =
        clients(&python, &["consume", &url, &token], &written(&broker, &["enriched", "enriched-json"]));
    let values = |topic: &str| -> Vec<Value> {
        read.iter().filter(|r| r["topic"] == topic).map(|r| r["value"].clone()).collect()
    };
    let ids = |topic: &str| -> Vec<u64> {
        let mut ids: Vec<u64> =
            read.iter().filter(|r| r["topic"] == topic).map(|r| r["schema_id"].as_u64().unwrap()).collect();
        ids.dedup();
        ids
    };
    let mut expected_avro = Vec::new();
    let mut expected_json = Vec::new();
    for i in 0..500 {
        let (customer, amount, note) = order(i);
        if amount >= 30.0 {
            expected_avro.push(json!({"id": i, "customer": customer, "doubled": amount * 2.0, "note": note}));
        } else if i < 300 {
            expected_json.push(json!({"id": i, "customer": customer.to_uppercase(), "amount": amount}));
        }
    }
    assert_eq!(canonical(&values("enriched")), canonical(&expected_avro), "the Avro output");
    assert_eq!(canonical(&values("enriched-json")), canonical(&expected_json), "the JSON output");
    assert_eq!(ids("enriched").len(), 1, "one writer schema: {:?}", ids("enriched"));
    assert_eq!(ids("enriched-json").len(), 1, "one writer schema: {:?}", ids("enriched-json"));

    // Every poison payload is a dead letter with its reason; nothing else is.
    let letters: Vec<Value> = broker
        .consume_all("dead-letters")
        .iter()
        .map(|record| serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap())
        .collect();
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for letter in &letters {
        reasons
            .entry(letter["node"].as_str().unwrap().to_owned())
            .or_default()
            .push(letter["reason"].as_str().unwrap().to_owned());
    }
    let mut from_orders = reasons.remove("orders").unwrap_or_default();
    from_orders.sort();
    assert_eq!(from_orders.len(), 3, "{letters:?}");
    assert!(
        from_orders.iter().any(|r| r.contains("not valid Avro")),
        "the truncated record: {from_orders:?}"
    );
    assert!(
        from_orders.iter().any(|r| r.contains("magic byte 0 but with 0x7b (`{`: plain JSON)")),
        "the plain JSON: {from_orders:?}"
    );
    assert!(
        from_orders.iter().any(|r| r.contains("schema id 2147483632 is not in the schema registry")),
        "the unknown id: {from_orders:?}"
    );
    let from_json = reasons.remove("orders_json").unwrap_or_default();
    assert_eq!(from_json.len(), 1, "{letters:?}");
    assert!(from_json[0].contains("magic byte 0"), "{from_json:?}");
    assert!(reasons.is_empty(), "no other dead letters: {reasons:?}");

    // A sink whose writer schema the subject's compatibility (BACKWARD) refuses does not start:
    // a new field without a default cannot be read from the records already written.
    let incompatible = format!(
        "sources:\n{}processors:\n  - {{name: more, inputs: [orders], sql: \"SELECT id, customer, amount * 2 AS doubled, \
         note, 'x' AS extra FROM orders\"}}\nsinks:\n  - {{name: out, connector: kafka, inputs: [more], options: \
         {{brokers: \"{brokers}\", topic: enriched, format: avro, registry: {basic}}}}}\n",
        orders_source("")
    );
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &spec(&brokers, &incompatible), &token);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an incompatible writer schema must stop the run: {stderr}");
    assert!(
        stderr.contains("registering the sink's writer schema under subject `enriched-value`")
            && stderr.contains("the reader's field")
            && stderr.contains("has no default value and is missing from the writer's schema"),
        "{stderr}"
    );
    assert!(!stderr.contains(&token), "the token is never shown: {stderr}");

    // A new nullable column is a compatible change (derived schemas give nullable fields the
    // default null): the sink registers version 2 and writes with it, and readers of the topic
    // read both versions.
    let evolved = format!(
        "sources:\n{}processors:\n  - {{name: big, inputs: [orders], sql: \"SELECT id, customer, amount * 2 AS doubled, \
         note, CASE WHEN id % 2 = 0 THEN 'even' END AS parity FROM orders WHERE amount >= 30\"}}\nsinks:\n  - {{name: out, \
         connector: kafka, inputs: [big], options: {{brokers: \"{brokers}\", topic: enriched, format: avro, registry: {basic}}}}}\n",
        orders_source("")
    );
    let dir = tempfile::tempdir().unwrap();
    assert_success(&run(dir.path(), &spec(&brokers, &evolved), &token), "the pipeline with an added column");
    let read = clients(&python, &["consume", &url, &token], &written(&broker, &["enriched"]));
    let mut versions: Vec<u64> = read.iter().map(|r| r["schema_id"].as_u64().unwrap()).collect();
    versions.dedup();
    assert_eq!(versions.len(), 2, "the first run's schema, then the evolved one: {versions:?}");
    let mut expected = expected_avro.clone();
    expected.extend(expected_avro.iter().map(|row| {
        let mut row = row.clone();
        let even = row["id"].as_i64().unwrap() % 2 == 0;
        row["parity"] = if even { json!("even") } else { Value::Null };
        row
    }));
    let values: Vec<Value> = read.iter().map(|r| r["value"].clone()).collect();
    assert_eq!(canonical(&values), canonical(&expected), "both versions of the Avro output");

    // A source declaring a column that the subject's latest schema does not give does not start.
    let missing = format!(
        "sources:\n{}sinks:\n  - {{name: out, connector: blackhole, inputs: [orders]}}\n",
        orders_source(", {name: discount, type: float64, nullable: false}")
    );
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &spec(&brokers, &missing), &token);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a column no schema gives must stop the run: {stderr}");
    assert!(
        stderr.contains("the latest schema of subject `orders-value`")
            && stderr.contains("no column `discount`"),
        "{stderr}"
    );
    drop(server);
}

/// Every payload of `topics`, as the clients script's `consume` reads them.
fn written(broker: &Tansu, topics: &[&str]) -> String {
    let mut lines = String::new();
    for topic in topics {
        for record in broker.consume_all(topic) {
            let payload: String = record.payload.unwrap().iter().map(|b| format!("{b:02x}")).collect();
            lines += &(json!({"topic": topic, "hex": payload}).to_string() + "\n");
        }
    }
    lines
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}
