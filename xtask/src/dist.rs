//! The static binaries: the sensor as it ships (musl, profile `dist`, the
//! eBPF object embedded as in every build) and the kernel matrix's test
//! binary, for each architecture; and the check that a binary needs nothing
//! from the userland it lands on.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};
use object::{
    Endianness,
    elf::{DT_NEEDED, FileHeader64},
    read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _},
};
use serde_json::Value;

use crate::{arch::Arch, cargo, run_cmd, setup, step};

/// Cargo.toml's `[profile.dist]`.
pub const PROFILE: &str = "dist";
/// The test binaries that run inside VMs (tests/Cargo.toml): the kernel
/// matrix's, and the systemd deployment's.
const MATRIX_TEST: &str = "matrix";
const DEPLOYMENT_TEST: &str = "deployment";

/// Builds the shipped sensor for `arch`; returns its path, checked static.
pub fn sensor(root: &Path, arch: Arch) -> Result<PathBuf> {
    setup::toolchain(root)?;
    setup::static_target(root, arch)?;
    let target = arch.musl_target();
    step(&format!(
        "building the static tinyexec-sensor for {arch} ({target}, profile {PROFILE})"
    ));
    run_cmd(cargo().current_dir(root).args([
        "build",
        "--package",
        "tinyexec-user",
        "--bin",
        "tinyexec-sensor",
        "--profile",
        PROFILE,
        "--target",
        target,
    ]))?;
    let path = root
        .join("target")
        .join(target)
        .join(PROFILE)
        .join("tinyexec-sensor");
    ensure_static(&path, arch)?;
    Ok(path)
}

/// Builds (if needed) the matrix's test binary for `arch`, static like the
/// sensor, and returns its path.
pub fn matrix_tests(root: &Path, arch: Arch) -> Result<PathBuf> {
    vm_test(root, arch, MATRIX_TEST)
}

/// The systemd deployment VM's test binary (`x86_64`), static like the sensor.
pub fn deployment_tests(root: &Path, arch: Arch) -> Result<PathBuf> {
    vm_test(root, arch, DEPLOYMENT_TEST)
}

/// Builds (if needed) the test binary `name` for `arch`, static, and returns
/// its path from cargo's own report.
fn vm_test(root: &Path, arch: Arch, name: &str) -> Result<PathBuf> {
    setup::static_target(root, arch)?;
    let mut child = cargo()
        .current_dir(root)
        .args(["test", "--package", "tinyexec-tests", "--test", name])
        .args(["--target", arch.musl_target()])
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test --no-run")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == name
            && let Some(exe) = msg["executable"].as_str()
        {
            found = Some(PathBuf::from(exe));
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("building the {name} test binary for {arch} failed ({status})");
    }
    let path = found
        .with_context(|| format!("cargo reported no executable for the {name} test ({arch})"))?;
    ensure_static(&path, arch)?;
    Ok(path)
}

/// Fails unless `path` is a 64-bit ELF executable for `arch` that asks for
/// no dynamic loader (`PT_INTERP`) and no shared library (`DT_NEEDED`).
pub fn ensure_static(path: &Path, arch: Arch) -> Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let what = || format!("{}: not a 64-bit ELF file", path.display());
    let header = FileHeader64::<Endianness>::parse(&*data).with_context(what)?;
    let endian = header.endian().with_context(what)?;
    let machine = header.e_machine(endian);
    if machine != arch.elf_machine() {
        bail!(
            "{}: ELF machine {machine}, not {arch}'s {}",
            path.display(),
            arch.elf_machine()
        );
    }
    let phdrs = header
        .program_headers(endian, &*data)
        .with_context(|| format!("{}: program headers", path.display()))?;
    for ph in phdrs {
        if let Some(interp) = ph.interpreter(endian, &*data).with_context(what)? {
            bail!(
                "{} is dynamically linked (it asks for the loader {}): it needs the libraries of the userland it runs on",
                path.display(),
                String::from_utf8_lossy(interp)
            );
        }
        if let Some(dynamic) = ph.dynamic(endian, &*data).with_context(what)?
            && dynamic
                .iter()
                .any(|d| d.tag32(endian).is_some_and(|t| i64::from(t) == DT_NEEDED))
        {
            bail!("{} needs shared libraries (DT_NEEDED)", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xtask itself is a dynamically linked glibc program: refused.
    #[test]
    fn a_dynamic_binary_is_refused() {
        let me = std::env::current_exe().unwrap();
        let err = ensure_static(&me, Arch::host()).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        let other = match Arch::host() {
            Arch::X86_64 => Arch::Aarch64,
            Arch::Aarch64 => Arch::X86_64,
        };
        let err = ensure_static(&me, other).unwrap_err().to_string();
        assert!(err.contains("ELF machine"), "{err}");
    }

    #[test]
    fn a_static_binary_passes() {
        // The tests' tiny ELFs: one PT_LOAD, nothing else.
        let dir = std::env::temp_dir().join(format!("xtask-static-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny");
        let bytes = tinyexec_harness::elf::TinyElf::new(tinyexec_harness::elf::Arch::X86_64)
            .build()
            .unwrap();
        fs::write(&path, bytes).unwrap();
        ensure_static(&path, Arch::X86_64).unwrap();
        let not_elf = dir.join("text");
        fs::write(&not_elf, "#!/bin/sh\n").unwrap();
        assert!(ensure_static(&not_elf, Arch::X86_64).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
