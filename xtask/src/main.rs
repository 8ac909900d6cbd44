//! `cargo xtask build | run | lint | test | vm | vm-systemd | bench | package | image`: the project's commands, with their
//! own set-up on a fresh machine (nightly rust-src, bpf-linker for LLVM 22, Debian test tools).

mod arch;
mod bench;
mod cmd;
mod dist;
mod files;
mod fuzz;
mod image;
mod install;
mod lint;
mod package;
mod setup;
mod vm;

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the static sensor and install it as a systemd service, config in /etc/tinyexec.
    Install(install::InstallArgs),
    /// Install what the build needs, then build the eBPF object and the sensor.
    Build {
        /// Optimised build (what `run` uses).
        #[arg(long)]
        release: bool,
        /// The static binary that ships (musl, profile `dist`): runs on any Linux userland.
        #[arg(long = "static")]
        static_: bool,
        /// The static binary for this architecture (implies --static): `x86_64` or aarch64.
        #[arg(long, value_enum)]
        arch: Option<arch::Arch>,
    },
    /// Build the Debian package and the RPM (static sensor, systemd unit,
    /// configuration, docs) into target/package/.
    Package(package::Args),
    /// Build the OCI image of the static sensor (from scratch) into
    /// target/image/, for the Kubernetes `DaemonSet` (deploy/kubernetes/).
    Image(image::Args),
    /// Build (release) and start the sensor; arguments after `--` go to `tinyexec-sensor run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The lint gate: cargo fmt --check, clippy on the workspace with -D warnings,
    /// and clippy on the eBPF program for its BPF target.
    Lint,
    /// The lint gate, then every test, as root, against the real kernel, then the kernel
    /// matrix (Debian's kernels under QEMU) and the systemd deployment VM; arguments
    /// after `--` go to `cargo test`.
    Test {
        /// Only the host's tests: no kernel matrix, no systemd deployment VM.
        #[arg(long)]
        no_vm: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Only the kernel matrix: boot Debian's kernels under QEMU and run tests/matrix.rs in each.
    Vm(vm::Args),
    /// Only the systemd deployment VM: Debian 12 booted with systemd as PID 1,
    /// the .deb installed, tests/deployment.rs run in it.
    VmSystemd(vm::deployment::Args),
    /// Measure what the sensor costs on this machine (exec storms with and without it,
    /// loss, exec-to-alert latency, CPU, memory, kernel run time); see docs/performance.md.
    Bench(bench::Args),
    /// Fuzz the parsers of outside input (exclusions and their evaluation, the
    /// configuration, kernel records, BTF) with cargo-fuzz on nightly.
    Fuzz(fuzz::Args),
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Cmd::Build {
            release,
            static_,
            arch,
        } => match (static_, arch) {
            (false, None) => build(&root, release).map(drop),
            (_, arch) => {
                let path = dist::sensor(&root, arch.unwrap_or_else(arch::Arch::host))?;
                step(&format!("built {}", path.display()));
                Ok(())
            }
        },
        Cmd::Install(args) => {
            let sensor = dist::sensor(&root, arch::Arch::host())?;
            install::run(&root, &sensor, &args)
        }
        Cmd::Package(args) => package::run(&root, &args),
        Cmd::Image(args) => image::run(&root, &args),
        Cmd::Run { args } => run(&root, &args),
        Cmd::Lint => lint::run(&root),
        Cmd::Test { no_vm, args } => test(&root, &args, !no_vm),
        Cmd::Vm(args) => vm::conclude(&vm::run(&root, &args)?),
        Cmd::VmSystemd(args) => vm::deployment::conclude(&vm::deployment::run(&root, &args)?),
        Cmd::Bench(args) => bench::run(&root, &args),
        Cmd::Fuzz(args) => fuzz::run(&root, &args),
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) fn step(what: &str) {
    eprintln!("xtask: {what}");
}

/// Runs a command, failing with its command line when it fails.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Set-up, then builds the sensor. Returns the binary's path.
fn build(root: &Path, release: bool) -> Result<PathBuf> {
    setup::toolchain(root)?;
    step(if release {
        "building the eBPF object and tinyexec-sensor (release)"
    } else {
        "building the eBPF object and tinyexec-sensor"
    });
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["build", "--package", "tinyexec-user"]);
    if release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(root.join("target").join(profile).join("tinyexec-sensor"))
}

fn run(root: &Path, args: &[String]) -> Result<()> {
    let sensor = build(root, true)?;
    setup::require_root("the sensor loads eBPF programs")?;
    step(&format!(
        "starting {} run {}",
        sensor.display(),
        args.join(" ")
    ));
    run_cmd(Command::new(&sensor).arg("run").args(args))
}

fn test(root: &Path, args: &[String], vms: bool) -> Result<()> {
    let started = Instant::now();
    setup::require_root("the tests load eBPF programs and exec as other users")?;
    // Before anything is built or run: a red gate fails in a minute, not after the tests.
    lint::run(root)?;
    let sensor = build(root, false)?;
    setup::test_tools()?;
    let kusto = setup::kusto_language(root)?;
    // tests/package.rs installs it with dpkg, and the RPM into an empty root.
    let deb = package::build(root, arch::Arch::host())?;
    let rpm = package::build_rpm(root, arch::Arch::host())?;
    // tests/kubernetes.rs runs the DaemonSet's container from it.
    let image = image::build(root, arch::Arch::host())?;
    step("running every test (unit tests, then end-to-end tests against the real kernel)");
    // tests/matrix.rs appends its checks' reports here: the host's row of the table.
    let report = root.join("target/vm/host-matrix.jsonl");
    fs::create_dir_all(report.parent().unwrap_or(root))?;
    let _ = fs::remove_file(&report);
    let host = run_cmd(
        cargo()
            .current_dir(root)
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(args)
            .env("TINYEXEC_SENSOR", &sensor)
            .env("TINYEXEC_DEB", &deb)
            .env("TINYEXEC_RPM", &rpm)
            .env("TINYEXEC_IMAGE", &image)
            .env("KUSTO_LANGUAGE_DIR", &kusto)
            .env("TINYEXEC_MATRIX_REPORT", &report),
    );
    // Only a whole run fuzzes: `-- --test NAME` picks tests, not fuzzing.
    let fuzzed = if args.is_empty() {
        step(&format!(
            "fuzzing each target for {} s (cargo xtask fuzz for longer)",
            fuzz::SMOKE_SECONDS
        ));
        fuzz::fuzz(root, fuzz::TARGETS, fuzz::SMOKE_SECONDS)
    } else {
        Ok(())
    };
    let mut rows = vec![vm::host_row(&report)?];
    if vms {
        step("the kernel matrix: Debian's kernels under QEMU (`--no-vm` skips it)");
        rows.extend(vm::run(root, &vm::Args::default())?);
    }
    let matrix = vm::conclude(&rows);
    let deployment = if vms {
        step("the systemd deployment VM: Debian 12 under systemd with the .deb installed");
        vm::deployment::run(root, &vm::deployment::Args::default())
            .and_then(|o| vm::deployment::conclude(&o))
    } else {
        Ok(())
    };
    step(&format!(
        "cargo xtask test took {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let failed: Vec<String> = [
        host.err()
            .map(|e| format!("the host's tests failed ({e:#})")),
        fuzzed.err().map(|e| format!("fuzzing failed ({e:#})")),
        matrix.err().map(|e| format!("{e:#}")),
        deployment.err().map(|e| format!("{e:#}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{}", failed.join("; and "))
    }
}
