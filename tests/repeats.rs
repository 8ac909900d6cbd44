//! The bound on alert floods: a storm of execs of one stager is one alert at
//! once and one aggregate record with the count when the repeat window ends;
//! with `--all-execs` still one record per exec, but only one alert. A
//! barrier (another file's alert after the storm) shows every repeat was seen
//! before the assertions.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{fs, path::Path, process::Command};

use serde_json::Value;
use tinyexec_harness::{
    Sensor, TempDir, exec_of, field, field_str, field_u64, is_heartbeat, run_or_killed,
    sensor_path, stager, unique,
};

/// Execs in the storm.
const STORM: u64 = 300;
/// A window far longer than the storm takes (about a second here), short for a test.
const WINDOW: &str = "8";

fn storm(path: &Path) {
    for _ in 0..STORM {
        run_or_killed(&mut Command::new(path));
    }
}

fn kind(v: &Value) -> &str {
    field_str(v, "event.kind")
}

/// Storms one stager, then a barrier; returns the storm file's records up to
/// and including its aggregate, and the final heartbeat.
fn storm_and_aggregate(args: &[&str], kind_of_alert: &str) -> (Vec<Value>, Value) {
    let dir = TempDir::new("flood");
    let path = dir.exe(&unique("stager"), &stager());
    let mut s = Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--repeat-window", WINDOW])
            .args(args),
    );
    storm(&path);
    // Every exec of the storm was handled before the barrier (one process,
    // execs in order): so far the first alert only, however long the storm took.
    let before: Vec<Value> = s
        .records_before_barrier()
        .into_iter()
        .filter(exec_of(&path))
        .collect();
    let alerts: Vec<&Value> = before.iter().filter(|v| kind(v) == kind_of_alert).collect();
    assert_eq!(alerts.len(), 1, "one alert at once: {alerts:#?}");
    assert!(alerts[0].get("repeats").is_none());
    // The window ends: one aggregate.
    let agg = s.wait_for("the aggregate", |v| {
        exec_of(&path)(v) && v.get("repeats").is_some()
    });
    assert!(s.stop_with(libc::SIGTERM).success(), "{}", s.stderr());
    let all = s.records(exec_of(&path));
    assert_eq!(
        all.iter().filter(|v| v.get("repeats").is_some()).count(),
        1,
        "one aggregate"
    );
    assert_eq!(field(&agg, "event.kind"), kind_of_alert, "{agg}");
    assert_eq!(field_u64(&agg, "repeats.count"), STORM - 1, "{agg}");
    assert_eq!(
        field_u64(&agg, "repeats.of_sequence"),
        field_u64(alerts[0], "event.sequence")
    );
    assert_eq!(field_u64(&agg, "repeats.window_secs"), 8);
    assert_eq!(
        field(&agg, "file.hash.sha256"),
        field(alerts[0], "file.hash.sha256")
    );
    let last = s.records(is_heartbeat).pop().expect("the final heartbeat");
    (all, last)
}

#[test]
fn a_storm_of_one_stager_is_one_alert_and_one_aggregate() {
    let (all, last) = storm_and_aggregate(&["--no-exclusions"], "alert");
    assert_eq!(all.len(), 2, "the alert and the aggregate, nothing else");
    // This sensor saw the storm: its repeats are counted (other tests' too).
    assert!(field_u64(&last, "heartbeat.repeats") >= STORM - 1, "{last}");
}

#[test]
fn with_all_execs_every_repeat_is_a_record_but_not_an_alert() {
    let (all, _) = storm_and_aggregate(&["--no-exclusions", "--all-execs"], "alert");
    let alerts = all.iter().filter(|v| kind(v) == "alert").count();
    let repeats: Vec<&Value> = all
        .iter()
        .filter(|v| v.get("repeats").is_none() && kind(v) == "event")
        .collect();
    assert_eq!(alerts, 2, "the first and the aggregate");
    assert_eq!(repeats.len() as u64, STORM - 1, "one record per exec");
    let first = all.iter().find(|v| kind(v) == "alert").unwrap();
    for r in &repeats {
        assert_eq!(
            field(r, "tinyexec.repeat_of"),
            field(first, "event.sequence"),
            "{r}"
        );
        assert_eq!(
            field(r, "rule.verdict"),
            "match",
            "the verdict is kept: {r}"
        );
    }
}

#[test]
fn suppressed_repeats_are_aggregated_too() {
    let dir = TempDir::new("flood-excl");
    let excl = dir.path().join("exclusions.txt");
    fs::write(&excl, "# Storms\nprocess.name:\"tx-stager\"\n").unwrap();
    let (all, last) = storm_and_aggregate(&["--exclusions", excl.to_str().unwrap()], "suppressed");
    assert_eq!(all.len(), 2, "the suppressed record and its aggregate");
    assert!(all.iter().all(|v| field(v, "exclusion.name") == "Storms"));
    assert!(field_u64(&last, "heartbeat.suppressed") >= STORM, "{last}");
}

/// The same stager run again within the window with other arguments: each
/// new command line is an alert of its own (the payload the stager launches
/// is in its arguments), said to repeat the first; the same command line
/// again is a repeat, counted in the aggregate. (Before: one alert, the
/// later arguments lost.)
#[test]
fn a_repeat_with_a_new_command_line_is_alerted() {
    let dir = TempDir::new("payloads");
    let path = dir.exe(&unique("stager"), &stager());
    let s =
        Sensor::start_with(Command::new(sensor_path()).args(["run", "--repeat-window", WINDOW]));
    let payloads: Vec<String> = (0..4).map(|i| format!("/usr/bin/payload-{i}")).collect();
    for p in &payloads {
        run_or_killed(Command::new(&path).arg(p));
    }
    // The same ones again: repeats, not alerts.
    for p in &payloads {
        run_or_killed(Command::new(&path).arg(p));
    }
    let before: Vec<Value> = s
        .records_before_barrier()
        .into_iter()
        .filter(exec_of(&path))
        .collect();
    let alerts: Vec<&Value> = before.iter().filter(|v| kind(v) == "alert").collect();
    let args: Vec<&str> = alerts
        .iter()
        .map(|v| field_str(v, "process.args.1"))
        .collect();
    assert_eq!(args, payloads, "one alert per command line: {alerts:#?}");
    let first = field_u64(alerts[0], "event.sequence");
    assert!(field(alerts[0], "tinyexec.repeat_of").is_null());
    for a in &alerts[1..] {
        assert_eq!(field_u64(a, "tinyexec.repeat_of"), first, "{a}");
    }
    let agg = s.wait_for("the aggregate", |v| {
        exec_of(&path)(v) && v.get("repeats").is_some()
    });
    assert_eq!(field_u64(&agg, "repeats.count"), 4, "{agg}");
}
