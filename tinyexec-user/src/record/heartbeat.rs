//! Heartbeat records (`event.action: "heartbeat"`, `event.kind: "metric"`):
//! every `--heartbeat-interval` seconds and at exit, to every output, the
//! sensor's counters since it started. A SIEM alerts on a host whose
//! heartbeats stop, or whose counters show records lost anywhere on the way:
//! in the kernel, in an output's queue, or at its destination.

use serde::Serialize;

use crate::{
    output::OutputCounts,
    record::{Agent, Host, Record},
};

/// The outputs' names in heartbeats (`heartbeat.outputs.NAME`), in the
/// order of [`Outputs`].
pub const OUTPUT_NAMES: [&str; 4] = ["stdout", "file", "syslog", "sentinel"];

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

/// The outputs in use; the others are absent.
#[derive(Debug, Default, Serialize)]
pub struct Outputs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<OutputHeartbeat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<OutputHeartbeat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog: Option<OutputHeartbeat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<OutputHeartbeat>,
}

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
    pub outputs: Outputs,
}

fn output(c: &OutputCounts) -> OutputHeartbeat {
    OutputHeartbeat {
        written: c.counts.written,
        failed: c.counts.failed,
        dropped: c.counts.dropped,
        queued: c.counts.queued,
        delivered: c.sentinel.map(|d| d.delivered),
        rejected: c.sentinel.map(|d| d.rejected),
        spool_dropped: c.sentinel.map(|d| d.spool_dropped),
    }
}

/// What the heartbeat says, from the counters at one moment.
pub struct Snapshot<'a> {
    pub interval_secs: u64,
    pub last: bool,
    pub execs_seen: u64,
    pub kernel_lost: u64,
    pub counters: Counters,
    pub outputs: &'a [OutputCounts],
}

pub fn record(s: &Snapshot<'_>, timestamp: String, host: &Host, agent: &Agent) -> Record {
    let mut outputs = Outputs::default();
    for o in s.outputs {
        let slots = [
            &mut outputs.stdout,
            &mut outputs.file,
            &mut outputs.syslog,
            &mut outputs.sentinel,
        ];
        if let Some((_, slot)) = OUTPUT_NAMES.iter().zip(slots).find(|(n, _)| **n == o.name) {
            *slot = Some(output(o));
        }
    }
    let mut rec = Record::metric("heartbeat", timestamp, host, agent);
    rec.heartbeat = Some(Heartbeat {
        interval_secs: s.interval_secs,
        last: s.last,
        execs_seen: s.execs_seen,
        records_read: s.counters.records_read,
        alerts: s.counters.alerts,
        suppressed: s.counters.suppressed,
        repeats: s.counters.repeats,
        kernel_lost: s.kernel_lost,
        outputs,
    });
    rec
}
