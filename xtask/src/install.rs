//! `cargo xtask install`: the sensor as a systemd service, with its
//! configuration in /etc/tinyexec (existing configuration is never overwritten).

use std::{
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

/// `destdir` + an absolute path.
fn under(destdir: &Path, abs: &Path) -> PathBuf {
    destdir.join(abs.strip_prefix("/").unwrap_or(abs))
}

fn put(src: &Path, dst: &Path, mode: u32, overwrite: bool) -> Result<()> {
    if !overwrite && dst.exists() {
        step(&format!("keeping the existing {}", dst.display()));
        return Ok(());
    }
    if let Some(dir) = dst.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    step(&format!("installed {}", dst.display()));
    Ok(())
}

/// Places every file; `sensor` is the built binary.
pub fn install_files(root: &Path, sensor: &Path, args: &InstallArgs) -> Result<()> {
    let d = &args.destdir;
    let bin = args.prefix.join("bin/tinyexec-sensor");
    put(sensor, &under(d, &bin), 0o755, true)?;
    let doc = args.prefix.join("share/doc/tinyexec");
    for f in [
        "README.md",
        "docs/events.md",
        "docs/exclusions.md",
        "docs/outputs.md",
        "docs/schema.md",
    ] {
        let name = Path::new(f).file_name().unwrap_or_default();
        put(&root.join(f), &under(d, &doc.join(name)), 0o644, true)?;
    }
    let etc = Path::new("/etc/tinyexec");
    put(
        &root.join("deploy/config.toml"),
        &under(d, &etc.join("config.toml")),
        0o600,
        false,
    )?;
    put(
        &root.join("config/exclusions.txt"),
        &under(d, &etc.join("exclusions.txt")),
        0o644,
        false,
    )?;
    let unit = fs::read_to_string(root.join("deploy/systemd/tinyexec.service"))?
        .replace("/usr/local/", &format!("{}/", args.prefix.display()));
    let unit_path = under(d, Path::new("/etc/systemd/system/tinyexec.service"));
    if let Some(dir) = unit_path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&unit_path, unit).with_context(|| format!("writing {}", unit_path.display()))?;
    step(&format!("installed {}", unit_path.display()));
    Ok(())
}

pub fn run(root: &Path, sensor: &Path, args: &InstallArgs) -> Result<()> {
    install_files(root, sensor, args)?;
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
        assert!(unit.contains("Type=notify"));
        assert!(dest.join("opt/tx/bin/tinyexec-sensor").exists());
        assert!(dest.join("etc/tinyexec/exclusions.txt").exists());
        fs::remove_dir_all(&dest).unwrap();
    }
}
