//! The data path, top to bottom: kernel record → decode → detect → record →
//! exclusions → the flood bound (`repeats`) → the outputs' queues. An exec
//! whose verdict needs its file is decided by a file reader (`reads`) and
//! rejoins the path here when its answer, or its deadline, comes.

use anyhow::{Result, bail};
use log::{error, info, warn};

use crate::{
    exclusions::policy::{Policy, Reload, Suppressed},
    exec::{
        clock::{BootClock, boot_now_ns, rfc3339},
        decode::{self, Exec},
        detect::{self, Files, Verdict},
        identity::{self, Names},
        reads::{self, Reads},
        runtimes::{Roots, Workloads},
    },
    kernel::loader::Prevent,
    output::Outputs,
    record::{
        Agent, ExclusionRef, Host, Kind, Record, Repeats, builder,
        heartbeat::{Counters, Snapshot},
    },
};

use super::repeats::{Key, Pending, Seen, Tracker};

pub struct Pipeline {
    outputs: Outputs,
    policy: Policy,
    suppressed: Suppressed,
    names: Names,
    workloads: Workloads,
    reads: Reads,
    clock: BootClock,
    host: Host,
    agent: Agent,
    sequence: u64,
    /// Kernel-side losses seen so far, and how many of them records already carry.
    lost_reported: u64,
    lost_in_records: u64,
    all_execs: bool,
    repeats: Tracker,
    counters: Counters,
    heartbeat_secs: u64,
    prevent: Prevent,
}

/// How the pipeline is set up, besides its outputs and exclusions.
pub struct Options {
    pub all_execs: bool,
    pub suppressed: Suppressed,
    /// `--repeat-window`: 0 turns the flood bound off.
    pub repeat_window_secs: u64,
    pub heartbeat_secs: u64,
    /// Prevent mode's mechanism in force, for the heartbeats.
    pub prevent: Prevent,
}

impl Pipeline {
    /// Execs decided by the readers come back through `read_done`, for [`Pipeline::read_done`].
    pub fn new(
        outputs: Outputs,
        policy: Policy,
        opts: &Options,
        read_done: tokio::sync::mpsc::UnboundedSender<reads::Done>,
    ) -> Self {
        Self {
            outputs,
            policy,
            suppressed: opts.suppressed,
            names: Names::new(),
            workloads: Workloads::new(Roots::default()),
            reads: Reads::new(read_done),
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
            all_execs: opts.all_execs,
            repeats: Tracker::new(opts.repeat_window_secs),
            counters: Counters::default(),
            heartbeat_secs: opts.heartbeat_secs,
            prevent: opts.prevent.clone(),
        }
    }

    /// One kernel record. A record that cannot be decoded is reported, not fatal.
    pub fn handle(&mut self, bytes: &[u8]) {
        self.counters.records_read += 1;
        let exec = match decode::decode(bytes) {
            Ok(exec) => exec,
            Err(err) => {
                error!("skipping a kernel record: {err:#}");
                return;
            }
        };
        // User space's decision on the kernel's header, taken once: checked
        // against the kernel's, then the start of the verdict.
        let header = detect::header_decision(&exec);
        if let (Some(kernel), Some(ours)) = (exec.kernel_verdict, header)
            && kernel != ours
        {
            warn!(
                "on the header of pid {} ({}) the kernel decided {kernel:?}, user space {ours:?}",
                exec.pid, exec.path
            );
        }
        if let Ok(verdict) = detect::detect(&exec, header, Files::Deferred) {
            self.decided(&exec, verdict.as_ref());
            return;
        }
        // Its file decides. Its container's names are asked for now, to come
        // while a reader works (an exec decided above asks as its record is
        // made, and one that makes no record asks nothing).
        if let Some(id) = &exec.workload.container_id {
            self.workloads.prefetch(id, exec.workload.runtime);
        }
        if let Err(exec) = self.reads.submit(exec, bytes) {
            let why = "too many execs already wait for their files to be read";
            self.decided(&exec, reads::unavailable(&exec, why).as_ref());
        }
    }

    /// A reader's answer: on with the execs it releases (see `reads`).
    pub fn read_done(&mut self, done: reads::Done) {
        for (exec, verdict) in self.reads.take(done) {
            self.decided(&exec, verdict.as_ref());
        }
    }

    /// When the next exec waiting for its file must be decided without it.
    pub fn read_deadline(&self) -> Option<std::time::Instant> {
        self.reads.next_deadline()
    }

    /// Decides, without their files, the execs whose deadline has passed.
    pub fn expire_reads(&mut self, now: std::time::Instant) {
        for (exec, verdict) in self.reads.expire(now) {
            self.decided(&exec, verdict.as_ref());
        }
    }

    /// An exec with its verdict: on to the record when it alerts, was killed
    /// or refused, or every exec is recorded.
    fn decided(&mut self, exec: &Exec, verdict: Option<&Verdict>) {
        if exec.prevented() && verdict.is_none() {
            let what = if exec.denied { "refused" } else { "killed" };
            warn!(
                "the kernel {what} pid {} ({}) but user space finds no match",
                exec.pid, exec.path
            );
        }
        if verdict.is_some() || exec.prevented() || self.all_execs {
            self.emit_exec(exec, verdict);
        }
    }

    /// An exec's record, its users by number (see [`Pipeline::write_exec`]).
    fn exec_record(&self, exec: &Exec, verdict: Option<&Verdict>) -> Record {
        let ts = rfc3339(self.clock.wall(exec.ktime_ns));
        builder::exec_record(exec, verdict, ts, &self.host, &self.agent)
    }

    fn emit_exec(&mut self, exec: &Exec, verdict: Option<&Verdict>) {
        let mut rec = self.exec_record(exec, verdict);
        // Names (of users, group and workload) are looked up for the records
        // that go out, and before the exclusions only when these read them (a
        // new id may wait for the name service or the runtime's state): an
        // alert counted away or a repeat costs none.
        let mut named = false;
        // Exclusions apply to alerts the user space raises; a kill or a
        // refusal already happened.
        if verdict.is_some() && !exec.prevented() && !self.policy.is_empty() {
            if self.policy.uses_any(builder::ENRICHED_FIELDS) {
                builder::enrich(&mut rec, exec, &mut self.names, &self.workloads);
                named = true;
            }
            if let Some(hit) = self.policy.suppressing(&rec) {
                self.counters.suppressed += 1;
                if self.suppressed == Suppressed::Count {
                    return;
                }
                rec.event.kind = Kind::Suppressed;
                rec.exclusion = Some(ExclusionRef {
                    name: hit.name.clone(),
                    line: hit.line,
                });
            }
        }
        if verdict.is_none() && !exec.prevented() {
            self.write_exec(rec, exec, named); // an ordinary exec (--all-execs)
            return;
        }
        // An alert, a kill, a refusal or a suppressed alert: subject to the flood bound.
        let exclusion = rec.exclusion.as_ref().map(|e| (e.name.clone(), e.line));
        let key = Key::of(
            exec,
            verdict,
            rec.event.kind,
            exclusion.as_ref().map(|(n, _)| n.as_str()),
        );
        let (ended, seen) = self.repeats.observe(&key, exec, verdict, exclusion);
        if let Some(p) = ended {
            self.emit_aggregate(p);
        }
        match seen {
            Seen::First => {
                let seq = self.write_exec(rec, exec, named);
                self.repeats.opened(key, seq, exec);
            }
            Seen::Untracked => {
                self.write_exec(rec, exec, named);
            }
            Seen::NewCommandLine { of_sequence } => {
                // Another payload: an alert, said to repeat the file's first.
                rec.tinyexec.repeat_of = Some(of_sequence);
                self.write_exec(rec, exec, named);
            }
            Seen::Repeat { of_sequence } => {
                self.counters.repeats += 1;
                if self.all_execs {
                    // Still one record per exec, but not another alert.
                    rec.event.kind = Kind::Event;
                    rec.tinyexec.repeat_of = Some(of_sequence);
                    self.write_exec(rec, exec, named);
                }
            }
        }
    }

    /// [`Pipeline::write`] for an exec's record, its users named unless
    /// they already are.
    fn write_exec(&mut self, mut rec: Record, exec: &Exec, named: bool) -> u64 {
        if !named {
            builder::enrich(&mut rec, exec, &mut self.names, &self.workloads);
        }
        self.write(rec)
    }

    /// One record for the repeats of a window: the last one's details, their count.
    fn emit_aggregate(&mut self, p: Pending) {
        let mut rec = self.exec_record(&p.last, p.verdict.as_ref());
        rec.event.kind = p.kind;
        rec.exclusion = p.exclusion.map(|(name, line)| ExclusionRef { name, line });
        rec.repeats = Some(Repeats {
            count: p.count,
            first_timestamp: rfc3339(self.clock.wall(p.first_ktime_ns)),
            of_sequence: p.of_sequence,
            window_secs: self.repeats.window_secs(),
        });
        self.write_exec(rec, &p.last, false);
    }

    /// Re-reads the exclusions when forced (SIGHUP) or changed on disk, between
    /// records: every exec is evaluated once, under one set.
    pub fn reload_exclusions(&mut self, forced: bool) {
        match self.policy.reload(forced) {
            Reload::Reloaded(changed) => info!("{changed}"),
            Reload::Refused(why) => warn!("{why}"),
            Reload::Unchanged => {}
        }
    }

    pub fn log_counters(&self) {
        if !self.policy.is_empty() {
            info!("suppressed per exclusion: {}", self.policy.counters_line());
        }
        info!("{}", self.outputs.counters_line());
    }

    /// Reports records the kernel could not deliver, once per increase of its counter.
    pub fn report_lost(&mut self, total: u64) {
        if total <= self.lost_reported {
            return;
        }
        let count = total - self.lost_reported;
        self.lost_reported = total;
        let ts = rfc3339(std::time::SystemTime::now());
        let rec = builder::lost_record(count, total, ts, &self.host, &self.agent);
        self.write(rec);
    }

    /// A heartbeat to every output: the counters as they are now.
    pub fn heartbeat(&mut self, execs_seen: u64, last: bool) {
        // Every record before it in the queues' counts, so that they add up.
        self.outputs.commit();
        let snapshot = Snapshot {
            interval_secs: self.heartbeat_secs,
            last,
            execs_seen,
            kernel_lost: self.lost_reported,
            counters: self.counters,
            outputs: self.outputs.heartbeat(),
            prevent: (self.prevent != Prevent::Off).then(|| {
                (
                    self.prevent.mechanism(),
                    self.prevent.reason().map(str::to_owned),
                )
            }),
        };
        let ts = rfc3339(std::time::SystemTime::now());
        let rec = builder::heartbeat_record(snapshot, ts, &self.host, &self.agent);
        self.write(rec);
    }

    /// Stamps the run's sequence number and the losses since the previous
    /// record, then queues it for every output; returns its sequence number.
    fn write(&mut self, mut rec: Record) -> u64 {
        self.sequence += 1;
        rec.event.sequence = self.sequence;
        rec.tinyexec.lost_since_previous = self.lost_reported - self.lost_in_records;
        self.lost_in_records = self.lost_reported;
        if rec.event.kind == Kind::Alert {
            self.counters.alerts += 1;
        }
        self.outputs.write(rec);
        self.sequence
    }

    /// Hands the records of the batch just handled to the outputs.
    pub fn flush(&mut self) {
        self.outputs.commit();
    }

    /// Why the sensor must stop, if an output said so (stdout nobody reads).
    pub fn fatal(&self) -> Result<()> {
        match self.outputs.fatal() {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    /// SIGHUP: reopen output files (logrotate) and reload the exclusions.
    pub fn hangup(&mut self) {
        self.outputs.reopen();
        self.reload_exclusions(true);
    }

    /// Periodic upkeep: follow wall-clock steps, emit the aggregates of
    /// repeat windows that ended.
    pub fn tick(&mut self) {
        self.clock.refresh();
        for p in self.repeats.expire(boot_now_ns()) {
            self.emit_aggregate(p);
        }
    }

    /// At exit, after the ring is drained: the aggregates of every open
    /// window, the last heartbeat, then the outputs get `grace` to deliver.
    pub fn finish(mut self, execs_seen: u64, grace: std::time::Duration) -> Result<()> {
        for p in self.repeats.drain() {
            self.emit_aggregate(p);
        }
        self.heartbeat(execs_seen, true);
        let fatal = self.fatal();
        self.outputs.shutdown(grace);
        // After the outputs delivered: the counts say what reached them.
        self.log_counters();
        fatal
    }
}
