//! The kernel matrix's end-to-end subset: small and kernel-agnostic, run on the
//! host (`cargo test`) and inside each Debian kernel's VM (`cargo xtask vm`).
//!
//! Each check prints one line `TINYEXEC-MATRIX {json}` on stdout (the VM's
//! console) and, when `$TINYEXEC_MATRIX_REPORT` names a file, appends it there
//! (the host run, whose stdout libtest captures). `cargo xtask` turns these
//! lines into its per-kernel table. Fields: `check`, `mode`, `ok`, `ms`, and
//! per check `loaded`, `ready_ms`, `failed_after_ms`, `verified`, `programs`,
//! `refused`, `error`.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    any::Any,
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::{PermissionsExt as _, symlink},
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};
use tinyexec_ebpf::{
    HEADER_LEN, MAX_PATH_DEPTH,
    rule::{S1, S2, find_all},
};
use tinyexec_harness::{
    Sensor, TempDir, btf,
    container::{self, NAMESPACES, PodCgroup},
    elf::{Action, Arch, TinyElf},
    exec_of, field, field_str, field_u64, matching_elf, own_comm, run_ok, sensor_path, signalled,
    spawn, tiny_exit0, unique,
};

/// Verified instructions the programs may cost together, in every mode (issue 9).
const VERIFIED_BUDGET: u64 = 250_000;
/// What the sensor prints on stderr before `ready`.
const VERIFIED_LEAD: &str = "tinyexec-sensor: verified instructions:";
/// And once its self-test's canary exec (machine code of this architecture,
/// tinyexec-user/src/run/selftest/elf.rs) was read right by the kernel program.
const SELF_TEST_PASSED: &str = "tinyexec-sensor: self-test passed";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Lines of a failure kept in the report (the verifier's cause is at the end).
const ERROR_TAIL_LINES: usize = 12;

/// A prevent-mode sensor kills every matching exec on the machine: the tests
/// of this binary take turns.
static SERIAL: Mutex<()> = Mutex::new(());
/// The mode in which the sensor did not load, once a test found out. A refused
/// load costs minutes under emulation (about 80 s on 6.1, 300 s on 5.10 with
/// today's program): the later checks report "not checked" instead of paying again.
static REFUSED_IN: Mutex<Option<&'static str>> = Mutex::new(None);

/// Why a check that needs the sensor was not made.
fn not_loaded(mode: &str) -> String {
    format!(
        "not checked: the sensor did not load in mode {mode} on this kernel (see that ready check)"
    )
}

fn refused_in() -> Option<&'static str> {
    *REFUSED_IN.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Copy)]
enum Mode {
    Default,
    AllExecs,
    Prevent,
    AllExecsPrevent,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::AllExecs => "all-execs",
            Mode::Prevent => "prevent",
            Mode::AllExecsPrevent => "all-execs+prevent",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Default => &[],
            Mode::AllExecs => &["--all-execs"],
            Mode::Prevent => &["--prevent"],
            Mode::AllExecsPrevent => &["--all-execs", "--prevent"],
        }
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic without a message".to_owned())
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(ERROR_TAIL_LINES)..].join("\n")
}

/// Prints (and appends to `$TINYEXEC_MATRIX_REPORT`) one report line.
fn emit(fields: Map<String, Value>) {
    let line = format!("TINYEXEC-MATRIX {}", Value::Object(fields));
    println!("{line}");
    if let Some(path) = std::env::var_os("TINYEXEC_MATRIX_REPORT") {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", Path::new(&path).display()));
        // One write per line: lines from parallel test binaries never interleave.
        f.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", Path::new(&path).display()));
    }
}

type Outcome<T> = Result<T, Box<dyn Any + Send>>;

/// Runs one check, reports it (with its panic message when it failed) and
/// returns its outcome; `body` adds its own fields to the report.
fn check<T>(name: &str, mode: Mode, body: impl FnOnce(&mut Map<String, Value>) -> T) -> Outcome<T> {
    let mut fields = Map::new();
    fields.insert("check".into(), name.into());
    fields.insert("mode".into(), mode.name().into());
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| body(&mut fields)));
    fields.insert("ok".into(), outcome.is_ok().into());
    fields.insert("ms".into(), ms(start.elapsed()).into());
    if let Err(p) = &outcome {
        fields.insert("error".into(), tail(&panic_text(p.as_ref())).into());
    }
    emit(fields);
    outcome
}

/// Fails the test if any of its checks failed (each already reported).
fn all_passed(outcomes: Vec<Outcome<()>>) {
    if let Some(p) = outcomes.into_iter().find_map(Result::err) {
        resume_unwind(p);
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The sensor's verified-instruction line: `total=T` and each `program=n`.
fn verified(stderr: &str) -> Option<(u64, Map<String, Value>)> {
    let line = stderr.lines().find_map(|l| l.strip_prefix(VERIFIED_LEAD))?;
    let mut total = None;
    let mut programs = Map::new();
    for word in line.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            continue;
        };
        let Ok(n) = v.parse::<u64>() else { continue };
        if k == "total" {
            total = Some(n);
        } else {
            programs.insert(k.to_owned(), n.into());
        }
    }
    Some((total?, programs))
}

/// Starts the sensor in `mode` and reports `ready` (start-to-ready time, or
/// not loaded with the sensor's last words) and `verified` (the instruction
/// count within the budget). Returns the running sensor, or why there is none.
fn start(mode: Mode) -> (Result<Sensor, String>, Vec<Outcome<()>>) {
    if let Some(earlier) = refused_in() {
        let why = not_loaded(earlier);
        let outcomes = ["ready", "verified"]
            .map(|name| check(name, mode, |_| panic!("{why}")))
            .into();
        return (Err(why), outcomes);
    }
    // Started inside the check, so its time counts as the check's.
    let mut running = None;
    let ready = check("ready", mode, |r| {
        let started = Instant::now();
        let mut sensor = Sensor::spawn(Command::new(sensor_path()).arg("run").args(mode.args()));
        let waited = sensor.try_wait_ready();
        let stderr = sensor.stderr();
        let self_tested = stderr.contains(SELF_TEST_PASSED);
        running = Some((sensor, stderr));
        match waited {
            Ok(took) => {
                r.insert("loaded".into(), true.into());
                r.insert("ready_ms".into(), ms(took).into());
                assert!(
                    self_tested,
                    "ready without `{SELF_TEST_PASSED}` on stderr (the {} canary)",
                    Arch::native().name()
                );
            }
            Err(why) => {
                r.insert("loaded".into(), false.into());
                r.insert("failed_after_ms".into(), ms(started.elapsed()).into());
                panic!("not loaded in mode {}: {why}", mode.name());
            }
        }
    });
    if ready.is_err() {
        *REFUSED_IN.lock().unwrap_or_else(PoisonError::into_inner) = Some(mode.name());
    }
    let (sensor, stderr) = running.unzip();
    let stderr = stderr.unwrap_or_default();
    let budget = check("verified", mode, |r| {
        let Some((total, programs)) = verified(&stderr) else {
            panic!(
                "the sensor did not report its verified instructions (no line `{VERIFIED_LEAD} total=N ...` on stderr)"
            );
        };
        let typed = programs.contains_key(tinyexec_ebpf::names::PROGRAM);
        r.insert("verified".into(), total.into());
        r.insert("programs".into(), programs.into());
        assert!(
            total <= VERIFIED_BUDGET,
            "{total} verified instructions in mode {}, over the budget of {VERIFIED_BUDGET}",
            mode.name()
        );
        // Every kernel of the matrix takes the BTF-typed entry: its fast path
        // is the one the cost figures are for (the raw one is the fallback).
        let entry = stderr.lines().find(|l| l.contains("entry: "));
        assert!(
            typed,
            "the BTF-typed entry `{}` did not load in mode {}: {entry:?}",
            tinyexec_ebpf::names::PROGRAM,
            mode.name()
        );
    });
    let sensor = sensor
        .filter(|_| ready.is_ok())
        .ok_or_else(|| not_loaded(mode.name()));
    (sensor, vec![ready, budget])
}

/// For checks that need the sensor running.
fn running(sensor: &Result<Sensor, String>) -> &Sensor {
    sensor.as_ref().unwrap_or_else(|why| panic!("{why}"))
}

/// A matching ELF of `arch` whose first action creates a marker file in
/// `dir` (named relative to it: the program runs there), with the marker's
/// path. Within the kernel's header buffer, so the kernel decides it alone
/// (and `--prevent` kills it).
fn stager_with_marker(dir: &TempDir, arch: Arch) -> (PathBuf, Vec<u8>, PathBuf) {
    let name = unique(&format!("marker-{}", arch.name()));
    let bytes = matching_elf(
        arch,
        vec![Action::CreateFile(name.as_bytes().to_vec())],
        None,
    );
    assert!(
        bytes.len() <= HEADER_LEN,
        "{arch:?}: a {} B stager does not fit the kernel's {HEADER_LEN} B header",
        bytes.len()
    );
    let path = dir.exe(&unique("stager"), &bytes);
    (path, bytes, dir.path().join(name))
}

/// A matching ELF of `arch` runs to its end (it creates a marker file) and
/// alerts once, with the offsets where the strings are.
fn one_alert_with_offsets(sensor: &Sensor, dir: &TempDir, arch: Arch) {
    let (path, bytes, marker) = stager_with_marker(dir, arch);
    let mut child = spawn(Command::new(&path).current_dir(dir.path()));
    let pid = child.id();
    let status = child.wait().expect("wait");
    assert!(status.success(), "{arch:?}: {status}");
    assert!(
        marker.exists(),
        "{arch:?}: the stager did not run to its end"
    );
    let rec = sensor.wait_for("the alert", exec_of(&path));
    assert_eq!(field_str(&rec, "event.kind"), "alert", "{rec}");
    assert_eq!(field_str(&rec, "rule.verdict"), "match", "{rec}");
    assert_eq!(field_u64(&rec, "process.pid"), u64::from(pid));
    for (i, (id, s)) in [("$s1", &S1[..]), ("$s2", &S2[..])].into_iter().enumerate() {
        assert_eq!(
            field(&rec, &format!("rule.strings.{i}.identifier")),
            id,
            "{rec}"
        );
        let want: Vec<usize> = find_all(&bytes, s).collect();
        assert!(!want.is_empty());
        assert_eq!(
            field(&rec, &format!("rule.strings.{i}.offsets")),
            &json!(want),
            "{id} in {rec}"
        );
    }
    let before = sensor.records_before_barrier();
    let n = before.iter().filter(|v| exec_of(&path)(v)).count();
    assert_eq!(n, 1, "{n} records for one exec of {}", path.display());
}

#[test]
fn default_mode() {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mode = Mode::Default;
    let (sensor, mut outcomes) = start(mode);
    let dir = TempDir::new("matrix-default");
    // Every architecture this machine runs (i386 only on x86_64).
    for &arch in Arch::runnable() {
        outcomes.push(check(&format!("alert-{}", arch.name()), mode, |_| {
            one_alert_with_offsets(running(&sensor), &dir, arch);
        }));
    }
    outcomes.push(check("container", mode, |r| {
        container_context(running(&sensor), &dir, r);
    }));
    outcomes.push(check("no-alert", mode, |_| {
        let sensor = running(&sensor);
        // A near-twin of the stager: ELF, small, `$s1` but no `$s2`.
        let mut twin = TinyElf::new(Arch::native());
        twin.trailer = S1.to_vec();
        let path = dir.exe(&unique("twin"), &twin.build().expect("tiny ELF"));
        run_ok(&mut Command::new(&path));
        let before = sensor.records_before_barrier();
        let about: Vec<&Value> = before.iter().filter(|v| exec_of(&path)(v)).collect();
        assert!(
            about.is_empty(),
            "a non-matching exec was reported: {about:?}"
        );
    }));
    all_passed(outcomes);
}

/// A stager started as a container's first process: in a Kubernetes-style
/// cgroup of the hierarchy the sensor reads (cgroup2 in the VMs, v1 `pids`
/// on a v1 host), in new mount, UTS, IPC, network, cgroup and pid namespaces.
fn container_context(sensor: &Sensor, dir: &TempDir, r: &mut Map<String, Value>) {
    r.insert(
        "cgroup".into(),
        if container::unified() { "v2" } else { "v1" }.into(),
    );
    let pod = PodCgroup::new("burstable", &unique("matrix"));
    let path = dir.exe(
        &unique("contained"),
        &matching_elf(Arch::native(), vec![], None),
    );
    let child = container::spawn_isolated(&path, &pod.cgroup.procs());
    let seen = child.namespaces;
    assert_eq!(child.wait(), 0, "the isolated stager failed");
    let rec = sensor.wait_for("the contained stager's alert", exec_of(&path));
    pod.assert_in(&rec);
    // The first process of its pid namespace; its parent is outside it.
    assert_eq!(field_u64(&rec, "process.vpid"), 1, "{rec}");
    assert_eq!(field_u64(&rec, "process.parent.vpid"), 0, "{rec}");
    let host = container::namespaces_of("self", false);
    for (i, name) in NAMESPACES.iter().enumerate() {
        let got = field_u64(&rec, &format!("process.namespaces.{name}"));
        assert_eq!(got, seen[i], "{name} namespace: {rec}");
        if *name == "user" {
            assert_eq!(got, host[i], "user namespace: {rec}");
        } else {
            assert_ne!(got, host[i], "{name} namespace is the host's: {rec}");
        }
    }
    assert_eq!(field(&rec, "process.namespaces.host"), false, "{rec}");
}

#[test]
fn all_execs_mode() {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mode = Mode::AllExecs;
    let (sensor, mut outcomes) = start(mode);
    outcomes.push(check("exec-symlink", mode, |_| {
        let sensor = running(&sensor);
        let dir = TempDir::new("matrix-symlink");
        let real = dir.exe(&unique("real"), &tiny_exit0());
        let link = dir.path().join(unique("link"));
        symlink(&real, &link).expect("symlink");
        let marker = unique("marker");
        let mut child = spawn(Command::new(&link).arg(&marker));
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        let rec = sensor.wait_for("the exec through the symlink", |v| {
            field(v, "process.args.1") == marker.as_str()
        });
        assert_eq!(
            field_str(&rec, "file.path"),
            real.to_str().expect("UTF-8"),
            "{rec}"
        );
        assert_eq!(
            field(&rec, "process.args"),
            &json!([link.to_str().expect("UTF-8"), marker]),
            "{rec}"
        );
        assert_eq!(field_u64(&rec, "process.pid"), u64::from(pid), "{rec}");
        assert_eq!(
            field_u64(&rec, "process.parent.pid"),
            u64::from(std::process::id()),
            "{rec}"
        );
        assert_eq!(field_str(&rec, "process.parent.name"), own_comm(), "{rec}");
        assert_eq!(field_u64(&rec, "process.uid"), 0, "{rec}");
        assert_eq!(field_str(&rec, "process.user"), "root", "{rec}");
    }));
    all_passed(outcomes);
}

/// The kernel's list of active LSMs.
const ACTIVE_LSMS: &str = "/sys/kernel/security/lsm";

/// Which mechanism `--prevent` must have in force on this kernel, and why:
/// the LSM refusal where the kernel runs BPF LSM programs (`bpf` in its list
/// of active LSMs) and can attach them (`x86_64`; arm64 from 6.4), else the kill.
fn expected_prevent() -> (&'static str, String) {
    let list = match fs::read_to_string(ACTIVE_LSMS) {
        Ok(list) => list.trim().to_owned(),
        Err(e) => return ("kill", format!("{ACTIVE_LSMS}: {e}")),
    };
    if !list.split(',').any(|l| l == "bpf") {
        return ("kill", format!("no bpf in {ACTIVE_LSMS} ({list})"));
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if cfg!(target_arch = "aarch64") && (major, minor) < (6, 4) {
        return (
            "kill",
            format!("arm64 {major}.{minor} attaches no BPF LSM program (6.4+)"),
        );
    }
    ("lsm", format!("bpf in {ACTIVE_LSMS} ({list})"))
}

/// The mechanism the sensor's `ready` line names, and why not the LSM's.
fn prevent_in_force(stderr: &str) -> (String, Option<String>) {
    let ready = stderr
        .lines()
        .find(|l| l.contains("tinyexec-sensor: ready: "))
        .unwrap_or_else(|| panic!("no ready line on stderr:\n{stderr}"));
    if ready.contains("prevent: lsm") {
        ("lsm".into(), None)
    } else if let Some((_, why)) = ready.split_once("no LSM refusal: ") {
        let why = why.strip_suffix("))").unwrap_or(why);
        ("kill".into(), Some(why.to_owned()))
    } else {
        panic!("the ready line names no prevent mechanism: {ready}")
    }
}

/// Runs `exec` in a forked caller that goes on when it returns (the exec
/// failed) and exits with 100 + its errno. Returns the caller's pid and its
/// wait status. `exec` runs in the child: only async-signal-safe calls, on
/// memory prepared before the fork.
fn from_forked_caller(exec: impl FnOnce()) -> (u32, std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt as _;
    // SAFETY: the child runs `exec` (async-signal-safe calls only, as its
    // callers write it) and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        exec();
        // SAFETY: errno of the failed exec; _exit is async-signal-safe.
        unsafe { libc::_exit(100 + *libc::__errno_location()) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    (
        pid.cast_unsigned(),
        std::process::ExitStatus::from_raw(status),
    )
}

/// Execs `path` (run in `dir`) from a forked caller, as [`from_forked_caller`]
/// (exit 99: it could not enter `dir`).
fn exec_from_caller(path: &Path, dir: &Path) -> (u32, std::process::ExitStatus) {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    let file = CString::new(path.as_os_str().as_bytes()).expect("path");
    let cwd = CString::new(dir.as_os_str().as_bytes()).expect("dir");
    let argv = [file.as_ptr(), std::ptr::null()];
    from_forked_caller(|| {
        // SAFETY: chdir, execv and _exit on C strings made before the fork.
        unsafe {
            if libc::chdir(cwd.as_ptr()) != 0 {
                libc::_exit(99);
            }
            libc::execv(file.as_ptr(), argv.as_ptr());
        }
    })
}

/// `execveat(fd, "", ..., AT_EMPTY_PATH)` from a forked caller, as
/// [`from_forked_caller`].
fn execveat_from_caller(fd: &std::os::fd::OwnedFd) -> (u32, std::process::ExitStatus) {
    use std::os::fd::AsRawFd as _;
    let fd = fd.as_raw_fd();
    let argv0 = c"fileless";
    let argv = [argv0.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    from_forked_caller(|| {
        // SAFETY: execveat on memory prepared before the fork.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        }
    })
}

/// A refused exec: `execve` failed with EPERM in its caller, which went on;
/// nothing of the file ran (no marker); exactly one record of it, `denied`,
/// an alert naming the caller, and no record of the exec itself. Returns the record.
fn assert_denied(
    sensor: &Sensor,
    dir: &TempDir,
    path: &Path,
    refused: &Path,
    marker: Option<&Path>,
) -> Value {
    let (pid, status) = exec_from_caller(path, dir.path());
    assert_eq!(
        status.code(),
        Some(100 + libc::EPERM),
        "{}: the caller's execve did not fail with EPERM: {status}",
        path.display()
    );
    if let Some(marker) = marker {
        assert!(
            !marker.exists(),
            "{}: the refused program ran",
            path.display()
        );
    }
    let of_refused = |v: &Value| field(v, "file.path").as_str() == refused.to_str();
    let rec = sensor.wait_for("the refusal", |v| {
        field(v, "event.action") == "denied" && of_refused(v)
    });
    assert_eq!(field_str(&rec, "event.kind"), "alert", "{rec}");
    assert_eq!(field_str(&rec, "rule.name"), "EQGRP_tinyexec", "{rec}");
    assert_eq!(field_str(&rec, "rule.verdict"), "match", "{rec}");
    assert_eq!(field_u64(&rec, "process.pid"), u64::from(pid), "{rec}");
    assert_eq!(
        field_u64(&rec, "process.parent.pid"),
        u64::from(std::process::id()),
        "{rec}"
    );
    assert_eq!(field_str(&rec, "process.user"), "root", "{rec}");
    let before = sensor.records_before_barrier();
    let about: Vec<&Value> = before.iter().filter(|v| of_refused(v)).collect();
    assert_eq!(
        about.len(),
        1,
        "{}: one record (the refusal) and no exec, got {about:?}",
        refused.display()
    );
    rec
}

/// `run_time_ns` and `run_cnt` of each BPF program the process `pid` holds,
/// by program id, with its type (`/proc/PID/fdinfo`; counted while
/// `kernel.bpf_stats_enabled` is 1).
fn bpf_stats(pid: u32) -> std::collections::BTreeMap<u64, (u64, u64, u64)> {
    let dir = format!("/proc/{pid}/fdinfo");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| {
            let text = fs::read_to_string(e.ok()?.path()).ok()?;
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            Some((
                get("prog_id:")?,
                (get("prog_type:")?, get("run_time_ns:")?, get("run_cnt:")?),
            ))
        })
        .collect()
}

/// Nanoseconds per ordinary exec of the LSM program and of the entry on the
/// tracepoint, from the kernel's own statistics over a few hundred execs of a
/// file the rule cannot match (under emulation only their ratio means much).
fn cost_per_exec(sensor: u32) -> (u64, u64) {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    const EXECS: u64 = 300;
    const LSM: u64 = 29;
    const TRACING: u64 = 26;
    let dir = TempDir::new("matrix-cost");
    let plain = dir.exe(&unique("plain"), &tiny_exit0());
    fs::write(STATS, "1").unwrap_or_else(|e| panic!("{STATS}: {e}"));
    let before = bpf_stats(sensor);
    for _ in 0..EXECS {
        run_ok(&mut Command::new(&plain));
    }
    let after = bpf_stats(sensor);
    fs::write(STATS, "0").unwrap_or_else(|e| panic!("{STATS}: {e}"));
    // (type, ns, runs) over the execs, per program.
    let runs: Vec<(u64, u64, u64)> = after
        .iter()
        .filter_map(|(id, &(ty, ns, cnt))| {
            let &(_, ns0, cnt0) = before.get(id)?;
            Some((ty, ns - ns0, cnt - cnt0))
        })
        .collect();
    let per_exec = |ty: u64| {
        let (_, ns, cnt) = runs
            .iter()
            .filter(|r| r.0 == ty)
            .max_by_key(|r| r.2)
            .copied()
            .unwrap_or_else(|| panic!("no program of type {ty} in {runs:?}"));
        assert!(cnt >= EXECS, "type {ty} ran {cnt} times for {EXECS} execs");
        ns / cnt
    };
    // The entry is the tracing program that runs on every exec (the stages
    // run only for candidates).
    (per_exec(LSM), per_exec(TRACING))
}

/// A 269-byte tiny ELF of `arch` laid out as the leaked stager is (both
/// strings inside the kernel's 256-byte header, the file under 270 bytes):
/// its first action would create a marker in `dir`.
fn sample_with_marker(dir: &TempDir, arch: Arch) -> (PathBuf, Vec<u8>, PathBuf) {
    // A short name: the AArch64 code to create it must fit in 269 bytes.
    let name = format!("ran-{}", arch.name());
    let mut t = TinyElf::new(arch);
    t.actions = vec![Action::CreateFile(name.as_bytes().to_vec())];
    t.trailer = [&S1[..], &S2[..], &[0u8; 40][..]].concat();
    t.total_len = Some(tinyexec_ebpf::rule::FILESIZE_LT_LEN - 1);
    let bytes = t.build().expect("tiny ELF");
    let path = dir.exe(&unique("sample"), &bytes);
    (path, bytes, dir.path().join(name))
}

#[test]
fn prevent_mode() {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mode = Mode::Prevent;
    let (sensor, mut outcomes) = start(mode);
    let mut lsm = false;
    outcomes.push(check("prevent-mechanism", mode, |r| {
        let sensor = running(&sensor);
        let stderr = sensor.stderr();
        let (mechanism, why) = prevent_in_force(&stderr);
        r.insert("mechanism".into(), mechanism.clone().into());
        if let Some(why) = &why {
            r.insert("reason".into(), why.clone().into());
        }
        if let Some((_, programs)) = verified(&stderr)
            && let Some(n) = programs.get(tinyexec_ebpf::names::LSM_PROGRAM)
        {
            r.insert("lsm_verified".into(), n.clone());
        }
        let (want, because) = expected_prevent();
        lsm = mechanism == "lsm";
        assert_eq!(
            mechanism, want,
            "expected {want} ({because}); the sensor: {why:?}"
        );
        if mechanism == "kill" {
            assert!(why.is_some(), "the kill without a reason");
        }
    }));
    if lsm {
        outcomes.push(check("prevent-deny", mode, |_| {
            let sensor = running(&sensor);
            let dir = TempDir::new("matrix-deny");
            for &arch in Arch::runnable() {
                let (path, bytes, marker) = stager_with_marker(&dir, arch);
                let rec = assert_denied(sensor, &dir, &path, &path, Some(&marker));
                assert_eq!(
                    field_str(&rec, "file.hash.sha256"),
                    tinyexec_harness::sha256_hex(&bytes),
                    "{rec}"
                );
                assert_eq!(field_u64(&rec, "file.size"), bytes.len() as u64, "{rec}");
            }
        }));
        outcomes.push(check("prevent-deny-sample", mode, |_| {
            let sensor = running(&sensor);
            let dir = TempDir::new("matrix-deny-sample");
            let (path, _, marker) = sample_with_marker(&dir, Arch::native());
            assert_denied(sensor, &dir, &path, &path, Some(&marker));
        }));
        outcomes.push(check("prevent-deny-script", mode, |_| {
            let sensor = running(&sensor);
            let dir = TempDir::new("matrix-deny-script");
            let (sample, _, marker) = sample_with_marker(&dir, Arch::native());
            let script = dir.exe(
                &unique("script"),
                format!("#!{}\n", sample.display()).as_bytes(),
            );
            // Refused on the interpreter's own content.
            let rec = assert_denied(sensor, &dir, &script, &sample, Some(&marker));
            assert_eq!(
                field_str(&rec, "process.exec_path"),
                script.to_str().expect("UTF-8"),
                "{rec}"
            );
        }));
        outcomes.push(check("prevent-deny-memfd", mode, |_| {
            let sensor = running(&sensor);
            // A match in the first 256 bytes of a memfd now 300 bytes long:
            // it could be written while it runs, so its size now says
            // nothing of the size the kernel read its header at: refused.
            let bytes = matching_elf(Arch::native(), vec![], Some(HEADER_LEN));
            let (fd, name) = tinyexec_harness::memfd_named(&bytes);
            fs::File::from(fd.try_clone().expect("dup"))
                .set_len(300)
                .expect("ftruncate");
            let (pid, status) = execveat_from_caller(&fd);
            assert_eq!(
                status.code(),
                Some(100 + libc::EPERM),
                "the memfd's execveat did not fail with EPERM: {status}"
            );
            let rec = sensor.wait_for("the memfd's refusal", |v| {
                field(v, "event.action") == "denied" && field(v, "process.pid") == pid
            });
            assert_eq!(
                field_str(&rec, "file.path"),
                format!("/memfd:{name}"),
                "{rec}"
            );
            assert_eq!(field(&rec, "file.memfd"), true, "{rec}");
            assert_eq!(field(&rec, "file.writable"), true, "{rec}");
            assert_eq!(field_u64(&rec, "file.size"), 300, "{rec}");
        }));
        outcomes.push(check("prevent-undecided-runs", mode, |_| {
            let sensor = running(&sensor);
            // 269 bytes, `$s2` past the kernel's 256: the header cannot
            // decide, so the exec is not refused; it runs and is alerted.
            let dir = TempDir::new("matrix-undecided");
            let mut late = TinyElf::new(Arch::native());
            late.actions = vec![Action::SleepMs(300)];
            late.trailer = [&S1[..], &S2[..]].concat();
            late.total_len = Some(tinyexec_ebpf::rule::FILESIZE_LT_LEN - 1);
            let path = dir.exe(&unique("late"), &late.build().expect("tiny ELF"));
            let (pid, status) = exec_from_caller(&path, dir.path());
            assert!(status.success(), "pid {pid}: {status}");
            let rec = sensor.wait_for("the alert", exec_of(&path));
            assert_eq!(field_str(&rec, "event.action"), "exec", "{rec}");
            assert_eq!(field_str(&rec, "event.kind"), "alert", "{rec}");
            assert_eq!(field_u64(&rec, "process.pid"), u64::from(pid), "{rec}");
        }));
        outcomes.push(check("prevent-cost", mode, |r| {
            let sensor = running(&sensor);
            let (lsm, entry) = cost_per_exec(sensor.pid());
            r.insert("lsm_ns".into(), lsm.into());
            r.insert("entry_ns".into(), entry.into());
        }));
        outcomes.push(check("prevent-plain-runs", mode, |_| {
            let dir = TempDir::new("matrix-plain");
            let (pid, status) =
                exec_from_caller(&dir.exe(&unique("plain"), &tiny_exit0()), dir.path());
            assert!(status.success(), "pid {pid}: {status}");
        }));
    } else {
        outcomes.push(check("prevent-kill", mode, |_| {
            let sensor = running(&sensor);
            let dir = TempDir::new("matrix-prevent");
            for &arch in Arch::runnable() {
                // The program's first action would create the marker.
                let (path, _, marker) = stager_with_marker(&dir, arch);
                let status = spawn(Command::new(&path).current_dir(dir.path()))
                    .wait()
                    .expect("wait");
                assert_eq!(
                    signalled(&status),
                    Some(libc::SIGKILL),
                    "{arch:?}: {status}"
                );
                assert!(!marker.exists(), "{arch:?}: the killed program ran");
                let rec = sensor.wait_for("the kill", exec_of(&path));
                assert_eq!(field_str(&rec, "event.action"), "killed", "{rec}");
                assert_eq!(field_str(&rec, "event.kind"), "alert", "{rec}");
            }
        }));
    }
    all_passed(outcomes);
}

#[test]
fn all_execs_prevent_mode() {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (_sensor, outcomes) = start(Mode::AllExecsPrevent);
    all_passed(outcomes);
}

/// Offsets from a BTF that does not describe the running kernel make the
/// sensor blind: it must refuse to start, naming the field and the file.
#[test]
fn doctored_btf_is_refused() {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let outcome = check("doctored-btf", Mode::Default, |r| {
        if let Some(earlier) = refused_in() {
            panic!("{}", not_loaded(earlier));
        }
        let real = fs::read(KERNEL_BTF).unwrap_or_else(|e| panic!("{KERNEL_BTF}: {e}"));
        let doctored = btf::move_member(&real, "inode", "i_size", 8)
            .unwrap_or_else(|e| panic!("{KERNEL_BTF}: {e}"));
        let dir = TempDir::new("matrix-btf");
        let path = dir.path().join("vmlinux-i_size-moved");
        fs::write(&path, doctored).expect("write the doctored BTF");
        let mut sensor = Sensor::spawn(
            Command::new(sensor_path())
                .args(["run", "--btf"])
                .arg(&path),
        );
        if sensor.try_wait_ready().is_ok() {
            r.insert("refused".into(), false.into());
            panic!(
                "the sensor said ready with a BTF whose inode.i_size was moved by 8 bytes ({}):\n{}",
                path.display(),
                sensor.stderr()
            );
        }
        r.insert("refused".into(), true.into());
        let status = sensor.wait_exit();
        let stderr = sensor.stderr();
        assert!(
            !status.success(),
            "exit {status} with a doctored BTF:\n{stderr}"
        );
        assert!(
            stderr.contains("inode.i_size"),
            "the error does not name inode.i_size:\n{stderr}"
        );
        assert!(
            stderr.contains(path.to_str().expect("UTF-8")),
            "the error does not name the BTF file {}:\n{stderr}",
            path.display()
        );
    });
    all_passed(vec![outcome]);
}

/// The largest `--max-path-depth` the flag accepts must load on every kernel.
#[test]
fn deepest_path_walk_loads() {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let outcome = check("max-depth", Mode::Default, |r| {
        if let Some(earlier) = refused_in() {
            panic!("{}", not_loaded(earlier));
        }
        let depth = MAX_PATH_DEPTH.to_string();
        let mut sensor = Sensor::spawn(Command::new(sensor_path()).args([
            "run",
            "--max-path-depth",
            depth.as_str(),
        ]));
        let waited = sensor.try_wait_ready();
        let stderr = sensor.stderr();
        if let Some((total, _)) = verified(&stderr) {
            r.insert("verified".into(), total.into());
        }
        if let Err(why) = waited {
            panic!("--max-path-depth {depth} did not load: {why}");
        }
        r.insert("ready_ms".into(), ms(waited.unwrap_or_default()).into());
    });
    all_passed(vec![outcome]);
}

/// The kernel program's own log (`--log-level debug`, aya-log) loads on
/// every kernel within the budget (its log calls are verified then), and its
/// lines come through: a path deeper than the walk's default bound.
#[test]
fn kernel_log_loads_and_arrives() {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let outcome = check("kernel-log", Mode::Default, |r| {
        if let Some(earlier) = refused_in() {
            panic!("{}", not_loaded(earlier));
        }
        let mut sensor =
            Sensor::spawn(Command::new(sensor_path()).args(["run", "--log-level", "debug"]));
        let waited = sensor.try_wait_ready();
        let stderr = sensor.stderr();
        let total = verified(&stderr).map(|(total, programs)| {
            r.insert("verified".into(), total.into());
            r.insert("programs".into(), programs.into());
            total
        });
        if let Err(why) = waited {
            panic!("--log-level debug did not load: {why}");
        }
        let total = total.expect("the verified-instruction line");
        assert!(
            total <= VERIFIED_BUDGET,
            "{total} verified instructions with --log-level debug, over the budget of {VERIFIED_BUDGET}"
        );
        let dir = TempDir::new("matrix-kernel-log");
        let levels = usize::try_from(tinyexec_ebpf::DEFAULT_PATH_DEPTH).expect("a small number");
        let deep = (0..levels).fold(dir.path().to_path_buf(), |p, _| p.join("d"));
        fs::create_dir_all(&deep).expect("mkdir");
        let path = deep.join(unique("stager"));
        fs::write(&path, matching_elf(Arch::native(), vec![], None)).expect("write the stager");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut child = spawn(&mut Command::new(&path));
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        sensor.wait_stderr(
            &format!("debug: kernel: exe_path: pid {pid}: the executed file's path was cut short"),
            0,
        );
    });
    all_passed(vec![outcome]);
}

#[test]
fn verified_line_parses() {
    let stderr = "tinyexec-sensor: loading\n\
                  tinyexec-sensor: verified instructions: total=1234 tinyexec_exec=1200 walk=34 (kernel limit 1000000)\n\
                  tinyexec-sensor: ready: x";
    let (total, programs) = verified(stderr).expect("parsed");
    assert_eq!(total, 1234);
    assert_eq!(
        Value::Object(programs),
        json!({"tinyexec_exec": 1200, "walk": 34})
    );
    assert!(verified("tinyexec-sensor: ready").is_none());
}
