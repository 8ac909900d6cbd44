//! The exec storm: worker threads that fork and exec a static binary as fast as
//! they can, each child checked to exit 0.

use std::{
    ffi::{CStr, CString},
    os::unix::ffi::OsStrExt as _,
    path::Path,
    ptr,
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::interrupted;

/// Forks and execs `path` `n` times in all, split over `workers` threads that
/// start together; returns the wall time from their start to the last child's
/// exit. Every child must exit 0.
pub fn run(path: &Path, n: usize, workers: usize) -> Result<Duration> {
    let exe = CString::new(path.as_os_str().as_bytes()).context("storm binary path")?;
    let workers = workers.max(1);
    let barrier = Barrier::new(workers + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let count = n / workers + usize::from(w < n % workers);
                let (exe, barrier) = (&exe, &barrier);
                s.spawn(move || worker(exe, count, barrier))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut first_err = None;
        for h in handles {
            let res = h
                .join()
                .unwrap_or_else(|_| Err(anyhow!("storm worker panicked")));
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        let took = start.elapsed();
        match first_err {
            Some(e) => Err(e),
            None => Ok(took),
        }
    })
}

/// One worker: everything the child needs is prepared before the loop, so the
/// child between fork and execve only calls async-signal-safe functions.
fn worker(exe: &CStr, count: usize, barrier: &Barrier) -> Result<()> {
    let argv: [*const libc::c_char; 2] = [exe.as_ptr(), ptr::null()];
    let envp: [*const libc::c_char; 1] = [ptr::null()];
    barrier.wait();
    for i in 0..count {
        if interrupted() {
            bail!("interrupted");
        }
        // SAFETY: the child only calls execve and _exit, both async-signal-safe,
        // on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above; _exit never returns.
            unsafe {
                libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        if pid < 0 {
            bail!("fork failed: {}", std::io::Error::last_os_error());
        }
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                bail!("waitpid({pid}): {err}");
            }
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!(
                "exec {} #{i}: child did not exit 0 (wait status {status:#x}; 127 = execve failed)",
                exe.to_string_lossy()
            );
        }
    }
    Ok(())
}
