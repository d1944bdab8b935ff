//! Sluice's built-in schema registry driven by Confluent's own Python client
//! (`confluent-kafka` from PyPI: `SchemaRegistryClient`, Avro and JSON serializers) against a
//! real `sluice server`: the client runs unchanged, so what works here works for Confluent's
//! serializers in other languages that speak the same REST API.
//!
//! The interpreter is `$SLUICE_PYTHON` (`.ci/run` creates a venv with the pinned client), or
//! `$HOME/.cache/sluice-tools/python/bin/python`. Without one the test fails when `CI` is set
//! and otherwise skips loudly.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::control::Server;
use super::*;

/// The Python with Confluent's client: `$SLUICE_PYTHON`, else the venv `.ci/run` creates.
/// Without one, panics when `CI` is set and otherwise says loudly that the test is skipped.
pub(crate) fn python() -> Option<PathBuf> {
    let found = match std::env::var_os("SLUICE_PYTHON") {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/sluice-tools/python/bin/python")),
    }
    .filter(|path| path.is_file());
    if found.is_none() {
        let help = "no Python with confluent-kafka (looked at $SLUICE_PYTHON and \
                    $HOME/.cache/sluice-tools/python/bin/python); run .ci/run, which creates it";
        if std::env::var_os("CI").is_some() {
            panic!("{help}");
        }
        eprintln!("\n!!!!!!!!\n!!! SKIPPING A TEST WITH CONFLUENT'S CLIENT: {help}\n!!!!!!!!\n");
    }
    found
}

/// Avro's zig-zag variable-length encoding of `value` (for `int` and `long`).
fn zigzag(value: i64) -> Vec<u8> {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    let mut bytes = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

/// The Confluent frame of an `Order {id: long, item: string, qty: int}` record, encoded here
/// independently of the client: magic byte 0, the schema id as 4 big-endian bytes, then the
/// Avro binary encoding of the fields in order.
fn order_frame(schema_id: u32, id: i64, item: &str, qty: i64) -> String {
    let mut bytes = vec![0];
    bytes.extend(schema_id.to_be_bytes());
    bytes.extend(zigzag(id));
    bytes.extend(zigzag(item.len() as i64));
    bytes.extend(item.as_bytes());
    bytes.extend(zigzag(qty));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn zigzag_matches_the_avro_specification() {
    for (value, bytes) in
        [(0, vec![0x00]), (-1, vec![0x01]), (1, vec![0x02]), (-64, vec![0x7f]), (64, vec![0x80, 0x01])]
    {
        assert_eq!(zigzag(value), bytes, "{value}");
    }
}

#[test]
fn confluents_python_client_works_against_the_built_in_registry() {
    let Some(python) = python() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = Server::start("server", data.path(), free_port());
    let token = server.token.clone().expect("the first start prints an admin token");
    let url = format!("http://127.0.0.1:{}/api/v1/teams/default/registry", server.port);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/schema_registry_client.py");
    let output = Command::new(&python).arg(&script).arg(&url).arg(&token).output().expect("start python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client script failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("the client said:\n{stdout}");
    let steps: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).expect(line)).collect();
    let step = |name: &str| -> &Value {
        steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no step {name} in\n{stdout}"))
    };
    // Every step ran, in order, to the end (a step the script skipped or added shows here).
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        names,
        [
            "types",
            "avro_frame",
            "avro_roundtrip",
            "avro_v1",
            "avro_v2",
            "avro_evolved_read",
            "avro_idempotent",
            "avro_incompatible",
            "set_compatibility",
            "get_compatibility",
            "test_compatibility",
            "json_roundtrip",
            "json_v1",
            "json_v2",
            "json_incompatible",
            "subjects",
            "done"
        ],
        "{stdout}"
    );
    assert_eq!(step("types")["types"], json!(["AVRO", "JSON"]));

    // Avro: registration by the serializer, a byte-exact frame, and a round trip.
    let v1 = step("avro_v1");
    assert_eq!(v1["version"], 1, "{v1}");
    let v1_id = v1["id"].as_u64().unwrap();
    assert_eq!(step("avro_frame")["hex"], json!(order_frame(v1_id as u32, 1, "apple", 3)));
    let roundtrip = step("avro_roundtrip");
    assert_eq!(roundtrip["sent"], roundtrip["received"]);
    // Evolution: a new field with a default is version 2; old data reads with the default.
    let v2 = step("avro_v2");
    assert_eq!((v2["version"].as_u64(), &v2["versions"]), (Some(2), &json!([1, 2])), "{v2}");
    assert_eq!(v2["id"], v2["latest_id"]);
    assert_ne!(v2["id"].as_u64(), Some(v1_id));
    assert_eq!(step("avro_idempotent")["id"], v2["id"]);
    assert_eq!(
        step("avro_evolved_read")["received"],
        json!({ "id": 1, "item": "apple", "qty": 3, "note": null })
    );
    let refused = step("avro_incompatible");
    assert_eq!(
        (refused["http_status"].as_u64(), refused["error_code"].as_u64()),
        (Some(409), Some(409)),
        "{refused}"
    );
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("\"orders-value\"") && message.contains("\"price\""), "{message}");
    assert_eq!(step("set_compatibility")["answer"], json!({ "compatibility": "FULL" }));
    assert_eq!(step("get_compatibility")["level"], "FULL");
    assert_eq!(step("test_compatibility")["compatible"], true);

    // JSON Schema.
    let roundtrip = step("json_roundtrip");
    assert_eq!(roundtrip["sent"], roundtrip["received"]);
    let json_v1 = step("json_v1");
    assert_eq!(
        (json_v1["version"].as_u64(), json_v1["schema_type"].as_str()),
        (Some(1), Some("JSON")),
        "{json_v1}"
    );
    assert_eq!(step("json_v2")["version"], 2);
    let refused = step("json_incompatible");
    assert_eq!(refused["error_code"], 409, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("\"count\" is required by the reader"),
        "{refused}"
    );
    assert_eq!(step("subjects")["subjects"], json!(["events-value", "orders-value"]));
    drop(server);
}
