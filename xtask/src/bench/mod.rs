//! `cargo xtask bench`: what the sensor costs on this machine. Exec storms
//! with and without the sensor (and peers), alternating so drift cancels;
//! loss with `--all-execs`; exec-to-alert latency; the sensor's CPU time,
//! peak RSS and the kernel's own run time of its program. See docs/performance.md.

#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the bench's figures are counts, bytes and nanoseconds far below 2^52, rounded to whole numbers on purpose"
)]

mod args;
mod binaries;
mod bpf;
mod builds;
mod containers;
mod counting;
mod flood;
mod floor;
mod latency;
mod measured;
mod outputs;
mod peers;
mod proc;
mod report;
mod sensor;
mod signals;
mod storm;
mod table;

use std::{
    fs,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};

pub use args::Args;
use args::Part;
use binaries::Binaries;
use bpf::BpfStats;
use measured::Mode;
use sensor::SensorCmd;
use storm::Storm;

use crate::{cmd::find_cmd, setup, step};

/// Everything the command line asks for, in order: set-up, the storm table,
/// latency, the outputs' throughput, the static build against the glibc one,
/// memory under a flood; then the report.
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
    signals::catch();

    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let bins = Binaries::write()?;
    let sensor_cmd = SensorCmd::new(sensor.clone(), &bins.dir)?;
    let any_peer = peer_list.iter().any(|p| p.state.is_ok());
    if any_peer {
        peers::ensure_tracefs()?;
    }
    let (auditd, auditd_err) = peers::start_auditd(&peer_list, auditd_was_running);
    let bpf_stats = BpfStats::enable()?;

    let reps = args.reps.max(1);
    let wants = |part: Part| args.wants(part);
    let n = match args.execs {
        Some(n) => n.max(1),
        None if !wants(Part::Storms) && !wants(Part::Outputs) && !wants(Part::Builds) => 0,
        None => {
            step("calibrating the storm size (no sensor, 1 worker)");
            table::calibrate(&bins.candidate)?
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

    let mut rows = table::plan(&bins, &peer_list, auditd.is_some(), auditd_err.as_deref());
    if !wants(Part::Storms) {
        rows.clear();
    }
    let storms_per_rep: usize = rows.iter().filter(|r| r.unavailable.is_none()).count();
    step(&format!(
        "{reps} repetitions of {storms_per_rep} storms of {n} execs (1 and 2 workers), each between \
         two storms of the same binary with nothing watching; about {} s",
        table::estimate_secs(reps, storms_per_rep, n)
    ));
    let watchers = table::Watchers {
        sensor: &sensor_cmd,
        peers: &peer_list,
        auditd: auditd.as_ref(),
        out_dir: &out_dir,
    };
    let storms = [(bins.candidate_len, &storm), (bins.ordinary_len, &ordinary)];
    let (baselines, others) = table::measure(&watchers, &mut rows, &storms, reps)?;

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
    let builds = if wants(Part::Builds) {
        let path = match &args.static_sensor {
            Some(p) => fs::canonicalize(p).with_context(|| format!("sensor {}", p.display()))?,
            None => crate::dist::sensor(root, crate::arch::Arch::host())?,
        };
        let static_cmd = SensorCmd::new(path, &bins.dir)?;
        step(&format!(
            "the static build against the glibc one: {reps} storms each of {n} execs of the \
             ordinary binary, --all-execs, alternating"
        ));
        let run = builds::measure(&sensor_cmd, &static_cmd, &ordinary, reps, &out_dir)?;
        step(&run.summary());
        Some(run)
    } else {
        None
    };
    let flood = if wants(Part::Flood) {
        let execs = n.max(6000);
        step(&format!(
            "memory under hostile records: {execs} execs with 4 KiB of arguments from a 3.8 KiB path, \
             --all-execs, stdout read slowly"
        ));
        let run = flood::measure(&sensor_cmd, &bins.ordinary, execs, &out_dir)?;
        step(&run.summary());
        Some(run)
    } else {
        None
    };
    let containers = if wants(Part::Containers) {
        step(&format!(
            "exec-to-alert latency with containers: {} execs of the matching binary on the host \
             and as many each in a fresh `podman run --rm` container, alternating",
            args.latency_execs
        ));
        let run = containers::measure(&sensor_cmd, &bins.matcher, args.latency_execs, &out_dir)?;
        step(&run.summary());
        Some(run)
    } else {
        None
    };
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
    let mut table = report.table();
    let mut json = report.json();
    if let Some(run) = &builds {
        table = format!("{table}\n{}\n", run.summary());
        json["builds"] = run.json();
    }
    if let Some(run) = &containers {
        table = format!("{table}\n{}\n", run.summary());
        json["containers"] = run.json();
    }
    if let Some(run) = &flood {
        table = format!("{table}\n{}\n", run.summary());
        json["flood"] = run.json();
    }
    println!("{table}");
    let json = serde_json::to_string_pretty(&json)?;
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
