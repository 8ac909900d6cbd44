//! Inputs that must neither crash nor hang the sensor (issue 11, item 4): an
//! exclusions file nested 10,000 deep or with 100,000 NOTs, a FIFO in place of
//! a file, a file far over the size limit, binary garbage, and flags or
//! configuration keys out of range. Each is refused with an error naming the
//! place, at start, by `check`, and on a live reload, after which the running
//! sensor still alerts (a barrier exec shows it).
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tinyexec_harness::{
    Sensor, TempDir, exec_of, field_str, run_ok, sensor_path, stager, unique, write_exe,
};

/// The exclusions file limit (docs/exclusions.md).
const LIMIT: usize = 1 << 20;

/// A hostile exclusions file: its name, how to put it at a path, and what the
/// error must say.
struct Case {
    name: &'static str,
    make: fn(&Path),
    says: &'static str,
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Deterministic bytes that are not UTF-8, after two good lines.
#[expect(
    clippy::cast_possible_truncation,
    reason = "random bytes: one byte of each draw"
)]
fn garbage() -> Vec<u8> {
    let mut out = b"# fine so far\nprocess.name:snort\n\xff".to_vec();
    let mut x: u32 = 0x2545_f491;
    for _ in 0..4096 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.push((x >> 16) as u8);
    }
    out
}

/// Exclusions of about `bytes` bytes, each a plausible line; none matches the stagers.
fn many_exclusions(bytes: usize) -> String {
    let mut text = String::new();
    let mut i = 0;
    loop {
        let entry = format!(
            "# tool {i}\nprocess.name:\"tool{i}\" OR file.path:\"/opt/t{i}\" OR process.command_line:\"run x{i} now\"\n"
        );
        if text.len() + entry.len() > bytes {
            return text;
        }
        text.push_str(&entry);
        i += 1;
    }
}

const CASES: &[Case] = &[
    Case {
        name: "10,000 nested parentheses",
        make: |p| {
            let line = format!(
                "{}process.name:a{}\n",
                "(".repeat(10_000),
                ")".repeat(10_000)
            );
            fs::write(p, line).expect("writing the bad file");
        },
        says: ":1:65: nested too deeply: more than 64",
    },
    Case {
        name: "100,000 NOTs",
        make: |p| {
            fs::write(p, format!("{}process.name:a\n", "NOT ".repeat(100_000)))
                .expect("writing the bad file");
        },
        says: ":1:257: nested too deeply",
    },
    Case {
        name: "a FIFO",
        make: mkfifo,
        says: "is a FIFO, not a regular file",
    },
    Case {
        name: "50 MB",
        make: |p| fs::write(p, many_exclusions(50_000_000)).expect("writing the bad file"),
        says: "bytes, more than the limit of 1 MiB",
    },
    Case {
        name: "one byte over the limit",
        make: |p| {
            let mut text = many_exclusions(LIMIT);
            text.push_str(&"#".repeat(LIMIT + 1 - text.len()));
            fs::write(p, text).expect("writing the bad file");
        },
        says: "is too large: 1048577 bytes, more than the limit of 1 MiB",
    },
    Case {
        name: "binary garbage",
        make: |p| fs::write(p, garbage()).expect("writing the bad file"),
        says: ":3:1: not UTF-8 text: byte 0x",
    },
];

/// Puts `case` at `path` the way an editor or an attacker would: made next to
/// it, then renamed over it.
fn replace(path: &Path, case: &Case) {
    let tmp = path.with_extension(unique("new"));
    (case.make)(&tmp);
    fs::rename(&tmp, path).expect("renaming the bad file into place");
}

#[test]
fn each_hostile_file_is_refused_at_start_with_its_place() {
    tinyexec_harness::require_root();
    let dir = TempDir::new("start");
    for case in CASES {
        let path = dir.path().join(unique("exclusions"));
        (case.make)(&path);
        let started = Instant::now();
        let mut sensor = Sensor::spawn(
            Command::new(sensor_path())
                .arg("run")
                .arg("--exclusions")
                .arg(&path),
        );
        let status = sensor.wait_exit();
        let err = sensor.stderr();
        eprintln!(
            "{}: exit {status} after {:?}: {}",
            case.name,
            started.elapsed(),
            err.lines().next().unwrap_or_default()
        );
        assert_eq!(status.code(), Some(1), "{}: {status}\n{err}", case.name);
        assert!(
            err.contains(case.says) && err.contains(path.to_str().unwrap()),
            "{}: {err}",
            case.name
        );
        assert!(!err.contains("ready") && !err.contains("overflow"), "{err}");
        assert!(
            err.len() < 2000,
            "{}: a short error, not the file",
            case.name
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{}", case.name);
    }
}

#[test]
fn check_reports_each_hostile_file_with_its_place() {
    let dir = TempDir::new("check");
    for case in CASES {
        let path = dir.path().join(unique("exclusions"));
        (case.make)(&path);
        let started = Instant::now();
        let out = Command::new(sensor_path())
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{}: exit {} after {:?}",
            case.name,
            out.status,
            started.elapsed()
        );
        // Nesting is a parse error (1); the others make the file unreadable (2).
        let want = if case.says.contains("nested") { 1 } else { 2 };
        assert_eq!(out.status.code(), Some(want), "{}: {text}", case.name);
        assert!(text.contains(case.says), "{}: {text}", case.name);
        assert!(text.len() < 2000, "{}: {} bytes", case.name, text.len());
    }
}

fn is_alert(path: &Path) -> impl Fn(&Value) -> bool + '_ {
    move |v| exec_of(path)(v) && field_str(v, "event.kind") == "alert"
}

#[test]
fn a_reload_of_each_hostile_file_keeps_the_running_exclusions_and_the_alerts() {
    let dir = TempDir::new("reload");
    let file = dir.path().join("exclusions.txt");
    let good = "# snort is fine\nprocess.name:\"snort\"\n";
    fs::write(&file, good).unwrap();
    // Every exec of the same file alerts: the flood bound is not under test.
    let sensor = Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--repeat-window", "0", "--exclusions"])
            .arg(&file),
    );
    let snort = dir.path().join(unique("d"));
    fs::create_dir(&snort).unwrap();
    let snort = snort.join("snort");
    write_exe(&snort, &stager());
    let mut at = 0;
    for case in CASES {
        at = sensor.stderr_lines();
        replace(&file, case);
        at = sensor.wait_stderr("exclusions reload failed, keeping the 1 running", at);
        sensor.wait_stderr(case.says, at - 1);
        // The barrier: a new stager's alert comes through after the failed reload.
        let (barrier, _) = sensor.barrier();
        assert_eq!(
            field_str(&barrier, "event.kind"),
            "alert",
            "the barrier after {}: {barrier}",
            case.name
        );
        // And the running exclusion still applies.
        let before = sensor.records(exec_of(&snort)).len();
        run_ok(&mut Command::new(&snort));
        let recs = sensor.wait_for_n("snort", before + 1, exec_of(&snort));
        assert_eq!(
            field_str(&recs[before], "event.kind"),
            "suppressed",
            "{}",
            case.name
        );
    }
    // A good file again is taken.
    let fixed = file.with_extension("fixed");
    fs::write(&fixed, "# nothing excluded\n").unwrap();
    fs::rename(&fixed, &file).unwrap();
    sensor.wait_stderr("exclusions reloaded", at);
    let stderr = sensor.stderr();
    assert!(!stderr.contains("overflow"), "{stderr}");
    assert!(
        stderr.len() < 20_000,
        "bad files do not flood the log: {} bytes",
        stderr.len()
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Starts a sensor with `exclusions`, then times exec-to-alert for stagers no
/// exclusion covers (each is checked against every one). Returns the time to
/// ready, the mean and worst exec-to-alert, and the resident size.
fn time_alerts(dir: &TempDir, exclusions: &Path) -> (Duration, Duration, Duration, u64) {
    let started = Instant::now();
    let sensor = Sensor::start_with(
        Command::new(sensor_path())
            .arg("run")
            .arg("--exclusions")
            .arg(exclusions),
    );
    let ready = started.elapsed();
    const N: u32 = 20;
    let (mut worst, mut total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..N {
        let path = dir.exe(&unique("stager"), &stager());
        let t = Instant::now();
        run_ok(&mut Command::new(&path));
        sensor.wait_for("the alert", is_alert(&path));
        worst = worst.max(t.elapsed());
        total += t.elapsed();
    }
    (ready, total / N, worst, rss_kib(sensor.pid()))
}

#[test]
fn a_file_just_under_the_limit_loads_and_alerts_promptly() {
    let dir = TempDir::new("limit");
    let file = dir.path().join("exclusions.txt");
    let text = many_exclusions(LIMIT);
    let count = text.lines().filter(|l| !l.starts_with('#')).count();
    fs::write(&file, &text).unwrap();
    let small = dir.path().join("one.txt");
    fs::write(&small, "# one\nprocess.name:snort\n").unwrap();
    let (ready, mean, worst, rss) = time_alerts(&dir, &file);
    let (ready1, mean1, worst1, rss1) = time_alerts(&dir, &small);
    eprintln!(
        "{} bytes, {count} exclusions: ready after {ready:?}, RSS {rss} KiB, \
         exec to alert {mean:?} on average, {worst:?} at worst; \
         with 1 exclusion: {ready1:?}, {rss1} KiB, {mean1:?}, {worst1:?}",
        text.len(),
    );
    assert!(worst < Duration::from_secs(2), "{worst:?}");
}

fn run_fails(args: &[&str], config: Option<&PathBuf>) -> (Option<i32>, String) {
    let mut cmd = Command::new(sensor_path());
    cmd.arg("run").args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().expect("running the sensor");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("ready"), "{err}");
    (out.status.code(), err)
}

#[test]
fn flags_and_config_keys_out_of_range_name_the_flag_and_the_range() {
    tinyexec_harness::require_root();
    for (flag, value, says) in [
        ("--ring-buffer-size", "0", "a power of two from 4096"),
        ("--ring-buffer-size", "3", "a power of two from 4096"),
        ("--ring-buffer-size", "5000", "to 2147483648"),
        ("--ring-buffer-size", "4k", "whole number"),
        ("--max-path-depth", "0", "from 1 to 512"),
        ("--max-path-depth", "513", "from 1 to 512"),
        ("--max-path-depth", "1000000", "from 1 to 512"),
        ("--heartbeat-interval", "0", "from 1 to 86400 seconds"),
        ("--heartbeat-interval", "86401", "from 1 to 86400 seconds"),
        ("--repeat-window", "86401", "from 0 (off) to 86400 seconds"),
        ("--repeat-window", "1m", "whole number"),
        ("--output-queue", "0", "from 1 to 1000000 records"),
        ("--output-queue", "1000001", "from 1 to 1000000 records"),
        (
            "--log-level",
            "loud",
            "[possible values: error, warn, info, debug, trace]",
        ),
    ] {
        let (code, err) = run_fails(&[flag, value], None);
        // clap's usage errors exit 2, before anything is loaded.
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag}")) && err.contains(says),
            "{flag} {value}: {err}"
        );
    }
    let dir = TempDir::new("config");
    for (line, says) in [
        ("ring_buffer_size = 5000", "`ring_buffer_size`: 5000 is not"),
        ("ring_buffer_size = 0", "a power of two from 4096"),
        ("max_path_depth = 0", "`max_path_depth`: 0 is not"),
        ("max_path_depth = 513", "from 1 to 512"),
        ("heartbeat_interval = 0", "`heartbeat_interval`: 0 is not"),
        ("repeat_window = 90000", "from 0 (off) to 86400 seconds"),
        ("output_queue = 0", "`output_queue`: 0 is not"),
        (
            "log_level = \"loud\"",
            "unknown variant `loud`, expected one of `error`, `warn`, `info`",
        ),
    ] {
        let config = dir.path().join(unique("config.toml"));
        fs::write(&config, format!("no_exclusions = true\n{line}\n")).unwrap();
        let (code, err) = run_fails(&[], Some(&config));
        assert_eq!(code, Some(1), "{line}: {err}");
        assert!(
            err.contains(config.to_str().unwrap())
                && err.contains("line 2")
                && err.contains(line)
                && err.contains(says),
            "{line}: {err}"
        );
    }
    // A configuration that is a FIFO is refused at once, not waited on.
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo);
    let started = Instant::now();
    let (code, err) = run_fails(&[], Some(&fifo));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("configuration") && err.contains("is a FIFO, not a regular file"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The smallest valid ring buffer still runs (tests/lifecycle.rs uses it for losses).
    let mut sensor = Sensor::start(["--no-exclusions", "--ring-buffer-size", "4096"]);
    assert!(sensor.stop_with(libc::SIGTERM).success());
}

#[test]
fn a_file_of_thousands_of_bad_lines_is_refused_quickly_and_briefly() {
    tinyexec_harness::require_root();
    let dir = TempDir::new("badlines");
    let path = dir.path().join("exclusions.txt");
    // Just under the limit: about 22,000 unknown fields, each once worth an
    // edit-distance search over every field name (1.4 s in all), and a log
    // line per error.
    let text: String = (0..LIMIT / 48)
        .map(|i| format!("process.{i:033}:x\n"))
        .collect();
    fs::write(&path, &text).unwrap();
    let started = Instant::now();
    let mut sensor = Sensor::spawn(
        Command::new(sensor_path())
            .arg("run")
            .arg("--exclusions")
            .arg(&path),
    );
    assert_eq!(sensor.wait_exit().code(), Some(1));
    let elapsed = started.elapsed();
    let err = sensor.stderr();
    eprintln!("refused after {elapsed:?}, {} bytes of stderr", err.len());
    assert!(err.contains(":1:1: unknown field `process.0000"), "{err}");
    assert!(err.contains("more errors (`tinyexec-sensor check"), "{err}");
    assert!(err.len() < 20_000, "{} bytes", err.len());
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

/// `run` until it stops at the missing BTF, after its first log lines: with
/// `args` and, if given, `RUST_LOG`; returns its stderr.
fn run_to_btf_error(args: &[&str], rust_log: Option<&str>) -> String {
    let mut cmd = Command::new(sensor_path());
    cmd.args(["run", "--no-exclusions", "--btf", "/nonexistent/vmlinux"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM");
    if let Some(spec) = rust_log {
        cmd.env("RUST_LOG", spec);
    }
    let out = cmd.output().expect("run the sensor");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?} {rust_log:?}: {err}");
    assert!(
        err.contains("tinyexec-sensor: error: cannot read kernel BTF at /nonexistent/vmlinux"),
        "{err}"
    );
    err
}

#[test]
fn the_log_level_hides_what_is_below_it_and_rust_log_applies_over_it() {
    tinyexec_harness::require_root();
    const INFO: &str = "tinyexec-sensor: no exclusions\n";
    assert!(run_to_btf_error(&[], None).starts_with(INFO));
    assert!(!run_to_btf_error(&["--log-level", "warn"], None).contains(INFO));
    assert!(run_to_btf_error(&["--log-level", "warn"], Some("info")).starts_with(INFO));
    assert!(!run_to_btf_error(&[], Some("error")).contains(INFO));
    // A RUST_LOG that does not parse stops the sensor and names it.
    let out = Command::new(sensor_path())
        .args(["run", "--no-exclusions"])
        .env("RUST_LOG", "aya=loud")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tinyexec-sensor: error: RUST_LOG=\"aya=loud\": ") && err.contains("'loud'"),
        "{err}"
    );
}

#[test]
fn on_the_journal_stream_each_line_carries_its_priority() {
    // stderr is the stream JOURNAL_STREAM names (here a pipe, as journald's
    // socket would be): the sd-daemon priority leads every line.
    tinyexec_harness::require_root();
    let mut s = Sensor::spawn(
        Command::new("sh")
            .arg("-c")
            .arg("JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" run --no-exclusions")
            .arg(sensor_path()),
    );
    s.wait_stderr("<6>tinyexec-sensor: ready: ", 0);
    let dir = TempDir::new("journal");
    let path = dir.exe(&unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    s.wait_for("the alert", exec_of(&path));
    assert!(s.stop_with(libc::SIGTERM).success(), "{}", s.stderr());
    let err = s.stderr();
    assert!(
        err.contains("<6>tinyexec-sensor: self-test passed"),
        "{err}"
    );
    assert!(err.ends_with("<6>tinyexec-sensor: stopped"), "{err}");
    for line in err.lines() {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "a line without its priority: {line:?}\n{err}"
        );
    }
    // The same sensor with JOURNAL_STREAM naming another file writes plain lines.
    let mut s = Sensor::spawn(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions", "--btf", "/nonexistent/vmlinux"])
            .env("JOURNAL_STREAM", "1:1"),
    );
    s.wait_exit();
    assert!(
        s.stderr().starts_with("tinyexec-sensor: no exclusions"),
        "{}",
        s.stderr()
    );
}
