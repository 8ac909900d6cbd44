//! Exec-to-alert latency of execs in fresh, short-lived containers against
//! execs on the host, in one run: each container's alert waits for its
//! workload's names from the runtime's state (at most 20 ms, docs/events.md),
//! and the container is gone soon after (`podman run --rm`), which is what
//! leaves other sensors' fields empty. Says how many alerts carried the
//! container's name.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tinyexec_harness::{
    boottime_ns,
    container::{podman, rootfs_tarball},
    process::Proc,
};

use super::{
    measured::Mode,
    report::percentile,
    sensor::{self, READY_TIMEOUT, SensorCmd},
    storm,
};
use crate::{run_cmd, setup};

/// The image the containers run (a busybox rootfs imported here).
const IMAGE: &str = "localhost/tinyexec-bench:1";
/// Where the matcher's copies are inside each container.
const IN_CONTAINER: &str = "/m";

pub struct Run {
    pub execs: usize,
    /// Exec-to-line latencies, ns, sorted.
    pub host_ns: Vec<u64>,
    pub container_ns: Vec<u64>,
    /// Container alerts that carried the container's name.
    pub named: usize,
    /// Why the others did not (distinct reasons).
    pub unnamed_why: Vec<String>,
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".into(), |n| format!("{:.3} ms", n as f64 / 1e6))
}

impl Run {
    pub fn summary(&self) -> String {
        let row = |what: &str, ns: &[u64]| {
            format!(
                "  {what}: {} alerts of {} execs, p50 {} p99 {} max {}",
                ns.len(),
                self.execs,
                ms(percentile(ns, 50.0)),
                ms(percentile(ns, 99.0)),
                ms(percentile(ns, 100.0))
            )
        };
        let mut s = format!(
            "Exec-to-alert latency, alerts-only, host execs and execs each in a fresh `podman run --rm` container, interleaved:\n{}\n{}\n  the container's name on {} of {} container alerts",
            row("on the host", &self.host_ns),
            row("in containers", &self.container_ns),
            self.named,
            self.container_ns.len()
        );
        for why in &self.unnamed_why {
            let _ = write!(s, "\n  without it: {why}");
        }
        s
    }

    pub fn json(&self) -> Value {
        let fig = |ns: &[u64]| json!({"alerts": ns.len(), "p50_ns": percentile(ns, 50.0), "p99_ns": percentile(ns, 99.0), "max_ns": percentile(ns, 100.0)});
        json!({
            "execs": self.execs,
            "host": fig(&self.host_ns),
            "containers": fig(&self.container_ns),
            "named": self.named,
            "unnamed_why": self.unnamed_why,
        })
    }
}

/// The containers' image: Debian's static busybox, imported from a tarball
/// (the harness's, as the tests' containers are made).
fn import_image(dir: &Path) -> Result<()> {
    let (_, tar) = rootfs_tarball(dir, &[]);
    run_cmd(
        podman()
            .arg("import")
            .arg(&tar)
            .arg(IMAGE)
            .stdout(Stdio::null()),
    )
}

/// `count` execs of copies of `matcher` on the host and as many in fresh
/// containers, alternating, with an alerts-only sensor.
pub fn measure(sensor: &SensorCmd, matcher: &Path, count: usize, out_dir: &Path) -> Result<Run> {
    setup::image_tools()?;
    let dir = out_dir.join("containers");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    import_image(&dir)?;
    let copies = dir.join("copies");
    fs::create_dir_all(&copies)?;
    let bytes = fs::read(matcher).with_context(|| format!("reading {}", matcher.display()))?;
    let copy = |name: String| -> Result<PathBuf> {
        let p = copies.join(name);
        fs::write(&p, &bytes)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        Ok(p)
    };
    let host: Vec<PathBuf> = (0..count)
        .map(|i| copy(format!("host-{i}")))
        .collect::<Result<_>>()?;
    let inside: Vec<String> = (0..count)
        .map(|i| copy(format!("ctr-{i}")).map(|_| format!("{IN_CONTAINER}/ctr-{i}")))
        .collect::<Result<_>>()?;
    let mut p = Proc::spawn(
        "tinyexec-sensor",
        sensor.command(Mode::Alerts).stdout(Stdio::piped()),
    )?;
    let out = p.take_stdout().context("stdout pipe")?;
    let lines: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let sink = Arc::clone(&lines);
    let reader = thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let now = boottime_ns();
            if let Ok(mut g) = sink.lock() {
                g.push((now, line));
            }
        }
    });
    p.wait_ready(READY_TIMEOUT)?;
    let mount = format!("{}:{IN_CONTAINER}:ro", copies.display());
    for (h, c) in host.iter().zip(&inside) {
        storm::once(h)?;
        let status = podman()
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--volume",
                &mount,
                IMAGE,
                c,
            ])
            .stdout(Stdio::null())
            .status()
            .context("podman run")?;
        if !status.success() {
            bail!("podman run {c}: {status}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let alerts = |g: &[(u64, String)]| g.iter().filter(|(_, l)| l.contains("\"alert\"")).count();
    while lines.lock().map_or(0, |g| alerts(&g)) < 2 * count && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let stopped = sensor::stop(&mut p);
    let _ = reader.join();
    stopped?;
    let host_prefix = format!("{}/host-", copies.display());
    let mut run = Run {
        execs: count,
        host_ns: Vec::new(),
        container_ns: Vec::new(),
        named: 0,
        unnamed_why: Vec::new(),
    };
    for (read_at, line) in lines.lock().map(|g| g.clone()).unwrap_or_default() {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let (Some(path), Some(k)) = (
            v["file"]["path"].as_str(),
            v["tinyexec"]["ktime_ns"].as_u64(),
        ) else {
            continue;
        };
        if v["event"]["kind"] != "alert" {
            continue;
        }
        let ns = read_at.saturating_sub(k);
        if path.starts_with(&host_prefix) {
            run.host_ns.push(ns);
        } else if path.starts_with(&format!("{IN_CONTAINER}/ctr-")) {
            run.container_ns.push(ns);
            if v["container"]["name"].is_string() {
                run.named += 1;
            } else if let Some(why) = v["tinyexec"]["container_lookup_error"].as_str()
                && !run.unnamed_why.iter().any(|w| w == why)
            {
                run.unnamed_why.push(why.to_owned());
            }
        }
    }
    run.host_ns.sort_unstable();
    run.container_ns.sort_unstable();
    Ok(run)
}
