//! `cargo xtask package`: the Debian package and the RPM a fleet installs,
//! one of each per architecture, holding the static sensor (dist.rs) and
//! what install.rs lists: `/usr/bin/tinyexec-sensor`, the systemd unit, the
//! tmpfiles.d snippet making its directories, the configuration in
//! `/etc/tinyexec` as conffiles, the docs and Sentinel content in
//! `/usr/share/doc/tinyexec`.
//!
//! Assembled here and built with `dpkg-deb`, Debian's own archiver, rather
//! than with cargo-deb: the package is a dozen files xtask already knows
//! (install.rs, shared with `cargo xtask install`), the maintainer scripts
//! are the point and are written out below, and cargo-deb would be one more
//! tool to install and build (minutes on a 2-core CI machine) for the same
//! `dpkg-deb --build` at the end.
//!
//! The RPM is built with `rpmbuild` from Debian's `rpm` package, the RHEL
//! family's own builder, from a spec written below over the same staged
//! files (cargo-generate-rpm would be a crate build of minutes and no
//! scriptlet it does not take from us verbatim). The scriptlets are what
//! `%systemd_post`, `%systemd_preun` and `%systemd_postun_with_restart`
//! expand to (written out: the builder here has no systemd RPM macros, and
//! the classic expansion works on every systemd of the family, Amazon Linux
//! 2's 219 included).

use std::{
    collections::BTreeSet,
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
    files::write_file,
    install::{self, DIRS, Kind, Layout, TMPFILES},
    run_cmd, setup, step,
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
/// The RPM's unit directory (`%{_unitdir}`).
const RPM_UNIT_DIR: &str = "/usr/lib/systemd/system";
/// Both packages' tmpfiles.d directory (`%{_tmpfilesdir}`).
const TMPFILES_DIR: &str = "/usr/lib/tmpfiles.d";
/// The RPM's release.
const RELEASE: &str = "1";

/// The RPM's %changelog: one entry per release.
const CHANGELOG: &str = "\
* Mon Dec 07 2026 tinyexec maintainers <tinyexec@localhost> - 0.1.0-1
- The first RPM: the static sensor, its systemd unit and configuration.
";

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
        let rpm = build_rpm(root, arch)?;
        step(&format!("built {}", rpm.display()));
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
        tmpfiles_dir: PathBuf::from(TMPFILES_DIR),
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
    write_file(&debian.join("conffiles"), &conf, 0o644)?;
    write_file(&debian.join("postinst"), &postinst(), 0o755)?;
    write_file(&debian.join("prerm"), &prerm(), 0o755)?;
    write_file(&debian.join("postrm"), &postrm(), 0o755)?;
    write_file(
        &debian.join("md5sums"),
        &md5sums(&stage, &conffiles)?,
        0o644,
    )?;
    // Last: Installed-Size counts what is staged by now.
    let control = control(arch, installed_kib(&stage)?);
    write_file(&debian.join("control"), &control, 0o644)?;
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

/// The RPM's file name for `arch`, as rpmbuild names them.
pub fn rpm_file_name(arch: Arch) -> String {
    format!("{NAME}-{}-{RELEASE}.{arch}.rpm", env!("CARGO_PKG_VERSION"))
}

/// Builds the static sensor and the RPM for `arch` with rpmbuild; returns the .rpm's path.
pub fn build_rpm(root: &Path, arch: Arch) -> Result<PathBuf> {
    setup::rpm_tools()?;
    let sensor = dist::sensor(root, arch)?;
    let out_dir = root.join("target/package");
    let top = out_dir.join(format!("rpm-{arch}"));
    step(&format!("assembling the {arch} RPM in {}", top.display()));
    if top.exists() {
        fs::remove_dir_all(&top).with_context(|| format!("removing {}", top.display()))?;
    }
    let stage = top.join("stage");
    let layout = Layout {
        prefix: PathBuf::from(PREFIX),
        unit_dir: PathBuf::from(RPM_UNIT_DIR),
        tmpfiles_dir: PathBuf::from(TMPFILES_DIR),
    };
    let items = layout.items(root, &sensor)?;
    for item in &items {
        install::place(item, &install::under(&stage, &item.path))?;
    }
    let copyright = install::under(&stage, &layout.doc().join("copyright"));
    fs::write(&copyright, COPYRIGHT).with_context(|| format!("writing {}", copyright.display()))?;
    // The package owns its directories (the runtime one as %ghost: a tmpfs).
    for dir in DIRS {
        fs::create_dir_all(install::under(&stage, Path::new(dir)))?;
    }
    let spec = top.join(format!("{NAME}.spec"));
    write_file(&spec, &spec_text(&layout, &items, &stage), 0o644)?;
    run_cmd(
        Command::new("rpmbuild")
            .args(["-bb", "--quiet"])
            .arg("--target")
            .arg(format!("{arch}-linux"))
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            // Where rpmbuild writes it: target/package/NAME-V-R.ARCH.rpm.
            .arg("--define")
            .arg(format!("_rpmdir {}", out_dir.display()))
            .arg("--define")
            .arg("_build_name_fmt %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm")
            .arg(&spec),
    )
    .context("rpmbuild")?;
    Ok(out_dir.join(rpm_file_name(arch)))
}

/// The spec: the staged files copied as they are, and the scriptlets.
fn spec_text(layout: &Layout, items: &[install::Item], stage: &Path) -> String {
    let mut files = String::new();
    let attr = |mode: u32| format!("%attr({mode:04o},root,root)");
    for item in items {
        let path = item.path.display();
        let line = match item.kind {
            Kind::Config => format!("%config(noreplace) {} {path}", attr(item.mode)),
            Kind::Doc => format!("%doc {} {path}", attr(item.mode)),
            Kind::Binary | Kind::Unit => format!("{} {path}", attr(item.mode)),
        };
        let _ = writeln!(files, "{line}");
    }
    let doc = layout.doc();
    let _ = writeln!(
        files,
        "%license %attr(0644,root,root) {}/copyright",
        doc.display()
    );
    // The directories the package owns: the docs' (each, so that erasing it
    // leaves none behind), the configuration's, and DIRS.
    let mut dirs = BTreeSet::from([PathBuf::from(install::ETC)]);
    for item in items.iter().filter(|i| i.kind == Kind::Doc) {
        dirs.extend(
            item.path
                .ancestors()
                .skip(1)
                .take_while(|d| d.starts_with(&doc))
                .map(Path::to_path_buf),
        );
    }
    for dir in dirs {
        let _ = writeln!(files, "%dir %attr(0755,root,root) {}", dir.display());
    }
    for dir in DIRS {
        let ghost = if dir.starts_with("/run/") {
            "%ghost "
        } else {
            ""
        };
        let _ = writeln!(files, "{ghost}%dir %attr(0700,root,root) {dir}");
    }
    format!(
        r"# tinyexec's RPM spec (written by xtask/src/package.rs).
Name: {NAME}
Version: {version}
Release: {RELEASE}
Summary: Exec-time sensor for the Equation Group tinyexec stager
Group: System Environment/Daemons
License: MIT OR Apache-2.0
URL: https://github.com/tinyexec/tinyexec
Packager: {MAINTAINER}

# One static binary, built before: nothing to strip, compile or extract here.
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}
%global _build_id_links none
# xz, not zstd: rpm 4.11 (Amazon Linux 2, RHEL 7) reads it.
%global _binary_payload w6.xzdio
# A static PIE has the .gnu.hash of a dynamic object, for its own start-up
# relocation: it needs no dynamic linker.
%global __requires_exclude ^rtld\\(GNU_HASH\\)$

%description
An eBPF program on the kernel's sched_process_exec tracepoint sees every
exec; the daemon evaluates the YARA rule EQGRP_tinyexec on the bytes the
kernel read and writes JSON alerts for Microsoft Sentinel (or CEF to
syslog), with analysts' exclusions and an optional prevent mode.

One static binary: it needs no library of the system. Linux 5.8 or later
with BTF.

%prep

%build

%install
cp -a {stage}/. %{{buildroot}}/

{scriptlets}
%files
{files}
%changelog
{CHANGELOG}",
        version = env!("CARGO_PKG_VERSION"),
        stage = stage.display(),
        scriptlets = rpm_scriptlets(),
    )
}

/// `%post`, `%preun`, `%postun`: what `%systemd_post`, `%systemd_preun` and
/// `%systemd_postun_with_restart` expand to (systemd's classic
/// `macros.systemd`), with the calls that need a running systemd guarded by
/// `/run/systemd/system`; `%post` also makes the directories (what
/// `%tmpfiles_create` does, with a fallback).
fn rpm_scriptlets() -> String {
    format!(
        r"%post
{dirs}
if [ $1 -eq 1 ]; then
    # %systemd_post: on the first installation, enabled or not as the
    # system's preset policy says.
    systemctl --no-reload preset {UNIT} >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    # Where systemd has no file trigger for new units (systemd 219).
    systemctl daemon-reload >/dev/null 2>&1 || :
fi

%preun
if [ $1 -eq 0 ]; then
    # %systemd_preun: removal, not upgrade: disabled, and stopped where
    # systemd runs.
    systemctl --no-reload disable {UNIT} >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop {UNIT} >/dev/null 2>&1 || :
    fi
fi

%postun
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ $1 -ge 1 ]; then
        # %systemd_postun_with_restart: an upgrade restarts a running service.
        systemctl try-restart {UNIT} >/dev/null 2>&1 || :
    fi
fi
",
        dirs = make_dirs_sh(":")
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
    )
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
{dirs}
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
"#,
        dirs = make_dirs_sh("true"),
    )
}

/// Shell lines making [`DIRS`] as the tmpfiles.d snippet says (at boot
/// systemd makes them again); `nop` is the shell's no-op (`true` or `:`).
fn make_dirs_sh(nop: &str) -> String {
    format!(
        r#"    # The directories the configuration names, for the sensor by hand too.
    if command -v systemd-tmpfiles >/dev/null 2>&1; then
        systemd-tmpfiles --create {TMPFILES} >/dev/null 2>&1 || {nop}
    fi
    # Without systemd-tmpfiles (a container), or where it failed: by hand.
    for d in {dirs}; do
        [ -d "$d" ] || mkdir -p -m 0700 "$d"
    done"#,
        dirs = DIRS.join(" ")
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
/// package's directories with what the service wrote there (its state and
/// logs). dpkg itself removes the conffiles on purge.
fn postrm() -> String {
    let state = DIRS.join(" ");
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
        assert!(postrm().contains("rm -rf /var/lib/tinyexec /var/log/tinyexec /run/tinyexec"));
        assert!(postinst().contains("systemd-tmpfiles --create tinyexec.conf"));
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
