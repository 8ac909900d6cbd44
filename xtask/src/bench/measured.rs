//! What the storms measured: one storm's figures, the storm table's rows and
//! the no-watcher baselines beside them.

use std::{collections::BTreeMap, time::Duration};

use super::{peers, proc::ProgStats};

/// One storm with something watching it.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub took: Duration,
    pub execs: usize,
    /// CPU (user + system) of the watching process during the storm and until it went idle.
    pub cpu_ticks: u64,
    /// The same from its CPU-time clock, ns (exact).
    pub cpu_ns: u64,
    /// Peak RSS (`VmHWM`) of the watching process, KiB.
    pub hwm_kib: Option<u64>,
    /// Its resident set after the storm (`VmRSS`), KiB.
    pub rss_kib: Option<u64>,
    /// The anonymous part of it (`RssAnon`: heap, stacks), KiB.
    pub rss_anon_kib: Option<u64>,
    /// Run time of its BPF programs during the storm (`bpf_stats`).
    pub bpf: Option<ProgStats>,
    /// Run time of an empty program on the same execs, attached after the
    /// watcher's (`floor.rs`): what any program in its place costs.
    pub floor: Option<ProgStats>,
    /// The same of one attached before it: the first on the tracepoint,
    /// which pays more.
    pub floor_first: Option<ProgStats>,
    /// Records (lines) naming the storm binary in its output.
    pub seen: Option<u64>,
    /// Records the sensor reported lost (`lost.total` at its exit).
    pub lost: Option<u64>,
    /// The sensor's start to its `ready` line (a sensor is started per storm).
    pub ready: Option<Duration>,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.execs as f64 / self.took.as_secs_f64()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Alerts,
    AllExecs,
}

/// What watches a storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watcher {
    Sensor(Mode),
    Peer(peers::Kind),
}

/// One line of the storm table: a watcher, a binary, a worker count.
pub struct Row {
    pub watcher: Watcher,
    pub label: String,
    pub binary_bytes: usize,
    pub workers: usize,
    pub ratios: Vec<f64>,
    pub runs: Vec<Measured>,
    pub unavailable: Option<String>,
}

/// BPF programs not ours that ran on the execs of the no-watcher storms.
#[derive(Debug, Default)]
pub struct Others {
    pub storms: usize,
    pub with_others: usize,
    pub max_at_once: usize,
    /// Program name -> in how many storms.
    pub names: BTreeMap<String, usize>,
}

/// No-watcher storms of one binary at one worker count, execs/s.
pub struct Baseline {
    pub workers: usize,
    pub binary_bytes: usize,
    pub rates: Vec<f64>,
}
