use serde_json::{Value, json};
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

fn schema() -> Vec<FieldSpec> {
    vec![field("price", DataType::Int64, false), field("name", DataType::Utf8, true)]
}

/// Connector, options, declared schema, `infer_schema`, expected diagnostics.
type Case<'a> = (&'a str, Value, Option<&'a [FieldSpec]>, bool, Vec<&'a str>);

#[test]
fn bad_source_configs_get_exact_diagnostics() {
    let fields = schema();
    let cases: Vec<Case> = vec![
        (
            "nexmrk",
            json!({}),
            None,
            false,
            vec!["connector: unknown connector \"nexmrk\"; did you mean \"nexmark\"?"],
        ),
        (
            "nexmark",
            json!({"event": 10, "seed": "x"}),
            None,
            false,
            vec![
                "options.event: unknown option \"event\"; did you mean \"events\"?",
                "options.seed: invalid type: string \"x\", expected u64",
            ],
        ),
        (
            "nexmark",
            json!({"events_per_second": 0}),
            None,
            false,
            vec!["options.events_per_second: must be at least 1 event per second"],
        ),
        ("nexmark", json!([1]), None, false, vec!["options: expected a map of options, found a list"]),
        (
            "datagen",
            json!({"count": 10}),
            None,
            false,
            vec!["schema: the datagen source needs a schema; declare `schema:` with the fields to generate"],
        ),
        (
            "datagen",
            json!({"rows_per_sec": 5, "fields": {"prise": {"min": 1}, "name": {"lenght": 3, "null_rate": 2}}}),
            Some(&fields),
            false,
            vec!["options.rows_per_sec: unknown option \"rows_per_sec\"; did you mean \"rows_per_second\"?"],
        ),
        (
            "datagen",
            json!({"fields": {"prise": {"min": 1}, "name": {"lenght": 3}, "price": {"min": "a", "null_rate": 0.5}}}),
            Some(&fields),
            false,
            vec![
                "options.fields.prise: unknown column \"prise\"; did you mean \"price\"?",
                "options.fields.price.null_rate: field \"price\" is not nullable; declare the field `nullable: true` or remove `null_rate`",
                "options.fields.price.min: expected an integer, found \"a\"",
                "options.fields.name.lenght: unknown option \"lenght\"; did you mean \"length\"?",
            ],
        ),
        (
            "datagen",
            json!({"fields": {"price": {"min": 10, "max": 1, "length": 3}, "name": {"values": ["a", 3, {"x": 1}]}}}),
            Some(&fields),
            false,
            vec![
                "options.fields.price.length: `length` applies to string and binary fields, not int64",
                "options.fields.price.min: min (10) is greater than max (1)",
                "options.fields.name.values[1]: 3 is not a valid string",
                "options.fields.name.values[2]: {\"x\":1} is not a valid string",
            ],
        ),
        (
            // Regression: a huge length overflowed Arrow's string offsets (a panic) or memory.
            "datagen",
            json!({"fields": {"name": {"length": 600000}}}),
            Some(&fields),
            false,
            vec![
                "options.fields.name.length: length 600000 is too long; generated strings can be at most 65536 bytes",
            ],
        ),
        (
            "file",
            json!({"format": "xml", "follow": "yes"}),
            Some(&fields),
            false,
            vec![
                "options.follow: invalid type: string \"yes\", expected a boolean",
                "options.format: unknown variant `xml`, expected `jsonl` or `csv`",
            ],
        ),
        (
            "file",
            json!({"csv": {"delimiter": "::", "headr": true}}),
            Some(&fields),
            false,
            vec![
                "options.csv.headr: unknown option \"headr\"; did you mean \"header\"?",
                "options.path: missing required option \"path\"",
            ],
        ),
        (
            "file",
            json!({"path": "data/in.txt"}),
            Some(&fields),
            false,
            vec![
                "options.format: cannot tell the format of \"/nonexistent/data/in.txt\" from its extension; set `format: jsonl` or `format: csv`",
            ],
        ),
        (
            "file",
            json!({"path": "in.jsonl"}),
            None,
            false,
            vec!["schema: the file source needs a schema; declare `schema:` or set `infer_schema: true`"],
        ),
        (
            "file",
            json!({"path": "in.csv", "csv": {"delimiter": "::"}}),
            Some(&fields),
            false,
            vec!["options.csv.delimiter: the delimiter must be a single ASCII character, found \"::\""],
        ),
    ];
    for (connector, options, schema, infer, expected) in cases {
        assert_eq!(
            source_errors(connector, options.clone(), schema, infer),
            expected,
            "{connector} {options}"
        );
    }
}

#[test]
fn bad_sink_configs_get_exact_diagnostics() {
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("stdot", json!({}), vec!["connector: unknown connector \"stdot\"; did you mean \"stdout\"?"]),
        (
            "stdout",
            json!({"fromat": "csv"}),
            vec!["options.fromat: unknown option \"fromat\"; did you mean \"format\"?"],
        ),
        ("file", json!({"format": "csv"}), vec!["options.path: missing required option \"path\""]),
        (
            "file",
            json!({"path": "out", "roll_bytes": -1}),
            vec!["options.roll_bytes: invalid value: integer `-1`, expected u64"],
        ),
        ("blackhole", json!({"x": 1}), vec!["options.x: unknown option \"x\""]),
    ];
    for (connector, options, expected) in cases {
        assert_eq!(sink_errors(connector, options.clone()), expected, "{connector} {options}");
    }
}
