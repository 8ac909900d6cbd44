//! `cargo xtask bench`: what the sensor costs on this machine. Exec storms
//! with and without the sensor (and peers), alternating so drift cancels;
//! loss with `--all-execs`; exec-to-alert latency; the sensor's CPU time,
//! peak RSS and the kernel's own run time of its program. See docs/performance.md.

mod latency;
mod outputs;
mod peers;
mod proc;
mod report;
mod storm;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tinyexec_ebpf::{
    names,
    rule::{S1, S2},
};
use tinyexec_harness::elf::{Arch, TinyElf};

use crate::{
    cmd::{find_cmd, output_of},
    setup, step,
};
use proc::ProgStats;
use tinyexec_harness::process::Proc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execs per storm (default: calibrated so one single-worker storm takes about 1 s).
    #[arg(long, value_name = "N")]
    execs: Option<usize>,
    /// Repetitions of each measurement, each next to its own no-sensor runs.
    #[arg(long, value_name = "N", default_value_t = 5)]
    reps: usize,
    /// Install the peers (bpftrace, libbpf-tools' execsnoop, auditd) from Debian
    /// first; without it only the peers already installed are measured.
    #[arg(long, conflicts_with = "no_peers")]
    peers: bool,
    /// Measure the sensor alone, even when peers are installed.
    #[arg(long)]
    no_peers: bool,
    /// Execs of a matching binary for the exec-to-alert latency.
    #[arg(long, value_name = "N", default_value_t = 300)]
    latency_execs: usize,
    /// Measure this sensor binary instead of building the workspace's (release).
    #[arg(long, value_name = "PATH")]
    sensor: Option<PathBuf>,
    /// Measure only these parts (repeatable) [default: all].
    #[arg(long, value_enum, value_name = "PART")]
    only: Vec<Part>,
}

/// The bench's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Exec storms with and without the sensor (and peers): ratios, cost, loss.
    Storms,
    /// Exec-to-alert latency in both modes under background exec load.
    Latency,
    /// --all-execs with all four outputs on: records/s, CPU per 1000 execs.
    Outputs,
}

/// Worker counts of the storms.
const WORKERS: [usize; 2] = [1, 2];
/// How long the sensor may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Peak RSS target, MiB.
pub const RSS_TARGET_MIB: f64 = 24.0;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT/SIGTERM end the bench between execs, so the guards (bpf_stats,
/// audit rule, auditd) restore what they changed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

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

/// One storm with something watching it.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub took: Duration,
    pub execs: usize,
    /// CPU (user + system) of the watching process during the storm and until it went idle.
    pub cpu_ticks: u64,
    /// The same from its CPU-time clock, ns (exact).
    pub cpu_ns: u64,
    /// Peak RSS (VmHWM) of the watching process, KiB.
    pub hwm_kib: Option<u64>,
    /// Its resident set after the storm (VmRSS), KiB.
    pub rss_kib: Option<u64>,
    /// The anonymous part of it (RssAnon: heap, stacks), KiB.
    pub rss_anon_kib: Option<u64>,
    /// Run time of its BPF programs during the storm (bpf_stats).
    pub bpf: Option<ProgStats>,
    /// Records (lines) naming the storm binary in its output.
    pub seen: Option<u64>,
    /// Records the sensor reported lost (`lost.total` at its exit).
    pub lost: Option<u64>,
    /// The sensor's start to its `ready` line (a sensor is started per storm).
    pub ready: Option<Duration>,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.execs as f64 / self.took.as_secs_f64()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Alerts,
    AllExecs,
}

/// What watches a storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watcher {
    Sensor(Mode),
    Peer(peers::Kind),
}

/// One line of the storm table: a watcher, a binary, a worker count.
pub struct Row {
    pub watcher: Watcher,
    pub label: String,
    pub binary_bytes: usize,
    pub workers: usize,
    pub ratios: Vec<f64>,
    pub runs: Vec<Measured>,
    pub unavailable: Option<String>,
}

/// BPF programs not ours that ran on the execs of the no-watcher storms.
#[derive(Debug, Default)]
pub struct Others {
    pub storms: usize,
    pub with_others: usize,
    pub max_at_once: usize,
    /// Program name -> in how many storms.
    pub names: BTreeMap<String, usize>,
}

/// No-watcher storms of one binary at one worker count, execs/s.
pub struct Baseline {
    pub workers: usize,
    pub binary_bytes: usize,
    pub rates: Vec<f64>,
}

pub fn run(root: &Path, args: &Args) -> Result<()> {
    setup::require_root("the bench loads eBPF programs and changes kernel.bpf_stats_enabled")?;
    let started = SystemTime::now();
    let load_at_start = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let auditd_was_running = peers::auditd_pid().is_some();
    let sensor = match &args.sensor {
        Some(p) => fs::canonicalize(p).with_context(|| format!("sensor {}", p.display()))?,
        None => crate::build(root, true)?,
    };
    let workspace = report::workspace_state(root);
    if find_cmd("bpftool").is_none() {
        step("installing bpftool (names the sensor's program for its kernel run time)");
        setup::apt_install(&["bpftool"])?;
    }
    let peer_list = if args.no_peers {
        Vec::new()
    } else {
        peers::prepare(args.peers)
    };
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }

    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let bins = Binaries::write()?;
    let sensor_cmd = SensorCmd::new(sensor.clone(), &bins.dir)?;
    let any_peer = peer_list.iter().any(|p| p.state.is_ok());
    if any_peer {
        peers::ensure_tracefs()?;
    }
    let (auditd, auditd_err) = start_auditd(&peer_list, auditd_was_running);
    let bpf_stats = BpfStats::enable()?;

    let reps = args.reps.max(1);
    let wants = |part: Part| args.only.is_empty() || args.only.contains(&part);
    let n = match args.execs {
        Some(n) => n.max(1),
        None if !wants(Part::Storms) && !wants(Part::Outputs) => 0,
        None => {
            step("calibrating the storm size (no sensor, 1 worker)");
            calibrate(&bins.candidate)?
        }
    };
    let storm = Storm {
        path: bins.candidate.clone(),
        probe: bins.probe.clone(),
        n,
    };
    let ordinary = Storm {
        path: bins.ordinary.clone(),
        ..storm.clone()
    };

    let mut rows = plan(&bins, &peer_list, auditd.is_some(), auditd_err);
    if !wants(Part::Storms) {
        rows.clear();
    }
    let storms_per_rep: usize = rows.iter().filter(|r| r.unavailable.is_none()).count();
    step(&format!(
        "{reps} repetitions of {storms_per_rep} storms of {n} execs (1 and 2 workers), each between \
         two storms of the same binary with nothing watching; about {} s",
        estimate_secs(reps, storms_per_rep, n)
    ));
    let watchers = Watchers {
        sensor: &sensor_cmd,
        peers: &peer_list,
        auditd: auditd.as_ref(),
        out_dir: &out_dir,
    };
    let storms = [(bins.candidate_len, &storm), (bins.ordinary_len, &ordinary)];
    let (baselines, others) = measure(&watchers, &mut rows, &storms, reps)?;

    let mut latencies = Vec::new();
    for mode in [Mode::Alerts, Mode::AllExecs] {
        if !wants(Part::Latency) {
            break;
        }
        step(&format!(
            "exec-to-alert latency: {} execs of a matching {} B binary, {} sensor, \
             a {} B binary exec'd every {:?} meanwhile",
            args.latency_execs,
            bins.matcher_len,
            report::mode_name(mode),
            bins.ordinary_len,
            latency::BACKGROUND_EVERY
        ));
        latencies.push(latency::measure(
            &sensor_cmd,
            mode,
            &bins.matcher,
            &bins.ordinary,
            args.latency_execs,
        )?);
    }
    let mut output_runs = Vec::new();
    if wants(Part::Outputs) {
        setup::test_tools()?;
        let runs = reps;
        step(&format!(
            "--all-execs with stdout, a file, syslog over UDP and Sentinel (HTTPS stand-in): \
             {runs} storms of {n} execs, {} workers",
            outputs::WORKERS
        ));
        for i in 0..runs {
            let r = outputs::storm_with_outputs(&sensor_cmd, &storm, &out_dir.join("outputs"))?;
            step(&format!(
                "outputs {}/{runs}: {} records in {:.2} s ({:.0}/s), stdout {} file {} syslog {} sentinel {}",
                i + 1,
                r.stdout,
                r.busy.as_secs_f64(),
                r.records_per_sec(),
                r.stdout,
                r.file,
                r.syslog,
                r.sentinel
            ));
            output_runs.push(r);
        }
    }
    drop(bpf_stats);
    drop(auditd);

    let report = report::Report {
        started,
        sensor: &sensor,
        workspace,
        built: args.sensor.is_none(),
        n,
        reps,
        baselines: &baselines,
        others: &others,
        load_at_start: load_at_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        rows: &rows,
        latency: &latencies,
        outputs: &output_runs,
        binaries: [
            ("rule candidate", bins.candidate_len),
            ("ordinary", bins.ordinary_len),
            ("matching", bins.matcher_len),
        ],
    };
    let table = report.table();
    println!("{table}");
    let json = serde_json::to_string_pretty(&report.json())?;
    let secs = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stamped = out_dir.join(format!("bench-{secs}.json"));
    fs::write(&stamped, &json)?;
    fs::write(out_dir.join("latest.json"), &json)?;
    fs::write(out_dir.join("latest.txt"), &table)?;
    step(&format!(
        "wrote {} (also target/bench/latest.json and latest.txt)",
        stamped.display()
    ));
    Ok(())
}

/// What can watch a storm.
struct Watchers<'a> {
    sensor: &'a SensorCmd,
    peers: &'a [peers::Peer],
    auditd: Option<&'a peers::Auditd>,
    out_dir: &'a Path,
}

/// Every storm of every repetition: for each worker count and binary, storms
/// with each watcher between storms with nothing watching. A peer that fails
/// is marked unavailable and skipped from then on; the sensor failing ends the bench.
fn measure(
    w: &Watchers<'_>,
    rows: &mut [Row],
    storms: &[(usize, &Storm)],
    reps: usize,
) -> Result<(Vec<Baseline>, Others)> {
    let mut baselines: Vec<Baseline> = WORKERS
        .iter()
        .flat_map(|&workers| {
            storms.iter().map(move |&(binary_bytes, _)| Baseline {
                workers,
                binary_bytes,
                rates: Vec::new(),
            })
        })
        .collect();
    let mut others = Others::default();
    for rep in 0..reps {
        for &workers in &WORKERS {
            for (bytes, s) in rotated(storms, rep) {
                let idx: Vec<usize> = (0..rows.len())
                    .filter(|&i| rows[i].workers == workers && rows[i].binary_bytes == bytes)
                    .filter(|&i| rows[i].unavailable.is_none())
                    .collect();
                if idx.is_empty() {
                    continue;
                }
                let b = baselines
                    .iter()
                    .position(|b| b.workers == workers && b.binary_bytes == bytes)
                    .context("baseline slot")?;
                let mut before = baseline(s, workers, &mut others)?;
                baselines[b].rates.push(before);
                // Rotated each repetition: no configuration always comes first.
                for i in rotated(&idx, rep) {
                    if rows[i].unavailable.is_some() {
                        continue;
                    }
                    let measured = match rows[i].watcher {
                        Watcher::Sensor(mode) => {
                            sensor_storm(w.sensor, mode, s, workers, w.out_dir)?
                        }
                        Watcher::Peer(kind) => {
                            let peer = w
                                .peers
                                .iter()
                                .find(|p| p.kind == kind)
                                .context("peer list")?;
                            match peers::storm(peer, w.auditd, s, workers) {
                                Ok(m) => m,
                                Err(e) if !interrupted() => {
                                    let why = format!("{e:#}");
                                    step(&format!("{}: cannot run: {why}", kind.label()));
                                    for r in
                                        rows.iter_mut().filter(|r| r.watcher == Watcher::Peer(kind))
                                    {
                                        r.unavailable = Some(why.clone());
                                    }
                                    continue;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    };
                    let after = baseline(s, workers, &mut others)?;
                    baselines[b].rates.push(after);
                    let ratio = measured.rate() / ((before + after) / 2.0);
                    step(&format!(
                        "rep {}/{reps}, {workers} worker(s): {}: {:.0} execs/s, ratio {ratio:.3}",
                        rep + 1,
                        rows[i].label,
                        measured.rate()
                    ));
                    rows[i].ratios.push(ratio);
                    rows[i].runs.push(measured);
                    before = after;
                }
            }
        }
    }

    Ok((baselines, others))
}

/// The rows of the table: the sensor's three configurations and each peer,
/// at each worker count.
fn plan(
    bins: &Binaries,
    peer_list: &[peers::Peer],
    auditd_running: bool,
    auditd_err: Option<String>,
) -> Vec<Row> {
    let sensor_rows = [
        (
            Mode::Alerts,
            "alerts-only",
            bins.candidate_len,
            "rule candidate",
        ),
        (Mode::Alerts, "alerts-only", bins.ordinary_len, "ordinary"),
        (
            Mode::AllExecs,
            "--all-execs",
            bins.candidate_len,
            "rule candidate",
        ),
    ];
    let mut rows = Vec::new();
    for &workers in &WORKERS {
        for (mode, name, len, what) in sensor_rows {
            rows.push(Row {
                watcher: Watcher::Sensor(mode),
                label: format!("tinyexec {name}, {len} B {what}"),
                binary_bytes: len,
                workers,
                ratios: Vec::new(),
                runs: Vec::new(),
                unavailable: None,
            });
        }
        for p in peer_list {
            let mut unavailable = p.state.as_ref().err().cloned();
            if p.kind == peers::Kind::Auditd && unavailable.is_none() && !auditd_running {
                let why = auditd_err.clone();
                unavailable = Some(why.unwrap_or_else(|| "auditd not found".into()));
            }
            rows.push(Row {
                watcher: Watcher::Peer(p.kind),
                label: p.kind.label().to_owned(),
                binary_bytes: bins.candidate_len,
                workers,
                ratios: Vec::new(),
                runs: Vec::new(),
                unavailable,
            });
        }
    }
    rows
}

/// auditd running for its peer (started when needed), or why not.
fn start_auditd(
    peer_list: &[peers::Peer],
    was_running: bool,
) -> (Option<peers::Auditd>, Option<String>) {
    let wanted = peer_list
        .iter()
        .any(|p| p.kind == peers::Kind::Auditd && p.state.is_ok());
    if !wanted {
        return (None, None);
    }
    let Some(daemon) = find_cmd("auditd") else {
        return (None, Some("auditd not found".into()));
    };
    match peers::Auditd::ensure(&daemon, was_running) {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    }
}

/// `v` rotated left by `k` (mod its length).
fn rotated<T: Clone>(v: &[T], k: usize) -> Vec<T> {
    let k = if v.is_empty() { 0 } else { k % v.len() };
    v[k..].iter().chain(&v[..k]).cloned().collect()
}

fn estimate_secs(reps: usize, storms: usize, n: usize) -> usize {
    // Per storm: itself and its no-sensor neighbour (~1 s each at the
    // calibrated size), plus starting and stopping what watches it.
    let per = 2.0 * n as f64 / 3000.0 + 1.0;
    (reps as f64 * storms as f64 * per) as usize + 10
}

/// Execs per second with nothing of ours watching. Other BPF programs that
/// ran on its execs (another tool, another test's sensor) are noted in `others`.
fn baseline(s: &Storm, workers: usize, others: &mut Others) -> Result<f64> {
    let before = prog_counts();
    let took = storm::run(&s.path, s.n, workers)?;
    let after = prog_counts();
    others.storms += 1;
    if let (Some(before), Some(after)) = (before, after) {
        let ran: Vec<&String> = after
            .iter()
            .filter(|(id, (_, cnt))| {
                let was = before.get(id).map_or(0, |b| b.1);
                cnt.saturating_sub(was) >= s.n as u64 / 2
            })
            .map(|(_, (name, _))| name)
            .collect();
        if !ran.is_empty() {
            others.with_others += 1;
            others.max_at_once = others.max_at_once.max(ran.len());
            for name in ran {
                *others.names.entry(name.clone()).or_default() += 1;
            }
        }
    }
    Ok(s.n as f64 / took.as_secs_f64())
}

/// Every loaded BPF program's name and run count (bpftool; counted while bpf_stats is on).
fn prog_counts() -> Option<BTreeMap<u64, (String, u64)>> {
    let out = output_of(Command::new(find_cmd("bpftool")?).args(["-j", "prog", "show"]))?;
    let v: Value = serde_json::from_str(&out).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|p| {
                let id = p.get("id")?.as_u64()?;
                let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
                let cnt = p.get("run_cnt").and_then(Value::as_u64).unwrap_or(0);
                Some((id, (name.to_owned(), cnt)))
            })
            .collect(),
    )
}

/// A storm size that takes about one second with one worker.
fn calibrate(path: &Path) -> Result<usize> {
    storm::run(path, 300, 1)?;
    let took = storm::run(path, 1000, 1)?;
    let rate = 1000.0 / took.as_secs_f64();
    Ok(((rate / 100.0).round() as usize * 100).clamp(500, 50_000))
}

/// The generated binaries, in a temporary directory removed on drop.
struct Binaries {
    dir: PathBuf,
    candidate: PathBuf,
    candidate_len: usize,
    ordinary: PathBuf,
    ordinary_len: usize,
    matcher: PathBuf,
    matcher_len: usize,
    probe: PathBuf,
}

impl Binaries {
    fn write() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("tinyexec-bench-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        // Records name files as the kernel resolved them: use the real path.
        let dir = fs::canonicalize(&dir)?;
        let elf = |total_len: Option<usize>, trailer: Vec<u8>| {
            TinyElf {
                total_len,
                trailer,
                ..TinyElf::new(Arch::X86_64)
            }
            .build()
            .map_err(|e| anyhow::anyhow!("tiny ELF: {e}"))
        };
        let candidate = elf(None, Vec::new())?;
        let ordinary = elf(Some(4096), Vec::new())?;
        let matcher = elf(None, [S1.as_slice(), S2.as_slice()].concat())?;
        let put = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
            let p = dir.join(name);
            fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
            Ok(p)
        };
        Ok(Self {
            candidate: put("storm", &candidate)?,
            candidate_len: candidate.len(),
            ordinary: put("ordinary", &ordinary)?,
            ordinary_len: ordinary.len(),
            matcher: put("match", &matcher)?,
            matcher_len: matcher.len(),
            probe: put("probe", &candidate)?,
            dir,
        })
    }
}

impl Drop for Binaries {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// kernel.bpf_stats_enabled = 1 for the bench, the old value restored on drop.
struct BpfStats {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let old = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        step(&format!(
            "kernel.bpf_stats_enabled = 1 for the bench (was {old}; restored after)"
        ));
        Ok(Self { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if fs::write(BPF_STATS, &self.old).is_ok() {
            step(&format!(
                "kernel.bpf_stats_enabled restored to {}",
                self.old
            ));
        }
    }
}

/// One storm with the sensor running in `mode`, started for this storm alone:
/// its counters (CPU, lost records, program run time, output) are the storm's.
fn sensor_storm(
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
    let spawned = Instant::now();
    let mut p = Proc::spawn("tinyexec-sensor", sensor.command(mode).stdout(out))?;
    let ready = p.wait_ready(READY_TIMEOUT)?.duration_since(spawned);
    let ours = sensor_programs(&p);
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
    let status = p.stop(libc::SIGTERM, Duration::from_secs(30))?;
    if !status.success() {
        bail!(
            "the sensor exited with {status}; stderr:\n{}",
            p.stderr_tail()
        );
    }
    let mut bpf = ProgStats::default();
    for (id, b) in progs1.iter().filter(|(id, _)| ours.contains(id)) {
        let a = progs0.get(id).copied().unwrap_or_default();
        bpf.run_time_ns += b.run_time_ns.saturating_sub(a.run_time_ns);
        bpf.run_cnt += b.run_cnt.saturating_sub(a.run_cnt);
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
        seen: Some(counts.emitted),
        lost: Some(counts.lost + counts.dropped),
        ready: Some(ready),
    })
}

/// The sensor under test and the arguments every run of it gets: no
/// exclusions, and an empty configuration file so that an installed
/// `/etc/tinyexec/config.toml` (outputs, prevent mode...) plays no part.
struct SensorCmd {
    path: PathBuf,
    config: Option<PathBuf>,
}

impl SensorCmd {
    fn new(path: PathBuf, dir: &Path) -> Result<Self> {
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

    fn command(&self, mode: Mode) -> Command {
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

/// Ids of the sensor's programs named `tinyexec_exec` (bpftool names them);
/// every program it holds if bpftool cannot say.
fn sensor_programs(p: &Proc) -> BTreeSet<u32> {
    let ids: BTreeSet<u32> = proc::bpf_progs(p.pid()).into_keys().collect();
    let named: BTreeSet<u32> = ids
        .iter()
        .copied()
        .filter(|id| prog_name(*id).as_deref() == Some(names::PROGRAM))
        .collect();
    if named.is_empty() { ids } else { named }
}

fn prog_name(id: u32) -> Option<String> {
    let out = output_of(
        Command::new(find_cmd("bpftool")?)
            .args(["-j", "prog", "show", "id"])
            .arg(id.to_string()),
    )?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v.get("name")?.as_str().map(str::to_owned)
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
