//! The sensor under measurement: how it is started, one storm with it
//! watching, and what it printed.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tinyexec_harness::process::Proc;

use super::{
    bpf,
    floor::Floor,
    measured::{Measured, Mode},
    proc::{self, ProgStats},
    storm::{self, Storm},
};

/// How long the sensor may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_mins(1);

/// One storm with the sensor running in `mode`, started for this storm alone:
/// its counters (CPU, lost records, program run time, output) are the storm's.
pub fn storm(
    sensor: &SensorCmd,
    mode: Mode,
    s: &Storm,
    workers: usize,
    out_dir: &Path,
) -> Result<Measured> {
    let out_path = out_dir.join(match mode {
        Mode::Alerts => "alerts-only.jsonl".to_owned(),
        Mode::AllExecs => format!("all-execs-{workers}w.jsonl"),
    });
    let out =
        File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    // Empty programs before and after the sensor's entry (`floor.rs`): the
    // first program on the tracepoint pays for what is cold on each exec
    // (here about 80 ns), the ones after it do not, so ours is measured
    // between two and compared with the one after it, in the same place.
    let first = Floor::attach()?;
    let spawned = Instant::now();
    let mut p = Proc::spawn("tinyexec-sensor", sensor.command(mode).stdout(out))?;
    let ready = p.wait_ready(READY_TIMEOUT)?.duration_since(spawned);
    let ours = bpf::sensor_programs(p.pid());
    let after = Floor::attach()?;
    let (first0, after0) = (first.stats(), after.stats());
    let progs0 = proc::bpf_progs(p.pid());
    let ticks0 = proc::cpu_ticks(p.pid())?;
    let ns0 = proc::cpu_ns(p.pid())?;
    let took = storm::run(&s.path, s.n, workers)?;
    proc::wait_idle(p.pid(), Duration::from_millis(500), Duration::from_secs(30))?;
    if p.exited() {
        let status = p.stop(libc::SIGTERM, Duration::from_secs(1))?;
        bail!(
            "the sensor ended during the storm ({status}); stderr:\n{}",
            p.stderr_tail()
        );
    }
    let ticks1 = proc::cpu_ticks(p.pid())?;
    let ns1 = proc::cpu_ns(p.pid())?;
    let hwm = proc::vm_hwm_kib(p.pid())?;
    let rss = proc::vm_rss_kib(p.pid()).ok();
    let rss_anon = proc::status_kib(p.pid(), "RssAnon:").ok();
    let progs1 = proc::bpf_progs(p.pid());
    let (first1, after1) = (first.stats(), after.stats());
    drop((first, after));
    stop(&mut p)?;
    let mut bpf = ProgStats::default();
    for (id, b) in progs1.iter().filter(|(id, _)| ours.contains(id)) {
        let ran = b.since(progs0.get(id).copied().unwrap_or_default());
        bpf.run_time_ns += ran.run_time_ns;
        bpf.run_cnt += ran.run_cnt;
    }
    let counts = count_records(&out_path, &s.path_str())?;
    Ok(Measured {
        took,
        execs: s.n,
        cpu_ticks: ticks1.saturating_sub(ticks0),
        cpu_ns: ns1.saturating_sub(ns0),
        hwm_kib: Some(hwm),
        rss_kib: rss,
        rss_anon_kib: rss_anon,
        bpf: (!ours.is_empty()).then_some(bpf),
        floor_first: Some(first1.since(first0)),
        floor: Some(after1.since(after0)),
        seen: Some(counts.emitted),
        lost: Some(counts.lost + counts.dropped),
        ready: Some(ready),
    })
}

/// The sensor under test and the arguments every run of it gets: no
/// exclusions, and an empty configuration file so that an installed
/// `/etc/tinyexec/config.toml` (outputs, prevent mode...) plays no part.
pub struct SensorCmd {
    path: PathBuf,
    config: Option<PathBuf>,
}

impl SensorCmd {
    pub fn new(path: PathBuf, dir: &Path) -> Result<Self> {
        let help = Command::new(&path)
            .args(["run", "--help"])
            .output()
            .with_context(|| format!("running {} run --help", path.display()))?;
        let config = if String::from_utf8_lossy(&help.stdout).contains("--config") {
            let p = dir.join("empty-config.toml");
            fs::write(&p, "# cargo xtask bench: defaults only\n")?;
            Some(p)
        } else {
            None
        };
        Ok(Self { path, config })
    }

    pub fn command(&self, mode: Mode) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(["run", "--no-exclusions"]);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        if mode == Mode::AllExecs {
            cmd.arg("--all-execs");
        }
        cmd
    }
}

struct Counts {
    /// Exec records of the storm binary.
    emitted: u64,
    /// The last `lost.total`.
    lost: u64,
    /// stdout's queue drops, from the last heartbeat.
    dropped: u64,
}

fn count_records(path: &Path, storm_path: &str) -> Result<Counts> {
    let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut c = Counts {
        emitted: 0,
        lost: 0,
        dropped: 0,
    };
    for line in BufReader::new(f).lines() {
        let line = line?;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("the sensor printed a non-JSON line: {line}"))?;
        match v["event"]["action"].as_str() {
            Some("lost") => c.lost = c.lost.max(v["lost"]["total"].as_u64().unwrap_or(0)),
            // Records stdout's queue could not take are reported loss too.
            Some("heartbeat") => {
                c.dropped = v["heartbeat"]["outputs"]["stdout"]["dropped"]
                    .as_u64()
                    .unwrap_or(0);
            }
            Some("exec") if v["file"]["path"].as_str() == Some(storm_path) => c.emitted += 1,
            _ => {}
        }
    }
    Ok(c)
}

/// Stops the sensor (SIGTERM) and fails unless it exited 0.
pub fn stop(p: &mut Proc) -> Result<()> {
    let status = p.stop(libc::SIGTERM, Duration::from_secs(30))?;
    if !status.success() {
        bail!(
            "the sensor exited with {status}; stderr:\n{}",
            p.stderr_tail()
        );
    }
    Ok(())
}
