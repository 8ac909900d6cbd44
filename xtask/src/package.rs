//! `cargo xtask package`: the Debian package a fleet installs, one per
//! architecture, holding the static sensor (dist.rs) and what install.rs
//! lists: `/usr/bin/tinyexec-sensor`, the systemd unit, the configuration in
//! `/etc/tinyexec` as conffiles, the docs and Sentinel content in
//! `/usr/share/doc/tinyexec`.
//!
//! Assembled here and built with `dpkg-deb`, Debian's own archiver, rather
//! than with cargo-deb: the package is a dozen files xtask already knows
//! (install.rs, shared with `cargo xtask install`), the maintainer scripts
//! are the point and are written out below, and cargo-deb would be one more
//! tool to install and build (minutes on a 2-core CI machine) for the same
//! `dpkg-deb --build` at the end.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    arch::Arch,
    dist,
    install::{self, Kind, Layout},
    run_cmd, step,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architecture (repeatable; default: this machine's): `x86_64` (amd64) or aarch64 (arm64).
    #[arg(long = "arch", value_enum)]
    pub arches: Vec<Arch>,
}

/// The package's name.
pub const NAME: &str = "tinyexec";
const UNIT: &str = "tinyexec.service";
/// Where the package puts things: programs under /usr; the unit in /lib,
/// where every systemd and deb-systemd-helper since Debian 10 and Ubuntu
/// 20.04 looks (on merged-/usr systems it is /usr/lib).
const PREFIX: &str = "/usr";
const UNIT_DIR: &str = "/lib/systemd/system";
/// What the running service makes (systemd's `StateDirectory=` and
/// LogsDirectory=): removed on purge with the configuration.
const RUNTIME_STATE: [&str; 2] = ["/var/lib/tinyexec", "/var/log/tinyexec"];

const MAINTAINER: &str = "tinyexec maintainers <tinyexec@localhost>";

pub fn run(root: &Path, args: &Args) -> Result<()> {
    let arches = if args.arches.is_empty() {
        vec![Arch::host()]
    } else {
        args.arches.clone()
    };
    for arch in arches {
        let deb = build(root, arch)?;
        step(&format!("built {}", deb.display()));
    }
    Ok(())
}

/// The package's file name for `arch`, as Debian names them.
pub fn file_name(arch: Arch) -> String {
    format!("{NAME}_{}_{}.deb", env!("CARGO_PKG_VERSION"), arch.debian())
}

/// Builds the static sensor and the package for `arch`; returns the .deb's path.
pub fn build(root: &Path, arch: Arch) -> Result<PathBuf> {
    let sensor = dist::sensor(root, arch)?;
    let out_dir = root.join("target/package");
    let stage = out_dir.join(format!("{NAME}_{}", arch.debian()));
    step(&format!(
        "assembling the {} package in {}",
        arch.debian(),
        stage.display()
    ));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let layout = Layout {
        prefix: PathBuf::from(PREFIX),
        unit_dir: PathBuf::from(UNIT_DIR),
    };
    let items = layout.items(root, &sensor)?;
    for item in &items {
        install::place(item, &install::under(&stage, &item.path))?;
    }
    let copyright = install::under(&stage, &layout.doc().join("copyright"));
    fs::write(&copyright, COPYRIGHT).with_context(|| format!("writing {}", copyright.display()))?;

    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let conffiles: Vec<&Path> = items
        .iter()
        .filter(|i| i.kind == Kind::Config)
        .map(|i| i.path.as_path())
        .collect();
    let mut conf = String::new();
    for c in &conffiles {
        let _ = writeln!(conf, "{}", c.display());
    }
    write(&debian.join("conffiles"), &conf, 0o644)?;
    write(&debian.join("postinst"), &postinst(), 0o755)?;
    write(&debian.join("prerm"), &prerm(), 0o755)?;
    write(&debian.join("postrm"), &postrm(), 0o755)?;
    write(
        &debian.join("md5sums"),
        &md5sums(&stage, &conffiles)?,
        0o644,
    )?;
    // Last: Installed-Size counts what is staged by now.
    let control = control(arch, installed_kib(&stage)?);
    write(&debian.join("control"), &control, 0o644)?;
    // Whatever the umask: dpkg-deb wants DEBIAN and every directory 0755.
    chmod_dirs(&stage)?;

    let deb = out_dir.join(file_name(arch));
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )
    .context("dpkg-deb --build")?;
    Ok(deb)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn control(arch: Arch, installed_kib: u64) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {debian}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: init-system-helpers\n\
         Section: admin\n\
         Priority: optional\n\
         Description: exec-time sensor for the Equation Group \"tinyexec\" stager\n \
         An eBPF program on the kernel's sched_process_exec tracepoint sees every\n \
         exec; the daemon evaluates the YARA rule EQGRP_tinyexec on the bytes the\n \
         kernel read and writes JSON alerts for Microsoft Sentinel (or CEF to syslog),\n \
         with analysts' exclusions and an optional prevent mode.\n \
         .\n \
         One static binary: it needs no library of the system. Linux 5.8 or later\n \
         with BTF. The service is enabled on installation and started where systemd\n \
         runs.\n",
        version = env!("CARGO_PKG_VERSION"),
        debian = arch.debian(),
    )
}

/// After unpacking: the service enabled as systemd would (the symlinks of
/// its `[Install]` section, made by deb-systemd-helper even where systemd is
/// not running, and remembered for purge), unless an administrator disabled
/// it before an upgrade; then started, or restarted on upgrade, only under
/// a running systemd. A start that fails leaves the package installed: the
/// service's log says why.
fn postinst() -> String {
    format!(
        r#"#!/bin/sh
# tinyexec's postinst (written by xtask/src/package.rs).
set -e
case "$1" in
configure|abort-upgrade|abort-deconfigure|abort-remove)
    # The mask that removal left.
    deb-systemd-helper unmask {UNIT} >/dev/null || true
    # True on the first installation; afterwards, whether it is enabled now.
    if deb-systemd-helper --quiet was-enabled {UNIT}; then
        deb-systemd-helper enable {UNIT} >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then action=restart; else action=start; fi
        deb-systemd-invoke "$action" {UNIT} >/dev/null || true
    else
        echo "tinyexec: systemd is not running on this machine: {UNIT} is enabled, not started" >&2
    fi
    ;;
esac
exit 0
"#
    )
}

/// Before removal (not before an upgrade: postinst restarts): the service stopped.
fn prerm() -> String {
    format!(
        r#"#!/bin/sh
# tinyexec's prerm (written by xtask/src/package.rs).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop {UNIT} >/dev/null || true
fi
exit 0
"#
    )
}

/// After removal: the unit masked while its conffiles stay (so nothing
/// starts a half-removed service); on purge, every trace: the enablement
/// symlinks and deb-systemd-helper's memory of them, the mask, and what the
/// service made at run time (its state and logs). dpkg itself removes the
/// conffiles on purge.
fn postrm() -> String {
    let state = RUNTIME_STATE.join(" ");
    format!(
        r#"#!/bin/sh
# tinyexec's postrm (written by xtask/src/package.rs).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
# init-system-helpers may be gone by now.
if [ -x /usr/bin/deb-systemd-helper ]; then
    case "$1" in
    remove)
        deb-systemd-helper mask {UNIT} >/dev/null || true
        ;;
    purge)
        deb-systemd-helper purge {UNIT} >/dev/null || true
        deb-systemd-helper unmask {UNIT} >/dev/null || true
        ;;
    esac
fi
if [ "$1" = purge ]; then
    rm -rf {state}
fi
exit 0
"#
    )
}

/// `md5sum` lines of every file but the conffiles (dpkg keeps theirs itself),
/// paths relative to the root, for `dpkg --verify`.
fn md5sums(stage: &Path, conffiles: &[&Path]) -> Result<String> {
    let mut files = Vec::new();
    for f in files_under(stage)? {
        let rel = f.strip_prefix(stage)?;
        if rel.starts_with("DEBIAN") || conffiles.iter().any(|c| c.strip_prefix("/") == Ok(rel)) {
            continue;
        }
        files.push(rel.to_path_buf());
    }
    let out = Command::new("md5sum")
        .args(&files)
        .current_dir(stage)
        .output()
        .context("starting md5sum")?;
    if !out.status.success() {
        bail!(
            "md5sum failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("md5sum's output")
}

/// Installed-Size: KiB, each file rounded up, as dpkg-gencontrol counts.
fn installed_kib(stage: &Path) -> Result<u64> {
    let mut kib = 0;
    for f in files_under(stage)? {
        if !f.strip_prefix(stage)?.starts_with("DEBIAN") {
            kib += fs::metadata(&f)?.len().div_ceil(1024);
        }
    }
    Ok(kib)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(files_under(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

fn chmod_dirs(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            chmod_dirs(&p)?;
        }
    }
    Ok(())
}

/// /usr/share/doc/tinyexec/copyright, in Debian's machine-readable format.
const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tinyexec

Files: *
Copyright: the tinyexec authors
License: MIT or Apache-2.0
Comment:
 The sensor is one statically linked binary. It contains the musl C library
 (MIT) and the Rust crates its source's Cargo.lock names, each under its own
 licence (MIT, Apache-2.0, BSD, ISC and compatible); none is GPL or LGPL. The
 eBPF program it loads into the kernel declares \"Dual MIT/GPL\", which the
 kernel's GPL-only helpers require.

License: MIT or Apache-2.0
 At your option, the MIT licence (https://opensource.org/license/mit) or the
 Apache License, Version 2.0 (on Debian systems in
 /usr/share/common-licenses/Apache-2.0).
";

#[cfg(test)]
mod tests {
    use super::*;

    /// The maintainer scripts parse (`sh -n`) and start nothing without systemd.
    #[test]
    fn maintainer_scripts_are_valid_shell() {
        for (name, text) in [
            ("postinst", postinst()),
            ("prerm", prerm()),
            ("postrm", postrm()),
        ] {
            let out = Command::new("sh")
                .args(["-n", "-c", &text])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in text.lines().filter(|l| l.contains("deb-systemd-invoke")) {
                let at = text.find(line).unwrap();
                let guard = text[..at].rfind("/run/systemd/system");
                assert!(guard.is_some(), "{name}: {line} without the systemd check");
            }
        }
        assert!(postrm().contains("rm -rf /var/lib/tinyexec /var/log/tinyexec"));
    }

    #[test]
    fn control_has_what_dpkg_requires() {
        let c = control(Arch::Aarch64, 12345);
        for field in [
            "Package: tinyexec\n",
            "Architecture: arm64\n",
            "Installed-Size: 12345\n",
            "Maintainer: ",
            "Description: ",
        ] {
            assert!(c.contains(field), "{field} in:\n{c}");
        }
        assert!(c.ends_with("runs.\n"));
    }
}
