//! Exec-to-alert latency under background exec load, in alerts-only and in
//! `--all-execs` mode: in the latter the background's records sit in the ring
//! without a wake-up, which is what an alert must not wait behind.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tinyexec_harness::{boottime_ns, process::Proc};

use super::{
    counting::Counting,
    measured::Mode,
    sensor::{self, READY_TIMEOUT, SensorCmd},
    signals::interrupted,
    storm,
};

/// One background exec this often (the issue's `/bin/true` every 5 ms).
pub const BACKGROUND_EVERY: Duration = Duration::from_millis(5);
/// Between two matching execs.
const APART: Duration = Duration::from_millis(2);

pub struct Latency {
    pub mode: Mode,
    pub execs: usize,
    /// Execs of the background binary during the measurement.
    pub background: u64,
    /// Exec-to-line latencies, ns, sorted.
    pub ns: Vec<u64>,
}

/// Execs `path` every [`BACKGROUND_EVERY`] until finished; counts the execs.
fn exec_in_background(path: PathBuf) -> Counting {
    // std's spawn, not `storm::once`: two storms forking at once from two
    // threads would each hand the other's start pipe to its workers and
    // deadlock them; std's spawn holds no pipe a fork could inherit.
    Counting::start(move || {
        let ran = !interrupted()
            && std::process::Command::new(&path)
                .stdin(Stdio::null())
                .status()
                .is_ok();
        thread::sleep(BACKGROUND_EVERY);
        ran
    })
}

/// `count` execs of a matching binary, [`APART`] apart, each from a copy of
/// its own (so each is a first occurrence, alerted at once, not a repeat),
/// with `background` exec'd every 5 ms meanwhile; for each alert,
/// `CLOCK_BOOTTIME` when its line is read from the sensor's stdout pipe minus
/// the kernel's exec time in the record.
pub fn measure(
    sensor: &SensorCmd,
    mode: Mode,
    matcher: &Path,
    background: &Path,
    count: usize,
) -> Result<Latency> {
    let dir = matcher.with_extension("copies");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = fs::read(matcher).with_context(|| format!("reading {}", matcher.display()))?;
    let copies: Vec<PathBuf> = (0..count)
        .map(|i| {
            let p = dir.join(format!("match-{i}"));
            fs::write(&p, &bytes)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
            Ok(p)
        })
        .collect::<Result<_>>()?;
    let mut p = Proc::spawn(
        "tinyexec-sensor",
        sensor.command(mode).stdout(Stdio::piped()),
    )?;
    let out = p.take_stdout().context("stdout pipe")?;
    let lines: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let sink = Arc::clone(&lines);
    let want = format!("{}/match-", dir.display());
    let needle = want.clone();
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(out);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let now = boottime_ns();
                    // Only the matcher's lines are kept: --all-execs prints every exec.
                    if line.contains(&needle)
                        && let Ok(mut g) = sink.lock()
                    {
                        g.push((now, line));
                    }
                }
            }
        }
    });
    p.wait_ready(READY_TIMEOUT)?;
    let bg = exec_in_background(background.to_path_buf());
    // Let the background fill the ring with records nobody was woken for.
    thread::sleep(Duration::from_millis(300));
    for copy in &copies {
        if interrupted() {
            break;
        }
        storm::once(copy)?;
        thread::sleep(APART);
    }
    let alerts = |g: &[(u64, String)]| g.iter().filter(|(_, l)| l.contains("\"alert\"")).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines.lock().map_or(0, |g| alerts(&g)) < count && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let background = bg.finish();
    let stopped = sensor::stop(&mut p);
    let _ = reader.join();
    stopped?;
    let lines = lines.lock().map(|g| g.clone()).unwrap_or_default();
    let mut ns = Vec::new();
    for (read_at, line) in &lines {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("the sensor printed a non-JSON line: {line}"))?;
        // The alert of each exec: not the aggregate of its repeats.
        if v["event"]["kind"].as_str() == Some("alert")
            && v["file"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(&want))
            && v.get("repeats").is_none()
            && let Some(k) = v["tinyexec"]["ktime_ns"].as_u64()
        {
            ns.push(read_at.saturating_sub(k));
        }
    }
    ns.sort_unstable();
    let _ = fs::remove_dir_all(&dir);
    Ok(Latency {
        mode,
        execs: count,
        background,
        ns,
    })
}
