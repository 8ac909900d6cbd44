//! Peers: other ways to watch every exec, measured in the same run as the
//! sensor. bpftrace printing one line per execve, libbpf-tools' execsnoop,
//! and auditd with an execve rule.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use std::os::unix::fs::MetadataExt as _;

use anyhow::{Context as _, Result, bail};
use tinyexec_harness::process::Proc;

use super::{
    measured::Measured,
    proc::{self, ProgStats},
    storm::{self, Storm},
};
use crate::{
    cmd::{find_cmd, output_of},
    setup::apt_install,
    step,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bpftrace,
    Execsnoop,
    Auditd,
}

pub const KINDS: [Kind; 3] = [Kind::Bpftrace, Kind::Execsnoop, Kind::Auditd];

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Bpftrace => "bpftrace, a line per execve",
            Kind::Execsnoop => "execsnoop (libbpf-tools)",
            Kind::Auditd => "auditd, execve rule",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::Bpftrace => "bpftrace",
            Kind::Execsnoop => "libbpf-tools",
            Kind::Auditd => "auditd",
        }
    }
}

/// A peer ready to run (its program), or why it cannot.
pub struct Peer {
    pub kind: Kind,
    pub state: Result<PathBuf, String>,
}

/// bpftrace's one-liner: one line per execve, flushed per line.
const BPFTRACE_PROGRAM: &str =
    r#"tracepoint:syscalls:sys_enter_execve { printf("%d %s\n", pid, str(args->filename)); }"#;
/// The audit rule, added for the storm and removed right after it.
const AUDIT_KEY: &str = "tinyexec-bench";
const AUDIT_RULE: [&str; 7] = [
    "always,exit",
    "-F",
    "arch=b64",
    "-S",
    "execve",
    "-k",
    AUDIT_KEY,
];
const AUDIT_LOG: &str = "/var/log/audit/audit.log";

fn audit_rule_args(op: &str) -> Vec<&str> {
    let mut v = vec![op];
    v.extend(AUDIT_RULE);
    v
}

/// A field of `auditctl -s` (the kernel's audit status).
fn audit_status(field: &str) -> Option<i64> {
    let status = output_of(Command::new(find_cmd("auditctl")?).arg("-s"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether auditd is running (the kernel's registered audit daemon pid).
pub fn auditd_pid() -> Option<i32> {
    audit_status("pid")
        .and_then(|p| i32::try_from(p).ok())
        .filter(|&p| p != 0)
}

/// Finds (and with `install`, installs) each peer; peers that cannot run say why.
pub fn prepare(install: bool) -> Vec<Peer> {
    let locate = |k: Kind| -> Option<PathBuf> {
        match k {
            Kind::Bpftrace => find_cmd("bpftrace"),
            Kind::Execsnoop => find_execsnoop(),
            Kind::Auditd => find_cmd("auditctl").and(find_cmd("auditd")),
        }
    };
    let missing: Vec<&str> = KINDS
        .iter()
        .filter(|&&k| locate(k).is_none())
        .map(|k| k.package())
        .collect();
    let mut install_err = None;
    if install && !missing.is_empty() {
        step(&format!(
            "installing the peers the bench compares with: {}",
            missing.join(" ")
        ));
        if let Err(e) = apt_install(&missing) {
            install_err = Some(format!("{e:#}"));
        }
    }
    KINDS
        .iter()
        .map(|&kind| {
            let state = match locate(kind) {
                Some(p) => Ok(p),
                None if !install => Err(format!(
                    "not installed (`cargo xtask bench --peers` installs Debian package {})",
                    kind.package()
                )),
                None => Err(format!(
                    "Debian package {} did not install{}",
                    kind.package(),
                    install_err
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )),
            };
            Peer { kind, state }
        })
        .collect()
}

/// libbpf-tools' execsnoop: Debian installs it as /usr/sbin/execsnoop; other
/// layouts put it elsewhere, so ask dpkg where the package put it.
fn find_execsnoop() -> Option<PathBuf> {
    let owned_by_libbpf_tools = |p: &Path| {
        output_of(Command::new("dpkg").arg("-S").arg(p))
            .is_some_and(|o| o.starts_with("libbpf-tools"))
    };
    if let Some(p) = find_cmd("execsnoop").filter(|p| owned_by_libbpf_tools(p)) {
        return Some(p);
    }
    output_of(Command::new("dpkg").args(["-L", "libbpf-tools"]))?
        .lines()
        .map(PathBuf::from)
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("execsnoop"))
                && p.is_file()
        })
}

/// tracefs, where bpftrace and libbpf find tracepoints.
pub fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    step("mounting tracefs on /sys/kernel/tracing (bpftrace and execsnoop attach to tracepoints)");
    crate::run_cmd(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
}

/// auditd running for the bench; stopped again on drop when the bench started it.
pub struct Auditd {
    started: Option<i32>,
    /// The kernel's audit `enabled` flag before the bench started auditd
    /// (which sets it to 1 and leaves it so), restored when it stops auditd.
    enabled_before: Option<i64>,
}

impl Auditd {
    /// Starts auditd when it is not running. `was_running` is whether it ran
    /// before the bench installed anything (a package install may start it).
    pub fn ensure(auditd: &Path, was_running: bool) -> Result<Self> {
        if let Some(pid) = auditd_pid() {
            return Ok(Self {
                started: (!was_running).then_some(pid),
                enabled_before: None,
            });
        }
        let enabled_before = audit_status("enabled");
        step("starting auditd (stopped again after the bench)");
        crate::run_cmd(&mut Command::new(auditd))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = auditd_pid() {
                return Ok(Self {
                    started: Some(pid),
                    enabled_before,
                });
            }
            if Instant::now() > deadline {
                bail!("auditd started but did not register with the kernel within 10 s");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let Some(pid) = self.started else { return };
        step(&format!(
            "stopping auditd (pid {pid}), which the bench started"
        ));
        // SAFETY: kill(2) of the daemon this bench started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        if let (Some(before), Some(auditctl)) = (self.enabled_before, find_cmd("auditctl"))
            && audit_status("enabled") != Some(before)
        {
            let _ = Command::new(auditctl)
                .args(["-e", &before.to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// The execve audit rule, removed on drop.
struct AuditRule(PathBuf);

impl AuditRule {
    fn add(auditctl: &Path) -> Result<Self> {
        crate::run_cmd(
            Command::new(auditctl)
                .args(audit_rule_args("-a"))
                .stdout(Stdio::null()),
        )?;
        Ok(Self(auditctl.to_owned()))
    }
}

impl Drop for AuditRule {
    fn drop(&mut self) {
        let _ = Command::new(&self.0)
            .args(audit_rule_args("-d"))
            .stdout(Stdio::null())
            .status();
    }
}

/// One storm with the peer watching.
pub fn storm(peer: &Peer, auditd: Option<&Auditd>, s: &Storm, workers: usize) -> Result<Measured> {
    let program = peer.state.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    match peer.kind {
        Kind::Bpftrace => {
            let mut cmd = Command::new(program);
            cmd.args(["-B", "line", "-e", BPFTRACE_PROGRAM]);
            piped_storm("bpftrace", &mut cmd, s, workers)
        }
        Kind::Execsnoop => {
            // Its C stdio would buffer 4 KiB at a time into a pipe: line buffering
            // is what a consumer reading it live gets.
            let mut cmd = Command::new("stdbuf");
            cmd.arg("-oL").arg(program);
            piped_storm("execsnoop", &mut cmd, s, workers)
        }
        Kind::Auditd => {
            let auditd = auditd.context("auditd is not running")?;
            audit_storm(auditd, s, workers)
        }
    }
}

/// A peer that prints to stdout: started, checked to see execs (the probe
/// binary shows up in its output), then the storm.
fn piped_storm(name: &str, cmd: &mut Command, s: &Storm, workers: usize) -> Result<Measured> {
    let mut p = Proc::spawn(name, cmd.stdout(Stdio::piped()))?;
    let out = p.take_stdout().context("stdout pipe")?;
    let seen = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let (seen2, probes2) = (Arc::clone(&seen), Arc::clone(&probes));
    let (storm_path, probe_path) = (s.path_str(), s.probe_str());
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let l = String::from_utf8_lossy(&line);
                    if l.contains(&storm_path) {
                        seen2.fetch_add(1, Ordering::Relaxed);
                    } else if l.contains(&probe_path) {
                        probes2.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_mins(1);
    while probes.load(Ordering::Relaxed) == 0 {
        if p.exited() {
            bail!("{name} exited: {}", last_line(&p.stderr_tail()));
        }
        if Instant::now() > deadline {
            bail!(
                "{name} showed no exec within 60 s: {}",
                last_line(&p.stderr_tail())
            );
        }
        storm::run(&s.probe, 1, 1)?;
        thread::sleep(Duration::from_millis(100));
    }
    let m = measure_storm(p.pid(), s, workers)?;
    if p.exited() {
        bail!(
            "{name} exited during the storm: {}",
            last_line(&p.stderr_tail())
        );
    }
    p.stop(libc::SIGINT, Duration::from_secs(20))?;
    let _ = reader.join();
    Ok(Measured {
        seen: Some(seen.load(Ordering::Relaxed)),
        ..m
    })
}

/// `_running`: the caller made sure auditd runs; it may have died since.
fn audit_storm(_running: &Auditd, s: &Storm, workers: usize) -> Result<Measured> {
    let pid = auditd_pid().context("auditd stopped")?;
    let auditctl = find_cmd("auditctl").context("auditctl not found")?;
    let log_start = audit_log_position();
    let rule = AuditRule::add(&auditctl)?;
    let m = measure_storm(pid, s, workers)?;
    drop(rule);
    Ok(Measured {
        seen: audit_records(log_start, &s.path_str()),
        ..m
    })
}

/// Where auditd's log was when the storm began: its inode and length.
fn audit_log_position() -> Option<(u64, u64)> {
    fs::metadata(AUDIT_LOG).ok().map(|m| (m.ino(), m.len()))
}

/// SYSCALL records of the storm binary that auditd logged since `start`,
/// following the log through rotations (audit.log.1, .2, ...); None when the
/// file it was in has been rotated away.
fn audit_records(start: Option<(u64, u64)>, path: &str) -> Option<u64> {
    let (ino, offset) = start?;
    // Newest first: audit.log, audit.log.1, ... until the file the storm began in.
    let mut files = Vec::new();
    let mut found = false;
    for i in 0..100 {
        let p = if i == 0 {
            PathBuf::from(AUDIT_LOG)
        } else {
            PathBuf::from(format!("{AUDIT_LOG}.{i}"))
        };
        let Ok(m) = fs::metadata(&p) else { break };
        found = m.ino() == ino;
        files.push((p, if found { offset } else { 0 }));
        if found {
            break;
        }
    }
    if !found {
        return None;
    }
    let key = format!("key=\"{AUDIT_KEY}\"");
    let exe = format!("exe=\"{path}\"");
    let mut n = 0u64;
    for (p, from) in files {
        let mut f = fs::File::open(p).ok()?;
        f.seek(SeekFrom::Start(from)).ok()?;
        let mut text = Vec::new();
        f.read_to_end(&mut text).ok()?;
        n += String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(&key) && l.contains(&exe))
            .count() as u64;
    }
    Some(n)
}

/// The storm with some process `pid` watching: its CPU, peak RSS and BPF
/// programs' run time around it.
fn measure_storm(pid: i32, s: &Storm, workers: usize) -> Result<Measured> {
    let progs0 = proc::bpf_progs(pid);
    let ticks0 = proc::cpu_ticks(pid)?;
    let ns0 = proc::cpu_ns(pid)?;
    let took = storm::run(&s.path, s.n, workers)?;
    proc::wait_idle(pid, Duration::from_millis(500), Duration::from_secs(20))?;
    let ticks1 = proc::cpu_ticks(pid)?;
    let ns1 = proc::cpu_ns(pid)?;
    let hwm = proc::vm_hwm_kib(pid).ok();
    let rss = proc::vm_rss_kib(pid).ok();
    let rss_anon = proc::status_kib(pid, "RssAnon:").ok();
    let progs1 = proc::bpf_progs(pid);
    let bpf = (!progs1.is_empty()).then(|| {
        let mut total = ProgStats::default();
        for (id, b) in &progs1 {
            let ran = b.since(progs0.get(id).copied().unwrap_or_default());
            total.run_time_ns += ran.run_time_ns;
            // Several programs (enter and exit) run once per exec each.
            total.run_cnt = total.run_cnt.max(ran.run_cnt);
        }
        total
    });
    Ok(Measured {
        took,
        execs: s.n,
        cpu_ticks: ticks1.saturating_sub(ticks0),
        cpu_ns: ns1.saturating_sub(ns0),
        hwm_kib: hwm,
        rss_kib: rss,
        rss_anon_kib: rss_anon,
        bpf,
        floor: None,
        floor_first: None,
        seen: None,
        lost: None,
        ready: None,
    })
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_owned()
}

/// auditd running for its peer (started when needed), or why not.
pub fn start_auditd(peer_list: &[Peer], was_running: bool) -> (Option<Auditd>, Option<String>) {
    let wanted = peer_list
        .iter()
        .any(|p| p.kind == Kind::Auditd && p.state.is_ok());
    if !wanted {
        return (None, None);
    }
    let Some(daemon) = find_cmd("auditd") else {
        return (None, Some("auditd not found".into()));
    };
    match Auditd::ensure(&daemon, was_running) {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    }
}
