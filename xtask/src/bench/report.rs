//! The bench's figures: the table on stdout and the same as JSON, targets beside them.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::{
    latency::Latency,
    measured::{Baseline, Measured, Mode, Others, Row, Watcher},
    outputs, proc,
};
use crate::cmd::output_of;

/// Targets (printed beside the figures; nothing asserts them).
const ALERTS_RATIO: f64 = 0.98;
const ALL_EXECS_RATIO: f64 = 0.90;
const LATENCY_P99_MS: f64 = 2.0;
/// Peak RSS, MiB.
const RSS_TARGET_MIB: f64 = 24.0;
/// The kernel program's run time per exec (`bpf_stats`, the entry with the
/// stages it tail-calls), median of the storms: an ordinary exec and a rule
/// candidate in alerts-only mode, an ordinary exec with `--all-execs`.
/// Set on a machine where an empty program there cost [`TARGETS_FLOOR_NS`]:
/// they are judged on the program's own work, its figure less that of an
/// empty program after it on the same execs (`floor.rs`), against the
/// target less that floor. Where any program costs more (a VM's clock
/// reads, retpolines), the raw figure cannot meet them and says nothing
/// about our code.
const KERNEL_NS_ORDINARY: f64 = 100.0;
const KERNEL_NS_CANDIDATE: f64 = 300.0;
const KERNEL_NS_ALL_EXECS: f64 = 1000.0;
const TARGETS_FLOOR_NS: f64 = 15.0;

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Alerts => "alerts-only",
        Mode::AllExecs => "--all-execs",
    }
}

pub struct Report<'a> {
    pub started: SystemTime,
    pub sensor: &'a Path,
    /// The workspace's commit and whether the sensor's sources differed from
    /// it, when the bench started (see [`workspace_state`]).
    pub workspace: (Option<String>, Option<bool>),
    /// Whether the bench built the sensor (or was given one with --sensor).
    pub built: bool,
    pub n: usize,
    pub reps: usize,
    /// No-watcher execs/s by worker count and binary.
    pub baselines: &'a [Baseline],
    pub others: &'a Others,
    /// 1, 5 and 15 minute load averages when the bench started.
    pub load_at_start: String,
    pub rows: &'a [Row],
    pub latency: &'a [Latency],
    pub outputs: &'a [outputs::Run],
    pub binaries: [(&'static str, usize); 3],
}

/// min, median, max.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub fn spread(v: &[f64]) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 1 {
        s[mid]
    } else {
        f64::midpoint(s[mid - 1], s[mid])
    };
    Some(Spread {
        min: s[0],
        median,
        max: s[s.len() - 1],
    })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn spread_json(s: Option<Spread>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({"min": s.min, "median": s.median, "max": s.max}),
    )
}

/// A target beside its figure.
struct Verdict {
    target: String,
    met: Option<bool>,
    why: Option<String>,
}

impl Verdict {
    fn text(&self) -> String {
        let mark = match self.met {
            Some(true) => "ok".to_owned(),
            Some(false) => match &self.why {
                Some(w) => format!("MISSED ({w})"),
                None => "MISSED".to_owned(),
            },
            None => "not measured".to_owned(),
        };
        format!("{}  {mark}", self.target)
    }

    fn json(&self) -> Value {
        json!({"target": self.target, "met": self.met, "why": self.why})
    }
}

/// Sums over a row's runs.
struct Totals {
    execs: u64,
    cpu_ticks: u64,
    cpu_ns: u64,
    hwm_kib: Option<u64>,
    rss_kib: Option<u64>,
    rss_anon_kib: Option<u64>,
    seen: Option<u64>,
    lost: Option<u64>,
    /// Start-to-ready of the runs, ms, sorted.
    ready_ms: Vec<f64>,
}

fn totals(runs: &[Measured]) -> Totals {
    let sum_opt = |f: fn(&Measured) -> Option<u64>| {
        runs.iter()
            .map(f)
            .try_fold(0u64, |acc, x| x.map(|x| acc + x))
    };
    Totals {
        execs: runs.iter().map(|r| r.execs as u64).sum(),
        cpu_ticks: runs.iter().map(|r| r.cpu_ticks).sum(),
        cpu_ns: runs.iter().map(|r| r.cpu_ns).sum(),
        hwm_kib: runs.iter().filter_map(|r| r.hwm_kib).max(),
        rss_kib: runs.iter().filter_map(|r| r.rss_kib).max(),
        rss_anon_kib: runs.iter().filter_map(|r| r.rss_anon_kib).max(),
        seen: if runs.is_empty() {
            None
        } else {
            sum_opt(|r| r.seen)
        },
        lost: if runs.is_empty() {
            None
        } else {
            sum_opt(|r| r.lost)
        },
        ready_ms: {
            let mut v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.ready)
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        },
    }
}

/// The middle of sorted values (the mean of the two middle ones).
fn median_ms(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    (n > 0).then(|| f64::midpoint(sorted[(n - 1) / 2], sorted[n / 2]))
}

/// Figures of one row, derived once for the table and the JSON.
struct RowFigures {
    ratio: Option<Spread>,
    /// The fastest storm with the watcher over the fastest without it: noise
    /// here only ever slows a storm down, so the fastest runs are the cleanest.
    fastest: Option<f64>,
    ratio_verdict: Option<Verdict>,
    /// Per storm; the median is the figure.
    kernel_ns: Option<Spread>,
    /// The empty program's after ours on the same execs, per storm.
    floor_ns: Option<Spread>,
    /// The one's before ours: the first program on the tracepoint.
    floor_first_ns: Option<Spread>,
    /// Ours less the floor, per storm: what the verdict judges.
    own_ns: Option<Spread>,
    kernel_verdict: Option<Verdict>,
    /// The ratio the kernel run time alone would give.
    kernel_ratio: Option<f64>,
    cpu_ms_per_1000: Option<f64>,
    /// The same from the CPU-time clock.
    cpu_clock_ms_per_1000: Option<f64>,
    hwm_mib: Option<f64>,
    rss_mib: Option<f64>,
    rss_anon_mib: Option<f64>,
    rss_verdict: Option<Verdict>,
    t: Totals,
}

/// Loss accounting of one `--all-execs` run.
fn adds_up(m: &Measured) -> bool {
    let (e, l, x) = (m.seen.unwrap_or(0), m.lost.unwrap_or(0), m.execs as u64);
    e <= x && e + l >= x
}

fn unexplained(m: &Measured) -> u64 {
    (m.execs as u64).saturating_sub(m.seen.unwrap_or(0) + m.lost.unwrap_or(0))
}

impl Report<'_> {
    fn baseline(&self, workers: usize, binary_bytes: usize) -> Option<Spread> {
        self.baselines
            .iter()
            .find(|b| b.workers == workers && b.binary_bytes == binary_bytes)
            .and_then(|b| spread(&b.rates))
    }

    fn peers_best(&self, workers: usize) -> Option<(f64, &str)> {
        self.rows
            .iter()
            .filter(|r| r.workers == workers && matches!(r.watcher, Watcher::Peer(_)))
            .filter_map(|r| spread(&r.ratios).map(|s| (s.median, r.label.as_str())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The kernel run time target of a row of the sensor, if it has one.
    fn kernel_target(&self, r: &Row) -> Option<f64> {
        let ordinary = self
            .binaries
            .iter()
            .any(|&(what, len)| what == "ordinary" && len == r.binary_bytes);
        match r.watcher {
            Watcher::Sensor(Mode::Alerts) if ordinary => Some(KERNEL_NS_ORDINARY),
            Watcher::Sensor(Mode::Alerts) => Some(KERNEL_NS_CANDIDATE),
            Watcher::Sensor(Mode::AllExecs) if ordinary => Some(KERNEL_NS_ALL_EXECS),
            _ => None,
        }
    }

    fn figures(&self, r: &Row) -> RowFigures {
        let ratio = spread(&r.ratios);
        let t = totals(&r.runs);
        let fastest = self
            .baseline(r.workers, r.binary_bytes)
            .zip(r.runs.iter().map(Measured::rate).max_by(f64::total_cmp))
            .map(|(b, best)| best / b.max);
        let ratio_verdict = match r.watcher {
            Watcher::Sensor(Mode::Alerts) => Some(Verdict {
                target: format!(">= {ALERTS_RATIO:.2}"),
                met: ratio.map(|s| s.median >= ALERTS_RATIO),
                why: None,
            }),
            Watcher::Sensor(Mode::AllExecs) => {
                let best = self.peers_best(r.workers);
                let target = match best {
                    Some(_) => format!(">= {ALL_EXECS_RATIO:.2}, > every peer"),
                    None => format!(">= {ALL_EXECS_RATIO:.2} (no peer ran)"),
                };
                let (met, why) = match ratio {
                    None => (None, None),
                    Some(s) if s.median < ALL_EXECS_RATIO => (Some(false), None),
                    Some(s) => match best {
                        Some((b, who)) if b >= s.median => {
                            (Some(false), Some(format!("{who} {b:.3}")))
                        }
                        _ => (Some(true), None),
                    },
                };
                Some(Verdict { target, met, why })
            }
            Watcher::Peer(_) => None,
        };
        let per_run =
            |b: proc::ProgStats| (b.run_cnt > 0).then(|| b.run_time_ns as f64 / b.run_cnt as f64);
        // ns per exec of each storm, of what `of` picks from it.
        let storms_of = |of: &dyn Fn(&Measured) -> Option<f64>| -> Vec<f64> {
            r.runs.iter().filter_map(of).collect()
        };
        let per_storm = storms_of(&|m| m.bpf.and_then(per_run));
        let floor_per_storm = storms_of(&|m| m.floor.and_then(per_run));
        let floor_first_per_storm = storms_of(&|m| m.floor_first.and_then(per_run));
        let own_per_storm =
            storms_of(&|m| Some(m.bpf.and_then(per_run)? - m.floor.and_then(per_run)?));
        let kernel_ns = spread(&per_storm);
        let own_ns = spread(&own_per_storm);
        let kernel_verdict = self.kernel_target(r).map(|target| Verdict {
            target: format!(
                "<= {:.0} ns above the floor ({target:.0} ns less a {TARGETS_FLOOR_NS:.0} ns floor)",
                target - TARGETS_FLOOR_NS
            ),
            met: own_ns.map(|s| s.median <= target - TARGETS_FLOOR_NS),
            why: None,
        });
        let kernel_ratio = kernel_ns
            .map(|s| s.median)
            .zip(self.baseline(r.workers, r.binary_bytes))
            .map(|(ns, b)| {
                // Each worker execs every workers/rate seconds; the program adds ns to each.
                let period_ns = 1e9 * r.workers as f64 / b.median;
                period_ns / (period_ns + ns)
            });
        let cpu_ms_per_1000 = (t.execs > 0).then(|| {
            t.cpu_ticks as f64 * 1000.0 / proc::clk_tck() as f64 / t.execs as f64 * 1000.0
        });
        let hwm_mib = t.hwm_kib.map(|k| k as f64 / 1024.0);
        let rss_verdict = matches!(r.watcher, Watcher::Sensor(_)).then(|| Verdict {
            target: format!("<= {RSS_TARGET_MIB:.0} MiB"),
            met: hwm_mib.map(|m| m <= RSS_TARGET_MIB),
            why: None,
        });
        RowFigures {
            ratio,
            fastest,
            ratio_verdict,
            kernel_ns,
            floor_ns: spread(&floor_per_storm),
            floor_first_ns: spread(&floor_first_per_storm),
            own_ns,
            kernel_verdict,
            kernel_ratio,
            cpu_ms_per_1000,
            cpu_clock_ms_per_1000: (t.execs > 0)
                .then(|| t.cpu_ns as f64 / 1e6 / t.execs as f64 * 1000.0),
            hwm_mib,
            rss_mib: t.rss_kib.map(|k| k as f64 / 1024.0),
            rss_anon_mib: t.rss_anon_kib.map(|k| k as f64 / 1024.0),
            rss_verdict,
            t,
        }
    }

    fn loss_rows(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.watcher == Watcher::Sensor(Mode::AllExecs))
            .collect()
    }

    fn latency_figures(l: &Latency) -> (Option<f64>, Option<f64>, Option<f64>, Verdict) {
        let ms = |p: f64| percentile(&l.ns, p).map(|n| n as f64 / 1e6);
        let (p50, p99, max) = (ms(50.0), ms(99.0), ms(100.0));
        let all = l.ns.len() >= l.execs;
        let v = Verdict {
            target: format!("p99 <= {LATENCY_P99_MS:.0} ms"),
            met: p99.map(|p| p <= LATENCY_P99_MS && all),
            why: (!all).then(|| format!("{} of {} alerts", l.ns.len(), l.execs)),
        };
        (p50, p99, max, v)
    }

    fn outputs_table(&self) -> String {
        let mut t = vec![vec![
            "storm".into(),
            "execs".into(),
            "storm s (alone)".into(),
            "ratio".into(),
            "until on stdout s".into(),
            "storm records: stdout / file / syslog / sentinel".into(),
            "records/s".into(),
            "all records, per CPU-s".into(),
            "user CPU ms/1000 records".into(),
            "heartbeat: dropped, failed per output".into(),
        ]];
        let opt = |x: Option<f64>, d: usize| x.map_or("-".into(), |x| format!("{x:.d$}"));
        for (i, r) in self.outputs.iter().enumerate() {
            let hb = r.heartbeat.as_ref().map_or("-".into(), |o| {
                let parts: Vec<String> = ["stdout", "file", "syslog", "sentinel"]
                    .iter()
                    .map(|k| format!("{k} {}/{}", o[k]["dropped"], o[k]["failed"]))
                    .collect();
                parts.join(", ")
            });
            t.push(vec![
                (i + 1).to_string(),
                r.execs.to_string(),
                format!(
                    "{:.2} ({:.2})",
                    r.took.as_secs_f64(),
                    r.baseline.as_secs_f64()
                ),
                format!("{:.3}", r.ratio()),
                format!("{:.2}", r.busy.as_secs_f64()),
                format!("{} / {} / {} / {}", r.stdout, r.file, r.syslog, r.sentinel),
                format!("{:.0}", r.records_per_sec()),
                format!("{}, {}", r.all, opt(r.records_per_cpu_sec(), 0)),
                opt(r.user_ms_per_1000(), 1),
                hb,
            ]);
        }
        let med = |f: fn(&outputs::Run) -> Option<f64>| {
            spread(&self.outputs.iter().filter_map(f).collect::<Vec<_>>()).map(|s| s.median)
        };
        if !self.outputs.is_empty() {
            let best = |f: fn(&outputs::Run) -> Option<f64>, most: bool| {
                let v: Vec<f64> = self.outputs.iter().filter_map(f).collect();
                spread(&v).map(|s| if most { s.max } else { s.min })
            };
            t.push(vec![
                "best".into(),
                String::new(),
                String::new(),
                opt(best(|r| Some(r.ratio()), true), 3),
                String::new(),
                String::new(),
                opt(best(|r| Some(r.records_per_sec()), true), 0),
                opt(best(outputs::Run::records_per_cpu_sec, true), 0),
                opt(best(outputs::Run::user_ms_per_1000, false), 1),
                String::new(),
            ]);
            t.push(vec![
                "median".into(),
                String::new(),
                String::new(),
                opt(med(|r| Some(r.ratio())), 3),
                String::new(),
                String::new(),
                opt(med(|r| Some(r.records_per_sec())), 0),
                opt(med(outputs::Run::records_per_cpu_sec), 0),
                opt(med(outputs::Run::user_ms_per_1000), 1),
                String::new(),
            ]);
        }
        render(&t)
    }

    /// Other BPF programs on the exec path: they slow the storms on both sides of each ratio.
    fn others_text(&self) -> String {
        let o = self.others;
        if o.with_others == 0 {
            return format!(
                "         no other BPF program ran on the execs of the {} no-watcher storms",
                o.storms
            );
        }
        let names: Vec<String> = o.names.iter().map(|(n, k)| format!("{n} in {k}")).collect();
        format!(
            "         NOTE: other BPF programs ran on the execs of {} of the {} no-watcher storms \
             (up to {} at once: {}): someone else is watching execs on this machine too",
            o.with_others,
            o.storms,
            o.max_at_once,
            names.join(", ")
        )
    }

    /// The machine was busy when the bench started: storm ratios mean little then.
    fn busy_warning(&self) -> Option<String> {
        let load: f64 = self.load_at_start.split_whitespace().next()?.parse().ok()?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        (load > cores as f64 / 2.0).then(|| {
            format!(
                "load average {load:.1} at start on {cores} cores: something else was running, \
                 the storm ratios are mostly its noise (the kernel ns, CPU, memory, loss and \
                 latency figures hold); rerun on a quiet machine"
            )
        })
    }

    fn machine(&self) -> Value {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown", |(_, m)| m.trim())
            .to_owned();
        let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mem_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map(|kib| kib / (1024.0 * 1024.0));
        let load = fs::read_to_string("/proc/loadavg").ok().and_then(|l| {
            l.split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
        });
        json!({"cpu_model": model, "cores": cores, "memory_gib": mem_gib, "kernel_release": kernel,
               "load_average_at_start": self.load_at_start, "load_average_1min_at_end": load})
    }

    fn sensor_json(&self) -> Value {
        json!({"path": self.sensor.display().to_string(),
               "workspace_commit": self.workspace.0,
               "workspace_sensor_sources_modified": self.workspace.1,
               "built_by_bench": self.built})
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let machine = self.machine();
        let _ = writeln!(out, "tinyexec bench, started {}", utc(self.started));
        let _ = writeln!(
            out,
            "machine: {}, {} cores, {:.1} GiB, kernel {}, load average at start {}",
            machine["cpu_model"].as_str().unwrap_or("?"),
            machine["cores"],
            machine["memory_gib"].as_f64().unwrap_or(0.0),
            machine["kernel_release"].as_str().unwrap_or("?"),
            self.load_at_start
        );
        let sensor = self.sensor_json();
        let _ = writeln!(
            out,
            "sensor:  {} ({}workspace at {}{})",
            sensor["path"].as_str().unwrap_or("?"),
            if self.built {
                "built from the "
            } else {
                "given; "
            },
            sensor["workspace_commit"].as_str().unwrap_or("?"),
            if sensor["workspace_sensor_sources_modified"] == json!(true) {
                ", sensor sources modified"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "storms:  N = {} execs each, {} repetitions",
            self.n, self.reps
        );
        for b in self.baselines {
            if let Some(s) = spread(&b.rates) {
                let _ = writeln!(
                    out,
                    "         nothing watching, {} B binary, {} worker{}: {:.0} execs/s median (min {:.0}, max {:.0}, {} storms)",
                    b.binary_bytes,
                    b.workers,
                    if b.workers == 1 { "" } else { "s" },
                    s.median,
                    s.min,
                    s.max,
                    b.rates.len()
                );
            }
        }
        let _ = writeln!(out, "{}", self.others_text());
        if let Some(w) = self.busy_warning() {
            let _ = writeln!(out, "         NOTE: {w}");
        }
        let bins: Vec<String> = self
            .binaries
            .iter()
            .map(|(what, len)| format!("{what} {len} B"))
            .collect();
        let _ = writeln!(out, "binaries: static tiny ELFs, {}", bins.join(", "));

        let _ = writeln!(
            out,
            "\nExec storm: execs/s with the watcher / without it (the mean of the no-watcher storms just before and after), \
             min/median/max over the repetitions; fastest/fastest: its fastest storm over the fastest no-watcher one"
        );
        let mut t = vec![vec![
            "configuration".into(),
            "workers".into(),
            "min".into(),
            "median".into(),
            "max".into(),
            "fastest/fastest".into(),
            "target".into(),
        ]];
        for r in self.rows {
            let f = self.figures(r);
            let mut line = vec![r.label.clone(), r.workers.to_string()];
            match (&r.unavailable, f.ratio) {
                (Some(why), None) => {
                    line.extend(["-".into(), "-".into(), "-".into(), "-".into()]);
                    line.push(format!("cannot run: {why}"));
                }
                (_, s) => {
                    line.push(s.map_or("-".into(), |s| format!("{:.3}", s.min)));
                    line.push(s.map_or("-".into(), |s| format!("{:.3}", s.median)));
                    line.push(s.map_or("-".into(), |s| format!("{:.3}", s.max)));
                    line.push(f.fastest.map_or("-".into(), |x| format!("{x:.3}")));
                    let mut v = f
                        .ratio_verdict
                        .as_ref()
                        .map_or(String::new(), Verdict::text);
                    if let Some(why) = &r.unavailable {
                        let _ = write!(v, " (then failed: {why})");
                    }
                    line.push(v);
                }
            }
            t.push(line);
        }
        out.push_str(&render(&t));

        let _ = writeln!(
            out,
            "\nCost: kernel run time of the watcher's BPF programs per exec (bpf_stats), between two empty programs on the same execs: the first pays for what is cold, \
             the one after ours is the floor any program in our place pays; ours less that floor; the storm ratio our figure alone would give; \
             the watcher's own CPU (user + system, until idle after the storm) per 1000 execs, from /proc/PID/stat ticks (and its exact CPU-time clock); its memory"
        );
        let mut t = vec![vec![
            "configuration".into(),
            "workers".into(),
            "kernel ns/exec: median (range)".into(),
            "empty programs': first / after ours".into(),
            "ours less the one after it (range; target)".into(),
            "ratio from it".into(),
            "CPU ms/1000 execs: stat (clock)".into(),
            "peak RSS".into(),
            "RSS after (anon)".into(),
            "start-to-ready (median)".into(),
            "records of the storm binary".into(),
        ]];
        for r in self.rows.iter().filter(|r| !r.runs.is_empty()) {
            let f = self.figures(r);
            let records = match r.watcher {
                Watcher::Sensor(Mode::Alerts) => {
                    format!("none expected; lost {}", f.t.lost.unwrap_or(0))
                }
                Watcher::Sensor(Mode::AllExecs) => format!(
                    "{}/{}, lost {}",
                    f.t.seen.unwrap_or(0),
                    f.t.execs,
                    f.t.lost.unwrap_or(0)
                ),
                Watcher::Peer(_) => {
                    f.t.seen
                        .map_or("-".into(), |s| format!("{s}/{}", f.t.execs))
                }
            };
            let hwm = f.hwm_mib.map_or("-".into(), |m| format!("{m:.1} MiB"));
            let hwm = match &f.rss_verdict {
                Some(v) => format!("{hwm} ({})", v.text()),
                None => hwm,
            };
            t.push(vec![
                r.label.clone(),
                r.workers.to_string(),
                f.kernel_ns.map_or("-".into(), |s| {
                    format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max)
                }),
                match (f.floor_first_ns, f.floor_ns) {
                    (Some(a), Some(b)) => format!("{:.0} / {:.0}", a.median, b.median),
                    _ => "-".into(),
                },
                match (&f.own_ns, &f.kernel_verdict) {
                    (Some(s), Some(v)) => {
                        format!("{:.0} ({:.0}-{:.0}; {})", s.median, s.min, s.max, v.text())
                    }
                    (Some(s), None) => format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max),
                    (None, _) => "-".into(),
                },
                f.kernel_ratio.map_or("-".into(), |x| format!("{x:.4}")),
                match (f.cpu_ms_per_1000, f.cpu_clock_ms_per_1000) {
                    (Some(t), Some(c)) => format!("{t:.1} ({c:.1})"),
                    _ => "-".into(),
                },
                hwm,
                match (f.rss_mib, f.rss_anon_mib) {
                    (Some(m), Some(a)) => format!("{m:.1} MiB ({a:.1})"),
                    (Some(m), None) => format!("{m:.1} MiB"),
                    _ => "-".into(),
                },
                median_ms(&f.t.ready_ms).map_or("-".into(), |ms| format!("{ms:.0} ms")),
                records,
            ]);
        }
        out.push_str(&render(&t));

        let _ = writeln!(
            out,
            "\nLoss with --all-execs at full storm rate: exec records of the storm binary emitted, vs execs performed, and lost.total the sensor reported"
        );
        let mut t = vec![vec![
            "binary".into(),
            "workers".into(),
            "storms".into(),
            "execs".into(),
            "emitted".into(),
            "lost".into(),
            "unexplained".into(),
            "adds up (emitted + lost >= execs, emitted <= execs)".into(),
            "target".into(),
        ]];
        for r in self.loss_rows().into_iter().filter(|r| !r.runs.is_empty()) {
            let f = self.figures(r);
            let ok = r.runs.iter().all(adds_up);
            let unexplained: u64 = r.runs.iter().map(unexplained).sum();
            t.push(vec![
                format!("{} B", r.binary_bytes),
                r.workers.to_string(),
                r.runs.len().to_string(),
                f.t.execs.to_string(),
                f.t.seen.unwrap_or(0).to_string(),
                f.t.lost.unwrap_or(0).to_string(),
                unexplained.to_string(),
                if ok { "yes, every storm" } else { "NO" }.into(),
                format!(
                    "zero unexplained loss  {}",
                    if ok { "ok" } else { "MISSED" }
                ),
            ]);
        }
        out.push_str(&render(&t));

        let _ = writeln!(
            out,
            "\nExec-to-alert latency: CLOCK_BOOTTIME when the alert line is read from the sensor's stdout minus the record's tinyexec.ktime_ns; \
             a {}-byte binary exec'd every 5 ms meanwhile",
            self.binaries[1].1
        );
        let ms = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3} ms"));
        let mut t = vec![vec![
            "mode".into(),
            "alerts / execs".into(),
            "background execs".into(),
            "p50".into(),
            "p99".into(),
            "max".into(),
            "target".into(),
        ]];
        for l in self.latency {
            let (p50, p99, max, v) = Self::latency_figures(l);
            t.push(vec![
                mode_name(l.mode).into(),
                format!("{}/{}", l.ns.len(), l.execs),
                l.background.to_string(),
                ms(p50),
                ms(p99),
                ms(max),
                v.text(),
            ]);
        }
        out.push_str(&render(&t));
        let _ = writeln!(
            out,
            "\nThe pipeline with all four outputs (--all-execs; stdout to a file, --output-file, syslog over UDP to a socket the bench reads, \
             Sentinel to the tests' HTTPS stand-in): storms of the {}-byte candidate, {} workers, each after the same storm with nothing watching (ratio: its rate over that one's); \
             records/s from the storm's start until its last record is on stdout; by then, every exec record on stdout (the host's other execs too) per CPU-second of the sensor (all its threads), and its user CPU per 1000 of them",
            self.binaries[0].1,
            outputs::WORKERS
        );
        out.push_str(&self.outputs_table());
        out
    }

    pub fn json(&self) -> Value {
        let secs = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let f = self.figures(r);
                let runs: Vec<Value> = r
                    .runs
                    .iter()
                    .zip(&r.ratios)
                    .map(|(m, ratio)| {
                        json!({
                            "ratio": ratio,
                            "execs": m.execs,
                            "seconds": m.took.as_secs_f64(),
                            "execs_per_sec": m.rate(),
                            "cpu_ticks": m.cpu_ticks,
                            "cpu_ns_clock": m.cpu_ns,
                            "peak_rss_kib": m.hwm_kib,
                            "rss_after_kib": m.rss_kib,
                            "rss_anon_after_kib": m.rss_anon_kib,
                            "bpf_run_time_ns": m.bpf.map(|b| b.run_time_ns),
                            "bpf_run_cnt": m.bpf.map(|b| b.run_cnt),
                            "records_of_storm_binary": m.seen,
                            "lost_total": m.lost,
                            "start_to_ready_ms": m.ready.map(|d| d.as_secs_f64() * 1000.0),
                        })
                    })
                    .collect();
                let (watcher, mode) = match r.watcher {
                    Watcher::Sensor(Mode::Alerts) => ("tinyexec", Some("alerts-only")),
                    Watcher::Sensor(Mode::AllExecs) => ("tinyexec", Some("all-execs")),
                    Watcher::Peer(k) => (k.label(), None),
                };
                json!({
                    "configuration": r.label,
                    "watcher": watcher,
                    "sensor_mode": mode,
                    "binary_bytes": r.binary_bytes,
                    "workers": r.workers,
                    "unavailable": r.unavailable,
                    "ratio": spread_json(f.ratio),
                    "fastest_over_fastest": f.fastest,
                    "ratio_target": f.ratio_verdict.as_ref().map(Verdict::json),
                    "kernel_ns_per_exec": spread_json(f.kernel_ns),
                    "floor_ns_per_exec": spread_json(f.floor_ns),
                    "floor_first_ns_per_exec": spread_json(f.floor_first_ns),
                    "own_ns_per_exec": spread_json(f.own_ns),
                    "kernel_ns_target": f.kernel_verdict.as_ref().map(Verdict::json),
                    "ratio_from_kernel_ns": f.kernel_ratio,
                    "cpu_ms_per_1000_execs": f.cpu_ms_per_1000,
                    "cpu_clock_ms_per_1000_execs": f.cpu_clock_ms_per_1000,
                    "peak_rss_mib": f.hwm_mib,
                    "peak_rss_target": f.rss_verdict.as_ref().map(Verdict::json),
                    "rss_after_mib": f.rss_mib,
                    "rss_anon_after_mib": f.rss_anon_mib,
                    "records_of_storm_binary": f.t.seen,
                    "lost_total": f.t.lost,
                    "start_to_ready_ms_median": median_ms(&f.t.ready_ms),
                    "execs": f.t.execs,
                    "runs": runs,
                })
            })
            .collect();
        let loss: Vec<Value> = self
            .loss_rows()
            .into_iter()
            .filter(|r| !r.runs.is_empty())
            .map(|r| {
                let t = totals(&r.runs);
                let ok = r.runs.iter().all(adds_up);
                json!({
                    "binary_bytes": r.binary_bytes,
                    "workers": r.workers,
                    "storms": r.runs.len(),
                    "execs": t.execs,
                    "emitted": t.seen,
                    "lost": t.lost,
                    "unexplained": r.runs.iter().map(unexplained).sum::<u64>(),
                    "adds_up": ok,
                    "target": {"target": "zero unexplained loss", "met": ok},
                })
            })
            .collect();
        let latency: Vec<Value> = self
            .latency
            .iter()
            .map(|l| {
                let (p50, p99, max, v) = Self::latency_figures(l);
                json!({
                    "mode": mode_name(l.mode),
                    "execs": l.execs,
                    "alerts": l.ns.len(),
                    "background_execs": l.background,
                    "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                    "target": v.json(),
                })
            })
            .collect();
        let output_runs: Vec<Value> = self
            .outputs
            .iter()
            .map(|r| {
                json!({
                    "execs": r.execs,
                    "storm_seconds": r.took.as_secs_f64(),
                    "storm_seconds_nothing_watching": r.baseline.as_secs_f64(),
                    "ratio": r.ratio(),
                    "until_on_stdout_seconds": r.busy.as_secs_f64(),
                    "all_exec_records": r.all,
                    "records": {"stdout": r.stdout, "file": r.file, "syslog": r.syslog, "sentinel": r.sentinel},
                    "records_per_sec": r.records_per_sec(),
                    "records_per_cpu_sec": r.records_per_cpu_sec(),
                    "user_cpu_ms_per_1000_execs": r.user_ms_per_1000(),
                    "cpu_ns": r.cpu_ns,
                    "user_ticks": r.user_ticks,
                    "heartbeat_outputs": r.heartbeat,
                })
            })
            .collect();
        let baselines: Vec<Value> = self
            .baselines
            .iter()
            .map(|b| {
                json!({"workers": b.workers, "binary_bytes": b.binary_bytes,
                       "execs_per_sec": spread_json(spread(&b.rates)), "runs": b.rates})
            })
            .collect();
        json!({
            "started_unix": secs,
            "started_utc": utc(self.started),
            "machine": self.machine(),
            "sensor": self.sensor_json(),
            "execs_per_storm": self.n,
            "repetitions": self.reps,
            "binaries": self.binaries.iter().map(|(w, l)| json!({"binary": w, "bytes": l})).collect::<Vec<_>>(),
            "baseline": baselines,
            "busy_warning": self.busy_warning(),
            "other_exec_bpf_programs": {
                "no_watcher_storms": self.others.storms,
                "storms_with_others": self.others.with_others,
                "max_at_once": self.others.max_at_once,
                "by_name": self.others.names,
            },
            "storms": rows,
            "loss": loss,
            "latency": latency,
            "outputs": output_runs,
        })
    }
}

/// The workspace's commit and whether tinyexec-user/ or tinyexec-ebpf/ differ from it.
pub fn workspace_state(root: &Path) -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| output_of(Command::new("git").arg("-C").arg(root).args(args));
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let modified = git(&[
        "status",
        "--porcelain",
        "--",
        "tinyexec-user",
        "tinyexec-ebpf",
    ])
    .map(|s| !s.is_empty());
    (commit, modified)
}

/// Aligned columns, two spaces apart.
fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut o = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        o.push_str(line.trim_end());
        o.push('\n');
    }
    o
}

/// `YYYY-MM-DD HH:MM UTC`.
fn utc(t: SystemTime) -> String {
    // `YYYY-MM-DDTHH:MM:SSZ`
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert!((spread(&[1.0, 4.0, 2.0, 3.0]).unwrap().median - 2.5).abs() < f64::EPSILON);
        assert!(spread(&[]).is_none());
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=300).collect();
        assert_eq!(percentile(&v, 50.0), Some(150));
        assert_eq!(percentile(&v, 99.0), Some(297));
        assert_eq!(percentile(&v, 100.0), Some(300));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn dates() {
        let at = |secs| utc(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01 00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(at(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn loss_accounting() {
        let m = |execs, seen, lost| Measured {
            execs,
            seen: Some(seen),
            lost: Some(lost),
            ..Measured::default()
        };
        assert!(adds_up(&m(100, 100, 0)));
        assert!(adds_up(&m(100, 90, 10)));
        assert!(adds_up(&m(100, 90, 15)));
        assert!(!adds_up(&m(100, 90, 5)));
        assert!(!adds_up(&m(100, 101, 0)));
        assert_eq!(unexplained(&m(100, 90, 5)), 5);
    }
}
