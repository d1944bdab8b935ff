//! Integration tests of the checkpoint store against real storage: a local directory and a real
//! S3-compatible server (`s3s-fs`) on loopback. The same scenarios run against both.
//!
//! The S3 tests need the `s3s-fs` binary, found through `SLUICE_S3S_FS`,
//! `$HOME/.cache/sluice-tools/bin/s3s-fs` or `PATH` (`.ci/run` installs it). Without it they fail
//! when `CI` is set and otherwise print a warning and pass without running.

mod local;
mod s3;
mod scenarios;
mod support;
