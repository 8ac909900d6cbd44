//! The exec storm: worker processes that fork and exec a static binary as fast
//! as they can, each child checked to exit 0.
//!
//! Workers are single-threaded processes forked from xtask, not threads: a
//! fork from a multi-threaded process pays for TLB shootdowns on the CPUs its
//! other threads ran on (IPIs, expensive in a VM), and a slower spawner would
//! dilute the sensor's cost per exec and flatter it.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    ptr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::signals::interrupted;

/// The storm: which binary, how many execs; `probe` is a copy under another
/// name, for checking that a peer sees execs before its storm.
#[derive(Clone)]
pub struct Storm {
    pub path: PathBuf,
    pub probe: PathBuf,
    pub n: usize,
}

impl Storm {
    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
    pub fn probe_str(&self) -> String {
        self.probe.to_string_lossy().into_owned()
    }
}

/// How a worker failed, sent to the parent through a pipe: (what, value).
const FAIL_STATUS: i32 = 1;
const FAIL_FORK: i32 = 2;
const FAIL_WAIT: i32 = 3;
const FAIL_INTERRUPTED: i32 = 4;

/// Forks and execs `path` `n` times in all, split over `workers` processes that
/// start together; returns the wall time from their start to the last one's
/// end. Every exec'd child must exit 0.
pub fn run(path: &Path, n: usize, workers: usize) -> Result<Duration> {
    run_with(path, &[], n, workers, false)
}

/// As [`run`], each exec with `args` after its name.
pub fn run_with_args(path: &Path, args: &[CString], n: usize, workers: usize) -> Result<Duration> {
    run_with(path, args, n, workers, false)
}

/// One exec of `path`, waited for. A SIGKILL is accepted too: a prevent-mode
/// sensor elsewhere on the machine kills matching binaries, and the exec
/// happened all the same.
pub fn once(path: &Path) -> Result<()> {
    run_with(path, &[], 1, 1, true).map(drop)
}

fn pipe() -> Result<[libc::c_int; 2]> {
    let mut fds = [0; 2];
    // SAFETY: fds points to two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", io::Error::last_os_error());
    }
    Ok(fds)
}

fn close(fd: libc::c_int) {
    // SAFETY: closing a descriptor this module opened.
    unsafe { libc::close(fd) };
}

fn run_with(
    path: &Path,
    args: &[CString],
    n: usize,
    workers: usize,
    sigkill_ok: bool,
) -> Result<Duration> {
    // Everything a worker touches is prepared here: after fork it calls only
    // async-signal-safe functions (read, fork, execve, waitpid, write, _exit).
    let exe = CString::new(path.as_os_str().as_bytes()).context("storm binary path")?;
    let argv: Vec<*const libc::c_char> = std::iter::once(exe.as_ptr())
        .chain(args.iter().map(|a| a.as_ptr()))
        .chain(std::iter::once(ptr::null()))
        .collect();
    let envp: [*const libc::c_char; 1] = [ptr::null()];
    let workers = workers.max(1);
    let [go_r, go_w] = pipe()?;
    let [fail_r, fail_w] = match pipe() {
        Ok(p) => p,
        Err(e) => {
            close(go_r);
            close(go_w);
            return Err(e);
        }
    };
    let mut pids = Vec::with_capacity(workers);
    let mut fork_err = None;
    for w in 0..workers {
        let count = n / workers + usize::from(w < n % workers);
        // SAFETY: the child runs `worker`, which only makes async-signal-safe calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            close(go_w);
            close(fail_r);
            let mut b = 0u8;
            // Blocks until the parent closes its end: every worker starts together.
            // SAFETY: one byte into a local.
            unsafe { libc::read(go_r, (&raw mut b).cast(), 1) };
            let code = worker(&exe, &argv, &envp, count, sigkill_ok, fail_w);
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            fork_err = Some(io::Error::last_os_error());
            break;
        }
        pids.push(pid);
    }
    close(go_r);
    close(fail_w);
    if let Some(e) = fork_err {
        for &pid in &pids {
            // SAFETY: killing and reaping our own workers, not yet started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, ptr::null_mut(), 0);
            }
        }
        close(go_w);
        close(fail_r);
        bail!("fork of a storm worker failed: {e}");
    }
    let start = Instant::now();
    close(go_w);
    let mut bad = Vec::new();
    for &pid in &pids {
        let status = wait(pid);
        match status {
            Ok(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => {}
            Ok(s) => bad.push(format!("worker {pid} ended with wait status {s:#x}")),
            Err(e) => bad.push(format!("waitpid({pid}): {e}")),
        }
    }
    let took = start.elapsed();
    let mut report = [0i32; 2];
    let mut failures = Vec::new();
    // SAFETY: reading two ints into a local; the write ends are closed, so this ends.
    while unsafe { libc::read(fail_r, report.as_mut_ptr().cast(), 8) } == 8 {
        failures.push(report);
    }
    close(fail_r);
    if let Some([what, value]) = failures.first().copied() {
        let exe = path.display();
        match what {
            FAIL_STATUS => bail!(
                "exec {exe}: a child did not exit 0 (wait status {value:#x}; exit 127 = execve failed)"
            ),
            FAIL_FORK => bail!("fork failed: {}", io::Error::from_raw_os_error(value)),
            FAIL_WAIT => bail!("waitpid failed: {}", io::Error::from_raw_os_error(value)),
            FAIL_INTERRUPTED => bail!("interrupted"),
            _ => bail!("storm worker failed ({what}, {value})"),
        }
    }
    if !bad.is_empty() {
        bail!("storm of {}: {}", path.display(), bad.join("; "));
    }
    Ok(took)
}

/// Waits for `pid`, retrying on EINTR; returns the wait status.
fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// A worker process's loop; returns its exit code, after writing what went
/// wrong (if anything) to `fail_w`.
fn worker(
    exe: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char; 1],
    count: usize,
    sigkill_ok: bool,
    fail_w: libc::c_int,
) -> i32 {
    let fail = |what: i32, value: i32| {
        let report = [what, value];
        // SAFETY: writing two ints from a local; 8 bytes to a pipe is atomic.
        unsafe { libc::write(fail_w, report.as_ptr().cast(), 8) };
        1
    };
    for _ in 0..count {
        if interrupted() {
            return fail(FAIL_INTERRUPTED, 0);
        }
        // SAFETY: the child only calls execve and _exit on memory prepared before.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above; _exit never returns.
            unsafe {
                libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        if pid < 0 {
            return fail(FAIL_FORK, errno());
        }
        let status = match wait(pid) {
            Ok(s) => s,
            Err(e) => return fail(FAIL_WAIT, e.raw_os_error().unwrap_or(0)),
        };
        let exited_0 = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        let killed = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL;
        let ok = exited_0 || (sigkill_ok && killed);
        if !ok {
            return fail(FAIL_STATUS, status);
        }
    }
    0
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storms_of_true_and_false() {
        let t = Path::new("/bin/true");
        if !t.exists() {
            return;
        }
        run(t, 20, 2).expect("storm of /bin/true");
        let f = Path::new("/bin/false");
        let err = run(f, 3, 1).expect_err("/bin/false exits 1");
        assert!(err.to_string().contains("did not exit 0"), "{err}");
        let missing = Path::new("/nonexistent/tinyexec-bench");
        let err = run(missing, 1, 1).expect_err("execve fails");
        assert!(err.to_string().contains("127"), "{err}");
    }
}
