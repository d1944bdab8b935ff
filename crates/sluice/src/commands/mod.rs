//! One module per subcommand.

pub mod bench;
pub mod bench_control;
pub mod bench_kafka;
pub mod client;
pub mod run;
pub mod server;
pub mod validate;
