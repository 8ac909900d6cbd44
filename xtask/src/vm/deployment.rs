//! The systemd deployment VM: the `.deb` installed on Debian 12 booted with
//! systemd as PID 1 and Debian's 6.1 kernel, where the unit's sandbox
//! (`PrivateTmp=`, `ProtectHome=`) is real. tests/deployment.rs runs inside
//! it and reports each check; this module makes the VM and prints the table.
//!
//! The userland is `mmdebstrap`'s minbase with systemd, made once and cached
//! under `.tools/systemd-vm/` like the kernels. It boots as the initramfs
//! itself (the kernel unpacks it into its in-memory root and runs systemd):
//! Debian's kernel has its disk drivers as modules, so a disk image would
//! need an initramfs of Debian's own to load them first, for nothing the
//! checks look at. bsdtar appends the test's files to mmdebstrap's tarball
//! as the newc archive the kernel reads, owners, modes and device nodes kept.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{console, kernels};
use crate::{arch::Arch, dist, files::write_file, package, run_cmd, setup, step};

/// Debian 12, as the issue's administrator runs it.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Beyond minbase: systemd as PID 1; dbus, which `systemd-analyze security`
/// asks the manager through; init-system-helpers, the package's dependency.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,init-system-helpers";
/// Documentation the checks never read, left out of the userland (a third
/// of its size).
const DPKG_OPTS: [&str; 4] = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
];
/// Debian 12's own kernel, from the matrix's cache.
const KERNEL: &str = "6.1";
/// What tests/deployment.rs prints before each check's JSON.
const PREFIX: &str = "TINYEXEC-DEPLOY ";
/// mmdebstrap leaves `/etc/machine-id` empty, and systemd then waits in
/// `systemd-firstboot` for one: a fixed id, the same every run.
const MACHINE_ID: &str = "7c1a5e0e4d1b4b6f9d3e2a1c0b9f8e7d\n";
/// Boot (about 15 s under TCG), the checks (two minutes, each start of the
/// sensor a verifier run under emulation) and room for a loaded machine.
const TIMEOUT: Duration = Duration::from_mins(20);
/// Where the test's files go in the VM.
const DEB: &str = "/root/tinyexec.deb";
const TESTS: &str = "/root/deployment";
const CHECKS: &str = "/root/checks.sh";
const CHECKS_UNIT: &str = "tinyexec-checks.service";

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Make the Debian userland anew with mmdebstrap instead of using the cache.
    #[arg(long)]
    refresh_userland: bool,
    /// Seconds the VM may run before QEMU is killed (default 1200).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

/// One check's report line.
struct Check {
    name: String,
    ok: bool,
    ms: u64,
    /// What it saw, or why it failed.
    said: String,
}

/// What the VM showed.
pub struct Outcome {
    release: String,
    boot: Option<Duration>,
    checks_time: Option<Duration>,
    checks: Vec<Check>,
    problems: Vec<String>,
}

impl Outcome {
    fn failed(&self) -> bool {
        !self.problems.is_empty() || self.checks.is_empty() || self.checks.iter().any(|c| !c.ok)
    }
}

/// Makes (or takes from the cache) the userland, builds the package and the
/// test binary, boots the VM and collects its checks.
pub fn run(root: &Path, args: &Args) -> Result<Outcome> {
    setup::deployment_tools()?;
    let arch = Arch::X86_64;
    let userland = userland(root, args.refresh_userland)?;
    let kernel = kernels::by_name(KERNEL)?;
    let image = kernels::Fetcher::new(root, false).image(kernel)?;
    let deb = package::build(root, arch)?;
    let tests = dist::deployment_tests(root, arch)?;
    let dir = root.join("target/vm/deployment");
    let cpio = dir.join("initramfs.cpio");
    step(&format!(
        "writing {} ({}, {}, {})",
        cpio.display(),
        userland.display(),
        deb.display(),
        tests.display()
    ));
    initramfs(&dir, &userland, &deb, &tests, &cpio)?;
    step(&format!(
        "booting Debian 12 with systemd as PID 1 ({}, {}) under QEMU, installing the package",
        image.package, kernel.name
    ));
    let log = dir.join("console.log");
    let timeout = args.timeout.map_or(TIMEOUT, Duration::from_secs);
    let started = Instant::now();
    let boot = console::boot(arch, &image.file, &cpio, &log, timeout, |line| {
        if let Some(c) = parse(line) {
            let how = if c.ok { "ok" } else { "FAILED" };
            step(&format!("  [systemd] {}: {how}", c.name));
        }
    })?;
    let outcome = outcome(&boot, &log, timeout);
    step(&format!(
        "the systemd VM done in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        if outcome.failed() { "FAILED" } else { "passed" }
    ));
    Ok(outcome)
}

/// Debian's userland as a tarball, made by mmdebstrap when the cache lacks it
/// or holds one made with other options.
fn userland(root: &Path, refresh: bool) -> Result<PathBuf> {
    let dir = root.join(".tools/systemd-vm");
    let tar = dir.join(format!("{SUITE}-amd64.tar"));
    let stamp = dir.join(format!("{SUITE}-amd64.options"));
    let options = format!(
        "{SUITE} {MIRROR} --include={INCLUDE} {}\n",
        DPKG_OPTS.join(" ")
    );
    if !refresh && tar.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == options) {
        return Ok(tar);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // mmdebstrap picks the format by the name's ending.
    let part = dir.join(format!("{SUITE}-amd64.part.tar"));
    step(&format!(
        "making Debian {SUITE}'s userland with systemd for the deployment VM (mmdebstrap, once: \
         about a minute) into {}",
        tar.display()
    ));
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--mode=root"])
        .arg(format!("--include={INCLUDE}"));
    for opt in DPKG_OPTS {
        cmd.arg(format!("--dpkgopt={opt}"));
    }
    run_cmd(cmd.arg(SUITE).arg(&part).arg(MIRROR))
        .context("mmdebstrap (Debian's archive must be reachable)")?;
    fs::rename(&part, &tar).with_context(|| format!("renaming {}", part.display()))?;
    fs::write(&stamp, options).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(tar)
}

fn link(path: &Path, target: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    symlink(target, path).with_context(|| format!("linking {} to {target}", path.display()))
}

/// The userland with the test's files over it: systemd as `/init`, the
/// package, the stripped test binary and the unit that runs it once the
/// system is up and powers the VM off.
fn initramfs(dir: &Path, userland: &Path, deb: &Path, tests: &Path, out: &Path) -> Result<()> {
    let overlay = dir.join("overlay");
    if overlay.exists() {
        fs::remove_dir_all(&overlay).with_context(|| format!("removing {}", overlay.display()))?;
    }
    let at = |p: &str| overlay.join(p.trim_start_matches('/'));
    // bsdtar's entries for these directories set their modes in the VM.
    for (d, mode) in [("/root", 0o700), ("/etc", 0o755)] {
        fs::create_dir_all(at(d)).with_context(|| format!("creating the overlay's {d}"))?;
        fs::set_permissions(at(d), fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod the overlay's {d}"))?;
    }
    link(&at("/init"), "/lib/systemd/systemd")?;
    write_file(&at("/etc/machine-id"), MACHINE_ID, 0o444)?;
    write_file(&at("/etc/hostname"), "tinyexec-deploy\n", 0o644)?;
    // The serial console carries the checks' lines: no login prompt on it,
    // no status lines and no kernel messages between them.
    link(
        &at("/etc/systemd/system/serial-getty@ttyS0.service"),
        "/dev/null",
    )?;
    write_file(
        &at("/etc/systemd/system.conf.d/quiet.conf"),
        "[Manager]\nShowStatus=no\n",
        0o644,
    )?;
    write_file(
        &at("/etc/sysctl.d/90-quiet-console.conf"),
        "kernel.printk = 3 4 1 3\n",
        0o644,
    )?;
    write_file(&at(CHECKS), &checks_script(), 0o755)?;
    write_file(
        &at(&format!("/etc/systemd/system/{CHECKS_UNIT}")),
        &checks_unit(),
        0o644,
    )?;
    link(
        &at(&format!(
            "/etc/systemd/system/multi-user.target.wants/{CHECKS_UNIT}"
        )),
        &format!("../{CHECKS_UNIT}"),
    )?;
    fs::copy(deb, at(DEB)).with_context(|| format!("copying {}", deb.display()))?;
    run_cmd(
        Command::new(Arch::X86_64.objcopy())
            .arg("--strip-debug")
            .arg(tests)
            .arg(at(TESTS)),
    )
    .with_context(|| format!("stripping {}", tests.display()))?;
    // The tarball's entries first, the overlay's after: the kernel replaces
    // a file by a later entry of the same name.
    run_cmd(
        Command::new("bsdtar")
            .args(["--format", "newc", "-cf"])
            .arg(out)
            .arg(format!("@{}", userland.display()))
            .arg("-C")
            .arg(&overlay)
            .args(["init", "etc", "root"]),
    )
}

/// The script the checks' unit runs: the console lines `console::boot`
/// reads (as the matrix's `/init` prints them), then the test binary.
fn checks_script() -> String {
    let m = console::MARKER;
    format!(
        r#"#!/bin/sh
# The systemd deployment VM's checks (written by xtask/src/vm/deployment.rs).
up() {{ cut -d' ' -f1 /proc/uptime; }}
echo "{m} init uptime=$(up) kernel=$(uname -r) machine=$(uname -m)"
if [ -e /sys/kernel/btf/vmlinux ]; then echo "{m} btf=yes"; else echo "{m} btf=no"; fi
echo "{m} lsm=$(cat /sys/kernel/security/lsm) systemd=$(systemctl --version | head -n1)"
cd /root
TINYEXEC_DEB={DEB} TINYEXEC_READY_TIMEOUT=600 TINYEXEC_EVENT_TIMEOUT=60 RUST_BACKTRACE=0 \
  {TESTS} --test-threads=1 --nocapture
rc=$?
echo "{m} end rc=$rc uptime=$(up)"
# Nothing to keep: the root is in memory. (The unit's SuccessAction= did not
# power this VM off under systemd 252.)
systemctl poweroff --force --force
"#
    )
}

/// Once the system is up: the checks, their output on the serial console.
fn checks_unit() -> String {
    format!(
        "# The systemd deployment VM's checks (written by xtask/src/vm/deployment.rs).\n\
         [Unit]\n\
         Description=tinyexec deployment checks\n\
         After=multi-user.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={CHECKS}\n\
         StandardOutput=tty\n\
         StandardError=tty\n\
         TTYPath=/dev/ttyS0\n\
         TimeoutStartSec=infinity\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// A check's report line, wherever it is in `line`.
fn parse(line: &str) -> Option<Check> {
    let (_, json) = line.split_once(PREFIX)?;
    let v: Value = serde_json::from_str(json).ok()?;
    let ok = v.get("ok")?.as_bool()?;
    let said = if ok { v.get("detail") } else { v.get("error") };
    Some(Check {
        name: v.get("check")?.as_str()?.to_owned(),
        ok,
        ms: v.get("ms").and_then(Value::as_u64).unwrap_or(0),
        said: said.and_then(Value::as_str).unwrap_or("").to_owned(),
    })
}

fn outcome(boot: &console::Boot, log: &Path, timeout: Duration) -> Outcome {
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    for line in &boot.console {
        match parse(line) {
            Some(c) => checks.push(c),
            None if line.contains(PREFIX) => {
                problems.push(format!("unreadable report line: {line}"));
            }
            None => {}
        }
    }
    problems.extend(boot.problems(log, timeout, checks.iter().all(|c| c.ok)));
    Outcome {
        release: boot.release.clone().unwrap_or_else(|| "?".to_owned()),
        boot: boot.boot,
        checks_time: boot.checks,
        checks,
        problems,
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// The table: a row per check, then what went wrong outside them.
fn render(o: &Outcome) -> String {
    let mut out = format!(
        "Debian 12 ({}), systemd as PID 1, the .deb installed: boot to checks {}, checks {}\n",
        o.release,
        secs(o.boot),
        secs(o.checks_time)
    );
    let width = o
        .checks
        .iter()
        .map(|c| c.name.len())
        .chain(["check".len()])
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "{:<width$}  result  time     what it saw", "check");
    for c in &o.checks {
        let result = if c.ok { "ok" } else { "FAILED" };
        let time = format!("{:.1}s", Duration::from_millis(c.ms).as_secs_f64());
        let said = c.said.lines().collect::<Vec<_>>().join("\n      ");
        let _ = writeln!(out, "{:<width$}  {result:<6}  {time:<7}  {said}", c.name);
    }
    if o.checks.is_empty() {
        let _ = writeln!(out, "(no check reported)");
    }
    for p in &o.problems {
        let _ = writeln!(out, "  {}", p.replace('\n', "\n    "));
    }
    out
}

/// Prints the table; fails when any check failed.
pub fn conclude(o: &Outcome) -> Result<()> {
    println!("\nsystemd deployment:\n{}", render(o));
    if o.failed() {
        bail!("the systemd deployment VM failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_checks_among_console_noise() {
        let boot = console::Boot {
            console: vec![
                "[ 9.1] systemd[1]: Started x".to_owned(),
                format!(r#"{PREFIX}{{"check":"install","ok":true,"ms":3200,"detail":"enabled"}}"#),
                format!(r#"{PREFIX}{{"check":"stop","ok":false,"ms":10,"error":"boom\nline"}}"#),
                format!(r#"{PREFIX}{{"check":"sto"#),
            ],
            boot: Some(Duration::from_secs(14)),
            checks: Some(Duration::from_secs(90)),
            release: Some("6.1.0-57-amd64".into()),
            btf: Some(true),
            rc: Some(101),
            ..Default::default()
        };
        let o = outcome(&boot, Path::new("x.log"), TIMEOUT);
        assert_eq!(o.checks.len(), 2);
        assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
        assert!(o.failed());
        let table = render(&o);
        assert!(
            table.contains("install  ok      3.2s     enabled"),
            "{table}"
        );
        assert!(
            table.contains("stop     FAILED  0.0s     boom\n      line"),
            "{table}"
        );
    }
}
