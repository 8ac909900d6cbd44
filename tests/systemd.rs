//! The systemd unit, checked as systemd would without running it: `systemd-analyze
//! verify` accepts it, `systemd-analyze security --offline` rates its exposure at
//! most what it is today, and its system-call filter allows every call the real
//! sensor makes (strace of a run with every output, an alert, a reload and a stop).
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::UdpSocket,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use tinyexec_harness::{
    Sensor, TempDir, elf::Arch, exec_of, exposure_of, matching_elf, port::ClosedTcpPort, run_ok,
    sensor_path, sentinel::write_private, stager, unique,
};

/// `systemd-analyze security` rates the shipped unit 2.1 (the unit before it: 3.9).
const MAX_EXPOSURE: f64 = 2.1;

fn unit_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/tinyexec.service");
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The unit as installed, its `ExecStart` naming the sensor under test.
fn installed_unit(dir: &Path) -> PathBuf {
    let unit = unit_text().replace(
        "/usr/local/bin/tinyexec-sensor",
        sensor_path().to_str().expect("sensor path"),
    );
    let path = dir.join("tinyexec.service");
    fs::write(&path, unit).expect("unit");
    path
}

fn systemd_analyze(args: &[&str], unit: &Path) -> (bool, String, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; `cargo xtask test` installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `Key=value` lines of the unit, in order.
fn settings(key: &str) -> Vec<String> {
    unit_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .collect()
}

#[test]
fn systemd_analyze_verifies_the_unit_and_rates_its_exposure() {
    let dir = TempDir::new("unit");
    let unit = installed_unit(dir.path());
    let (ok, out, err) = systemd_analyze(&["verify"], &unit);
    assert!(
        ok && err.trim().is_empty(),
        "systemd-analyze verify:\n{out}{err}"
    );

    let (_, out, err) = systemd_analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    let score = exposure_of(&out, "tinyexec.service")
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}{err}"));
    eprintln!("systemd-analyze security --offline: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} is above {MAX_EXPOSURE}:\n{out}"
    );

    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    assert_eq!(settings("LimitMEMLOCK"), ["infinity"]);
    assert_eq!(settings("SystemCallErrorNumber"), ["EPERM"]);
}

/// Every system-call group `systemd-analyze syscall-filter` knows, groups expanded.
fn syscall_groups() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager"])
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut raw: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(group) = line.strip_prefix('@') {
            current = Some(format!("@{}", group.trim()));
            raw.entry(current.clone().unwrap_or_default()).or_default();
        } else if let (Some(g), Some(item)) = (&current, line.strip_prefix("    "))
            && !item.starts_with('#')
            && !item.trim().is_empty()
        {
            raw.entry(g.clone())
                .or_default()
                .push(item.trim().to_owned());
        }
    }
    fn expand(name: &str, raw: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        for item in raw.get(name).into_iter().flatten() {
            if item.starts_with('@') {
                expand(item, raw, out);
            } else {
                out.insert(item.clone());
            }
        }
    }
    raw.keys()
        .map(|g| {
            let mut set = BTreeSet::new();
            expand(g, &raw, &mut set);
            (g.clone(), set)
        })
        .collect()
}

/// The calls the unit's `SystemCallFilter=` lines allow, as systemd reads them: the
/// first line sets an allow list, later lines add (or with `~`, remove) calls;
/// `@default` is always allowed.
fn allowed_syscalls() -> BTreeSet<String> {
    let groups = syscall_groups();
    let names = |list: &str| -> BTreeSet<String> {
        list.split_whitespace()
            .flat_map(|n| {
                if n.starts_with('@') {
                    groups
                        .get(n)
                        .unwrap_or_else(|| panic!("unknown group {n}"))
                        .clone()
                } else {
                    BTreeSet::from([n.to_owned()])
                }
            })
            .collect()
    };
    let lines = settings("SystemCallFilter");
    assert!(
        lines.first().is_some_and(|l| !l.starts_with('~')),
        "the first SystemCallFilter= line must be an allow list"
    );
    let mut allowed = groups["@default"].clone();
    for l in lines {
        match l.strip_prefix('~') {
            Some(removed) => names(removed).iter().for_each(|n| {
                allowed.remove(n);
            }),
            None => allowed.extend(names(&l)),
        }
    }
    allowed
}

#[test]
fn the_system_call_filter_allows_every_call_the_sensor_makes() {
    let allowed = allowed_syscalls();
    assert!(allowed.contains("bpf"), "the filter must allow bpf(2)");
    let dir = TempDir::new("strace");
    let trace = dir.path().join("trace");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    // Sentinel towards a closed port: the sender's connect-and-retry path.
    let closed_port = ClosedTcpPort::new();
    let closed = closed_port.port;
    let secret = dir.path().join("secret");
    write_private(&secret, b"s");
    let settings = dir.path().join("sentinel.toml");
    fs::write(
        &settings,
        format!(
            "endpoint = \"https://127.0.0.1:{closed}\"\nauthority = \"https://127.0.0.1:{closed}\"\n\
             dcr_immutable_id = \"dcr-1\"\nstream = \"Custom-TinyexecAlerts\"\ntenant_id = \"t\"\n\
             client_id = \"c\"\nclient_secret_file = {secret:?}\nspool_dir = {spool:?}\n\
             batch_max_delay_ms = 100\ntimeout_secs = 1\n",
            spool = dir.path().join("spool"),
        ),
    )
    .expect("settings");
    // -D: strace runs as a grandchild, so signals to our child reach the sensor.
    let mut s = Sensor::start_with(
        Command::new("strace")
            .args(["-D", "-f", "-qq", "-o"])
            .arg(&trace)
            .arg(sensor_path())
            .args(["run", "--all-execs", "--no-exclusions", "--output-file"])
            .arg(dir.path().join("out.json"))
            .arg("--syslog")
            .arg(format!("udp://{}", udp.local_addr().expect("addr")))
            .arg("--sentinel")
            .arg(&settings)
            .args(["--stats-interval", "1"]),
    );
    let path = dir.exe(&unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    s.wait_for("the alert", exec_of(&path));
    s.wait_stderr("delivery failed", 0);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(s.pid().cast_signed(), libc::SIGHUP) };
    let after = dir.exe(&unique("after-hup"), &stager());
    run_ok(&mut Command::new(&after));
    s.wait_for("the alert after SIGHUP", exec_of(&after));
    // A match whose `$s2` lies past the kernel's header, and a script: their
    // files are read by the sensor's helper processes (reads.rs).
    let late = dir.exe(
        &unique("late"),
        &matching_elf(Arch::native(), Vec::new(), Some(269)),
    );
    run_ok(&mut Command::new(&late));
    s.wait_for("the late match's alert", exec_of(&late));
    let script = dir.path().join(unique("script"));
    fs::write(&script, format!("#!{}\n", late.display())).expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    run_ok(&mut Command::new(&script));
    s.wait_for("the script's record", |v| {
        v["process"]["exec_path"] == script.to_str().expect("UTF-8")
    });
    s.wait_stderr("sentinel: written", 0);
    assert!(s.stop_with(libc::SIGTERM).success(), "{}", s.stderr());

    let text = fs::read_to_string(&trace).expect("strace output");
    let called: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(' ')?.1.trim_start();
            let rest = rest.strip_prefix("<... ").unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && rest[name.len()..].starts_with(['(', ' '])).then_some(name)
        })
        .filter(|n| n != "exited" && n != "killed")
        .collect();
    assert!(
        called.contains("bpf"),
        "the trace shows no bpf(2): {called:?}"
    );
    let refused: Vec<&String> = called.iter().filter(|c| !allowed.contains(*c)).collect();
    eprintln!("the sensor called: {called:?}");
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter= would refuse {refused:?} (trace in {})",
        trace.display()
    );
}
