//! Execs whose verdict needs a file, decided off the data path with a deadline.
//!
//! Opening and reading a file can block without end (a FUSE file system that
//! never answers, a hung network mount), and no such wait may hold back other
//! records, heartbeats or a stop. So the data path hands those execs to reader
//! threads and goes on; each comes back through the run loop's channel when
//! decided. One that is not back by [`DEADLINE`] is decided without the file
//! ([`Files::Unavailable`]: `undetermined`, with the reason) and its late
//! answer is dropped. A reader stuck for good stays stuck (a thread in an
//! uninterruptible wait cannot be cancelled; the process's exit ends it), and
//! another is started in its place, up to [`MAX_READERS`]: past that, files
//! wait for a free reader and meet the same deadline.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use log::warn;
use tokio::sync::mpsc::UnboundedSender;

use crate::{
    decode::Exec,
    detect::{self, Files, Verdict},
};

/// How long a file read may take. Ordinary reads take microseconds; this
/// leaves room for a loaded machine's disk and is still well inside an
/// alert's latency budget.
pub const DEADLINE: Duration = Duration::from_millis(500);
/// Reader threads at most (stuck ones included).
pub const MAX_READERS: usize = 8;
/// Execs waiting for a reader or its answer at most; past it an exec is
/// decided without its file at once (memory stays bounded under a flood).
const MAX_WAITING: usize = 4096;

/// A decided exec, from a reader thread.
pub struct Done {
    id: u64,
    verdict: Option<Verdict>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<(u64, Exec)>,
    idle: usize,
    threads: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A reader never panics holding the lock; were one to, the queue is still whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The execs handed to readers and not decided yet, by id (in deadline order).
pub struct Reads {
    shared: Arc<Shared>,
    done: UnboundedSender<Done>,
    waiting: BTreeMap<u64, (Exec, Instant)>,
    next_id: u64,
}

impl Reads {
    /// Decided execs are sent to `done`, for [`Reads::take`].
    pub fn new(done: UnboundedSender<Done>) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
            }),
            done,
            waiting: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Hands `exec` to a reader; gives it back when too many already wait.
    pub fn submit(&mut self, exec: Exec) -> Result<(), Exec> {
        if self.waiting.len() >= MAX_WAITING {
            return Err(exec);
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut q = self.shared.lock();
        q.jobs.push_back((id, exec.clone()));
        if q.jobs.len() > q.idle && q.threads < MAX_READERS {
            if let Err(err) = self.spawn_reader() {
                warn!("starting a file reader: {err}");
            } else {
                q.threads += 1;
            }
        }
        drop(q);
        self.shared.ready.notify_one();
        self.waiting.insert(id, (exec, Instant::now() + DEADLINE));
        Ok(())
    }

    fn spawn_reader(&self) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let done = self.done.clone();
        std::thread::Builder::new()
            .name("tinyexec-read".into())
            .spawn(move || reader(&shared, &done))
            .map(drop)
    }

    /// A reader's answer: the exec and its verdict, unless its deadline
    /// already decided it.
    pub fn take(&mut self, done: Done) -> Option<(Exec, Option<Verdict>)> {
        let (exec, _) = self.waiting.remove(&done.id)?;
        Some((exec, done.verdict))
    }

    /// When the next deadline falls, if any exec waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.first_key_value().map(|(_, (_, at))| *at)
    }

    /// The execs whose deadline has passed at `now`, decided without their file.
    pub fn expire(&mut self, now: Instant) -> Vec<(Exec, Option<Verdict>)> {
        let mut out = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if entry.get().1 > now {
                break;
            }
            let (exec, _) = entry.remove();
            let why = format!(
                "reading the file did not finish within {DEADLINE:?} (a file system that does \
                 not answer?; {} of at most {MAX_READERS} readers started)",
                self.shared.lock().threads
            );
            let verdict = unavailable(&exec, &why);
            out.push((exec, verdict));
        }
        out
    }
}

/// The verdict on `exec` without its file, for `why`.
pub fn unavailable(exec: &Exec, why: &str) -> Option<Verdict> {
    detect::detect(exec, Files::Unavailable(why)).unwrap_or_default()
}

/// A reader thread: decides execs with their files until the sensor stops.
fn reader(shared: &Shared, done: &UnboundedSender<Done>) {
    loop {
        let mut q = shared.lock();
        let (id, exec) = loop {
            if let Some(job) = q.jobs.pop_front() {
                break job;
            }
            q.idle += 1;
            q = shared.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
            q.idle -= 1;
        };
        drop(q);
        // Files::Read never defers.
        let verdict = detect::detect(&exec, Files::Read).unwrap_or_default();
        if done.send(Done { id, verdict }).is_err() {
            return; // the run loop is gone: the sensor stops
        }
    }
}
