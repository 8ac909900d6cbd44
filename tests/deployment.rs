//! The Debian package where it is installed: Debian 12 booted with systemd as
//! PID 1 (`cargo xtask test` runs this binary inside that VM, see
//! xtask/src/vm/deployment.rs; it is not a host test, `cargo test` leaves it
//! out). Each step is one check, reported on the console as
//! `TINYEXEC-DEPLOY {json}` (`check`, `ok`, `ms`, and `detail` or `error`)
//! for xtask's table, in the order an administrator meets them: install
//! (enabled, started, active only on READY=1), an alert in the log file, the
//! files whose last bytes decide the match run from `/tmp`, `/home` and
//! `/opt` (hidden from the unit by its sandbox), reload, restart after
//! SIGKILL, `--prevent` by drop-in, the unit's exposure, stop, the installed
//! sensor by hand, and purge.
//!
//! The service's records are read from its log file, as a SOC's shipper reads
//! them; negative checks rest on a barrier (harness/barrier.rs).
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    any::Any,
    fs,
    io::ErrorKind,
    os::unix::process::ExitStatusExt as _,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tinyexec_harness::{
    Sensor, barrier::late_match, event_timeout, exposure_of, field_str, require_root, run_ok,
    sha256_hex, stager, stdout_of, tiny_exit0, unique, write_exe,
};

/// What each check's report line starts with (xtask/src/vm/deployment.rs).
const PREFIX: &str = "TINYEXEC-DEPLOY ";
const PKG: &str = "tinyexec";
const SERVICE: &str = "tinyexec.service";
const UNIT_FILE: &str = "/lib/systemd/system/tinyexec.service";
const DROP_IN_DIR: &str = "/etc/systemd/system/tinyexec.service.d";
const ALERTS: &str = "/var/log/tinyexec/alerts.json";
const EXCLUSIONS: &str = "/etc/tinyexec/exclusions.txt";
/// What the package installs or makes, all gone after purge.
const PURGED: [&str; 6] = [
    "/usr/bin/tinyexec-sensor",
    UNIT_FILE,
    "/etc/tinyexec",
    "/var/lib/tinyexec",
    "/var/log/tinyexec",
    "/usr/lib/tmpfiles.d/tinyexec.conf",
];
/// tests/systemd.rs holds the unit file to the same figure offline.
const MAX_EXPOSURE: f64 = 2.1;

fn systemctl(args: &[&str]) -> String {
    stdout_of(Command::new("systemctl").args(args))
}

/// One property of the service, as `systemctl show` says it.
fn property(name: &str) -> String {
    systemctl(&["show", "--value", "-p", name, SERVICE])
}

/// Waits until `cond` holds, for at most the harness's event timeout.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let timeout = event_timeout();
    while !cond() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The service's records so far, from its log file.
fn records() -> Vec<Value> {
    match fs::read_to_string(ALERTS) {
        Ok(t) => t
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{ALERTS}: not a JSON line ({e}): {l}"))
            })
            .collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {ALERTS}: {e}"),
    }
}

/// Predicate: the alert of an exec of `path`.
fn alert_of(path: &Path) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["event"]["kind"] == "alert" && v["file"]["path"].as_str() == path.to_str()
}

/// Waits for the alert of `path` in the log file; returns it and how long it took.
fn wait_alert(path: &Path) -> (Value, Duration) {
    let pred = alert_of(path);
    let mut found = None;
    let took = wait_until(
        &format!("an alert of {} in {ALERTS}", path.display()),
        || {
            found = records().into_iter().find(&pred);
            found.is_some()
        },
    );
    (found.expect("found"), took)
}

/// Writes a fresh executable file into `dir` (made if needed).
fn exe_in(dir: &str, name: &str, bytes: &[u8]) -> PathBuf {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {dir}: {e}"));
    let path = Path::new(dir).join(name);
    write_exe(&path, bytes);
    path
}

/// Runs a fresh stager from a directory the unit sees, and waits for its alert.
fn stager_alerts() -> Duration {
    let path = exe_in("/var/lib/tx-deploy", &unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    let (_, took) = wait_alert(&path);
    took
}

/// The service's journal: its messages, from every start.
fn journal() -> String {
    stdout_of(Command::new("journalctl").args(&["-u", SERVICE, "-o", "cat", "--no-pager"]))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `active`, and how long the current start took from exec to READY=1.
fn active_after_ready() -> Duration {
    assert_eq!(property("ActiveState"), "active", "{}", journal());
    let micros = |p: &str| -> u64 {
        property(p)
            .parse()
            .unwrap_or_else(|e| panic!("{p}: not microseconds ({e})"))
    };
    let start = micros("ExecMainStartTimestampMonotonic");
    let active = micros("ActiveEnterTimestampMonotonic");
    Duration::from_micros(active.saturating_sub(start))
}

fn install() -> String {
    let deb = std::env::var("TINYEXEC_DEB").expect("$TINYEXEC_DEB names the package");
    stdout_of(Command::new("dpkg").args(&["--install", &deb]));
    assert_eq!(systemctl(&["is-enabled", SERVICE]), "enabled");
    // Type=notify: the start job that dpkg's postinst waited for ends on READY=1.
    let ready = active_after_ready();
    format!("enabled, active on READY=1 {} after exec", secs(ready))
}

fn alert() -> String {
    format!(
        "the stager's alert in {ALERTS} after {} ms",
        stager_alerts().as_millis()
    )
}

/// A file whose match the last bytes decide, exec'd from `dir` and exiting
/// at once: the sensor must read it where the exec saw it.
fn late_bytes(dir: &str) -> String {
    let name = unique("late");
    let bytes = late_match(&name);
    let path = exe_in(dir, &name, &bytes);
    // The sensor trusts a file read after its process is gone only if it had
    // not changed in the 50 ms before it ran (a change time cannot tell
    // those apart; `CHANGE_TIME_GRAIN` in detect.rs): dropped, then run.
    thread::sleep(Duration::from_millis(100));
    run_ok(&mut Command::new(&path));
    let (v, took) = wait_alert(&path);
    let _ = fs::remove_file(&path);
    assert_eq!(v["rule"]["verdict"], "match", "{v}");
    assert_eq!(
        v["file"]["hash"]["sha256"],
        sha256_hex(&bytes).as_str(),
        "{v}"
    );
    format!(
        "match ({} bytes, content_source {}) after {} ms",
        bytes.len(),
        field_str(&v, "tinyexec.content_source"),
        took.as_millis()
    )
}

/// A new exclusion by `systemctl reload`: its file is suppressed, which the
/// barrier after it shows.
fn reload() -> String {
    let excluded = unique("excluded");
    let before = fs::read_to_string(EXCLUSIONS).unwrap_or_else(|e| panic!("{EXCLUSIONS}: {e}"));
    fs::write(
        EXCLUSIONS,
        format!("{before}\n# the deployment test's\nfile.name:\"{excluded}\"\n"),
    )
    .unwrap_or_else(|e| panic!("writing {EXCLUSIONS}: {e}"));
    let reloads = journal().matches("exclusions reloaded").count();
    systemctl(&["reload", SERVICE]);
    wait_until("the service's \"exclusions reloaded\" line", || {
        journal().matches("exclusions reloaded").count() > reloads
    });
    let path = exe_in("/var/lib/tx-deploy", &excluded, &stager());
    run_ok(&mut Command::new(&path));
    let barrier_name = unique("barrier");
    let barrier = exe_in(
        "/var/lib/tx-deploy",
        &barrier_name,
        &late_match(&barrier_name),
    );
    run_ok(&mut Command::new(&barrier));
    wait_alert(&barrier);
    let all = records();
    let upto = all
        .iter()
        .position(alert_of(&barrier))
        .expect("the barrier's alert");
    assert!(
        !all[..upto].iter().any(alert_of(&path)),
        "the excluded stager was alerted after the reload"
    );
    assert_eq!(property("ActiveState"), "active");
    "the new exclusion suppressed its file (barrier)".to_owned()
}

fn restart_after_kill() -> String {
    let old = property("MainPID");
    let restarts = property("NRestarts");
    let killed = Instant::now();
    systemctl(&["kill", "--signal=SIGKILL", SERVICE]);
    wait_until("a new main process, active again", || {
        let pid = property("MainPID");
        pid != old && pid != "0" && property("ActiveState") == "active"
    });
    let back = killed.elapsed();
    let took = stager_alerts();
    format!(
        "active again {} after SIGKILL (NRestarts {restarts} -> {}), alert after {} ms",
        secs(back),
        property("NRestarts"),
        took.as_millis()
    )
}

/// The unit's command line with `extra` added, as a drop-in.
fn set_drop_in(extra: Option<&str>) {
    let path = Path::new(DROP_IN_DIR).join("prevent.conf");
    match extra {
        Some(extra) => {
            let unit = fs::read_to_string(UNIT_FILE).unwrap_or_else(|e| panic!("{UNIT_FILE}: {e}"));
            let exec = unit
                .lines()
                .find_map(|l| l.strip_prefix("ExecStart="))
                .expect("the unit's ExecStart");
            fs::create_dir_all(DROP_IN_DIR).expect("the drop-in directory");
            fs::write(
                &path,
                format!("[Service]\nExecStart=\nExecStart={exec} {extra}\n"),
            )
            .expect("writing the drop-in");
        }
        None => fs::remove_file(&path).expect("removing the drop-in"),
    }
    systemctl(&["daemon-reload"]);
    systemctl(&["restart", SERVICE]);
    active_after_ready();
}

/// `--prevent` by drop-in: the stager does not run (refused in `execve`, or
/// killed before its first instruction, whichever the kernel allows), the
/// alert says which; a plain exec runs.
fn prevent() -> String {
    set_drop_in(Some("--prevent"));
    let path = exe_in("/var/lib/tx-deploy", &unique("prevented"), &stager());
    let how = match Command::new(&path).status() {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => "denied",
        Ok(st) if st.signal() == Some(libc::SIGKILL) => "killed",
        other => panic!("the stager ran under --prevent: {other:?}"),
    };
    let (v, _) = wait_alert(&path);
    assert_eq!(v["event"]["action"], how, "{v}");
    let plain = exe_in("/var/lib/tx-deploy", &unique("plain"), &tiny_exit0());
    run_ok(&mut Command::new(&plain));
    set_drop_in(None);
    format!("the stager {how} (event.action {how}); a plain exec ran")
}

fn exposure() -> String {
    let out = stdout_of(Command::new("systemd-analyze").args(&["security", "--no-pager", SERVICE]));
    let score =
        exposure_of(&out, SERVICE).unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{out}"
    );
    format!("exposure {score} (at most {MAX_EXPOSURE})")
}

/// A clean stop: the last lines say what each output did, after it delivered.
fn stop() -> String {
    let pid = property("MainPID");
    systemctl(&["stop", SERVICE]);
    assert_eq!(property("ActiveState"), "inactive");
    assert_eq!(property("Result"), "success");
    let lines = stdout_of(Command::new("journalctl").args([
        "-o",
        "cat",
        "--no-pager",
        &format!("_PID={pid}"),
    ]));
    let file = lines
        .lines()
        .rev()
        .find(|l| l.contains("file: written"))
        .unwrap_or_else(|| panic!("no counters line of the file output at exit:\n{lines}"));
    assert!(file.ends_with("queued 0"), "{file}");
    assert!(lines.contains("stopped"), "{lines}");
    format!("inactive, result success; {}", file.trim())
}

/// The unit's own command line, run by hand as installed, to `ready` and an alert.
fn by_hand() -> String {
    let unit = fs::read_to_string(UNIT_FILE).unwrap_or_else(|e| panic!("{UNIT_FILE}: {e}"));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit's ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let mut sensor = Sensor::spawn(Command::new(argv[0]).args(&argv[1..]));
    let ready = sensor
        .try_wait_ready()
        .unwrap_or_else(|why| panic!("`{exec}` by hand: {why}"));
    let took = stager_alerts();
    let status = sensor.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}:\n{}", sensor.stderr());
    format!(
        "`{exec}` ready in {}, alert after {} ms",
        secs(ready),
        took.as_millis()
    )
}

fn purge() -> String {
    stdout_of(Command::new("dpkg").args(&["--purge", PKG]));
    let status = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", PKG])
        .output()
        .expect("dpkg-query");
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.status.success() || said == "not-installed",
        "dpkg says {said}"
    );
    for gone in PURGED {
        assert!(
            fs::symlink_metadata(gone).is_err(),
            "{gone} left behind after purge"
        );
    }
    let state = property("LoadState");
    assert_eq!(state, "not-found", "the unit after purge");
    "nothing left (files, directories, unit)".to_owned()
}

fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// A check: what it saw, or a panic saying what went wrong.
type Step = fn() -> String;

/// Runs one check and prints its report line; returns whether it passed.
fn check(name: &str, f: impl FnOnce() -> String) -> bool {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(f));
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let line = match &result {
        Ok(detail) => json!({"check": name, "ok": true, "ms": ms, "detail": detail}),
        Err(p) => json!({"check": name, "ok": false, "ms": ms, "error": message(p.as_ref())}),
    };
    println!("{PREFIX}{line}");
    result.is_ok()
}

#[test]
fn the_package_under_systemd() {
    require_root();
    let init = fs::read_link("/proc/1/exe").expect("/proc/1/exe");
    assert!(
        init.ends_with("systemd"),
        "PID 1 is {}: this test runs inside the systemd VM of `cargo xtask test`",
        init.display()
    );
    let checks: [(&str, Step); 12] = [
        ("install", install),
        ("alert", alert),
        ("late bytes, /tmp", || late_bytes("/tmp")),
        ("late bytes, /home", || late_bytes("/home/tx-user")),
        ("late bytes, /opt", || late_bytes("/opt/tx")),
        ("reload", reload),
        ("restart after SIGKILL", restart_after_kill),
        ("--prevent drop-in", prevent),
        ("exposure", exposure),
        ("stop", stop),
        ("by hand", by_hand),
        ("purge", purge),
    ];
    let failed: Vec<&str> = checks
        .into_iter()
        .filter(|(name, f)| !check(name, f))
        .map(|(name, _)| name)
        .collect();
    assert!(failed.is_empty(), "failed: {}", failed.join(", "));
}
