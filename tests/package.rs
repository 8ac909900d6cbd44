//! The Debian package (`cargo xtask package`, `$TINYEXEC_DEB`), installed for
//! real on this machine with dpkg, as an administrator would: what it holds,
//! that the installed sensor runs (`--version`, `check` of the installed
//! exclusions, run by hand with the installed configuration to `ready` and an
//! alert in its log, in the directories the package made), that the service
//! is enabled but nothing is started where systemd is not running, that an
//! upgrade keeps a changed conffile, and what removal and purge leave behind.
//!
//! The RPM (`$TINYEXEC_RPM`): no RHEL userland can be had here, so it is
//! checked with the family's own tools from Debian: `rpmlint` without
//! errors (its filter is deploy/rpm/tinyexec.rpmlintrc), `rpm --root` into
//! an empty root holding only busybox (the scriptlets run there, without
//! systemd), and its scriptlets as text against what systemd's RPM macros
//! expand to.
//!
//! While it runs, `/etc/tinyexec/config.toml` exists: a sensor started
//! meanwhile without `--config` on this machine reads it (cargo runs the
//! workspace's test binaries one after another, so none of ours does).
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tinyexec_harness::{Sensor, TempDir, require_root, run_ok, stager, unique, wait_until};

const PKG: &str = "tinyexec";
const BIN: &str = "/usr/bin/tinyexec-sensor";
const UNIT: &str = "/lib/systemd/system/tinyexec.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/tinyexec.service";
const MASK: &str = "/etc/systemd/system/tinyexec.service";
const ETC: &str = "/etc/tinyexec";
const DOC: &str = "/usr/share/doc/tinyexec";
/// The unit's `StateDirectory=`, `LogsDirectory=` and `RuntimeDirectory=`,
/// which the package makes too (its tmpfiles.d snippet), all 0700.
const STATE: &str = "/var/lib/tinyexec";
const LOGS: &str = "/var/log/tinyexec";
const RUNTIME: &str = "/run/tinyexec";
const TMPFILES: &str = "/usr/lib/tmpfiles.d/tinyexec.conf";
/// Where a package leaves traces, and how deep to look.
const TRACE_ROOTS: [(&str, usize); 9] = [
    ("/etc", 4),
    ("/usr/bin", 1),
    ("/usr/sbin", 1),
    ("/usr/local/bin", 1),
    ("/usr/share/doc", 1),
    ("/lib/systemd", 3),
    ("/usr/lib/systemd", 3),
    ("/var/lib", 4),
    ("/var/log", 2),
];
/// How long another dpkg or apt may hold dpkg's lock before we give up.
const LOCK_WAIT: Duration = Duration::from_mins(3);

/// This machine's Debian architecture.
fn debian_arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg --print-architecture");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `$TINYEXEC_DEB` (set by `cargo xtask test`), else what `cargo xtask
/// package` wrote for this machine.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("TINYEXEC_DEB") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "$TINYEXEC_DEB: no file {}", p.display());
        return p;
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/package/{PKG}_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        debian_arch()
    ));
    assert!(
        p.is_file(),
        "{} not built: run `cargo xtask package` (or `cargo xtask test`), or set TINYEXEC_DEB",
        p.display()
    );
    p
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs dpkg, waiting while another package manager holds its lock.
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let out = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("dpkg {args:?}: {e}"));
        let t = text(&out);
        if !out.status.success() && t.contains("lock") && Instant::now() < deadline {
            thread::sleep(Duration::from_secs(2));
            continue;
        }
        return out;
    }
}

fn dpkg_ok(args: &[&str]) -> String {
    let out = dpkg(args);
    let t = text(&out);
    assert!(out.status.success(), "dpkg {args:?}: {}\n{t}", out.status);
    t
}

/// dpkg's status of the package: `install ok installed`, `deinstall ok
/// config-files`, or `not-installed`.
fn status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", PKG])
        .output()
        .expect("dpkg-query");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !s.ends_with("not-installed") {
        s
    } else {
        "not-installed".to_owned()
    }
}

/// Every path under [`TRACE_ROOTS`] whose name mentions tinyexec (symlinks not followed).
fn traces() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(PKG) {
                out.insert(p.clone());
            }
            if depth > 1 && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, depth - 1, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for (root, depth) in TRACE_ROOTS {
        walk(Path::new(root), depth, &mut out);
    }
    out
}

/// Processes running the installed binary.
fn running_installed() -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == Path::new(BIN))
        })
        .collect()
}

/// The installed unit's `KEY=` values.
fn unit_values(key: &str) -> Vec<String> {
    fs::read_to_string(UNIT)
        .unwrap_or_else(|e| panic!("{UNIT}: {e}"))
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .collect()
}

fn mode(path: &str) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

/// What the .deb itself holds, before anything is installed.
fn check_archive(deb: &Path) {
    let field = |name: &str| -> String {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg(name)
            .output()
            .expect("dpkg-deb -f");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), PKG);
    assert_eq!(
        field("Architecture"),
        debian_arch(),
        "a package for this machine"
    );
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    // A static binary: no libc6 or any other library among the dependencies.
    assert_eq!(field("Depends"), "init-system-helpers");
    let conffiles = Command::new("dpkg-deb")
        .arg("--info")
        .arg(deb)
        .arg("conffiles")
        .output()
        .expect("dpkg-deb --info");
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout),
        format!("{ETC}/config.toml\n{ETC}/exclusions.txt\n")
    );
    let listing = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(deb)
        .output()
        .expect("dpkg-deb --contents");
    let listing = String::from_utf8_lossy(&listing.stdout);
    // `-rwxr-xr-x root/root 1234 2026-12-01 12:00 ./usr/bin/tinyexec-sensor`
    let entry = |path: &str| -> (String, String) {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"));
        let mut w = line.split_whitespace();
        (
            w.next().unwrap_or_default().to_owned(),
            w.next().unwrap_or_default().to_owned(),
        )
    };
    for (path, perms) in [
        (BIN, "-rwxr-xr-x"),
        (UNIT, "-rw-r--r--"),
        (TMPFILES, "-rw-r--r--"),
        ("/etc/tinyexec/config.toml", "-rw-------"),
        ("/etc/tinyexec/exclusions.txt", "-rw-r--r--"),
        ("/usr/share/doc/tinyexec/README.md", "-rw-r--r--"),
        ("/usr/share/doc/tinyexec/copyright", "-rw-r--r--"),
        ("/usr/share/doc/tinyexec/sentinel/dcr.json", "-rw-r--r--"),
        (
            "/usr/share/doc/tinyexec/sentinel/hunting/tinyexec-coverage-gaps.yaml",
            "-rw-r--r--",
        ),
    ] {
        assert_eq!(
            entry(path),
            (perms.to_owned(), "root/root".to_owned()),
            "{path}"
        );
    }
}

/// The installed files, the enabled unit, and nothing started.
fn check_installed(dpkg_said: &str) {
    assert_eq!(status(), "install ok installed");
    assert_eq!(mode(BIN), 0o755);
    assert_eq!(mode("/etc/tinyexec/config.toml"), 0o600);
    // The unit runs the installed binary, with the installed configuration.
    let exec = unit_values("ExecStart");
    assert_eq!(
        exec,
        [format!("{BIN} run --config {ETC}/config.toml")],
        "{UNIT}"
    );
    let docs = unit_values("Documentation");
    assert_eq!(docs, [format!("file:{DOC}/README.md")], "{UNIT}");
    assert!(Path::new(&format!("{DOC}/README.md")).is_file());
    assert!(Path::new(TMPFILES).is_file(), "{TMPFILES}");
    // systemd reads it as valid, its ExecStart binary there.
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze (cargo xtask test installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {UNIT}:\n{}",
        text(&verify)
    );
    // Enabled: its [Install] section's link, to the unit.
    assert_eq!(
        fs::canonicalize(WANTS)
            .unwrap_or_else(|e| panic!("{WANTS}: {e}: the service is not enabled")),
        fs::canonicalize(UNIT).expect("unit")
    );
    if !Path::new("/run/systemd/system").exists() {
        assert!(
            dpkg_said.contains("tinyexec.service is enabled, not started"),
            "postinst did not say it started nothing:\n{dpkg_said}"
        );
        let running = running_installed();
        assert!(
            running.is_empty(),
            "without systemd the package started {BIN} (pids {running:?})"
        );
    }
}

/// The installed binary: static, its version, the installed exclusions.
fn check_binary() {
    let ldd = Command::new("ldd").arg(BIN).output().expect("ldd");
    let t = text(&ldd);
    assert!(
        t.contains("statically linked") || t.contains("not a dynamic executable"),
        "{BIN} is not static:\n{t}"
    );
    let version = Command::new(BIN).arg("--version").output().expect(BIN);
    assert!(version.status.success(), "{}", text(&version));
    let installed_version = String::from_utf8_lossy(
        &Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", PKG])
            .output()
            .expect("dpkg-query")
            .stdout,
    )
    .into_owned();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("tinyexec-sensor {installed_version}")
    );
    let check = Command::new(BIN)
        .args(["check", &format!("{ETC}/exclusions.txt")])
        .output()
        .expect(BIN);
    assert!(
        check.status.success(),
        "check {ETC}/exclusions.txt: {}\n{}",
        check.status,
        text(&check)
    );
}

/// The service's own command line run by hand, as installed (no systemd to
/// make its directories), to `ready`; a stager's alert lands in the
/// configured log file.
fn check_service_command() {
    for dir in [STATE, LOGS, RUNTIME] {
        assert_eq!(mode(dir), 0o700, "{dir}: made by the package, root's alone");
    }
    let exec = unit_values("ExecStart").remove(0);
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let mut sensor = Sensor::spawn(Command::new(argv[0]).args(&argv[1..]));
    if let Err(why) = sensor.try_wait_ready() {
        panic!("`{exec}` did not become ready: {why}");
    }
    let dir = TempDir::new("package");
    let path = dir.exe(&unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    let log = Path::new(LOGS).join("alerts.json");
    let want = path.to_str().expect("UTF-8").to_owned();
    wait_until(&format!("the stager's alert in {}", log.display()), || {
        fs::read_to_string(&log).is_ok_and(|t| {
            t.lines().any(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| {
                    v["file"]["path"] == want.as_str() && v["event"]["kind"] == "alert"
                })
            })
        })
    });
    let status = sensor.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}:\n{}", sensor.stderr());
}

#[test]
fn the_package_installs_runs_and_leaves_nothing_behind() {
    require_root();
    let deb = deb();
    let deb_str = deb.to_str().expect("UTF-8 path");
    check_archive(&deb);

    if status() != "not-installed" {
        eprintln!(
            "a previous run left {PKG} installed ({}): purging it first",
            status()
        );
        dpkg_ok(&["--purge", PKG]);
    }
    let before = traces();
    assert!(
        before.is_empty(),
        "this machine has tinyexec files no package installed (from `cargo xtask install`?); \
         the package would take them over: {before:#?}"
    );

    // Install.
    let said = dpkg_ok(&["--install", deb_str]);
    check_installed(&said);
    check_binary();
    check_service_command();

    // An upgrade (the same package again) keeps a changed conffile.
    let config = format!("{ETC}/config.toml");
    let mine = format!(
        "{}# changed by the package test\n",
        fs::read_to_string(&config).expect("config")
    );
    fs::write(&config, &mine).expect("change the config");
    let said = dpkg_ok(&["--install", deb_str]);
    assert_eq!(fs::read_to_string(&config).expect("config"), mine, "{said}");
    assert_eq!(mode(&config), 0o600);
    check_installed(&said);

    // Remove: the configuration stays, with the change; the rest goes, and
    // the unit is masked.
    dpkg_ok(&["--remove", PKG]);
    assert_eq!(status(), "deinstall ok config-files");
    for gone in [BIN, UNIT, DOC] {
        assert!(!Path::new(gone).exists(), "{gone} left after removal");
    }
    assert_eq!(fs::read_to_string(&config).expect("config kept"), mine);
    assert!(Path::new(&format!("{ETC}/exclusions.txt")).is_file());
    assert_eq!(
        fs::read_link(MASK).ok(),
        Some(PathBuf::from("/dev/null")),
        "{MASK}: the removed service is not masked"
    );

    // Purge: nothing left.
    dpkg_ok(&["--purge", PKG]);
    assert_eq!(status(), "not-installed");
    let after = traces();
    assert_eq!(after, before, "left behind after purge");
    for gone in [ETC, STATE, LOGS, RUNTIME, TMPFILES, WANTS, MASK] {
        assert!(
            fs::symlink_metadata(gone).is_err(),
            "{gone} left behind after purge"
        );
    }
}

/// `$TINYEXEC_RPM` (set by `cargo xtask test`), else what `cargo xtask
/// package` wrote for this machine.
fn rpm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TINYEXEC_RPM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "$TINYEXEC_RPM: no file {}", p.display());
        return p;
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/package/{PKG}-{}-1.{}.rpm",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    ));
    assert!(
        p.is_file(),
        "{} not built: run `cargo xtask package` (or `cargo xtask test`), or set TINYEXEC_RPM",
        p.display()
    );
    p
}

/// `rpm` with a database under `root` (Debian's rpm keeps it in ~/.rpmdb otherwise).
fn rpm_in(root: &Path, args: &[&str]) -> Output {
    Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rpm {args:?}: {e}"))
}

/// What rpm says but for Debian's warning that rpm is not its package manager.
fn rpm_complaints(out: &Output) -> String {
    text(out)
        .lines()
        .filter(|l| {
            !l.contains("RPM should not be used directly")
                && !l.contains("assuming you know what you are doing")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of scriptlet `name` in `rpm --scripts` output.
fn scriptlet(scripts: &str, name: &str) -> String {
    let start = scripts
        .find(&format!("{name} scriptlet (using /bin/sh):\n"))
        .unwrap_or_else(|| panic!("no {name} scriptlet in:\n{scripts}"));
    let body = &scripts[start..];
    let body = &body[body.find('\n').map_or(0, |i| i + 1)..];
    let end = body
        .find(" scriptlet (using ")
        .map_or(body.len(), |i| body[..i].rfind('\n').map_or(0, |n| n + 1));
    body[..end].to_owned()
}

/// `line` is in `script`, and after `condition` (the test it runs under).
fn under_condition(script: &str, condition: &str, line: &str) {
    let at = script
        .find(line)
        .unwrap_or_else(|| panic!("`{line}` not in:\n{script}"));
    assert!(
        script[..at].contains(condition),
        "`{line}` not under `{condition}` in:\n{script}"
    );
}

#[test]
fn the_rpm_lints_clean_and_installs_into_an_empty_root() {
    require_root();
    let rpm = rpm_path();
    let rpm_str = rpm.to_str().expect("UTF-8 path");

    // rpmlint: no error, with the repository's filter of deliberate choices.
    let rc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rpm/tinyexec.rpmlintrc");
    let lint = Command::new("rpmlint")
        .arg("-r")
        .arg(&rc)
        .arg(&rpm)
        .output()
        .expect("rpmlint (cargo xtask package installs it)");
    let said = text(&lint);
    assert!(
        lint.status.success() && said.contains(" 0 errors,"),
        "rpmlint {rpm_str}: {}\n{said}",
        lint.status
    );

    // The header: static (no library among the requirements), the configuration noreplace.
    let query = |args: &[&str]| -> String {
        let out = Command::new("rpm")
            .args(args)
            .arg(&rpm)
            .output()
            .expect("rpm -qp");
        assert!(out.status.success(), "rpm {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let requires = query(&["-qp", "--requires"]);
    for req in requires.lines() {
        assert!(
            req == "/bin/sh" || req.starts_with("rpmlib(") || req.starts_with("config(tinyexec)"),
            "{req}: a static binary needs no library:\n{requires}"
        );
    }
    let configs = query(&[
        "-qp",
        "--qf",
        "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]",
    ]);
    for (path, perms) in [
        ("/etc/tinyexec/config.toml", "-rw-------"),
        ("/etc/tinyexec/exclusions.txt", "-rw-r--r--"),
    ] {
        // c: %config, n: noreplace.
        assert!(
            configs.contains(&format!("{path} cn {perms}\n")),
            "{path} not %config(noreplace) {perms}:\n{configs}"
        );
    }

    // The scriptlets, as systemd's macros.systemd expands %systemd_post,
    // %systemd_preun and %systemd_postun_with_restart (for tinyexec.service),
    // with the calls that need a running systemd guarded.
    let scripts = query(&["-qp", "--scripts"]);
    let post = scriptlet(&scripts, "postinstall");
    under_condition(
        &post,
        "if [ $1 -eq 1 ]",
        "systemctl --no-reload preset tinyexec.service",
    );
    under_condition(
        &post,
        "command -v systemd-tmpfiles",
        "systemd-tmpfiles --create tinyexec.conf",
    );
    let preun = scriptlet(&scripts, "preuninstall");
    under_condition(
        &preun,
        "if [ $1 -eq 0 ]",
        "systemctl --no-reload disable tinyexec.service",
    );
    under_condition(
        &preun,
        "[ -d /run/systemd/system ]",
        "systemctl stop tinyexec.service",
    );
    let postun = scriptlet(&scripts, "postuninstall");
    under_condition(
        &postun,
        "[ -d /run/systemd/system ]",
        "systemctl daemon-reload",
    );
    under_condition(
        &postun,
        "if [ $1 -ge 1 ]",
        "systemctl try-restart tinyexec.service",
    );
    for (name, script) in [("post", &post), ("preun", &preun), ("postun", &postun)] {
        for line in script
            .lines()
            .filter(|l| l.trim_start().starts_with("systemctl"))
        {
            assert!(
                line.ends_with("|| :"),
                "%{name}: `{line}` may fail the transaction"
            );
        }
        let sh = Command::new("sh")
            .args(["-n", "-c", script])
            .output()
            .expect("sh -n");
        assert!(sh.status.success(), "%{name}: {}", text(&sh));
    }

    // Into an empty root: busybox as /bin/sh for the scriptlets (which find
    // no systemd there), /dev/null, nothing else.
    let root = TempDir::new("rpm-root");
    let bin = root.path().join("bin");
    fs::create_dir_all(&bin).expect("bin");
    fs::copy("/bin/busybox", bin.join("busybox")).expect("/bin/busybox (busybox-static)");
    let chroot = Command::new("chroot")
        .arg(root.path())
        .args(["/bin/busybox", "--install", "-s", "/bin"])
        .output()
        .expect("chroot");
    assert!(
        chroot.status.success(),
        "busybox --install: {}",
        text(&chroot)
    );
    fs::create_dir_all(root.path().join("dev")).expect("dev");
    let null = root.path().join("dev/null");
    let c_null = std::ffi::CString::new(null.to_str().expect("UTF-8")).expect("path");
    // SAFETY: a valid C string; makes the character device 1:3.
    let made = unsafe { libc::mknod(c_null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(
        made,
        0,
        "mknod {}: {}",
        null.display(),
        std::io::Error::last_os_error()
    );

    let init = rpm_in(root.path(), &["--initdb"]);
    assert!(init.status.success(), "rpm --initdb: {}", text(&init));
    // --nodeps: this root's busybox is no package providing /bin/sh.
    let install = rpm_in(root.path(), &["-i", "--nodeps", rpm_str]);
    let complaints = rpm_complaints(&install);
    assert!(
        install.status.success() && complaints.is_empty(),
        "rpm -i {rpm_str}: {}\n{complaints}",
        install.status
    );
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));
    let mode_at = |p: &str| {
        fs::metadata(at(p))
            .unwrap_or_else(|e| panic!("{p} in the root: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode_at(BIN), 0o755);
    assert_eq!(mode_at("/etc/tinyexec/config.toml"), 0o600);
    assert_eq!(mode_at("/etc/tinyexec/exclusions.txt"), 0o644);
    for dir in [STATE, LOGS, RUNTIME] {
        assert_eq!(mode_at(dir), 0o700, "{dir}: the package's directory");
    }
    let unit = fs::read_to_string(at("/usr/lib/systemd/system/tinyexec.service")).expect("unit");
    assert!(
        unit.contains(&format!(
            "\nExecStart={BIN} run --config {ETC}/config.toml\n"
        )),
        "{unit}"
    );
    assert!(at(TMPFILES).is_file());
    assert!(at(&format!("{DOC}/README.md")).is_file());
    // The installed binary is the one that runs here.
    let version = Command::new(at(BIN))
        .arg("--version")
        .output()
        .expect("installed binary");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("tinyexec-sensor {}", env!("CARGO_PKG_VERSION"))
    );
    let verify = rpm_in(root.path(), &["-V", "--nodeps", PKG]);
    assert!(verify.status.success(), "rpm -V: {}", text(&verify));

    // Erase: the scriptlets run again; nothing of the package is left (its
    // directories were empty).
    let erase = rpm_in(root.path(), &["-e", "--nodeps", PKG]);
    let complaints = rpm_complaints(&erase);
    assert!(
        erase.status.success() && complaints.is_empty(),
        "rpm -e: {}\n{complaints}",
        erase.status
    );
    for gone in [
        BIN,
        ETC,
        STATE,
        LOGS,
        TMPFILES,
        DOC,
        "/usr/lib/systemd/system/tinyexec.service",
    ] {
        assert!(
            fs::symlink_metadata(at(gone)).is_err(),
            "{gone} left after rpm -e"
        );
    }
}
