use serde_json::{Value, json};
use sluice_runtime::dead_letter::OnError;
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

fn schema() -> Vec<FieldSpec> {
    vec![
        field("id", DataType::Int64, false),
        field("score", DataType::Int32, true),
        field("name", DataType::Utf8, true),
        field("color", DataType::Utf8, false),
        field("price", DataType::Decimal { precision: 10, scale: 2 }, false),
        field("ratio", DataType::Float64, false),
        field("day", DataType::Date, false),
        field("at", DataType::Timestamp, false),
        field("flag", DataType::Boolean, false),
    ]
}

fn options(count: u64) -> Value {
    json!({
        "count": count,
        "seed": 42,
        "fields": {
            "id": {"sequence": true, "min": 1},
            "score": {"min": -5, "max": 5, "null_rate": 0.3},
            "name": {"length": 4},
            "color": {"values": ["red", "green", "blue"]},
            "price": {"min": 1, "max": 2},
            "day": {"min": "2024-03-01", "max": "2024-03-03"},
            "at": {"min": "2024-03-01T00:00:00", "max": "2024-03-01T00:00:01"},
        }
    })
}

#[test]
fn count_is_exact_over_any_number_of_workers_and_rows_are_the_same() {
    let (_dir, base) = temp();
    let fields = schema();
    let source = source("datagen", options(10_001), Some(&fields), false, &base);
    let one = union(source.as_ref(), 1, 0, &base.join("dl"));
    assert_eq!(one.len(), 10_001);
    for peers in [2, 3] {
        assert_eq!(union(source.as_ref(), peers, 0, &base.join("dl")), one, "{peers} workers");
    }
    let again = source_with_seed(&base, &fields, 42);
    assert_eq!(again, one);
    assert_ne!(source_with_seed(&base, &fields, 43), one);
}

fn source_with_seed(base: &std::path::Path, fields: &[FieldSpec], seed: u64) -> Vec<String> {
    let mut options = options(10_001);
    options["seed"] = json!(seed);
    union(source("datagen", options, Some(fields), false, base).as_ref(), 1, 0, &base.join("dl"))
}

#[test]
fn values_respect_ranges_lists_and_null_rate() {
    let (_dir, base) = temp();
    let fields = schema();
    let source = source("datagen", options(10_000), Some(&fields), false, &base);
    let rows = json_values(&drain(source.as_ref(), 0, 1, vec![true], &base.join("dl")).outputs[0]);
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=10_000).collect::<Vec<_>>());
    let nulls = rows.iter().filter(|r| !r.contains_key("score")).count();
    assert!((2700..3300).contains(&nulls), "{nulls} nulls");
    for row in &rows {
        if let Some(score) = row.get("score") {
            assert!((-5..=5).contains(&score.as_i64().unwrap()));
        }
        assert_eq!(row["name"].as_str().unwrap().len(), 4);
        assert!(["red", "green", "blue"].contains(&row["color"].as_str().unwrap()));
        let price: f64 =
            row["price"].as_str().map_or_else(|| row["price"].as_f64().unwrap(), |p| p.parse().unwrap());
        assert!((1.0..=2.0).contains(&price), "{price}");
        assert!((0.0..1.0).contains(&row["ratio"].as_f64().unwrap()));
        assert!(["2024-03-01", "2024-03-02", "2024-03-03"].contains(&row["day"].as_str().unwrap()));
        assert!(row["at"].as_str().unwrap().starts_with("2024-03-01T00:00:0"));
    }
}

#[test]
fn unbounded_datagen_stops_when_asked() {
    let (_dir, base) = temp();
    let fields = schema();
    let source = source("datagen", json!({"rows_per_second": 1000}), Some(&fields), false, &base);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let context = source_context(0, 1, vec![true], OnError::Fail, &base.join("dl"), stop.clone());
    let mut reader = source.open(context).unwrap();
    let mut out = Vec::new();
    let status = reader.poll(100, &mut out).unwrap();
    assert_eq!(status, sluice_runtime::connector::SourceStatus::Ready);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reader.poll(100, &mut out).unwrap(), sluice_runtime::connector::SourceStatus::Finished);
}
