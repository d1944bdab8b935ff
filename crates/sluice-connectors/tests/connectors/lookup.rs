//! The file lookup table, on real files.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, ArrayRef, Int32Array, Int64Array, StringArray};
use serde_json::{Value, json};
use sluice_connectors::{LookupRequest, build_lookup, lookup_connectors};
use sluice_runtime::processor::LookupTable;
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

fn table(options: Value, schema: Option<&[FieldSpec]>, base: &Path) -> Arc<dyn LookupTable> {
    let request = LookupRequest { name: "users", options: &options, schema, base_dir: base };
    match build_lookup("file", &request) {
        Ok(table) => table,
        Err(errors) => panic!("{errors:?}"),
    }
}

fn errors(connector: &str, options: Value, schema: Option<&[FieldSpec]>, base: &Path) -> Vec<String> {
    let request = LookupRequest { name: "users", options: &options, schema, base_dir: base };
    match build_lookup(connector, &request) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn schema() -> Vec<FieldSpec> {
    vec![field("id", DataType::Int64, true), field("name", DataType::Utf8, true)]
}

/// Looks `keys` up and returns the found rows as sorted JSON lines.
fn found(table: &dyn LookupTable, keys: &dyn Array) -> Vec<String> {
    sorted_lines(&[table.lookup(keys).expect("lookup")])
}

/// Rewrites `path` and moves its modification time forward, as a later write would.
fn rewrite(path: &Path, text: &str, seconds_later: u64) {
    std::fs::write(path, text).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(seconds_later)).unwrap();
}

#[test]
fn finds_each_present_key_once_and_nothing_for_missing_or_null_keys() {
    let (_dir, base) = temp();
    std::fs::write(
        base.join("users.jsonl"),
        "{\"id\": 1, \"name\": \"ann\"}\n{\"id\": null, \"name\": \"nobody\"}\nbroken\n\n{\"id\": 3, \"name\": \"cy\"}\n{\"id\": 3, \"name\": \"cyd\"}\n",
    )
    .unwrap();
    let fields = schema();
    let table = table(json!({"path": "users.jsonl", "key": "id"}), Some(&fields), &base);
    assert_eq!(table.key_column(), "id");
    assert_eq!(table.schema().fields().len(), 2);
    let keys = Int64Array::from(vec![Some(3), None, Some(99), Some(1), Some(3)]);
    // The last row of a repeated key wins; the row with a null key matches nothing.
    assert_eq!(found(table.as_ref(), &keys), ["{\"id\":1,\"name\":\"ann\"}", "{\"id\":3,\"name\":\"cyd\"}"]);
    assert!(found(table.as_ref(), &Int64Array::from(vec![None, Some(2)])).is_empty());
    assert!(found(table.as_ref(), &Int64Array::from(Vec::<i64>::new())).is_empty());
}

#[test]
fn keys_of_another_numeric_type_are_cast_and_impossible_ones_refused() {
    let (_dir, base) = temp();
    std::fs::write(base.join("users.jsonl"), "{\"id\": 7, \"name\": \"g\"}\n").unwrap();
    let fields = schema();
    let table = table(json!({"path": "users.jsonl", "key": "id"}), Some(&fields), &base);
    assert_eq!(found(table.as_ref(), &Int32Array::from(vec![7])), ["{\"id\":7,\"name\":\"g\"}"]);
    let keys: ArrayRef = Arc::new(arrow::array::ListArray::new_null(
        Arc::new(arrow::datatypes::Field::new_list_field(arrow::datatypes::DataType::Int64, true)),
        1,
    ));
    let error = table.lookup(keys.as_ref()).unwrap_err();
    assert_eq!(error.kind(), sluice_runtime::ErrorKind::User);
    assert!(error.report().contains("key \"id\" is of type Int64"), "{}", error.report());
}

#[test]
fn a_rewritten_file_is_reloaded_at_the_next_check() {
    let (_dir, base) = temp();
    let path = base.join("users.csv");
    std::fs::write(&path, "id,name\n1,ann\n2,bob\n").unwrap();
    let fields = schema();
    let table =
        table(json!({"path": "users.csv", "key": "id", "reload_interval_ms": 0}), Some(&fields), &base);
    let keys = Int64Array::from(vec![1, 2, 3]);
    assert_eq!(found(table.as_ref(), &keys).len(), 2);
    rewrite(&path, "id,name\n2,bea\n3,cy\n", 5);
    assert_eq!(found(table.as_ref(), &keys), ["{\"id\":2,\"name\":\"bea\"}", "{\"id\":3,\"name\":\"cy\"}"]);
    // A file that vanishes keeps the last contents.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(found(table.as_ref(), &keys).len(), 2);
}

#[test]
fn a_rewritten_file_is_not_reloaded_before_the_interval() {
    let (_dir, base) = temp();
    let path = base.join("users.jsonl");
    std::fs::write(&path, "{\"id\": 1, \"name\": \"ann\"}\n").unwrap();
    let fields = schema();
    let table = table(json!({"path": "users.jsonl", "key": "id"}), Some(&fields), &base);
    rewrite(&path, "{\"id\": 1, \"name\": \"changed\"}\n", 5);
    assert_eq!(found(table.as_ref(), &Int64Array::from(vec![1])), ["{\"id\":1,\"name\":\"ann\"}"]);
}

#[test]
fn schema_is_inferred_when_not_declared() {
    let (_dir, base) = temp();
    std::fs::write(base.join("codes.csv"), "code;label\nfr;France\nde;Germany\n").unwrap();
    let options = json!({"path": "codes.csv", "key": "code", "csv": {"delimiter": ";"}});
    let table = table(options, None, &base);
    let keys = StringArray::from(vec!["de", "xx"]);
    assert_eq!(found(table.as_ref(), &keys), ["{\"code\":\"de\",\"label\":\"Germany\"}"]);
}

#[test]
fn bad_lookup_configs_get_exact_diagnostics() {
    let (_dir, base) = temp();
    std::fs::write(base.join("users.jsonl"), "{\"id\": 1}\n").unwrap();
    let fields = schema();
    assert_eq!(lookup_connectors(), ["file", "postgres", "redis"]);
    assert_eq!(
        errors("fiel", json!({}), None, &base),
        ["connector: unknown connector \"fiel\"; did you mean \"file\"?"]
    );
    assert_eq!(
        errors("file", json!({"format": "jsonl", "reload_interval_ms": "soon"}), None, &base),
        ["options.reload_interval_ms: invalid type: string \"soon\", expected u64"]
    );
    assert_eq!(
        errors("file", json!({"format": "jsonl"}), Some(&fields), &base),
        ["options.key: missing required option \"key\"", "options.path: missing required option \"path\""]
    );
    assert_eq!(
        errors("file", json!({"path": "users.jsonl", "key": "ids", "kee": 1}), Some(&fields), &base),
        ["options.kee: unknown option \"kee\"; did you mean \"key\"?"]
    );
    assert_eq!(
        errors("file", json!({"path": "users.jsonl", "key": "ids"}), Some(&fields), &base),
        ["options.key: unknown column \"ids\"; did you mean \"id\"?"]
    );
    let missing = errors("file", json!({"path": "none.jsonl", "key": "id"}), Some(&fields), &base);
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].starts_with("options.path: reading ") && missing[0].contains("none.jsonl"),
        "{missing:?}"
    );
}
