//! The data path, top to bottom: kernel record → decode → record → emit.

use anyhow::{Context as _, Result};

use crate::{
    clock::{BootClock, rfc3339},
    decode::{self, Exec},
    detect::{self, Verdict},
    identity::{self, Names},
    output::Outputs,
    policy::Policy,
    record::{self, Agent, ExclusionRef, Host, Record},
};

/// What happens to an alert an exclusion covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suppressed {
    /// Emit it with `event.kind: "suppressed"` and the exclusion's name.
    Emit,
    /// Only count it (per-exclusion counters are logged).
    Count,
}

pub struct Pipeline {
    outputs: Outputs,
    policy: Policy,
    suppressed: Suppressed,
    names: Names,
    clock: BootClock,
    host: Host,
    agent: Agent,
    sequence: u64,
    /// Kernel-side losses seen so far, and how many of them records already carry.
    lost_reported: u64,
    lost_in_records: u64,
    all_execs: bool,
}

impl Pipeline {
    pub fn new(outputs: Outputs, all_execs: bool, policy: Policy, suppressed: Suppressed) -> Self {
        Self {
            outputs,
            policy,
            suppressed,
            names: Names::default(),
            clock: BootClock::new(),
            host: Host {
                hostname: identity::hostname(),
                boot_id: identity::boot_id(),
            },
            agent: Agent {
                name: "tinyexec",
                version: env!("CARGO_PKG_VERSION"),
                ephemeral_id: identity::new_uuid(),
            },
            sequence: 0,
            lost_reported: 0,
            lost_in_records: 0,
            all_execs,
        }
    }

    /// One kernel record. A record that cannot be decoded is reported, not fatal.
    pub fn handle(&mut self, bytes: &[u8]) -> Result<()> {
        let exec = match decode::decode(bytes) {
            Ok(exec) => exec,
            Err(err) => {
                eprintln!("tinyexec-sensor: skipping a kernel record: {err:#}");
                return Ok(());
            }
        };
        if let (Some(kernel), Some(ours)) = (exec.kernel_verdict, detect::header_decision(&exec))
            && kernel != ours
        {
            eprintln!(
                "tinyexec-sensor: warning: on the header of pid {} ({}) the kernel decided {kernel:?}, user space {ours:?}",
                exec.pid, exec.path
            );
        }
        let verdict = detect::detect(&exec);
        if exec.killed && verdict.is_none() {
            eprintln!(
                "tinyexec-sensor: warning: the kernel killed pid {} ({}) but user space finds no match",
                exec.pid, exec.path
            );
        }
        if verdict.is_some() || exec.killed || self.all_execs {
            self.emit_exec(&exec, verdict.as_ref())?;
        }
        Ok(())
    }

    fn emit_exec(&mut self, exec: &Exec, verdict: Option<&Verdict>) -> Result<()> {
        let ts = rfc3339(self.clock.wall(exec.ktime_ns));
        let mut rec =
            record::exec_record(exec, verdict, &mut self.names, ts, &self.host, &self.agent);
        // Exclusions apply to alerts the user space raises; a kill already happened.
        if verdict.is_some() && !exec.killed && !self.policy.is_empty() {
            let doc = serde_json::to_value(&rec).context("encoding a record")?;
            if let Some(hit) = self.policy.suppressing(&doc) {
                if self.suppressed == Suppressed::Count {
                    return Ok(());
                }
                rec.event.kind = "suppressed";
                rec.exclusion = Some(ExclusionRef {
                    name: hit.name.clone(),
                    line: hit.line,
                });
            }
        }
        self.write(rec)
    }

    /// Re-reads the exclusions when forced (SIGHUP) or changed on disk, between
    /// records: every exec is evaluated once, under one set.
    pub fn reload_exclusions(&mut self, forced: bool) {
        if let Some(msg) = self.policy.reload(forced) {
            eprintln!("tinyexec-sensor: {msg}");
        }
    }

    pub fn log_counters(&self) {
        if !self.policy.is_empty() {
            eprintln!(
                "tinyexec-sensor: suppressed per exclusion: {}",
                self.policy.counters_line()
            );
        }
        if let Some(line) = self.outputs.counters_line() {
            eprintln!("tinyexec-sensor: {line}");
        }
    }

    /// Reports records the kernel could not deliver, once per increase of its counter.
    pub fn report_lost(&mut self, total: u64) -> Result<()> {
        if total <= self.lost_reported {
            return Ok(());
        }
        let count = total - self.lost_reported;
        self.lost_reported = total;
        let ts = rfc3339(std::time::SystemTime::now());
        let rec = record::lost_record(count, total, ts, &self.host, &self.agent);
        self.write(rec)?;
        self.flush()
    }

    /// Stamps the run's sequence number and the losses since the previous record, then emits.
    fn write(&mut self, mut rec: Record) -> Result<()> {
        self.sequence += 1;
        rec.event.sequence = self.sequence;
        rec.tinyexec.lost_since_previous = self.lost_reported - self.lost_in_records;
        self.lost_in_records = self.lost_reported;
        self.outputs.write(&rec)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.outputs.flush()
    }

    /// SIGHUP: reopen output files (logrotate) and reload the exclusions.
    pub fn hangup(&mut self) {
        self.outputs.reopen();
        self.reload_exclusions(true);
    }

    /// Periodic upkeep: follow wall-clock steps.
    pub fn tick(&mut self) {
        self.clock.refresh();
    }
}
