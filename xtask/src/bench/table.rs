//! The storm table: its rows (the sensor's configurations and the peers at
//! each worker count) and every storm of every repetition, each between two
//! storms with nothing watching.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::{
    binaries::Binaries,
    bpf,
    measured::{Baseline, Mode, Others, Row, Watcher},
    peers,
    sensor::{self, SensorCmd},
    signals::interrupted,
    storm::{self, Storm},
};
use crate::step;

/// Worker counts of the storms.
pub const WORKERS: [usize; 2] = [1, 2];

/// What can watch a storm.
pub struct Watchers<'a> {
    pub sensor: &'a SensorCmd,
    pub peers: &'a [peers::Peer],
    pub auditd: Option<&'a peers::Auditd>,
    pub out_dir: &'a Path,
}

/// Every storm of every repetition: for each worker count and binary, storms
/// with each watcher between storms with nothing watching. A peer that fails
/// is marked unavailable and skipped from then on; the sensor failing ends the bench.
pub fn measure(
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
                            sensor::storm(w.sensor, mode, s, workers, w.out_dir)?
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
                    let ratio = measured.rate() / f64::midpoint(before, after);
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
pub fn plan(
    bins: &Binaries,
    peer_list: &[peers::Peer],
    auditd_running: bool,
    auditd_err: Option<&str>,
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
        (Mode::AllExecs, "--all-execs", bins.ordinary_len, "ordinary"),
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
                unavailable = Some(auditd_err.unwrap_or("auditd not found").to_owned());
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

/// `v` rotated left by `k` (mod its length).
fn rotated<T: Clone>(v: &[T], k: usize) -> Vec<T> {
    let k = if v.is_empty() { 0 } else { k % v.len() };
    v[k..].iter().chain(&v[..k]).cloned().collect()
}

pub fn estimate_secs(reps: usize, storms: usize, n: usize) -> usize {
    // Per storm: itself and its no-sensor neighbour (~1 s each at the
    // calibrated size), plus starting and stopping what watches it.
    let per = 2.0 * n as f64 / 3000.0 + 1.0;
    (reps as f64 * storms as f64 * per) as usize + 10
}

/// Execs per second with nothing of ours watching. Other BPF programs that
/// ran on its execs (another tool, another test's sensor) are noted in `others`.
fn baseline(s: &Storm, workers: usize, others: &mut Others) -> Result<f64> {
    let before = bpf::prog_counts();
    let took = storm::run(&s.path, s.n, workers)?;
    let after = bpf::prog_counts();
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

/// A storm size that takes about one second with one worker.
pub fn calibrate(path: &Path) -> Result<usize> {
    storm::run(path, 300, 1)?;
    let took = storm::run(path, 1000, 1)?;
    let rate = 1000.0 / took.as_secs_f64();
    Ok(((rate / 100.0).round() as usize * 100).clamp(500, 50_000))
}
