//! The data path, top to bottom: kernel record → decode → record → emit.

use std::io::Write;

use anyhow::{Context as _, Result};

use crate::{
    clock::{BootClock, rfc3339},
    decode::{self, Exec},
    detect::{self, Verdict},
    identity::{self, Names},
    policy::Policy,
    record::{self, ExclusionRef, Host, Record},
};

/// What happens to an alert an exclusion covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suppressed {
    /// Emit it with `event.kind: "suppressed"` and the exclusion's name.
    Emit,
    /// Only count it (per-exclusion counters are logged).
    Count,
}

pub struct Pipeline<W: Write> {
    out: W,
    policy: Policy,
    suppressed: Suppressed,
    names: Names,
    clock: BootClock,
    host: Host,
    sequence: u64,
    lost_reported: u64,
    all_execs: bool,
}

impl<W: Write> Pipeline<W> {
    pub fn new(out: W, all_execs: bool, policy: Policy, suppressed: Suppressed) -> Self {
        Self {
            out,
            policy,
            suppressed,
            names: Names::default(),
            clock: BootClock::new(),
            host: Host {
                hostname: identity::hostname(),
                boot_id: identity::boot_id(),
            },
            sequence: 0,
            lost_reported: 0,
            all_execs,
        }
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
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
        let mut rec = record::exec_record(exec, verdict, &mut self.names, ts, 0, &self.host);
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
        rec.event.sequence = self.next_sequence();
        self.write(&rec)
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
    }

    /// Reports records the kernel could not deliver, once per increase of its counter.
    pub fn report_lost(&mut self, total: u64) -> Result<()> {
        if total <= self.lost_reported {
            return Ok(());
        }
        let count = total - self.lost_reported;
        self.lost_reported = total;
        let seq = self.next_sequence();
        let ts = rfc3339(std::time::SystemTime::now());
        let rec = record::lost_record(count, total, ts, seq, &self.host);
        self.write(&rec)?;
        self.flush()
    }

    fn write(&mut self, rec: &Record) -> Result<()> {
        serde_json::to_writer(&mut self.out, rec).context("writing a record")?;
        self.out.write_all(b"\n").context("writing a record")
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().context("flushing output")
    }

    /// Periodic upkeep: follow wall-clock steps.
    pub fn tick(&mut self) {
        self.clock.refresh();
    }
}
