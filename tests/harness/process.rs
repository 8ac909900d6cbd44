//! A child process with its stderr read line by line as it comes: the sensor
//! the tests drive, and the bench's sensors and peers. Waiting for a line,
//! stopping by signal.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The sensor's own `ready` line, not any line with the word (an error may
/// well say it will not be ready).
pub fn is_ready_line(line: &str) -> bool {
    line.starts_with("tinyexec-sensor: ready")
}

/// Why a line never came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    /// Stderr closed first: the process exited.
    Exited,
    TimedOut,
}

#[derive(Debug, Default)]
struct Stderr {
    lines: Vec<String>,
    /// When each line was read.
    read_at: Vec<Instant>,
    closed: bool,
}

#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stderr: Arc<(Mutex<Stderr>, Condvar)>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Proc {
    /// Spawns `cmd` (its stdout as the caller set it) with stdin closed and
    /// stderr collected; `name` names it in errors.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let err = child.stderr.take().context("stderr pipe")?;
        let stderr = Arc::new((Mutex::new(Stderr::default()), Condvar::new()));
        let shared = Arc::clone(&stderr);
        let reader = thread::spawn(move || {
            let (m, cv) = &*shared;
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut g = lock(m);
                g.lines.push(line);
                g.read_at.push(Instant::now());
                drop(g);
                cv.notify_all();
            }
            lock(m).closed = true;
            cv.notify_all();
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            stderr,
            reader: Some(reader),
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t")
    }

    /// Waits for a stderr line from index `from` on that satisfies `pred`;
    /// returns its index and when it was read.
    pub fn wait_line(
        &self,
        from: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<(usize, Instant), Missed> {
        let (m, cv) = &*self.stderr;
        let deadline = Instant::now() + timeout;
        let mut g = lock(m);
        loop {
            if let Some(i) = g.lines.iter().skip(from).position(|l| pred(l)) {
                return Ok((from + i, g.read_at[from + i]));
            }
            if g.closed {
                return Err(Missed::Exited);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Missed::TimedOut);
            }
            g = cv
                .wait_timeout(g, left)
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
    }

    /// Waits for the sensor's `ready` line; returns when it was read.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Instant> {
        let why = match self.wait_line(0, is_ready_line, timeout) {
            Ok((_, at)) => return Ok(at),
            Err(Missed::Exited) => "exited".to_owned(),
            Err(Missed::TimedOut) => format!("timed out after {timeout:?}"),
        };
        bail!(
            "{} {why} before printing its ready line; stderr:\n{}",
            self.name,
            self.stderr_tail()
        )
    }

    /// All of stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr.0).lines.join("\n")
    }

    /// How many lines of stderr so far.
    pub fn stderr_lines(&self) -> usize {
        lock(&self.stderr.0).lines.len()
    }

    /// The last lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let g = lock(&self.stderr.0);
        g.lines[g.lines.len().saturating_sub(15)..].join("\n")
    }

    /// Whether the process has exited (its status kept for [`Self::stop`]).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Takes the child's stdout pipe (when the caller asked for one).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Sends `signal` (unless it has exited already) and waits for the exit;
    /// past `timeout` it is killed and that is an error.
    pub fn stop(&mut self, signal: i32, timeout: Duration) -> Result<ExitStatus> {
        if !self.exited() {
            // SAFETY: kill(2) on our own child, still unreaped.
            unsafe { libc::kill(self.pid(), signal) };
        }
        self.finish(timeout)
            .with_context(|| format!("after signal {signal}"))
    }

    /// Waits for the process to exit by itself; past `timeout` it is killed
    /// and that is an error.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.finish(timeout)
    }

    fn finish(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // All of stderr is read once the pipe closes.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(status)
    }

    /// SIGKILL, when it still runs, and reaps it.
    pub fn kill(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
