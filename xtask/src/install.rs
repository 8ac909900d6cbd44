//! What an installation of the sensor consists of (binary, systemd unit,
//! configuration in /etc/tinyexec, docs and Sentinel content), for both ways
//! of installing it: `cargo xtask install` here, and the Debian package
//! (package.rs). Existing configuration is never overwritten.
//!
//! The directories the configuration names (the alert log's, the Sentinel
//! spool's) are made by a `tmpfiles.d` snippet with the unit's modes, not
//! only by the unit's `LogsDirectory=`/`StateDirectory=`: a sensor run by
//! hand after installing must find them too. tmpfiles.d, not the sensor
//! itself, because it is the one place systemd, dpkg and rpm scriptlets all
//! read, and it makes `/run/tinyexec` (a tmpfs) again at every boot.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::step;

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Where the binary and docs go (`PREFIX/bin`, `PREFIX/share/doc/tinyexec`).
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Install under this directory instead of `/` (packaging, tests).
    #[arg(long, default_value = "/")]
    pub destdir: PathBuf,
}

/// The configuration directory.
pub const ETC: &str = "/etc/tinyexec";
/// The shipped systemd unit, written with the binary's real path.
const UNIT: &str = "deploy/systemd/tinyexec.service";
/// The prefix the unit names its paths by (`/usr/local/bin/tinyexec-sensor`).
const UNIT_PREFIX: &str = "/usr/local/";
/// The configuration: (source, name in [`ETC`], mode). The configuration may
/// name Sentinel credentials: root's alone.
const CONFIG: [(&str, &str, u32); 2] = [
    ("deploy/config.toml", "config.toml", 0o600),
    ("config/exclusions.txt", "exclusions.txt", 0o644),
];
/// The directories the unit's `StateDirectory=`, `LogsDirectory=` and
/// `RuntimeDirectory=` make, each root's alone (their `...Mode=0700`).
pub const DIRS: [&str; 3] = ["/var/lib/tinyexec", "/var/log/tinyexec", "/run/tinyexec"];
/// The tmpfiles.d snippet's name (`systemd-tmpfiles --create NAME`).
pub const TMPFILES: &str = "tinyexec.conf";
/// Docs: README.md and every `docs/*.md`, then the Sentinel content as a directory.
const DOCS_DIR: &str = "docs";
const SENTINEL_DIR: &str = "deploy/sentinel";

/// Where the parts go.
pub struct Layout {
    /// `PREFIX/bin`, `PREFIX/share/doc/tinyexec`.
    pub prefix: PathBuf,
    /// The systemd unit's directory.
    pub unit_dir: PathBuf,
    /// The tmpfiles.d directory.
    pub tmpfiles_dir: PathBuf,
}

/// The tmpfiles.d snippet that makes [`DIRS`].
pub fn tmpfiles() -> String {
    let mut text = String::from(
        "# tinyexec-sensor's directories, with the modes of its unit's StateDirectory=,\n\
         # LogsDirectory= and RuntimeDirectory=, for the sensor run by hand as well as\n\
         # by systemd. Made at installation and at every boot (/run is a tmpfs).\n",
    );
    for dir in DIRS {
        let _ = writeln!(text, "d {dir} 0700 root root -");
    }
    text
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Binary,
    Unit,
    Doc,
    /// Configuration: never overwritten (a package's conffiles).
    Config,
}

pub enum Content {
    File(PathBuf),
    Text(String),
}

/// One file of the installation.
pub struct Item {
    /// Where it goes (absolute).
    pub path: PathBuf,
    pub mode: u32,
    pub kind: Kind,
    pub content: Content,
}

impl Item {
    fn file(path: PathBuf, src: PathBuf, mode: u32, kind: Kind) -> Self {
        Self {
            path,
            mode,
            kind,
            content: Content::File(src),
        }
    }
}

impl Layout {
    pub fn bin(&self) -> PathBuf {
        self.prefix.join("bin/tinyexec-sensor")
    }

    pub fn doc(&self) -> PathBuf {
        self.prefix.join("share/doc/tinyexec")
    }

    /// Every file of the installation; `sensor` is the built binary.
    pub fn items(&self, root: &Path, sensor: &Path) -> Result<Vec<Item>> {
        let mut items = vec![Item::file(
            self.bin(),
            sensor.to_path_buf(),
            0o755,
            Kind::Binary,
        )];
        let unit_src = root.join(UNIT);
        let unit = fs::read_to_string(&unit_src)
            .with_context(|| format!("reading {}", unit_src.display()))?
            .replace(UNIT_PREFIX, &format!("{}/", self.prefix.display()));
        items.push(Item {
            path: self.unit_dir.join("tinyexec.service"),
            mode: 0o644,
            kind: Kind::Unit,
            content: Content::Text(unit),
        });
        items.push(Item {
            path: self.tmpfiles_dir.join(TMPFILES),
            mode: 0o644,
            kind: Kind::Unit,
            content: Content::Text(tmpfiles()),
        });
        let doc = self.doc();
        let mut docs = vec![root.join("README.md")];
        docs.extend(
            sorted_files(&root.join(DOCS_DIR))?
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "md")),
        );
        for src in docs {
            let name = src.file_name().context("doc file name")?;
            items.push(Item::file(doc.join(name), src.clone(), 0o644, Kind::Doc));
        }
        let sentinel = root.join(SENTINEL_DIR);
        for src in walk(&sentinel)? {
            let rel = src.strip_prefix(&sentinel)?;
            items.push(Item::file(
                doc.join("sentinel").join(rel),
                src.clone(),
                0o644,
                Kind::Doc,
            ));
        }
        for (src, name, mode) in CONFIG {
            items.push(Item::file(
                Path::new(ETC).join(name),
                root.join(src),
                mode,
                Kind::Config,
            ));
        }
        Ok(items)
    }
}

/// The regular files directly in `dir`, by name.
fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Every regular file under `dir`, depth first, by name.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = sorted_files(dir)?;
    let mut subdirs: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for d in subdirs {
        out.extend(walk(&d)?);
    }
    Ok(out)
}

/// `destdir` + an absolute path.
pub fn under(destdir: &Path, abs: &Path) -> PathBuf {
    destdir.join(abs.strip_prefix("/").unwrap_or(abs))
}

/// Writes `item` at `dst` with its mode.
pub fn place(item: &Item, dst: &Path) -> Result<()> {
    if let Some(dir) = dst.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match &item.content {
        Content::File(src) => fs::copy(src, dst)
            .map(drop)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?,
        Content::Text(text) => {
            fs::write(dst, text).with_context(|| format!("writing {}", dst.display()))?;
        }
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(item.mode))
        .with_context(|| format!("chmod {}", dst.display()))
}

/// Places every file; `sensor` is the built binary.
pub fn install_files(root: &Path, sensor: &Path, args: &InstallArgs) -> Result<()> {
    let layout = Layout {
        prefix: args.prefix.clone(),
        // Local units: where an administrator's own go.
        unit_dir: PathBuf::from("/etc/systemd/system"),
        tmpfiles_dir: PathBuf::from("/etc/tmpfiles.d"),
    };
    for item in layout.items(root, sensor)? {
        let dst = under(&args.destdir, &item.path);
        if item.kind == Kind::Config && dst.exists() {
            step(&format!("keeping the existing {}", dst.display()));
            continue;
        }
        place(&item, &dst)?;
        step(&format!("installed {}", dst.display()));
    }
    Ok(())
}

pub fn run(root: &Path, sensor: &Path, args: &InstallArgs) -> Result<()> {
    install_files(root, sensor, args)?;
    if args.destdir == Path::new("/") {
        make_dirs()?;
    }
    if args.destdir == Path::new("/") && Path::new("/run/systemd/system").is_dir() {
        step("systemctl daemon-reload");
        crate::run_cmd(Command::new("systemctl").arg("daemon-reload"))?;
        step("start it with: systemctl enable --now tinyexec");
    } else {
        step(
            "no systemd running here: start it with `systemctl enable --now tinyexec` where there is one",
        );
    }
    Ok(())
}

/// Makes [`DIRS`] as the tmpfiles.d snippet says, with `systemd-tmpfiles`
/// where there is one (it also applies the security labels the system wants), else by hand.
fn make_dirs() -> Result<()> {
    if crate::cmd::find_cmd("systemd-tmpfiles").is_some() {
        step(&format!("systemd-tmpfiles --create {TMPFILES}"));
        return crate::run_cmd(Command::new("systemd-tmpfiles").args(["--create", TMPFILES]));
    }
    for dir in DIRS {
        fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {dir}"))?;
        step(&format!("made {dir}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_everything_and_keeps_existing_configuration() {
        let root = crate::workspace_root();
        let dest = std::env::temp_dir().join(format!("tinyexec-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dest);
        let fake = dest.join("fake-sensor");
        fs::create_dir_all(&dest).unwrap();
        fs::write(&fake, b"#!/bin/sh\n").unwrap();
        let args = InstallArgs {
            prefix: PathBuf::from("/opt/tx"),
            destdir: dest.clone(),
        };
        install_files(&root, &fake, &args).unwrap();
        let conf = dest.join("etc/tinyexec/config.toml");
        assert_eq!(
            fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&conf, "# mine\n").unwrap();
        install_files(&root, &fake, &args).unwrap();
        assert_eq!(fs::read_to_string(&conf).unwrap(), "# mine\n", "kept");
        let unit = fs::read_to_string(dest.join("etc/systemd/system/tinyexec.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/opt/tx/bin/tinyexec-sensor run"),
            "{unit}"
        );
        assert!(
            unit.contains("Documentation=file:/opt/tx/share/doc/tinyexec/README.md"),
            "{unit}"
        );
        assert!(!unit.contains("/usr/local/"), "{unit}");
        assert!(unit.contains("Type=notify"));
        assert!(dest.join("opt/tx/bin/tinyexec-sensor").exists());
        assert!(dest.join("etc/tinyexec/exclusions.txt").exists());
        assert_eq!(
            fs::read_to_string(dest.join("etc/tmpfiles.d/tinyexec.conf")).unwrap(),
            tmpfiles()
        );
        let doc = dest.join("opt/tx/share/doc/tinyexec");
        for f in [
            "README.md",
            "events.md",
            "outputs.md",
            "sentinel/README.md",
            "sentinel/dcr.json",
            "sentinel/hunting/tinyexec-coverage-gaps.yaml",
        ] {
            assert!(doc.join(f).is_file(), "{f}");
        }
        fs::remove_dir_all(&dest).unwrap();
    }

    /// The tmpfiles.d snippet makes what the unit's directory settings make, with their modes.
    #[test]
    fn tmpfiles_makes_the_units_directories() {
        let unit = fs::read_to_string(crate::workspace_root().join(UNIT)).unwrap();
        let value = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key}= in {UNIT}"))
                .to_owned()
        };
        let text = tmpfiles();
        for (setting, base) in [
            ("State", "/var/lib"),
            ("Logs", "/var/log"),
            ("Runtime", "/run"),
        ] {
            let dir = format!("{base}/{}", value(&format!("{setting}Directory")));
            assert_eq!(value(&format!("{setting}DirectoryMode")), "0700");
            assert!(DIRS.contains(&dir.as_str()), "{dir}");
            assert!(
                text.contains(&format!("\nd {dir} 0700 root root -\n")),
                "{text}"
            );
        }
    }
}
