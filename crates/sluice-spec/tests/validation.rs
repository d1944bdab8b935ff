//! Spec validation, end to end through `sluice_spec::parse`: good specs become the expected
//! structs, bad specs produce exactly the expected diagnostics, all at once, in document order.

use sluice_spec::{Diagnostic, Pipeline, parse};

/// The diagnostics of a spec that must fail, as displayed to users.
fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Ok(pipeline) => panic!("expected diagnostics, got {pipeline:#?}"),
        Err(diagnostics) => diagnostics.iter().map(Diagnostic::to_string).collect(),
    }
}

/// A spec that must pass.
fn pipeline(yaml: &str) -> Pipeline {
    match parse(yaml) {
        Ok(pipeline) => pipeline,
        Err(diagnostics) => {
            let shown: Vec<String> = diagnostics.iter().map(Diagnostic::to_string).collect();
            panic!("expected a pipeline, got:\n{}", shown.join("\n"))
        }
    }
}

/// Runs a table of `(case name, yaml, expected diagnostics)`, reporting every failing case.
fn check_table(cases: &[(&str, &str, &[&str])]) {
    let mut failures = Vec::new();
    for (name, yaml, expected) in cases {
        let actual = match parse(yaml) {
            Ok(_) => vec!["<parsed without diagnostics>".to_owned()],
            Err(diagnostics) => diagnostics.iter().map(Diagnostic::to_string).collect(),
        };
        if actual != *expected {
            failures.push(format!("{name}:\n  expected {expected:#?}\n  actual   {actual:#?}"));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

mod good_specs {
    use serde_json::json;
    use sluice_spec::{
        CheckpointSpec, DataType, DeadLetterSpec, FieldSpec, InputRef, LookupSpec, NodeKind, OnErrorSpec,
        Pipeline, ProcessorSpec, SinkSpec, SourceSpec, StateBackendKind, StateSpec, WatermarkSpec,
    };

    use super::pipeline;

    const FULL: &str = r#"
name: big-bids
description: bids over 100
epoch_ms: 500
dead_letter:
  path: /var/sluice/dead
checkpoints:
  interval: 2s
  location: s3://state/big-bids
  retain: 5
  endpoint: http://127.0.0.1:9000
state:
  backend: rocksdb
  path: /var/sluice/state
sources:
  - name: bids
    connector: nexmark
    options: {events: 1000, rate: {per_second: 10}}
    schema:
      - {name: price, type: int64, nullable: false}
      - {name: bidder, type: VARCHAR}
      - {name: amount, type: "decimal(10, 2)", nullable: true}
    infer_schema: false
    on_error: drop
    watermark: {column: price, max_out_of_orderness: 1.5s, idle_timeout: 1m}
processors:
  - name: expensive
    inputs: [bids]
    sql: SELECT * FROM bids WHERE price > 100
    key_by: bidder
    allowed_lateness: 500ms
    state_ttl: 1h
lookups:
  - name: bidders
    connector: file
    options: {path: bidders.csv, key: id}
sinks:
  - name: out
    connector: file
    inputs: [expensive]
    options: {path: out}
"#;

    #[test]
    fn full_spec_becomes_the_expected_structs() {
        let expected = Pipeline {
            name: "big-bids".into(),
            description: Some("bids over 100".into()),
            epoch_ms: 500,
            dead_letter: DeadLetterSpec { path: "/var/sluice/dead".into(), sink: None },
            sources: vec![SourceSpec {
                name: "bids".into(),
                connector: "nexmark".into(),
                options: json!({"events": 1000, "rate": {"per_second": 10}}),
                schema: Some(vec![
                    FieldSpec { name: "price".into(), data_type: DataType::Int64, nullable: false },
                    FieldSpec { name: "bidder".into(), data_type: DataType::Utf8, nullable: true },
                    FieldSpec {
                        name: "amount".into(),
                        data_type: DataType::Decimal { precision: 10, scale: 2 },
                        nullable: true,
                    },
                ]),
                infer_schema: false,
                on_error: OnErrorSpec::Drop,
                watermark: Some(WatermarkSpec {
                    column: "price".into(),
                    max_out_of_orderness_ms: 1500,
                    idle_timeout_ms: Some(60_000),
                }),
            }],
            processors: vec![ProcessorSpec {
                name: "expensive".into(),
                inputs: vec![InputRef::node("bids")],
                sql: "SELECT * FROM bids WHERE price > 100".into(),
                key_by: Some("bidder".into()),
                allowed_lateness_ms: 500,
                state_ttl_ms: Some(3_600_000),
            }],
            sinks: vec![SinkSpec {
                name: "out".into(),
                connector: "file".into(),
                inputs: vec![InputRef::node("expensive")],
                options: json!({"path": "out"}),
            }],
            lookups: vec![LookupSpec {
                name: "bidders".into(),
                connector: "file".into(),
                options: json!({"path": "bidders.csv", "key": "id"}),
                schema: None,
            }],
            checkpoints: Some(CheckpointSpec {
                interval_ms: 2000,
                location: "s3://state/big-bids".into(),
                retain: 5,
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: None,
            }),
            state: StateSpec { backend: StateBackendKind::RocksDb, path: "/var/sluice/state".into() },
        };
        assert_eq!(pipeline(FULL), expected);
    }

    #[test]
    fn minimal_spec_gets_the_defaults() {
        let spec = pipeline(
            r#"
name: tiny
sources: [{name: src, connector: impulse}]
sinks: [{name: out, connector: stdout, inputs: [src]}]
"#,
        );
        assert_eq!(spec.description, None);
        assert_eq!(spec.epoch_ms, 200);
        assert_eq!(spec.dead_letter, DeadLetterSpec { path: "dead-letters/tiny".into(), sink: None });
        assert_eq!(spec.processors, vec![]);
        let source = &spec.sources[0];
        assert_eq!(source.options, json!({}));
        assert_eq!(source.schema, None);
        assert!(!source.infer_schema);
        assert_eq!(source.on_error, OnErrorSpec::DeadLetter);
        assert_eq!(spec.sinks[0].options, json!({}));
        assert_eq!(spec.state, StateSpec { backend: StateBackendKind::Memory, path: "state/tiny".into() });
    }

    #[test]
    fn null_optional_values_count_as_absent() {
        let spec = pipeline(
            r#"
name: nulls
description:
epoch_ms:
dead_letter:
sources: [{name: src, connector: impulse, options: , schema: , on_error: , infer_schema: }]
processors:
sinks: [{name: out, connector: stdout, inputs: [src], options: }]
"#,
        );
        assert_eq!(spec.epoch_ms, 200);
        assert_eq!(spec.dead_letter.path, "dead-letters/nulls");
        assert_eq!(spec.sources[0].options, json!({}));
        assert_eq!(spec.sources[0].on_error, OnErrorSpec::DeadLetter);
    }

    #[test]
    fn named_outputs_and_edge_epochs_are_accepted() {
        let spec = pipeline(
            r#"
name: nx-2
epoch_ms: 10
sources: [{name: nx, connector: nexmark, on_error: fail, infer_schema: true}]
processors:
  - {name: b, inputs: [nx.bid, nx.auction], sql: SELECT 1}
sinks: [{name: out, connector: stdout, inputs: [b, nx.person]}]
"#,
        );
        assert_eq!(spec.epoch_ms, 10);
        assert_eq!(
            spec.processors[0].inputs,
            vec![InputRef::output("nx", "bid"), InputRef::output("nx", "auction")]
        );
        assert_eq!(spec.sinks[0].inputs[1].to_string(), "nx.person");
        assert_eq!(spec.sources[0].on_error, OnErrorSpec::Fail);
        assert!(spec.sources[0].infer_schema);
        assert_eq!(pipeline(&FULL.replace("epoch_ms: 500", "epoch_ms: 10000")).epoch_ms, 10_000);
    }

    #[test]
    fn key_order_does_not_matter_and_inputs_may_point_forward() {
        let spec = pipeline(
            r#"
sinks: [{inputs: [late], connector: stdout, name: out}]
processors:
  - {sql: SELECT 1, inputs: [early], name: late}
  - {name: early, inputs: [src], sql: SELECT 2}
sources: [{connector: impulse, name: src}]
name: backwards
"#,
        );
        assert_eq!(spec.node_path("early"), Some("processors[1]".into()));
        assert_eq!(
            spec.topological_order(),
            vec![
                (NodeKind::Source, 0),
                (NodeKind::Processor, 1),
                (NodeKind::Processor, 0),
                (NodeKind::Sink, 0)
            ]
        );
    }

    #[test]
    fn node_lookup_by_name() {
        let spec = pipeline(FULL);
        assert_eq!(spec.node_path("bids"), Some("sources[0]".into()));
        assert_eq!(spec.node_path("expensive"), Some("processors[0]".into()));
        assert_eq!(spec.node_path("out"), Some("sinks[0]".into()));
        assert_eq!(spec.node_path("nope"), None);
        assert_eq!(spec.node("out"), Some((NodeKind::Sink, 0)));
    }

    #[test]
    fn diamond_is_ordered_with_spec_order_among_independent_processors() {
        let spec = pipeline(
            r#"
name: diamond
sources: [{name: s, connector: impulse}, {name: t, connector: impulse}]
processors:
  - {name: join, inputs: [left, right], sql: SELECT 1}
  - {name: right, inputs: [s], sql: SELECT 1}
  - {name: left, inputs: [s, t], sql: SELECT 1}
sinks: [{name: out, connector: stdout, inputs: [join]}, {name: raw, connector: stdout, inputs: [t]}]
"#,
        );
        assert_eq!(
            spec.topological_order(),
            vec![
                (NodeKind::Source, 0),
                (NodeKind::Source, 1),
                (NodeKind::Processor, 1),
                (NodeKind::Processor, 2),
                (NodeKind::Processor, 0),
                (NodeKind::Sink, 0),
                (NodeKind::Sink, 1),
            ]
        );
    }

    #[test]
    fn serializes_to_json_with_spelled_types_and_inputs() {
        let spec = pipeline(FULL);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["sources"][0]["schema"][2],
            json!({"name": "amount", "type": "decimal(10, 2)", "nullable": true})
        );
        assert_eq!(json["sources"][0]["on_error"], json!("drop"));
        assert_eq!(json["processors"][0]["inputs"], json!(["bids"]));
    }
}

mod data_types {
    use sluice_spec::{DataType, parse};

    use super::check_table;

    /// A spec whose only source declares one field of type `spelling`.
    fn spec_with_type(spelling: &str) -> String {
        format!(
            "name: types\nsources:\n  - name: src\n    connector: impulse\n    schema:\n      \
             - {{name: f, type: \"{spelling}\"}}\nsinks: [{{name: out, connector: stdout, inputs: [src]}}]\n"
        )
    }

    fn parsed_type(spelling: &str) -> Result<DataType, Vec<String>> {
        parse(&spec_with_type(spelling))
            .map(|p| p.sources[0].schema.as_ref().unwrap()[0].data_type.clone())
            .map_err(|diagnostics| diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_spelling_parses_to_its_type_and_displays_canonically() {
        let list = |inner: DataType| DataType::List(Box::new(inner));
        let cases = [
            ("boolean", DataType::Boolean, "boolean"),
            ("bool", DataType::Boolean, "boolean"),
            ("BOOLEAN", DataType::Boolean, "boolean"),
            ("int8", DataType::Int8, "int8"),
            ("int16", DataType::Int16, "int16"),
            ("int32", DataType::Int32, "int32"),
            ("int", DataType::Int32, "int32"),
            ("Int", DataType::Int32, "int32"),
            ("int64", DataType::Int64, "int64"),
            ("bigint", DataType::Int64, "int64"),
            ("BigInt", DataType::Int64, "int64"),
            ("uint8", DataType::UInt8, "uint8"),
            ("uint16", DataType::UInt16, "uint16"),
            ("uint32", DataType::UInt32, "uint32"),
            ("uint64", DataType::UInt64, "uint64"),
            ("UINT64", DataType::UInt64, "uint64"),
            ("float32", DataType::Float32, "float32"),
            ("float", DataType::Float32, "float32"),
            ("float64", DataType::Float64, "float64"),
            ("double", DataType::Float64, "float64"),
            ("DOUBLE", DataType::Float64, "float64"),
            ("string", DataType::Utf8, "string"),
            ("varchar", DataType::Utf8, "string"),
            ("text", DataType::Utf8, "string"),
            ("TEXT", DataType::Utf8, "string"),
            ("binary", DataType::Binary, "binary"),
            ("date", DataType::Date, "date"),
            ("timestamp", DataType::Timestamp, "timestamp"),
            ("timestamp(3)", DataType::Timestamp, "timestamp"),
            ("TIMESTAMP( 3 )", DataType::Timestamp, "timestamp"),
            ("decimal(10, 2)", DataType::Decimal { precision: 10, scale: 2 }, "decimal(10, 2)"),
            ("DECIMAL(38,0)", DataType::Decimal { precision: 38, scale: 0 }, "decimal(38, 0)"),
            ("decimal(1, 1)", DataType::Decimal { precision: 1, scale: 1 }, "decimal(1, 1)"),
            ("list<int64>", list(DataType::Int64), "list<int64>"),
            ("LIST<text>", list(DataType::Utf8), "list<string>"),
            ("list<list<bool>>", list(list(DataType::Boolean)), "list<list<boolean>>"),
            (
                "list< decimal(5,3) >",
                list(DataType::Decimal { precision: 5, scale: 3 }),
                "list<decimal(5, 3)>",
            ),
        ];
        for (spelling, expected, canonical) in cases {
            let parsed = parsed_type(spelling);
            assert_eq!(parsed, Ok(expected.clone()), "spelling {spelling:?}");
            assert_eq!(expected.to_string(), canonical, "spelling {spelling:?}");
            assert_eq!(parsed_type(canonical), Ok(expected), "canonical {canonical:?}");
        }
    }

    #[test]
    fn bad_types_are_reported_with_a_fix() {
        let path = "sources[0].schema[0].type";
        let cases: Vec<(String, String)> = vec![
            ("strng".into(), format!("{path}: unknown type \"strng\"; did you mean \"string\"?")),
            ("int46".into(), format!("{path}: unknown type \"int46\"; did you mean \"int16\"?")),
            ("unit64".into(), format!("{path}: unknown type \"unit64\"; did you mean \"uint64\"?")),
            ("flaot".into(), format!("{path}: unknown type \"flaot\"; did you mean \"float\"?")),
            ("timestmp".into(), format!("{path}: unknown type \"timestmp\"; did you mean \"timestamp\"?")),
            ("list<strng>".into(), format!("{path}: unknown type \"strng\"; did you mean \"string\"?")),
            ("lst<int64>".into(), format!("{path}: unknown type \"lst<int64>\"; did you mean \"list\"?")),
            (
                "geometry".into(),
                format!(
                    "{path}: unknown type \"geometry\"; known types: boolean, int8, int16, int32, int64, \
                     uint8, uint16, uint32, uint64, float32, float64, string, binary, date, timestamp, \
                     decimal(p, s), list<T>"
                ),
            ),
            (
                "decimal".into(),
                format!("{path}: decimal needs a precision and a scale; write e.g. decimal(10, 2)"),
            ),
            ("list".into(), format!("{path}: list needs an element type; write e.g. list<string>")),
            (
                "decimal(10)".into(),
                format!(
                    "{path}: invalid type \"decimal(10)\": decimal takes a precision and a scale; \
                     write e.g. decimal(10, 2)"
                ),
            ),
            (
                "decimal(39, 2)".into(),
                format!("{path}: invalid type \"decimal(39, 2)\": precision must be between 1 and 38"),
            ),
            (
                "decimal(0, 0)".into(),
                format!("{path}: invalid type \"decimal(0, 0)\": precision must be between 1 and 38"),
            ),
            (
                "decimal(5, 6)".into(),
                format!(
                    "{path}: invalid type \"decimal(5, 6)\": scale must be between 0 and the precision (5)"
                ),
            ),
            (
                "decimal(x, 1)".into(),
                format!("{path}: invalid type \"decimal(x, 1)\": precision must be between 1 and 38"),
            ),
            (
                "timestamp(6)".into(),
                format!(
                    "{path}: unsupported type \"timestamp(6)\": timestamps have millisecond precision; \
                     write timestamp or timestamp(3)"
                ),
            ),
        ];
        let mut failures = Vec::new();
        for (spelling, expected) in cases {
            let actual = parsed_type(&spelling);
            if actual != Err(vec![expected.clone()]) {
                failures.push(format!("{spelling}: expected {expected:?}, got {actual:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn schema_field_problems() {
        check_table(&[
            (
                "field keys",
                r#"
name: p
sources:
  - name: src
    connector: impulse
    schema:
      - {name: a, typ: int64, nulable: false}
      - {name: a, type: 5, nullable: maybe}
      - oops
      - {name: "", type: string}
sinks: [{name: out, connector: stdout, inputs: [src]}]
"#,
                &[
                    "sources[0].schema[0].typ: unknown key \"typ\"; did you mean \"type\"?",
                    "sources[0].schema[0].nulable: unknown key \"nulable\"; did you mean \"nullable\"?",
                    "sources[0].schema[0]: missing required key \"type\"",
                    "sources[0].schema[1].name: duplicate field name \"a\" (also schema[0])",
                    "sources[0].schema[1].type: expected a string, found a number",
                    "sources[0].schema[1].nullable: expected true or false, found a string",
                    "sources[0].schema[2]: expected a mapping with a field's name and type, found a string",
                    "sources[0].schema[3].name: field name is empty",
                ],
            ),
            (
                "schema not a list",
                r#"
name: p
sources: [{name: src, connector: impulse, schema: {price: int64}}]
sinks: [{name: out, connector: stdout, inputs: [src]}]
"#,
                &["sources[0].schema: expected a list of fields, found a mapping"],
            ),
        ]);
    }
}

mod stateful_settings {
    use sluice_spec::{DEFAULT_CHECKPOINT_INTERVAL_MS, WatermarkSpec};

    use super::{errors, pipeline};

    #[test]
    fn flink_watermark_spelling_and_checkpoint_defaults() {
        let spec = pipeline(
            r#"
name: p
checkpoints:
sources:
  - {name: src, connector: nexmark, watermark: "WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND"}
sinks: [{name: out, connector: stdout, inputs: [src]}]
"#,
        );
        assert_eq!(
            spec.sources[0].watermark,
            Some(WatermarkSpec {
                column: "dateTime".into(),
                max_out_of_orderness_ms: 4000,
                idle_timeout_ms: None
            })
        );
        let checkpoints = spec.checkpoints.expect("an empty checkpoints section enables checkpoints");
        assert_eq!(checkpoints.interval_ms, DEFAULT_CHECKPOINT_INTERVAL_MS);
        assert_eq!(checkpoints.location, "checkpoints/p");
        assert!(
            pipeline(
                "name: p\nsources: [{name: s, connector: x}]\nsinks: [{name: o, connector: y, inputs: [s]}]\n"
            )
            .checkpoints
            .is_none()
        );
    }

    /// Each case: a spec, the path of the one expected diagnostic, and fragments of its text.
    #[test]
    fn bad_stateful_settings_are_reported_with_a_fix() {
        let with = |extra: &str| {
            format!(
                "name: p\n{extra}\nsources: [{{name: src, connector: c}}]\n\
                 processors: [{{name: q, inputs: [src], sql: SELECT 1}}]\n\
                 sinks: [{{name: out, connector: d, inputs: [q]}}]\n"
            )
        };
        let source = |watermark: &str| {
            format!(
                "name: p\nsources: [{{name: s, connector: c, watermark: {watermark}}}]\n\
                 sinks: [{{name: o, connector: d, inputs: [s]}}]\n"
            )
        };
        let cases: Vec<(String, &str, &[&str])> = vec![
            (with("checkpoints: {interval: 500ms}"), "checkpoints.interval", &["at least 1s"]),
            (with("checkpoints: {interval: 5}"), "checkpoints.interval", &["no unit", "5s"]),
            (with("checkpoints: {intervall: 5s}"), "checkpoints.intervall", &["unknown key", "\"interval\""]),
            (with("checkpoints: {retain: 0}"), "checkpoints.retain", &["at least 1"]),
            (
                with("state: {backend: rocks}"),
                "state.backend",
                &["unknown state backend \"rocks\"", "rocksdb"],
            ),
            (
                with("state: {backend: disk}"),
                "state.backend",
                &["unknown state backend", "memory", "rocksdb"],
            ),
            (with("state: {backend: rocksdb, path: \"\"}"), "state.path", &["state directory"]),
            (with("state: {backnd: rocksdb}"), "state.backnd", &["unknown key", "\"backend\""]),
            (with("state: rocksdb"), "state", &["a mapping with backend and path"]),
            (
                with("lookups: [{name: src, connector: file}]"),
                "lookups[0].name",
                &["already the name of a node"],
            ),
            (
                source("{column: ts, max_out_of_orderness: soon}"),
                "sources[0].watermark.max_out_of_orderness",
                &["invalid duration"],
            ),
            (
                source("\"FOR ts AS other - INTERVAL '1' SECOND\""),
                "sources[0].watermark",
                &["the column (ts) minus an INTERVAL"],
            ),
            (
                source("{max_out_of_orderness: 1s}"),
                "sources[0].watermark",
                &["missing required key \"column\""],
            ),
            (
                with("").replace("sql: SELECT 1", "sql: SELECT 1, state_ttl: forever"),
                "processors[0].state_ttl",
                &["invalid duration"],
            ),
        ];
        for (yaml, path, fragments) in &cases {
            let errors = errors(yaml);
            assert_eq!(errors.len(), 1, "{yaml}: {errors:#?}");
            assert!(errors[0].starts_with(&format!("{path}: ")), "{yaml}: {errors:#?}");
            for fragment in *fragments {
                assert!(errors[0].contains(fragment), "{yaml}: {:?} lacks {fragment:?}", errors[0]);
            }
        }
    }
}

mod keys_and_values {
    use super::{check_table, errors};

    #[test]
    fn unknown_keys_are_reported_everywhere_with_suggestions() {
        check_table(&[
            (
                "every level",
                r#"
name: p
epoch: 100
dead_letter: {pth: x}
sources:
  - {name: src, connector: impulse, option: {a: 1}, inputs: [x]}
processors:
  - {name: p1, inptus: [src], inputs: [src], sql: SELECT 1, keyby: a}
sinks:
  - {name: out, conector: stdout, connector: stdout, inputs: [p1], colour: red}
"#,
                &[
                    "epoch: unknown key \"epoch\"; allowed keys: name, description, epoch_ms, dead_letter, \
                     checkpoints, state, sources, processors, sinks, lookups",
                    "dead_letter.pth: unknown key \"pth\"; did you mean \"path\"?",
                    "sources[0].option: unknown key \"option\"; did you mean \"options\"?",
                    "sources[0].inputs: unknown key \"inputs\"; allowed keys: name, connector, connection, \
                     options, schema, infer_schema, on_error, watermark",
                    "processors[0].inptus: unknown key \"inptus\"; did you mean \"inputs\"?",
                    "processors[0].keyby: unknown key \"keyby\"; did you mean \"key_by\"?",
                    "sinks[0].conector: unknown key \"conector\"; did you mean \"connector\"?",
                    "sinks[0].colour: unknown key \"colour\"; allowed keys: name, connector, connection, inputs, \
                     options",
                ],
            ),
            (
                "connections are left for the control plane to resolve",
                r#"
name: p
dead_letter: {connection: dlq}
lookups: [{name: t, connection: db}]
sources: [{name: src, connection: prod-kafka, options: {topic: t}}]
sinks: [{name: out, connection: warehouse, inputs: [src]}]
"#,
                &[
                    "dead_letter.connection: connection \"dlq\" is a profile kept by the control plane, which \
                     fills in its connector and options; deploy the spec through the control plane (`sluice \
                     apply`), or write `connector` and `options` here to run it locally",
                    "lookups[0].connection: connection \"db\" is a profile kept by the control plane, which \
                     fills in its connector and options; deploy the spec through the control plane (`sluice \
                     apply`), or write `connector` and `options` here to run it locally",
                    "sources[0].connection: connection \"prod-kafka\" is a profile kept by the control plane, \
                     which fills in its connector and options; deploy the spec through the control plane \
                     (`sluice apply`), or write `connector` and `options` here to run it locally",
                    "sinks[0].connection: connection \"warehouse\" is a profile kept by the control plane, which \
                     fills in its connector and options; deploy the spec through the control plane (`sluice \
                     apply`), or write `connector` and `options` here to run it locally",
                ],
            ),
            (
                "options contents are not checked",
                r#"
name: p
sources: [{name: src, connector: impulse, options: {anything: [1, 2], goes: {here: true}}}]
sinks: [{name: out, connector: stdout, inputs: [src], options: {whatever: 1}}]
"#,
                &["<parsed without diagnostics>"],
            ),
            (
                "non-string keys",
                "name: p\n1: x\n[a]: y\nsources: [{name: src, connector: impulse}]\nsinks: [{name: out, connector: stdout, inputs: [src]}]\n",
                &[
                    "1: unknown key \"1\"; allowed keys: name, description, epoch_ms, dead_letter, checkpoints, state, sources, processors, sinks, lookups",
                    "expected keys that are strings, found a list",
                ],
            ),
        ]);
    }

    #[test]
    fn wrong_value_types() {
        check_table(&[
            (
                "top level",
                r#"
name: [p]
description: 42
epoch_ms: fast
dead_letter: dead-letters
sources: {name: src}
processors: nope
sinks: out
"#,
                &[
                    "name: expected a string, found a list",
                    "description: expected a string, found a number",
                    "epoch_ms: expected a whole number of milliseconds, found a string",
                    "dead_letter: expected a mapping with the dead-letter path or connector, found a string",
                    "sources: expected a list of sources, found a mapping",
                    "processors: expected a list of processors, found a string",
                    "sinks: expected a list of sinks, found a string",
                ],
            ),
            (
                "nodes",
                r#"
name: p
sources:
  - just-a-string
  - {name: src, connector: {kind: impulse}, options: [a, b], infer_schema: "yes", on_error: ignore}
processors:
  - {name: p1, inputs: src, sql: [SELECT 1], key_by: ""}
  - {name: p2, inputs: [src, 3], sql: "  "}
sinks:
  - {name: out, connector: "", inputs: [p1, p2]}
"#,
                &[
                    "sources[0]: expected a mapping describing a source, found a string",
                    "sources[1].connector: expected a string, found a mapping",
                    "sources[1].options: expected a mapping of connector options, found a list",
                    "sources[1].infer_schema: expected true or false, found a string",
                    "sources[1].on_error: unknown on_error value \"ignore\" (expected fail, drop or dead_letter)",
                    "processors[0].inputs: expected a list of inputs, found a string; write [src]",
                    "processors[0].sql: expected a string, found a list",
                    "processors[0].key_by: key_by expression is empty",
                    "processors[1].inputs[1]: expected a string, found a number",
                    "processors[1].sql: SQL query is empty",
                    "sinks[0].connector: connector name is empty",
                ],
            ),
            (
                "on_error suggestion",
                r#"
name: p
sources: [{name: src, connector: impulse, on_error: dead-letter}]
sinks: [{name: out, connector: stdout, inputs: [src]}]
"#,
                &["sources[0].on_error: unknown on_error value \"dead-letter\" (expected fail, drop or \
                   dead_letter); did you mean \"dead_letter\"?"],
            ),
        ]);
    }

    #[test]
    fn epoch_ms_range() {
        let spec = |epoch: &str| {
            format!(
                "name: p\nepoch_ms: {epoch}\nsources: [{{name: s, connector: c}}]\nsinks: [{{name: o, connector: c, inputs: [s]}}]\n"
            )
        };
        assert_eq!(errors(&spec("9")), ["epoch_ms: epoch_ms must be between 10 and 10000, found 9"]);
        assert_eq!(errors(&spec("10001")), ["epoch_ms: epoch_ms must be between 10 and 10000, found 10001"]);
        assert_eq!(errors(&spec("-5")), ["epoch_ms: epoch_ms must be between 10 and 10000, found -5"]);
        assert_eq!(errors(&spec("2.5")), ["epoch_ms: expected a whole number of milliseconds, found 2.5"]);
    }

    #[test]
    fn missing_keys_and_empty_sections() {
        check_table(&[
            ("empty document", "", &["the spec is empty; a pipeline needs a name, sources and sinks"]),
            (
                "comment only",
                "# nothing here\n",
                &["the spec is empty; a pipeline needs a name, sources and sinks"],
            ),
            (
                "not a mapping",
                "- name: p\n",
                &["expected a mapping with name, sources and sinks, found a list"],
            ),
            (
                "nothing required",
                "description: hi\n",
                &[
                    "missing required key \"name\"",
                    "missing required key \"sources\" (a pipeline needs at least one source)",
                    "missing required key \"sinks\" (a pipeline needs at least one sink)",
                ],
            ),
            (
                "empty sections",
                "name: p\nsources: []\nprocessors: []\nsinks:\n",
                &[
                    "sources: a pipeline needs at least one source",
                    "sinks: a pipeline needs at least one sink",
                ],
            ),
            (
                "node keys",
                r#"
name: p
sources: [{connector: impulse}, {name: s}]
processors: [{name: p1}, {}]
sinks: [{name: out, connector: stdout, inputs: []}]
"#,
                &[
                    "sources[0]: missing required key \"name\"",
                    "sources[1]: missing required key \"connector\"",
                    "processors[0]: missing required key \"inputs\"",
                    "processors[0]: missing required key \"sql\"",
                    "processors[1]: missing required key \"name\"",
                    "processors[1]: missing required key \"inputs\"",
                    "processors[1]: missing required key \"sql\"",
                    "sinks[0].inputs: a sink needs at least one input",
                ],
            ),
            (
                "empty dead-letter path",
                "name: p\ndead_letter: {path: ''}\nsources: [{name: s, connector: c}]\nsinks: [{name: o, connector: c, inputs: [s]}]\n",
                &["dead_letter.path: dead-letter path is empty"],
            ),
        ]);
    }

    #[test]
    fn names() {
        check_table(&[
            (
                "bad names",
                r#"
name: Big Bids
sources: [{name: my-src, connector: c}, {name: 9lives, connector: c}, {name: "", connector: c}]
processors: [{name: "p 1", inputs: [s], sql: SELECT 1}]
sinks: [{name: out, connector: c, inputs: [s]}, {name: 42, connector: c, inputs: [s]}]
"#,
                &[
                    "name: invalid pipeline name \"Big Bids\" (use lowercase letters, digits, '-' and '_', \
                     starting with a letter or digit); try \"big-bids\"",
                    "sources[0].name: invalid node name \"my-src\" (use letters, digits and '_', not starting \
                     with a digit); try \"my_src\"",
                    "sources[1].name: invalid node name \"9lives\" (use letters, digits and '_', not starting \
                     with a digit); try \"_9lives\"",
                    "sources[2].name: invalid node name \"\" (use letters, digits and '_', not starting with \
                     a digit)",
                    "processors[0].name: invalid node name \"p 1\" (use letters, digits and '_', not starting \
                     with a digit); try \"p_1\"",
                    "processors[0].inputs[0]: unknown input \"s\"",
                    "sinks[0].inputs[0]: unknown input \"s\"",
                    "sinks[1].name: expected a string, found a number",
                    "sinks[1].inputs[0]: unknown input \"s\"",
                ],
            ),
            (
                "good names",
                r#"
name: 0-big_bids-2
sources: [{name: _Src9, connector: c}]
sinks: [{name: OUT_x, connector: c, inputs: [_Src9]}]
"#,
                &["<parsed without diagnostics>"],
            ),
            (
                "duplicate names across sections",
                r#"
name: p
sources: [{name: x, connector: c}, {name: y, connector: c}]
processors: [{name: y, inputs: [x], sql: SELECT 1}]
sinks: [{name: x, connector: c, inputs: [y]}]
"#,
                &[
                    "processors[0].name: duplicate node name \"y\" (also sources[1])",
                    "sinks[0].name: duplicate node name \"x\" (also sources[0])",
                ],
            ),
        ]);
    }
}

mod inputs {
    use super::check_table;

    #[test]
    fn references_are_checked() {
        check_table(&[
            (
                "dangling with suggestion",
                r#"
name: p
sources: [{name: bids, connector: nexmark}]
processors:
  - {name: expensive, inputs: [bdis], sql: SELECT 1}
sinks: [{name: out, connector: file, inputs: [expnsive, bids.bid, nothing_like_it]}]
"#,
                &[
                    "processors[0].inputs[0]: unknown input \"bdis\"; did you mean \"bids\"?",
                    "sinks[0].inputs[0]: unknown input \"expnsive\"; did you mean \"expensive\"?",
                    "sinks[0].inputs[2]: unknown input \"nothing_like_it\"",
                ],
            ),
            (
                "sinks, self, duplicates, malformed",
                r#"
name: p
sources: [{name: src, connector: c}]
processors:
  - {name: a, inputs: [a, out, src, src, ".x", "src."], sql: SELECT 1}
sinks: [{name: out, connector: c, inputs: [out, a]}]
"#,
                &[
                    "processors[0].inputs[0]: processor \"a\" cannot read its own output",
                    "processors[0].inputs[1]: input \"out\" is a sink; sinks have no output",
                    "processors[0].inputs[3]: duplicate input \"src\" (also inputs[2])",
                    "processors[0].inputs[4]: invalid input \".x\"; write the node name, or node.output for \
                     a named output",
                    "processors[0].inputs[5]: invalid input \"src.\"; write the node name, or node.output for \
                     a named output",
                    "sinks[0].inputs[0]: input \"out\" is a sink; sinks have no output",
                ],
            ),
            (
                "suggestions skip sinks and the node itself",
                r#"
name: p
sources: [{name: src, connector: c}]
processors:
  - {name: abc, inputs: [abd], sql: SELECT 1}
sinks: [{name: abd_, connector: c, inputs: [abc]}]
"#,
                &["processors[0].inputs[0]: unknown input \"abd\""],
            ),
        ]);
    }

    #[test]
    fn cycles_are_reported_once_each() {
        check_table(&[
            (
                "two-cycle",
                r#"
name: p
sources: [{name: src, connector: c}]
processors:
  - {name: a, inputs: [src, b], sql: SELECT 1}
  - {name: b, inputs: [a], sql: SELECT 1}
sinks: [{name: out, connector: c, inputs: [a]}]
"#,
                &["processors[0].inputs[1]: cycle: a -> b -> a"],
            ),
            (
                "two separate cycles and a bystander",
                r#"
name: p
sources: [{name: src, connector: c}]
processors:
  - {name: ok, inputs: [src], sql: SELECT 1}
  - {name: x, inputs: [z], sql: SELECT 1}
  - {name: y, inputs: [x], sql: SELECT 1}
  - {name: z, inputs: [y, ok], sql: SELECT 1}
  - {name: after, inputs: [z], sql: SELECT 1}
  - {name: m, inputs: [n], sql: SELECT 1}
  - {name: n, inputs: [m], sql: SELECT 1}
sinks: [{name: out, connector: c, inputs: [after]}]
"#,
                &[
                    "processors[1].inputs[0]: cycle: x -> y -> z -> x",
                    "processors[5].inputs[0]: cycle: m -> n -> m",
                ],
            ),
            (
                "cycles come after other errors",
                r#"
name: p
sources: [{name: src, connector: c}]
processors:
  - {name: a, inputs: [b], sql: ""}
  - {name: b, inputs: [a.out], sql: SELECT 1}
sinks: [{name: out, connector: c, inputs: [a]}]
"#,
                &["processors[0].sql: SQL query is empty", "processors[0].inputs[0]: cycle: a -> b -> a"],
            ),
        ]);
    }
}

mod many_errors {
    use super::errors;

    #[test]
    fn every_problem_is_reported_at_once_in_document_order() {
        let yaml = r#"
name: Big_Bids
epoch_ms: 5
sources:
  - name: bids
    connector: nexmark
    on_eror: drop
    schema:
      - {name: price, type: integer}
  - name: bids
    connector: nexmark
processors:
  - name: a
    inputs: bids
    sql: SELECT 1
  - name: b
    inputs: [c]
    sql: SELECT 1
  - name: c
    inputs: [b, bdis]
    sql: ""
sinks:
  - name: out
    connector: file
    inputs: [out]
"#;
        assert_eq!(
            errors(yaml),
            [
                "name: invalid pipeline name \"Big_Bids\" (use lowercase letters, digits, '-' and '_', \
                 starting with a letter or digit); try \"big_bids\"",
                "epoch_ms: epoch_ms must be between 10 and 10000, found 5",
                "sources[0].on_eror: unknown key \"on_eror\"; did you mean \"on_error\"?",
                "sources[0].schema[0].type: unknown type \"integer\"; known types: boolean, int8, int16, int32, \
                 int64, uint8, uint16, uint32, uint64, float32, float64, string, binary, date, timestamp, \
                 decimal(p, s), list<T>",
                "sources[1].name: duplicate node name \"bids\" (also sources[0])",
                "processors[0].inputs: expected a list of inputs, found a string; write [bids]",
                "processors[2].inputs[1]: unknown input \"bdis\"; did you mean \"bids\"?",
                "processors[2].sql: SQL query is empty",
                "sinks[0].inputs[0]: input \"out\" is a sink; sinks have no output",
                "processors[1].inputs[0]: cycle: b -> c -> b",
            ]
        );
    }
}

mod yaml_syntax {
    use sluice_spec::{Location, parse};

    #[test]
    fn syntax_errors_have_a_location_and_an_empty_path() {
        let yaml = "name: p\nsources:\n  - name: src\n   connector: c\n";
        let diagnostics = parse(yaml).unwrap_err();
        assert_eq!(diagnostics.len(), 1);
        let diagnostic = &diagnostics[0];
        assert_eq!(diagnostic.path, "");
        assert_eq!(diagnostic.location, Some(Location { line: 4, column: 4 }));
        assert_eq!(
            diagnostic.to_string(),
            "4:4: invalid YAML: did not find expected '-' indicator, while parsing a block collection \
             at line 3 column 3"
        );
    }

    #[test]
    fn duplicate_yaml_keys_are_reported_with_their_location() {
        let yaml = "name: p\nname: q\n";
        let shown: Vec<String> = parse(yaml).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["1:1: invalid YAML: duplicate entry with key \"name\""]);
    }

    #[test]
    fn unclosed_flow_sequence() {
        let yaml = "name: p\nsources: [{name: src, connector: c}\nsinks: []\n";
        let shown: Vec<String> = parse(yaml).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "3:1: invalid YAML: did not find expected ',' or ']', while parsing a flow sequence at line 2 column 10"
            ]
        );
    }
}

mod partial {
    use sluice_spec::parse_partial;

    #[test]
    fn keeps_sound_nodes_and_reports_the_rest() {
        let yaml = r#"
name: partial
sources:
  - {name: a, connector: datagen}
  - {name: b, connectr: datagen}
processors:
  - {name: p, inputs: [a], sql: "SELECT 1"}
  - {name: q, inputs: [zz], sql: "SELECT 1"}
sinks:
  - {name: out, connector: stdout, inputs: [p]}
"#;
        let (pipeline, diagnostics) = parse_partial(yaml);
        let pipeline = pipeline.expect("the sound part is returned");
        let sources: Vec<&str> = pipeline.sources.iter().map(|s| s.name.as_str()).collect();
        let processors: Vec<&str> = pipeline.processors.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(sources, ["a"]);
        assert_eq!(processors, ["p"]);
        assert_eq!(pipeline.sinks.len(), 1);
        let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "sources[1].connectr: unknown key \"connectr\"; did you mean \"connector\"?",
                "sources[1]: missing required key \"connector\"",
                "processors[1].inputs[0]: unknown input \"zz\"",
            ]
        );
        assert!(sluice_spec::parse(yaml).is_err(), "parse still rejects it");
    }
}
