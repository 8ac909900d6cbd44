//! Installing what the build and the tests need, once, with a word about each step.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run_cmd, step};

/// bpf-linker 0.13 is the release for LLVM 22, the nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";
/// The libFuzzer driver for the fuzz targets in `fuzz/`.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Debian packages the tests use, as (command, package): bpftool cross-checks
/// our BTF parser, yara is the reference `scan` must agree with, rsyslog
/// receives the CEF output, python3 and openssl run the Sentinel stand-in.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("yara", "yara"),
    ("rsyslogd", "rsyslog"),
    ("python3", "python3"),
    ("openssl", "openssl"),
];

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("this must run as root: {why}. Try `sudo -E cargo xtask ...`");
    }
    Ok(())
}

/// The nightly toolchain with rust-src (for `-Z build-std=core`) and bpf-linker.
pub fn toolchain(root: &Path) -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        step("adding the rust-src component to the nightly toolchain");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))
        .context("rust-src is needed to build core for the BPF target")?;
    }
    bpf_linker(root, &sysroot)
}

fn nightly_sysroot() -> Result<PathBuf> {
    let get = || output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]));
    if let Some(s) = get() {
        return Ok(PathBuf::from(s));
    }
    step("installing the nightly toolchain (the eBPF crate needs it)");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))?;
    get()
        .map(PathBuf::from)
        .context("rustc +nightly still not usable after installing it")
}

/// Installs bpf-linker into `<root>/.tools`, linked against the nightly's own libLLVM.
fn bpf_linker(root: &Path, sysroot: &Path) -> Result<()> {
    let tools = root.join(".tools");
    let linker = tools.join("bin/bpf-linker");
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    if output(Command::new(&linker).arg("--version")).as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    step(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} for LLVM 22 into {} (once, about 2 minutes)",
        tools.display()
    ));
    let sys_lib = sysroot.join("lib");
    let llvm_so = fs::read_dir(&sys_lib)
        .with_context(|| format!("reading {}", sys_lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
        })
        .with_context(|| {
            format!(
                "no libLLVM in {}; install Debian's llvm-22-dev and run \
                 `LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@{BPF_LINKER_VERSION} --locked \
                 --no-default-features --features llvm-22 --root {}`",
                sys_lib.display(),
                tools.display()
            )
        })?;
    // bpf-linker's build looks for `$LLVM_PREFIX/lib/libLLVM.so`.
    let prefix = tools.join("llvm");
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    symlink(&llvm_so, &link).with_context(|| format!("linking {}", link.display()))?;
    run_cmd(
        cargo()
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ])
            .args(["--no-default-features", "--features", "llvm-22", "--root"])
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix)
            // Find the nightly's libLLVM at run time without LD_LIBRARY_PATH.
            .env(
                "RUSTFLAGS",
                format!("-C link-arg=-Wl,-rpath,{}", sys_lib.display()),
            ),
    )
    .context("installing bpf-linker")?;
    if output(Command::new(&linker).arg("--version")).as_deref() != Some(want.as_str()) {
        bail!("{} does not run after installing it", linker.display());
    }
    Ok(())
}

/// cargo-fuzz, the libFuzzer driver for `cargo xtask fuzz`, in `<root>/.tools`;
/// returns its path.
pub fn cargo_fuzz(root: &Path) -> Result<PathBuf> {
    let tools = root.join(".tools");
    let bin = tools.join("bin/cargo-fuzz");
    let want = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if output(Command::new(&bin).arg("--version")).as_deref() == Some(want.as_str()) {
        return Ok(bin);
    }
    step(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (once, about a minute)",
        tools.display()
    ));
    run_cmd(
        cargo()
            .args([
                "install",
                &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
                "--locked",
                "--force",
                "--root",
            ])
            .arg(&tools),
    )
    .context("installing cargo-fuzz")?;
    Ok(bin)
}

/// Debian packages the tests need, installed when missing.
pub fn test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(bin, _)| {
            output(Command::new("sh").args(["-c", &format!("command -v {bin}")])).is_none()
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages the tests use: {}",
        missing.join(" ")
    ));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
