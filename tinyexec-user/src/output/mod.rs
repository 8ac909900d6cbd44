//! Where records go: stdout, a JSON-lines file, syslog (CEF), Microsoft
//! Sentinel, in any combination. Each output is a worker thread with a bounded
//! queue ([`queue`]): the data path only queues, so no output can delay
//! detection or another output, and every record offered to an output is
//! accounted for in its counters (the heartbeat reports them).

mod cef;
mod file;
mod item;
mod queue;
mod sentinel;
mod stdout;
mod syslog;
mod worker;

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::record::{
    Record,
    heartbeat::{self, Output, OutputHeartbeat},
};
use item::Item;
use queue::{Counts, Queue};

/// One output's counters, and Sentinel's delivery counters.
#[derive(Clone, Copy, Debug)]
struct OutputCounts {
    output: Output,
    counts: Counts,
    sentinel: Option<sentinel::Delivery>,
}

impl OutputCounts {
    /// As the heartbeat reports them.
    fn heartbeat(&self) -> OutputHeartbeat {
        OutputHeartbeat {
            written: self.counts.written,
            failed: self.counts.failed,
            dropped: self.counts.dropped,
            queued: self.counts.queued,
            delivered: self.sentinel.map(|d| d.delivered),
            rejected: self.sentinel.map(|d| d.rejected),
            spool_dropped: self.sentinel.map(|d| d.spool_dropped),
        }
    }
}

/// An output at work: its queue and its worker's thread.
struct Running {
    output: Output,
    queue: Arc<Queue<Arc<Item>>>,
    thread: Option<thread::JoinHandle<()>>,
    sentinel: Option<Arc<sentinel::Stats>>,
}

pub struct Outputs {
    outputs: Vec<Running>,
    /// Records of the batch being handled, handed to the queues at once.
    pending: Vec<Arc<Item>>,
    /// Set by an output that makes the sensor stop (stdout nobody reads).
    fatal: Arc<Mutex<Option<String>>>,
}

pub struct OutputOptions<'a> {
    pub stdout: bool,
    pub file: Option<&'a Path>,
    pub syslog: Option<&'a str>,
    pub sentinel: Option<&'a Path>,
    /// Records each output's queue holds (alerts, heartbeats and loss records
    /// have a reserve on top); [`QUEUE_BYTES`] bounds its bytes.
    pub queue: usize,
}

/// The bytes of records an output's queue holds at most (a quarter more for
/// alerts, heartbeats and loss records), whatever their count: thousands of
/// ordinary records, about 400 of the largest the kernel sends (docs/outputs.md).
pub const QUEUE_BYTES: usize = 16 << 20;

/// Records of one ring read handed to the queues at most at once: a reader
/// that never finds the ring empty (a flood) still hands them over as it goes.
const PENDING_MAX: usize = 256;

impl Outputs {
    /// Checks every output's settings and starts its worker. A destination
    /// that is down (a syslog server, the Sentinel endpoint) is not an error:
    /// its worker connects when it can. Settings that cannot work are.
    pub fn open(opts: &OutputOptions<'_>) -> Result<Self> {
        type Opened = (Output, Box<dyn worker::Sink>, Option<Arc<sentinel::Stats>>);
        let mut sinks: Vec<Opened> = Vec::new();
        if opts.stdout {
            sinks.push((Output::Stdout, Box::new(stdout::Stdout::new()), None));
        }
        if let Some(p) = opts.file {
            sinks.push((Output::File, Box::new(file::JsonFile::open(p)?), None));
        }
        if let Some(url) = opts.syslog {
            sinks.push((Output::Syslog, Box::new(syslog::Syslog::new(url)?), None));
        }
        if let Some(p) = opts.sentinel {
            let s = sentinel::Sentinel::open(p)?;
            let stats = s.stats();
            sinks.push((Output::Sentinel, Box::new(s), Some(stats)));
        }
        let fatal: Arc<Mutex<Option<String>>> = Arc::default();
        let mut outputs = Vec::new();
        for (output, sink, stats) in sinks {
            let name = output.label();
            let queue = Arc::new(Queue::new(queue::Bound {
                records: opts.queue,
                bytes: QUEUE_BYTES,
            }));
            let slot = Arc::clone(&fatal);
            let on_fatal = Box::new(move |why: String| {
                slot.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(format!("{name}: {why}"));
            });
            let thread = worker::spawn(name, sink, Arc::clone(&queue), on_fatal)?;
            outputs.push(Running {
                output,
                queue,
                thread: Some(thread),
                sentinel: stats,
            });
        }
        Ok(Self {
            outputs,
            pending: Vec::new(),
            fatal,
        })
    }

    /// Takes the record for every output. Records are handed over per batch
    /// (one lock and one wake-up per output for a ring's worth, up to
    /// [`PENDING_MAX`], see [`Outputs::commit`]); an alert, a heartbeat or a loss record at once,
    /// with what is pending before it. Never waits for an output.
    pub fn write(&mut self, rec: Record) {
        let item = Arc::new(Item::new(rec));
        let now = item.priority();
        self.pending.push(item);
        if now || self.pending.len() >= PENDING_MAX {
            self.commit();
        }
    }

    /// Hands the pending records to every output's queue.
    pub fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for o in &self.outputs {
            o.queue.push_all(self.pending.iter().map(Arc::clone));
        }
        self.pending.clear();
    }

    /// Why the sensor must stop, if an output said so.
    pub fn fatal(&self) -> Option<String> {
        self.fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every output's counters, in the order of [`OutputOptions`] (commit
    /// first: pending records are in no queue's counts yet).
    fn counts(&self) -> Vec<OutputCounts> {
        self.outputs
            .iter()
            .map(|o| OutputCounts {
                output: o.output,
                counts: o.queue.counts(),
                sentinel: o.sentinel.as_ref().map(|s| s.delivery()),
            })
            .collect()
    }

    /// Every output's counters, as the heartbeat reports them.
    pub fn heartbeat(&self) -> heartbeat::Outputs {
        self.counts()
            .iter()
            .map(|c| (c.output, c.heartbeat()))
            .collect()
    }

    /// `stdout: written N, failed N, dropped N, queued N; ...` for the counters log line.
    pub fn counters_line(&self) -> String {
        use std::fmt::Write as _;
        let parts: Vec<String> = self
            .counts()
            .iter()
            .map(|o| {
                let c = o.counts;
                let mut s = format!(
                    "{}: written {}, failed {}, dropped {}, queued {}",
                    o.output.key(),
                    c.written,
                    c.failed,
                    c.dropped,
                    c.queued
                );
                if let Some(d) = o.sentinel {
                    let _ = write!(s, ", delivered {}, rejected {}, dropped by the spool bound {}, batches split {}",
                        d.delivered, d.rejected, d.spool_dropped, d.splits);
                }
                s
            })
            .collect();
        parts.join("; ")
    }

    /// SIGHUP: logrotate moved the file away. Each worker reopens before it
    /// takes another record, so every record queued after this goes to the new file.
    pub fn reopen(&self) {
        for o in &self.outputs {
            o.queue.request_reopen();
        }
    }

    /// Closes the queues and gives the workers until `grace` has passed to
    /// deliver what is queued; what a stuck output still holds then is counted
    /// dropped and said on stderr. Sentinel's spool keeps its batches for the
    /// next start.
    pub fn shutdown(&mut self, grace: Duration) {
        self.commit();
        for o in &self.outputs {
            o.queue.close();
        }
        let deadline = Instant::now() + grace;
        for o in &mut self.outputs {
            let Some(t) = o.thread.take() else { continue };
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            let finished = t.is_finished();
            if finished {
                let _ = t.join();
            }
            // A worker still stuck, or one that ended away from its destination.
            let left = o.queue.abandon();
            if left > 0 {
                let why = if finished {
                    "not connected at exit"
                } else {
                    "still stuck at exit"
                };
                log::error!(
                    "{}: {why} (after {grace:?}): {left} queued records not delivered",
                    o.output.label()
                );
            }
        }
    }
}
