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
                "options.format: unknown variant `xml`, expected one of `jsonl`, `csv`, `parquet`, `avro`",
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
                "options.format: cannot tell the format of \"/nonexistent/data/in.txt\" from its extension; set `format: jsonl`, `format: csv`, `format: parquet` or `format: avro`",
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
        (
            "file",
            json!({"path": "s3:///in.jsonl"}),
            Some(&fields),
            false,
            vec!["options.path: '' is not a bucket name; the form is s3://bucket/key"],
        ),
        (
            "file",
            json!({"path": "gs://bucket/in.jsonl"}),
            Some(&fields),
            false,
            vec!["options.path: the scheme 'gs://' is not supported; use a local path or s3://bucket/key"],
        ),
        (
            "file",
            json!({"path": "in.jsonl", "s3": {"region": "eu-west-1"}}),
            Some(&fields),
            false,
            vec![
                "options.s3: only used with an `s3://` path; remove `s3` or write the path as s3://bucket/key",
            ],
        ),
        (
            "file",
            json!({"path": "s3://bucket/in.jsonl", "s3": {"endpiont": "http://127.0.0.1:9000", "region": 5}}),
            Some(&fields),
            false,
            vec![
                "options.s3.endpiont: unknown option \"endpiont\"; did you mean \"endpoint\"?",
                "options.s3.region: invalid type: integer `5`, expected a string",
            ],
        ),
        (
            "file",
            json!({"path": "s3://bucket/in.jsonl", "s3": {"access_key_id": "${env:KEY", "secret_access_key": "${vault:x}"}}),
            Some(&fields),
            false,
            vec![
                "options.s3.access_key_id: unclosed \"${\" in \"${env:KEY\"; write a reference as ${env:NAME}",
                "options.s3.secret_access_key: \"${vault:x}\" is not a reference Sluice knows; write ${env:NAME} to use the environment variable NAME",
            ],
        ),
        (
            "file",
            json!({"path": "s3://bucket/in.jsonl", "s3": {"access_key_id": "${env:KEY}"}}),
            Some(&fields),
            false,
            vec![
                "options.s3: give both `access_key_id` and `secret_access_key`, or neither; without them, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "avro": {"schema_file": "x.avsc"}}),
            Some(&fields),
            false,
            vec!["options.avro: only used with `format: avro`; set `format: avro` or remove `avro`"],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "avro": {"schema": "{\"type\": \"string\"}"}}),
            Some(&fields),
            false,
            vec![
                "options.avro.schema: the Avro schema must be a record (`\"type\": \"record\"` with `fields`), one field per column",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "avro": {"schema": {
                "type": "record", "name": "R", "fields": [{"name": "price", "type": "long"}, {"name": "extra", "type": "int"}]
            }}}),
            Some(&fields),
            false,
            vec![
                "options.avro.schema: the Avro schema does not give the declared columns: it has no column `name`; its columns are `price` (Int64), `extra` (Int32)",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "avro": {"schema_file": "missing.avsc", "schema": "{}"}}),
            Some(&fields),
            false,
            vec!["options.avro: set only one of `schema` and `schema_file`"],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro",
                   "registry": {"url": "http://127.0.0.1:8081"}, "avro": {"schema_file": "x.avsc"}}),
            Some(&fields),
            false,
            vec![
                "options.avro: with `registry`, each message names its writer schema in the registry, so none is declared; remove `avro`",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "csv", "registry": {"url": "http://r:8081"}}),
            Some(&fields),
            false,
            vec![
                "options.registry: a schema registry is only used with `format: avro` or `format: json`, not `csv`; set `format: avro` or `format: json`, or remove `registry`",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "json",
                   "registry": {"url": "http://r:8081", "username": "u", "auto_register": true}}),
            Some(&fields),
            false,
            vec![
                "options.registry.password: missing required option \"password\"; HTTP Basic credentials need both `username` and `password`",
                "options.registry.auto_register: only used by sinks, which register their writer schema; a source reads the schema each message names; remove `auto_register`",
            ],
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
        (
            "file",
            json!({"path": "out", "row_group_rows": 1000}),
            vec![
                "options.row_group_rows: only used with `format: parquet`; remove `row_group_rows` or set `format: parquet`",
            ],
        ),
        (
            "file",
            json!({"format": "parquet", "row_group_rows": 0}),
            vec![
                "options.row_group_rows: must be at least 1",
                "options.path: missing required option \"path\"",
            ],
        ),
        (
            "file",
            json!({"path": "s3://bucket/out", "s3": {"secret_access_key": "x", "sesion_token": "y"}}),
            vec!["options.s3.sesion_token: unknown option \"sesion_token\""],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "avro": {"schema_file": "missing.avsc"}}),
            vec![
                "options.avro.schema_file: cannot read \"/nonexistent/missing.avsc\": No such file or directory (os error 2)",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "avro": {"schema": "{not json", "schemas": 1}}),
            vec!["options.avro.schemas: unknown option \"schemas\"; did you mean \"schema\"?"],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "avro": {"schema": "{not json"}}),
            vec![
                "options.avro.schema: the Avro schema is not valid JSON: key must be a string at line 1 column 2",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "registry": {"urll": "http://r"}}),
            vec!["options.registry.urll: unknown option \"urll\"; did you mean \"url\"?"],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "avro", "registry": {"url": "registry:8081", "token": "${env:}"}}),
            vec![
                "options.registry.url: the registry is reached over HTTP, but the URL has scheme `registry`; write it as http://HOST:PORT or https://HOST",
                "options.registry.token: \"\" in \"${env:}\" is not an environment variable name (letters, digits and '_', not starting with a digit)",
            ],
        ),
        (
            "kafka",
            json!({"brokers": "127.0.0.1:9092", "topic": "t", "format": "json", "registry": {"subject": "t-value"}}),
            vec![
                "options.registry.url: missing required option \"url\"; give the registry's base URL, e.g. `url: http://registry:8081`, or a Sluice team's `http://HOST:PORT/api/v1/teams/TEAM/registry`",
            ],
        ),
    ];
    for (connector, options, expected) in cases {
        assert_eq!(sink_errors(connector, options.clone()), expected, "{connector} {options}");
    }
}

#[test]
fn bad_http_sink_configs_get_exact_diagnostics() {
    let url = "https://api.example.com/events";
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["options.url: missing required option \"url\""]),
        (
            json!({"url": "ftp://files.example.com/in"}),
            vec![
                "options.url: \"ftp://files.example.com/in\" is a ftp: URL; the http sink sends to http:// or https:// URLs",
            ],
        ),
        (
            // The password is not repeated in the message.
            json!({"url": "https://user:hunter2@exa mple.com/in"}),
            vec![
                "options.url: \"https://exa mple.com/in\" is not a valid URL (invalid international domain name); write it like https://api.example.com/events",
            ],
        ),
        (
            json!({"url": "https://api.example.com/${API_PATH}"}),
            vec![
                "options.url: \"${API_PATH}\" is not a reference Sluice knows; write ${env:NAME} to use the environment variable NAME",
            ],
        ),
        (
            json!({"url": url, "method": "GET", "body": "lines", "timeot": "1s"}),
            vec![
                "options.body: unknown variant `lines`, expected `record` or `batch`",
                "options.method: unknown variant `GET`, expected one of `POST`, `post`, `PUT`, `put`, `PATCH`, `patch`",
                "options.timeot: unknown option \"timeot\"; did you mean \"timeout\"?",
            ],
        ),
        (
            json!({"url": url, "batch_size": 10, "timeout": 5, "concurrency": 0, "rate_limit": 0}),
            vec![
                "options.batch_size: only applies to `body: batch`; set `body: batch` or remove `batch_size`",
                "options.timeout: expected a duration with a unit, like 500ms or 5s, found a number",
                "options.rate_limit: must be a positive number of requests per second, found 0",
                "options.concurrency: must be between 1 and 256 requests in flight per worker, found 0",
            ],
        ),
        (
            json!({"url": url, "body": "batch", "batch_size": 0, "timeout": "10", "rate_limit": -2.5, "concurrency": 1000}),
            vec![
                "options.batch_size: must be at least 1",
                "options.timeout: duration \"10\" has no unit: write a number and a unit, like 500ms, 5s, 2m or 1h",
                "options.rate_limit: must be a positive number of requests per second, found -2.5",
                "options.concurrency: must be between 1 and 256 requests in flight per worker, found 1000",
            ],
        ),
        (
            json!({"url": url, "timeout": "0s", "retry": {"max_attempts": 0, "initial_backoff": "1s", "max_backoff": "100ms"}}),
            vec![
                "options.retry.max_attempts: must be at least 1 (1 sends each request once, without retries)",
                "options.retry.max_backoff: 100ms is shorter than initial_backoff (1s); make it at least as long",
                "options.timeout: must be longer than 0, found \"0s\"",
            ],
        ),
        (
            json!({"url": url, "retry": {"max_backof": "1s"}}),
            vec!["options.retry.max_backof: unknown option \"max_backof\"; did you mean \"max_backoff\"?"],
        ),
        (
            json!({"url": url, "retry": {"max_attempts": -1, "initial_backoff": 3}}),
            vec!["options.retry.max_attempts: invalid value: integer `-1`, expected u32"],
        ),
        (
            json!({"url": url, "retry": {"initial_backoff": 3, "max_backoff": "2 fortnights"}}),
            vec![
                "options.retry.initial_backoff: expected a duration with a unit, like 500ms or 5s, found a number",
                "options.retry.max_backoff: unknown unit \"fortnights\" in duration \"2 fortnights\": write a number and a unit, like 500ms, 5s, 2m or 1h",
            ],
        ),
        (json!({"url": url, "retry": 3}), vec!["options.retry: expected a map of options, found a number"]),
        (
            json!({"url": url, "headers": {
                "bad header": "x",
                "Content-Length": "12",
                "X-Token": "${env:TOKEN",
                "X-Multi": "a\nb",
            }}),
            vec![
                "options.headers.Content-Length: the sink sets Content-Length itself from each request; remove it",
                "options.headers.X-Multi: the value has characters a header cannot carry (control characters or line breaks)",
                "options.headers.X-Token: unclosed \"${\" in \"${env:TOKEN\"; write a reference as ${env:NAME}",
                "options.headers.bad header: \"bad header\" is not a valid HTTP header name (letters, digits and -!#$%&'*+.^_`|~)",
            ],
        ),
        (
            json!({"url": url, "headers": ["Authorization: x"]}),
            vec!["options.headers: invalid type: sequence, expected a map"],
        ),
    ];
    for (options, expected) in cases {
        assert_eq!(sink_errors("http", options.clone()), expected, "{options}");
    }
}
