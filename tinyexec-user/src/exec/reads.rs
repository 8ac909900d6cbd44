//! Execs whose verdict needs a file, decided off the data path, in processes
//! of their own, with a deadline.
//!
//! Opening, looking up or even `stat`ing a file can block without end (a FUSE
//! file system that never answers, a hung network mount), and a thread
//! blocked in a FUSE request that its server has received cannot be killed:
//! it would keep the whole sensor, its eBPF programs attached, from ever
//! exiting. So no thread of the sensor touches an exec's file. The data path
//! hands those execs to reader threads and goes on; each reader passes one
//! kernel record at a time to a helper process of its own (`tinyexec-sensor
//! read-files`, the same binary), which decides it with [`Files::Read`] and
//! answers. The answer comes back through the run loop's channel. One that is
//! not back by [`DEADLINE`] is decided without the file ([`Files::Unavailable`]:
//! `undetermined`, with the reason) and its late answer is dropped. Decided
//! execs leave in the order they came: an answer waits for the earlier ones
//! (at most until their deadline), so an exec decided by a reader has every
//! earlier exec decided before it, as on the data path (the tests' barrier
//! rests on that). A stuck
//! helper is left to its file system (it dies with the sensor, or once
//! answered, by `PR_SET_PDEATHSIG`), its reader with it, and another reader
//! starts, up to [`MAX_READERS`]: past that, execs wait for a free reader and
//! meet the same deadline.

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    os::unix::process::CommandExt as _,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use log::warn;
use tokio::sync::mpsc::UnboundedSender;

use crate::exec::{
    clock::BootClock,
    decode::{self, Exec},
    detect::{self, Files, Verdict},
};

/// How long a file read may take. Ordinary reads take microseconds; this
/// leaves room for a loaded machine's disk and is still well inside an
/// alert's latency budget.
pub const DEADLINE: Duration = Duration::from_millis(500);
/// Readers at most (stuck ones included), each with its helper process.
pub const MAX_READERS: usize = 8;
/// Execs waiting for a reader or its answer at most; past it an exec is
/// decided without its file at once (memory stays bounded under a flood).
const MAX_WAITING: usize = 4096;
/// The hidden subcommand a helper runs (`main.rs` names it so).
pub const SUBCOMMAND: &str = "read-files";
/// A kernel record is at most this long (`ExecRecord` and its variable part);
/// a longer length on the pipe is a broken stream.
const MAX_MESSAGE: usize = 1 << 20;

/// A decided exec, from a reader.
pub struct Done {
    id: u64,
    verdict: Option<Verdict>,
}

struct Job {
    id: u64,
    exec: Exec,
    record: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
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

/// An exec handed to a reader, its deadline, and its verdict once answered.
struct Waiting {
    exec: Exec,
    deadline: Instant,
    answer: Answer,
}

/// Whether a reader has answered, and with which verdict.
enum Answer {
    Pending,
    Decided(Option<Verdict>),
}

/// The execs handed to readers and not released yet, by id (in the order
/// they came, which is their deadlines' order).
pub struct Reads {
    shared: Arc<Shared>,
    done: UnboundedSender<Done>,
    waiting: BTreeMap<u64, Waiting>,
    next_id: u64,
}

impl Reads {
    /// Decided execs are sent to `done`, for [`Reads::take`]. One reader
    /// starts now, its helper with it: the first exec to need a file does
    /// not wait for a process to start.
    pub fn new(done: UnboundedSender<Done>) -> Self {
        let reads = Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
            }),
            done,
            waiting: BTreeMap::new(),
            next_id: 0,
        };
        match reads.spawn_reader() {
            Ok(()) => reads.shared.lock().threads += 1,
            Err(err) => warn!("starting a file reader: {err}"),
        }
        reads
    }

    /// Hands `exec`, decoded from the kernel's `record`, to a reader; gives
    /// it back when too many already wait.
    pub fn submit(&mut self, exec: Exec, record: &[u8]) -> Result<(), Box<Exec>> {
        if self.waiting.len() >= MAX_WAITING {
            return Err(Box::new(exec));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut q = self.shared.lock();
        q.jobs.push_back(Job {
            id,
            exec: exec.clone(),
            record: record.to_vec(),
        });
        if q.jobs.len() > q.idle && q.threads < MAX_READERS {
            if let Err(err) = self.spawn_reader() {
                warn!("starting a file reader: {err}");
            } else {
                q.threads += 1;
            }
        }
        drop(q);
        self.shared.ready.notify_one();
        self.waiting.insert(
            id,
            Waiting {
                exec,
                deadline: Instant::now() + DEADLINE,
                answer: Answer::Pending,
            },
        );
        Ok(())
    }

    fn spawn_reader(&self) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let done = self.done.clone();
        std::thread::Builder::new()
            .name("tinyexec-read".into())
            .spawn(move || reader(&shared, &done))
            .map(drop)
    }

    /// A reader's answer (dropped when its deadline already decided it); the
    /// execs it releases, in the order they came.
    pub fn take(&mut self, done: Done) -> Vec<(Exec, Option<Verdict>)> {
        if let Some(w) = self.waiting.get_mut(&done.id) {
            w.answer = Answer::Decided(done.verdict);
        }
        let mut out = Vec::new();
        self.release(&mut out);
        out
    }

    /// When the next deadline falls, if any exec waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.first_key_value().map(|(_, w)| w.deadline)
    }

    /// The execs whose deadline has passed at `now`, those without an answer
    /// decided without their file, and the answered ones behind them.
    pub fn expire(&mut self, now: Instant) -> Vec<(Exec, Option<Verdict>)> {
        let mut out = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            let w = entry.remove();
            let verdict = match w.answer {
                Answer::Decided(verdict) => verdict,
                Answer::Pending => {
                    let why = format!(
                        "reading the file did not finish within {DEADLINE:?} (a file system \
                         that does not answer?; {} of at most {MAX_READERS} readers started)",
                        self.shared.lock().threads
                    );
                    unavailable(&w.exec, &why)
                }
            };
            out.push((w.exec, verdict));
        }
        self.release(&mut out);
        out
    }

    /// Moves the answered execs at the front, in order, to `out`.
    fn release(&mut self, out: &mut Vec<(Exec, Option<Verdict>)>) {
        while let Some(entry) = self.waiting.first_entry() {
            if matches!(entry.get().answer, Answer::Pending) {
                break;
            }
            let w = entry.remove();
            if let Answer::Decided(verdict) = w.answer {
                out.push((w.exec, verdict));
            }
        }
    }
}

/// The verdict on `exec` without its file, for `why`.
pub fn unavailable(exec: &Exec, why: &str) -> Option<Verdict> {
    detect::detect(exec, detect::header_decision(exec), Files::Unavailable(why)).unwrap_or_default()
}

/// A reader thread: hands execs to its helper until the sensor stops.
fn reader(shared: &Shared, done: &UnboundedSender<Done>) {
    // Started before its first job (a failure is retried then).
    let mut helper = spawn_helper().ok();
    loop {
        let mut q = shared.lock();
        let job = loop {
            if let Some(job) = q.jobs.pop_front() {
                break job;
            }
            q.idle += 1;
            q = shared.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
            q.idle -= 1;
        };
        drop(q);
        let verdict = match ask(&mut helper, &job) {
            Ok(verdict) => verdict,
            Err(err) => {
                // A helper that failed is not asked again; the next job starts another.
                if let Some(mut h) = helper.take() {
                    let _ = h.child.kill();
                }
                unavailable(&job.exec, &format!("the file reader failed: {err:#}"))
            }
        };
        if done
            .send(Done {
                id: job.id,
                verdict,
            })
            .is_err()
        {
            return; // the run loop is gone: the sensor stops
        }
    }
}

/// A helper process and its pipes.
struct Helper {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
}

/// One exec to the helper (started when there is none), its verdict back.
fn ask(helper: &mut Option<Helper>, job: &Job) -> Result<Option<Verdict>> {
    let h = match helper {
        Some(h) => h,
        None => helper.insert(spawn_helper()?),
    };
    write_message(&mut h.to, &job.record).context("writing to the file reader")?;
    let answer = read_message(&mut h.from)
        .context("reading the file reader's answer")?
        .context("the file reader exited")?;
    serde_json::from_slice(&answer).context("the file reader's answer")
}

fn spawn_helper() -> Result<Helper> {
    // This very binary: /proc/self/exe is it even once its path is replaced.
    let mut child = Command::new("/proc/self/exe")
        .arg0("tinyexec-sensor")
        .arg(SUBCOMMAND)
        .arg(std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Not the sensor's stderr: a helper stuck for good would hold it open
        // (and whoever waits for its end) after the sensor has exited. What
        // goes wrong in a helper reaches the sensor as a broken pipe.
        .stderr(Stdio::null())
        .spawn()
        .context("starting a file reader process")?;
    let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the file reader process has no pipes");
    };
    Ok(Helper { child, to, from })
}

/// A length (4 bytes, native order: both ends are this binary) and the bytes.
fn write_message(w: &mut impl io::Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut msg = Vec::with_capacity(4 + bytes.len());
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(bytes);
    w.write_all(&msg)?;
    w.flush()
}

/// The next message; None at the end of the stream.
fn read_message(r: &mut impl io::Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_ne_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::other(format!("a message of {len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

/// `tinyexec-sensor read-files PARENT`: the helper. Reads kernel records on
/// stdin, answers each with its verdict (JSON) on stdout, until stdin closes.
/// Dies with the sensor (`PR_SET_PDEATHSIG`), once whatever it waits in lets it.
pub fn serve(parent: u32) -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        bail!("prctl(PR_SET_PDEATHSIG): {}", io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Ok(()); // the sensor is already gone
    }
    // Its name in ps and top (it was exec'd as /proc/self/exe).
    // SAFETY: prctl with a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"tinyexec-read".as_ptr(), 0, 0, 0) };
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut clock = BootClock::new();
    while let Some(record) = read_message(&mut input)? {
        clock.refresh(); // follows wall-clock steps
        let verdict = match decode::decode(&record) {
            Ok(exec) => detect::detect(&exec, detect::header_decision(&exec), Files::Read(&clock))
                .unwrap_or_default(),
            Err(err) => Some(Verdict::Undetermined {
                reason: format!("the file reader could not decode the record: {err:#}"),
            }),
        };
        let answer = serde_json::to_vec(&verdict)?;
        write_message(&mut output, &answer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{read_message, write_message};

    #[test]
    fn messages_round_trip_and_end_cleanly() {
        let mut pipe = Vec::new();
        write_message(&mut pipe, b"one").unwrap();
        write_message(&mut pipe, b"").unwrap();
        let mut r = pipe.as_slice();
        assert_eq!(read_message(&mut r).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(read_message(&mut r).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(read_message(&mut r).unwrap(), None);
        let huge = (u32::MAX).to_ne_bytes();
        assert!(read_message(&mut &huge[..]).is_err());
    }
}
