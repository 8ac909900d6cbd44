//! `cargo xtask lint`, the first step of `cargo xtask test`: formatting, clippy
//! over the workspace (the lints are the root Cargo.toml's `[workspace.lints]`),
//! and clippy over the kernel program as the target it is built for.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, setup, step};

/// The toolchain tinyexec-user/build.rs builds the eBPF crate with (its `TOOLCHAIN`).
const EBPF_TOOLCHAIN: &str = "nightly";

/// One step of the gate: what it checks, its command, and what to do when it fails.
struct Check {
    what: &'static str,
    command: fn(&Path) -> Command,
    fix: &'static str,
}

const CHECKS: &[Check] = &[
    Check {
        what: "formatting (cargo fmt --all --check)",
        command: fmt,
        fix: "run `cargo fmt --all`",
    },
    Check {
        what: "clippy on the workspace (cargo clippy --workspace --all-targets --test deployment -- -D warnings)",
        command: clippy,
        fix: "fix the findings above; where a lint is wrong for a spot, say so with \
              `#[expect(clippy::LINT, reason = \"...\")]` (`#[allow]` is refused)",
    },
    Check {
        what: "clippy on the kernel program (tinyexec-ebpf's bin for bpfel-unknown-none)",
        command: ebpf_clippy,
        fix: "fix the findings above (only the eBPF target sees the bin's code); rerun with \
              `cargo xtask lint`",
    },
];

/// Runs every check, each to its end, and fails naming those that failed.
pub(crate) fn run(root: &Path) -> Result<()> {
    // The eBPF step needs the nightly toolchain with rust-src.
    setup::toolchain(root)?;
    let mut failed = Vec::new();
    for check in CHECKS {
        step(&format!("lint: {}", check.what));
        let mut cmd = (check.command)(root);
        let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
        if !status.success() {
            failed.push(format!("{} failed: {}", check.what, check.fix));
        }
    }
    if failed.is_empty() {
        step("lint: clean");
        Ok(())
    } else {
        bail!("the lint gate failed:\n  {}", failed.join("\n  "))
    }
}

fn fmt(root: &Path) -> Command {
    let mut cmd = cargo();
    cmd.args(["fmt", "--all", "--check"]).current_dir(root);
    cmd
}

fn clippy(root: &Path) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "clippy",
        "--workspace",
        "--all-targets",
        // The systemd VM's test binary, which `cargo test` leaves out (`test = false`).
        "--test",
        "deployment",
        "--",
        "-D",
        "warnings",
    ])
    .current_dir(root);
    cmd
}

/// As tinyexec-user/build.rs builds it: the bin for the BPF target,
/// core built from source, release. Its own target directory's subtree
/// (target/bpfel-unknown-none), so it never invalidates the host's builds.
fn ebpf_clippy(root: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", EBPF_TOOLCHAIN, "cargo", "clippy"])
        .args(["--package", "tinyexec-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .current_dir(root.join("tinyexec-ebpf"))
        // The stable toolchain's, set by the cargo that runs xtask (as build.rs does).
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}
