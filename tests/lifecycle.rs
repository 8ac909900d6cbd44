//! The sensor's life: ready, systemd notification, clean stop, lost records,
//! the kernel program's own log, and the clear errors it gives when it cannot run.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    fs,
    os::unix::{fs::PermissionsExt, net::UnixDatagram, process::CommandExt},
    process::Command,
    time::Duration,
};

use tinyexec_harness::{
    Sensor, TempDir, exec_of, field, field_str, field_u64, run_ok, sensor_path, spawn, stager,
    tiny_exit0, unique, write_exe,
};

#[test]
fn ready_is_announced_to_stderr_and_systemd() {
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sensor = Sensor::start_with(
        Command::new(sensor_path())
            .arg("run")
            .env("NOTIFY_SOCKET", &sock_path),
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    let ready: Vec<String> = sensor
        .stderr()
        .lines()
        .filter(|l| l.contains("ready"))
        .map(str::to_owned)
        .collect();
    assert_eq!(ready.len(), 1, "one ready line: {ready:?}");
}

#[test]
fn sigterm_and_sigint_stop_cleanly_and_flush() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut sensor = Sensor::start(["--all-execs"]);
        let dir = TempDir::new("stop");
        let path = dir.exe(&unique("bin"), &tiny_exit0());
        // The record is in the ring buffer once exec returns; stop right away.
        run_ok(&mut Command::new(&path));
        let status = sensor.stop_with(signal);
        assert!(
            status.success(),
            "signal {signal}: {status}; {}",
            sensor.stderr()
        );
        assert_eq!(sensor.records(exec_of(&path)).len(), 1, "flushed at stop");
    }
}

#[test]
fn lost_records_are_counted_and_reported() {
    // A one-page ring buffer holds a dozen records. With the sensor stopped
    // (SIGSTOP), a burst of execs overflows it; the kernel side counts each
    // record it could not queue, and emitted + lost accounts for every exec.
    let mut sensor = Sensor::start(["--all-execs", "--ring-buffer-size", "4096"]);
    let dir = TempDir::new("lost");
    let path = dir.exe(&unique("bin"), &tiny_exit0());
    const N: u64 = 100;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(sensor.pid().cast_signed(), libc::SIGSTOP) };
    for _ in 0..N {
        run_ok(&mut Command::new(&path));
    }
    // SAFETY: as above.
    unsafe { libc::kill(sensor.pid().cast_signed(), libc::SIGCONT) };
    let lost = sensor.wait_for("a lost report", |v| field(v, "event.action") == "lost");
    assert!(field_u64(&lost, "lost.count") >= 1);
    assert_eq!(
        field_u64(&lost, "tinyexec.lost_since_previous"),
        field_u64(&lost, "lost.count")
    );
    assert!(sensor.stop_with(libc::SIGTERM).success());
    let emitted = sensor.records(exec_of(&path)).len() as u64;
    // The counts add up: each report's count is the increase since the previous one.
    let reports = sensor.records(|v| field(v, "event.action") == "lost");
    let sum: u64 = reports.iter().map(|r| field_u64(r, "lost.count")).sum();
    let last = reports.last().unwrap();
    assert_eq!(sum, field_u64(last, "lost.total"));
    assert_eq!(field_str(last, "event.kind"), "metric");
    // Other execs on the host (other tests) may have been lost too: at least ours.
    assert!(emitted < N, "the ring overflowed");
    assert!(
        emitted + sum >= N,
        "emitted {emitted} + lost {sum} < {N} execs"
    );
}

/// Runs the sensor expecting it to fail; returns its stderr.
fn fails(cmd: &mut Command) -> String {
    let mut sensor = Sensor::spawn(cmd);
    let status = sensor.wait_exit();
    let stderr = sensor.stderr();
    assert!(
        !status.success(),
        "expected failure, got {status}; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("ready"), "{stderr}");
    stderr
}

#[test]
fn without_privileges_it_says_what_is_needed() {
    tinyexec_harness::require_root();
    // A copy nobody can run, wherever the build tree lives.
    let dir = TempDir::new("unpriv");
    let bin = dir.path().join("tinyexec-sensor");
    fs::copy(sensor_path(), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let err = fails(Command::new(&bin).arg("run").uid(65534).gid(65534));
    assert!(err.contains("root") && err.contains("CAP_BPF"), "{err}");
}

#[test]
fn without_btf_it_names_the_file_and_the_fix() {
    tinyexec_harness::require_root();
    let err = fails(Command::new(sensor_path()).args(["run", "--btf", "/nonexistent/vmlinux"]));
    assert!(err.contains("/nonexistent/vmlinux"), "{err}");
    assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");

    let dir = TempDir::new("badbtf");
    let bad = dir.path().join("vmlinux");
    fs::write(&bad, b"not BTF at all").unwrap();
    let err = fails(
        Command::new(sensor_path())
            .arg("run")
            .arg("--btf")
            .arg(&bad),
    );
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
}

#[test]
fn a_path_depth_past_what_the_verifier_accepts_is_refused_before_loading() {
    tinyexec_harness::require_root();
    // Once a path walk the verifier could not prove short enough reached the
    // kernel and came back as its log; now the flag's range stops it first
    // (tests/inputs.rs has every out-of-range flag).
    let err = fails(Command::new(sensor_path()).args(["run", "--max-path-depth", "1000000"]));
    assert!(
        err.contains("--max-path-depth") && err.contains("from 1 to 512"),
        "{err}"
    );
    assert!(!err.contains("verifier said"), "{err}");
}

/// Runs a matching file deeper than the kernel program walks paths by default
/// (`--max-path-depth 64`: it cuts the path short) and returns its pid.
fn exec_deep_stager(dir: &TempDir) -> u32 {
    // The default, not a lower bound: the start-up self-test wants the
    // canary's and the sensor's own paths whole.
    let levels = usize::try_from(tinyexec_ebpf::DEFAULT_PATH_DEPTH).expect("a small number");
    let deep = (0..levels).fold(dir.path().to_path_buf(), |p, _| p.join("d"));
    fs::create_dir_all(&deep).expect("mkdir");
    let path = deep.join(unique("stager"));
    write_exe(&path, &stager());
    let mut child = spawn(&mut Command::new(&path));
    let pid = child.id();
    assert!(child.wait().expect("wait").success());
    pid
}

/// The kernel program's own diagnostics (aya-log): at `--log-level debug` a
/// path cut short is logged by the kernel and written by the sensor as its
/// own debug line; at the default level the kernel logs nothing.
#[test]
fn the_kernel_program_logs_a_path_cut_short_at_debug_level_only() {
    let dir = TempDir::new("kernel-log");
    let sensor = Sensor::start(["--log-level", "debug"]);
    let pid = exec_deep_stager(&dir);
    let line = format!(
        "tinyexec-sensor: debug: kernel: exe_path: pid {pid}: the executed file's path was cut short"
    );
    let at = sensor.wait_stderr(&line, 0);
    let stderr = sensor.stderr();
    let found = stderr.lines().nth(at - 1).unwrap_or_default();
    assert!(
        found.contains("(--max-path-depth 64,"),
        "the line names the bound: {found}"
    );
    drop(sensor);

    let mut sensor = Sensor::start(Vec::<&str>::new());
    let pid = exec_deep_stager(&dir);
    // Its record has arrived, and any kernel line about it with it; then all
    // of stderr is read at exit (the sensor drains the kernel's log last).
    let before = sensor.records_before_barrier();
    assert!(
        before
            .iter()
            .any(|v| field(v, "process.pid") == &serde_json::json!(pid)),
        "no record of the exec (pid {pid})"
    );
    assert!(sensor.stop_with(libc::SIGTERM).success());
    let stderr = sensor.stderr();
    assert!(
        !stderr.contains(": kernel: "),
        "kernel lines at the default level:\n{stderr}"
    );
}
