//! Memory under hostile records: an `--all-execs` sensor while several
//! processes exec a binary from a 3.8 KiB path with 4 KiB of arguments
//! (records about ten times the ordinary size), its stdout read slowly so
//! that its queue fills to its bound. The peak RSS is what that bound allows.

use std::{
    ffi::CString,
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::Stdio,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use serde_json::{Value, json};
use tinyexec_harness::process::Proc;

use super::{
    measured::Mode,
    proc,
    sensor::{self, READY_TIMEOUT, SensorCmd},
    storm,
};

/// Peak RSS the sensor must stay within during the flood.
pub const TARGET_MIB: f64 = 32.0;
/// Processes exec'ing at once.
const WORKERS: usize = 4;
/// stdout's reader: this many lines, then a pause (about 3 MB/s for these records).
const LINES_PER_PAUSE: usize = 4;
const PAUSE: Duration = Duration::from_millis(20);

pub struct Run {
    pub execs: usize,
    pub path_len: usize,
    pub args_len: usize,
    pub hwm_kib: u64,
    pub rss_kib: Option<u64>,
    /// Exec records of the flood that reached stdout.
    pub emitted: u64,
    /// stdout's queue drops, from the last heartbeat.
    pub dropped: u64,
}

impl Run {
    pub fn peak_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }

    pub fn summary(&self) -> String {
        let verdict = if self.peak_mib() <= TARGET_MIB {
            "within"
        } else {
            "OVER"
        };
        format!(
            "Memory under hostile records: {} execs from {} workers of a {} B path with {} B of \
             arguments, --all-execs, stdout read at about 3 MB/s: peak RSS {:.1} MiB ({verdict} \
             the {TARGET_MIB} MiB target), {:.1} MiB after; {} records written, {} dropped by \
             stdout's queue",
            self.execs,
            WORKERS,
            self.path_len,
            self.args_len,
            self.peak_mib(),
            self.rss_kib.unwrap_or(0) as f64 / 1024.0,
            self.emitted,
            self.dropped
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "execs": self.execs,
            "workers": WORKERS,
            "path_bytes": self.path_len,
            "args_bytes": self.args_len,
            "peak_rss_kib": self.hwm_kib,
            "rss_after_kib": self.rss_kib,
            "target_mib": TARGET_MIB,
            "emitted": self.emitted,
            "dropped": self.dropped,
        })
    }
}

pub fn measure(sensor: &SensorCmd, ordinary: &Path, execs: usize, dir: &Path) -> Result<Run> {
    // Fifteen directories of 250 bytes: a path near the kernel program's 4 KiB.
    let mut deep = dir.join("flood");
    let _ = fs::remove_dir_all(&deep);
    for i in 0..15 {
        deep.push(format!("{i:02}{}", "d".repeat(248)));
    }
    fs::create_dir_all(&deep).with_context(|| format!("creating {}", deep.display()))?;
    let exe = deep.join("x");
    fs::copy(ordinary, &exe).with_context(|| format!("copying to {}", exe.display()))?;
    let args = (0..16)
        .map(|i| CString::new(format!("{i:02}{}", "a".repeat(253))))
        .collect::<Result<Vec<_>, _>>()?;
    let exe_str = exe.to_string_lossy().into_owned();

    let mut p = Proc::spawn(
        "tinyexec-sensor",
        sensor.command(Mode::AllExecs).stdout(Stdio::piped()),
    )?;
    let out = p
        .take_stdout()
        .ok_or_else(|| anyhow!("the sensor's stdout is not a pipe"))?;
    let reader = thread::spawn(move || {
        let (mut emitted, mut dropped) = (0u64, 0u64);
        for (i, line) in BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .enumerate()
        {
            if i % LINES_PER_PAUSE == 0 {
                thread::sleep(PAUSE);
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match v["event"]["action"].as_str() {
                Some("heartbeat") => {
                    dropped = v["heartbeat"]["outputs"]["stdout"]["dropped"]
                        .as_u64()
                        .unwrap_or(0);
                }
                Some("exec") if v["file"]["path"].as_str() == Some(exe_str.as_str()) => {
                    emitted += 1;
                }
                _ => {}
            }
        }
        (emitted, dropped)
    });
    p.wait_ready(READY_TIMEOUT)?;
    storm::run_with_args(&exe, &args, execs, WORKERS)?;
    proc::wait_idle(p.pid(), Duration::from_millis(500), Duration::from_mins(1))?;
    let hwm_kib = proc::vm_hwm_kib(p.pid())?;
    let rss_kib = proc::vm_rss_kib(p.pid()).ok();
    sensor::stop(&mut p)?;
    let (emitted, dropped) = reader
        .join()
        .map_err(|_| anyhow!("stdout's reader panicked"))?;
    let _ = fs::remove_dir_all(dir.join("flood"));
    Ok(Run {
        execs,
        path_len: exe.as_os_str().len(),
        args_len: args.iter().map(|a| a.as_bytes().len() + 1).sum(),
        hwm_kib,
        rss_kib,
        emitted,
        dropped,
    })
}
