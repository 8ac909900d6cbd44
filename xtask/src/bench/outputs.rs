//! The pipeline's throughput with all four outputs on: an `--all-execs` storm
//! with stdout (to a file), `--output-file`, `--syslog udp://` to a socket the
//! bench reads, and `--sentinel` to the tests' HTTPS stand-in of the Logs
//! Ingestion API. What each output delivered is counted at its destination.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tinyexec_harness::{process::Proc, sentinel::Ingest};

use super::{
    counting::Counting,
    measured::Mode,
    proc,
    sensor::{self, READY_TIMEOUT, SensorCmd},
    storm::{self, Storm},
};

pub const WORKERS: usize = 2;

#[derive(Clone, Debug, Default)]
pub struct Run {
    pub execs: usize,
    /// The storm alone.
    pub took: Duration,
    /// The same storm just before, with nothing watching.
    pub baseline: Duration,
    /// From the storm's start until its last record was on stdout.
    pub busy: Duration,
    /// Exec records on stdout by then, the host's other execs included.
    pub all: u64,
    /// Exec records of the storm binary at each destination.
    pub stdout: u64,
    pub file: u64,
    pub syslog: u64,
    pub sentinel: u64,
    /// The sensor's CPU from the storm's start until idle: user (ticks), all (clock ns).
    pub user_ticks: u64,
    pub cpu_ns: u64,
    /// The sensor's last heartbeat's `outputs`, when it writes heartbeats.
    pub heartbeat: Option<Value>,
}

impl Run {
    /// Records per second of the sensor's CPU (all threads): what one core would sustain.
    pub fn records_per_cpu_sec(&self) -> Option<f64> {
        (self.cpu_ns > 0).then(|| self.all as f64 / (self.cpu_ns as f64 / 1e9))
    }

    /// User CPU per 1000 records (on a quiet host, per 1000 execs of the storm).
    pub fn user_ms_per_1000(&self) -> Option<f64> {
        (self.all > 0).then(|| {
            self.user_ticks as f64 * 1000.0 / proc::clk_tck() as f64 / self.all as f64 * 1000.0
        })
    }

    /// Records of the storm per second of wall time, storm start to its last record.
    pub fn records_per_sec(&self) -> f64 {
        self.stdout as f64 / self.busy.as_secs_f64().max(1e-9)
    }

    /// The storm's exec rate with the sensor over that with nothing watching
    /// just before: how much the sensor and its outputs slowed the execs.
    pub fn ratio(&self) -> f64 {
        self.baseline.as_secs_f64() / self.took.as_secs_f64().max(1e-9)
    }
}

/// Counts datagrams naming `needle` until stopped.
struct UdpCounter {
    port: u16,
    counting: Counting,
}

impl UdpCounter {
    fn start(needle: String) -> Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0").context("binding a UDP socket")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        // A burst of datagrams must not overflow our socket: what the sensor
        // sent is what is counted (net.core.rmem_max caps it).
        let size: libc::c_int = 16 << 20;
        // SAFETY: setsockopt on our own socket with a pointer to a local int.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())?,
            );
        }
        let port = sock.local_addr()?.port();
        let mut buf = vec![0u8; 65536];
        let counting = Counting::start(move || {
            sock.recv(&mut buf)
                .is_ok_and(|len| String::from_utf8_lossy(&buf[..len]).contains(&needle))
        });
        Ok(Self { port, counting })
    }

    fn finish(self) -> u64 {
        self.counting.finish()
    }
}

fn lines_naming(path: &Path, needle: &str) -> Result<(u64, Option<Value>)> {
    let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut n = 0;
    let mut heartbeat = None;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.contains("\"heartbeat\"") {
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("a non-JSON line in {}: {line}", path.display()))?;
            heartbeat = Some(v["heartbeat"]["outputs"].clone());
        } else if line.contains(needle) && line.contains("\"exec\"") {
            n += 1;
        }
    }
    Ok((n, heartbeat))
}

/// One storm with all four outputs on.
pub fn storm_with_outputs(sensor: &SensorCmd, s: &Storm, dir: &Path) -> Result<Run> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let needle = s.path_str();
    // The machine's pace right now, for the ratio.
    let baseline = storm::run(&s.path, s.n, WORKERS)?;
    let udp = UdpCounter::start(needle.clone())?;
    let ingest = Ingest::start(dir);
    let spool = dir.join("spool");
    let settings = ingest.settings(dir, &spool, "");
    let (stdout_path, file_path) = (dir.join("stdout.jsonl"), dir.join("file.jsonl"));
    let stdout = File::create(&stdout_path)?;
    let mut cmd = sensor.command(Mode::AllExecs);
    cmd.arg("--output-file")
        .arg(&file_path)
        .arg("--syslog")
        .arg(format!("udp://127.0.0.1:{}", udp.port))
        .arg("--sentinel")
        .arg(&settings)
        .stdout(stdout);
    let mut p = Proc::spawn("tinyexec-sensor", &mut cmd)?;
    p.wait_ready(READY_TIMEOUT)?;
    let user0 = proc::user_ticks(p.pid())?;
    let ns0 = proc::cpu_ns(p.pid())?;
    let start = Instant::now();
    let took = storm::run(&s.path, s.n, WORKERS)?;
    // Until stdout has every record of the storm: what the pipeline took for
    // them. The host's other execs are records too (--all-execs): the CPU is
    // divided by every record written by then, not only the storm's.
    let (storm_mark, any_mark) = (
        format!("\"path\":{}", Value::from(needle.as_str())),
        "\"action\":\"exec\"",
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    let (busy, all) = loop {
        let text = fs::read_to_string(&stdout_path).unwrap_or_default();
        let done = text.matches(&storm_mark).count() >= s.n;
        if done || Instant::now() > deadline {
            break (start.elapsed(), text.matches(any_mark).count() as u64);
        }
        drop(text);
        thread::sleep(Duration::from_millis(20));
    };
    let user1 = proc::user_ticks(p.pid())?;
    let ns1 = proc::cpu_ns(p.pid())?;
    // Sentinel delivers in batches: wait until the stand-in has them all (or gives up).
    let delivered = |i: &Ingest| i.delivered_with_path(&needle) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (delivered(&ingest), Instant::now());
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
        let now = delivered(&ingest);
        if now >= s.n as u64 || (now == last.0 && last.1.elapsed() > Duration::from_secs(3)) {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    sensor::stop(&mut p)?;
    let sentinel = delivered(&ingest);
    let syslog = udp.finish();
    let (stdout, heartbeat) = lines_naming(&stdout_path, &needle)?;
    let (file, _) = lines_naming(&file_path, &needle)?;
    Ok(Run {
        execs: s.n,
        took,
        baseline,
        busy,
        all,
        stdout,
        file,
        syslog,
        sentinel,
        user_ticks: user1.saturating_sub(user0),
        cpu_ns: ns1.saturating_sub(ns0),
        heartbeat,
    })
}
