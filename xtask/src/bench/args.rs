//! The bench's command line.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execs per storm (default: calibrated so one single-worker storm takes about 1 s).
    #[arg(long, value_name = "N")]
    pub execs: Option<usize>,
    /// Repetitions of each measurement, each next to its own no-sensor runs.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub reps: usize,
    /// Install the peers (bpftrace, libbpf-tools' execsnoop, auditd) from Debian
    /// first; without it only the peers already installed are measured.
    #[arg(long, conflicts_with = "no_peers")]
    pub peers: bool,
    /// Measure the sensor alone, even when peers are installed.
    #[arg(long)]
    pub no_peers: bool,
    /// Execs of a matching binary for the exec-to-alert latency.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub latency_execs: usize,
    /// Measure this sensor binary instead of building the workspace's (release).
    #[arg(long, value_name = "PATH")]
    pub sensor: Option<PathBuf>,
    /// The static binary to set against the sensor (`--only builds`) instead
    /// of building the workspace's (`cargo xtask build --static`).
    #[arg(long, value_name = "PATH")]
    pub static_sensor: Option<PathBuf>,
    /// Measure only these parts (repeatable) [default: all].
    #[arg(long, value_enum, value_name = "PART")]
    pub only: Vec<Part>,
}

/// The bench's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Exec storms with and without the sensor (and peers): ratios, cost, loss.
    Storms,
    /// Exec-to-alert latency in both modes under background exec load.
    Latency,
    /// --all-execs with all four outputs on: records/s, CPU per 1000 execs.
    Outputs,
    /// Peak RSS under a flood of execs with 4 KiB of arguments and 3.8 KiB paths.
    Flood,
    /// The static build's CPU per --all-execs record against the glibc build's.
    Builds,
    /// Exec-to-alert latency of execs in fresh podman containers against host execs.
    Containers,
}

impl Args {
    /// Whether `part` is to be measured.
    pub fn wants(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}
