//! The analysts' exclusions, applied in real time: each shipped scenario really
//! arranged (parent named `cron`, root with the script in its arguments, a file
//! named `snort`, one named `ansible`) yields a suppressed record naming the
//! exclusion; a near miss yields an alert. Reloads keep every exec accounted for.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::Value;
use tinyexec_harness::{
    Sensor, TempDir, exec_of, field, field_str, run_ok, sensor_path, stager, unique, write_exe,
};

/// The default exclusions as installed (the four complete scenarios).
fn default_exclusions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/exclusions.txt")
}

/// Every exec is judged and emitted on its own: the flood bound (repeats of
/// one file aggregated) is tests/repeats.rs's subject, not this file's.
fn sensor_with(exclusions: &Path, extra: &[&str]) -> Sensor {
    Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--repeat-window", "0"])
            .arg("--exclusions")
            .arg(exclusions)
            .args(extra),
    )
}

fn kind(rec: &Value) -> &str {
    field_str(rec, "event.kind")
}

const SCHEDULED: &str = "Scheduled system maintenance task using tinyexec (systemd or cron job runs a routine firewall update)";
const ADMIN: &str =
    "Administrator deploys firewall rules via tinyexec as part of a security policy change";
const SECURITY_TOOL: &str =
    "A security tool (Snort, Suricata, OSSEC) runs a custom script through tinyexec";
const PATCHING: &str =
    "An automated patching tool (Ansible, Chef, Puppet) applies firewall changes during an update";

/// The tests that run files named `snort`, one at a time: every sensor sees
/// every exec, so one test's `snort` runs would be counted by another's
/// sensor (the per-exclusion counter asserts an exact 3).
fn snort_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn each_shipped_scenario_suppresses_and_its_near_miss_alerts() {
    let _turn = snort_turn();
    let sensor = sensor_with(&default_exclusions(), &[]);
    let dir = TempDir::new("scenarios");
    let bytes = stager();

    // 1. Run by a parent whose executable is named `cron` (a copy of sh that
    //    forks: `; true` keeps it from exec'ing the last command itself).
    for (parent, expect) in [("cron", "suppressed"), ("anacron", "alert")] {
        let sh = dir.path().join(parent);
        fs::copy("/bin/sh", &sh).unwrap();
        let path = dir.exe(&unique("maint"), &bytes);
        run_ok(
            Command::new(&sh)
                .arg("-c")
                .arg(format!("{}; true", path.display())),
        );
        let rec = sensor.wait_for(parent, exec_of(&path));
        assert_eq!(field_str(&rec, "process.parent.name"), parent);
        assert_eq!(kind(&rec), expect, "{rec}");
        if expect == "suppressed" {
            assert_eq!(field_str(&rec, "exclusion.name"), SCHEDULED);
            assert_eq!(field_str(&rec, "rule.name"), "EQGRP_tinyexec");
        }
    }

    // 2. By root with `update-firewall-rules.sh` in its arguments; as nobody it alerts.
    let path = dir.exe(&unique("deploy"), &bytes);
    run_ok(Command::new(&path).args(["--policy", "update-firewall-rules.sh"]));
    run_ok(
        Command::new(&path)
            .args(["--policy", "update-firewall-rules.sh"])
            .uid(65534)
            .gid(65534),
    );
    let recs = sensor.wait_for_n("root and nobody", 2, exec_of(&path));
    for rec in recs {
        match field_str(&rec, "process.user") {
            "root" => {
                assert_eq!(kind(&rec), "suppressed");
                assert_eq!(field_str(&rec, "exclusion.name"), ADMIN);
            }
            "nobody" => assert_eq!(kind(&rec), "alert"),
            other => panic!("unexpected user {other}"),
        }
    }

    // 3 and 4. Files named `snort` and `ansible`; `snort2` and `ansiblex` alert.
    for (name, expect, exclusion) in [
        ("snort", "suppressed", SECURITY_TOOL),
        ("snort2", "alert", ""),
        ("ansible", "suppressed", PATCHING),
        ("ansiblex", "alert", ""),
    ] {
        let sub = dir.path().join(unique("d"));
        fs::create_dir(&sub).unwrap();
        let path = sub.join(name);
        write_exe(&path, &bytes);
        run_ok(&mut Command::new(&path));
        let rec = sensor.wait_for(name, exec_of(&path));
        assert_eq!(kind(&rec), expect, "{name}: {rec}");
        if !exclusion.is_empty() {
            assert_eq!(field_str(&rec, "exclusion.name"), exclusion);
        }
    }
}

#[test]
fn counted_only_suppressions_are_logged_per_exclusion() {
    let _turn = snort_turn();
    let mut sensor = sensor_with(&default_exclusions(), &["--suppressed", "count"]);
    let dir = TempDir::new("count");
    let path = dir.path().join("snort");
    write_exe(&path, &stager());
    for _ in 0..3 {
        run_ok(&mut Command::new(&path));
    }
    // A near miss after them: once its alert is out, the three were handled.
    let miss = dir.exe("snort2", &stager());
    run_ok(&mut Command::new(&miss));
    sensor.wait_for("the near miss", exec_of(&miss));
    assert!(sensor.stop_with(libc::SIGTERM).success());
    assert!(sensor.records(exec_of(&path)).is_empty());
    let stderr = sensor.stderr();
    assert!(
        stderr.contains(&format!("{SECURITY_TOOL:?}=3")),
        "counters at exit: {stderr}"
    );
}

#[test]
fn reload_on_change_and_sighup_keeps_every_exec_accounted_for() {
    let _turn = snort_turn();
    let dir = TempDir::new("reload");
    let file = dir.path().join("exclusions.txt");
    let snort_rule = "# snort is fine\nprocess.name:\"snort\"\n";
    fs::write(&file, snort_rule).unwrap();
    let sensor = sensor_with(&file, &[]);
    let path = dir.path().join("snort");
    write_exe(&path, &stager());

    // Execs keep running through every reload below.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (stop, count, path) = (Arc::clone(&stop), Arc::clone(&count), path.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                run_ok(&mut Command::new(&path));
                count.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let suppressed = |v: &Value| exec_of(&path)(v) && field(v, "event.kind") == "suppressed";
    let alert = |v: &Value| exec_of(&path)(v) && field(v, "event.kind") == "alert";
    sensor.wait_for("suppressed before any reload", suppressed);

    // The file changes on disk: picked up without a signal.
    let mut at = sensor.stderr_lines();
    fs::write(&file, "# nothing excluded\n").unwrap();
    at = sensor.wait_stderr("exclusions reloaded", at);
    let alerts_before = sensor.records(alert).len();
    sensor.wait_for_n("alerts after the reload", alerts_before + 1, alert);

    // A broken file: the running exclusions stay (still none), the error names the place.
    fs::write(&file, "# broken\nprocess.name:\"snort\" AND\n").unwrap();
    at = sensor.wait_stderr("reload failed", at);
    // The error's place follows on the next lines.
    at = sensor.wait_stderr(&format!("{}:2:", file.display()), at);
    let alerts_before = sensor.records(alert).len();
    sensor.wait_for_n("alerts after the failed reload", alerts_before + 1, alert);

    // Fixed, and a SIGHUP for good measure.
    fs::write(&file, snort_rule).unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(sensor.pid().cast_signed(), libc::SIGHUP) };
    sensor.wait_stderr("exclusions reloaded", at);
    let suppressed_before = sensor.records(suppressed).len();
    sensor.wait_for_n(
        "suppressed after the fix",
        suppressed_before + 1,
        suppressed,
    );

    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    let n = count.load(Ordering::Relaxed);
    sensor.wait_for_n("one record per exec", n, exec_of(&path));
    // Anything more before the barrier would be an exec evaluated twice.
    let recs_after: Vec<Value> = sensor
        .records_before_barrier()
        .into_iter()
        .filter(exec_of(&path))
        .collect();
    assert_eq!(
        recs_after.len(),
        n,
        "{} records for {n} execs",
        recs_after.len()
    );
    let mut pids: Vec<u64> = recs_after
        .iter()
        .map(|r| field(r, "process.pid").as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), n, "each exec evaluated once");
}

#[test]
fn a_broken_file_at_start_is_a_clear_error() {
    tinyexec_harness::require_root();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/exclusions.txt");
    let mut sensor = Sensor::spawn(
        Command::new(sensor_path())
            .arg("run")
            .arg("--exclusions")
            .arg(&spec),
    );
    let status = sensor.wait_exit();
    assert!(!status.success());
    let err = sensor.stderr();
    assert!(
        err.contains("exclusions.txt:18:36: unterminated value"),
        "{err}"
    );
}

#[test]
fn check_prints_each_exclusion_and_the_fifth_lines_error() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/exclusions.txt");
    let out = Command::new(sensor_path())
        .arg("check")
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [SCHEDULED, ADMIN, SECURITY_TOOL, PATCHING] {
        assert!(text.contains(name), "{text}");
    }
    assert!(
        text.contains(r#"process.user:"root" AND process.command_line:"update-firewall-rules.sh""#)
    );
    assert!(text.contains(":18:36: unterminated value"), "{text}");
    assert!(text.contains("process.parent.executable"), "{text}");
    assert!(text.contains("4 exclusions, 1 errors"), "{text}");

    let ok = Command::new(sensor_path())
        .arg("check")
        .arg(default_exclusions())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}
