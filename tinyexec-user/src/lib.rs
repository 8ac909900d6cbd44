//! tinyexec's daemon and CLI as a library: `src/main.rs` is the
//! `tinyexec-sensor` binary on top of it, and the fuzz targets (`fuzz/`) and
//! their regression tests (`tests/`) reach the parsers through it.
//!
//! Modules the binary or the fuzz targets call are `pub`; the rest stay private.

pub mod check;
pub mod exclusions;
pub mod exec;
pub mod fuzzing;
pub mod kernel;
mod output;
mod record;
pub mod run;
pub mod scan;
mod textfile;
