//! Integration tests of the connectors through the registry, as the runtime uses them; one
//! topic module per file under `connectors/`.

#[path = "connectors/avro_files.rs"]
mod avro_files;
#[path = "connectors/datagen.rs"]
mod datagen;
#[path = "connectors/file_s3.rs"]
mod file_s3;
#[path = "connectors/file_sink.rs"]
mod file_sink;
#[path = "connectors/file_source.rs"]
mod file_source;
#[path = "connectors/http.rs"]
mod http;
#[path = "connectors/http_server.rs"]
mod http_server;
#[path = "connectors/kafka.rs"]
mod kafka;
#[path = "connectors/lookup.rs"]
mod lookup;
#[path = "connectors/mqtt.rs"]
mod mqtt;
#[path = "connectors/nats.rs"]
mod nats;
#[path = "connectors/nexmark.rs"]
mod nexmark;
#[path = "connectors/options.rs"]
mod options;
#[path = "connectors/parquet.rs"]
mod parquet;
#[path = "connectors/postgres.rs"]
mod postgres;
#[path = "connectors/redis.rs"]
mod redis;
#[path = "connectors/replay.rs"]
mod replay;
#[path = "connectors/support.rs"]
mod support;
