//! Heartbeat records (`event.action: "heartbeat"`, `event.kind: "metric"`):
//! every `--heartbeat-interval` seconds and at exit, to every output, the
//! sensor's counters since it started. A SIEM alerts on a host whose
//! heartbeats stop, or whose counters show records lost anywhere on the way:
//! in the kernel, in an output's queue, or at its destination.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

/// The outputs, each named once: `heartbeat.outputs.NAME` in records,
/// a label in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Output {
    Stdout,
    File,
    Syslog,
    Sentinel,
}

impl Output {
    #[cfg(test)]
    pub const ALL: [Self; 4] = [Self::Stdout, Self::File, Self::Syslog, Self::Sentinel];

    /// Its name in records.
    pub fn key(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::File => "file",
            Self::Syslog => "syslog",
            Self::Sentinel => "sentinel",
        }
    }

    /// Its name in log lines and its worker thread's name.
    pub fn label(self) -> &'static str {
        match self {
            Self::File => "output file",
            Self::Sentinel => "Sentinel",
            other => other.key(),
        }
    }
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

/// What the data path counted since the sensor started.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub records_read: u64,
    pub alerts: u64,
    pub suppressed: u64,
    pub repeats: u64,
}

/// One output's counters: records offered = written + failed + dropped + queued.
#[derive(Debug, Serialize)]
pub struct OutputHeartbeat {
    pub written: u64,
    pub failed: u64,
    pub dropped: u64,
    pub queued: u64,
    /// Sentinel: records the service accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// Sentinel: records the service refused for good (kept in `rejected/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    /// Sentinel: spooled records dropped by `spool_max_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dropped: Option<u64>,
}

/// The outputs in use, in the order of [`Output`]; the others are absent.
pub type Outputs = BTreeMap<Output, OutputHeartbeat>;

/// Counters since the sensor started (this `agent.ephemeral_id`).
#[derive(Debug, Serialize)]
pub struct Heartbeat {
    /// Seconds between heartbeats (`--heartbeat-interval`).
    pub interval_secs: u64,
    /// The last one: written at exit.
    #[serde(rename = "final")]
    pub last: bool,
    /// Execs the kernel program saw, in every mode.
    pub execs_seen: u64,
    /// Records read from the kernel (alerts-only mode: rule candidates only).
    pub records_read: u64,
    /// Records emitted with `event.kind: "alert"` (aggregates of repeats included).
    pub alerts: u64,
    /// Alerts an exclusion covered (emitted as `suppressed`, or only counted).
    pub suppressed: u64,
    /// Execs of an already alerted file folded into an aggregate (`repeats`).
    pub repeats: u64,
    /// Records the kernel could not queue (the running `lost.total`).
    pub kernel_lost: u64,
    /// `--prevent`: `lsm` (the exec is refused) or `kill` (SIGKILL at
    /// `sched_process_exec`); absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prevent: Option<&'static str>,
    /// Why the LSM refusal is not in force (or not confirmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prevent_reason: Option<String>,
    pub outputs: Outputs,
}

/// What the heartbeat says, from the counters at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub interval_secs: u64,
    pub last: bool,
    pub execs_seen: u64,
    pub kernel_lost: u64,
    pub counters: Counters,
    pub outputs: Outputs,
    /// With `--prevent`: the mechanism in force, and why not the LSM's.
    pub prevent: Option<(&'static str, Option<String>)>,
}
