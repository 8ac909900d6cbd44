//! tinyexec's daemon and CLI as a library: `src/main.rs` is the
//! `tinyexec-sensor` binary on top of it, and the fuzz targets (`fuzz/`) and
//! their regression tests (`tests/`) reach the parsers through it.
//!
//! Modules the binary or the fuzz targets call are `pub`; the rest stay private.

mod bpf_sys;
pub mod btf;
mod canary;
mod cgroups;
pub mod check;
mod clock;
mod container;
pub mod decode;
mod detect;
pub mod exclusions;
#[cfg(test)]
mod field_names;
mod files;
pub mod fuzzing;
mod heartbeat;
mod identity;
mod kernel_log;
mod logging;
mod offsets;
mod output;
mod pipeline;
mod policy;
mod preflight;
mod reads;
mod record;
mod repeats;
pub mod run;
pub mod scan;
mod selftest;
mod sensor;
pub mod settings;
mod textfile;
