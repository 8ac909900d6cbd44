//! The kernel matrix: Debian's own kernels, `x86_64` and arm64, booted under
//! QEMU with a minimal initramfs of static binaries (the shipped sensor among
//! them), each running the end-to-end subset in tests/matrix.rs (as aya's
//! `cargo xtask integration-test vm` does for aya). `cargo xtask test` runs it
//! after the host tests; `cargo xtask vm` runs only it.

mod console;
pub mod deployment;
mod initramfs;
mod kernels;
mod report;

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{arch, dist, setup, step};
pub use report::Row;

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Boot only this kernel (repeatable): 5.10 (Debian 11), 6.1 or 6.12
    /// (Debian 12), 6.1-arm64 (Debian 12 on arm64), 6.12-arm64 (Debian 13 on arm64).
    #[arg(long = "kernel", value_name = "NAME")]
    kernels: Vec<String>,
    /// Ask Debian's archive for newer kernel packages instead of using the cache.
    #[arg(long)]
    refresh_kernels: bool,
    /// Seconds one VM may run before QEMU is killed (default 1200).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Arguments for the matrix test binary in each VM, after `--` (e.g. a test name).
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// Generous: one refused load costs up to 5 minutes under emulation (5.10),
/// a loading sensor 10-20 s per mode (6.12); four VMs at this bound still fit CI's 90.
const VM_TIMEOUT: Duration = Duration::from_mins(20);

/// Boots each kernel `args` asks for and runs the matrix's checks in it, with
/// the static sensor and test binary of the kernel's architecture.
pub fn run(root: &Path, args: &Args) -> Result<Vec<Row>> {
    let kernels: Vec<&kernels::Kernel> = if args.kernels.is_empty() {
        kernels::KERNELS.iter().collect()
    } else {
        args.kernels
            .iter()
            .map(|n| kernels::by_name(n))
            .collect::<Result<_>>()?
    };
    setup::vm_tools()?;
    let mut fetcher = kernels::Fetcher::new(root, args.refresh_kernels);
    let images: Vec<kernels::Image> = kernels
        .iter()
        .map(|k| fetcher.image(k))
        .collect::<Result<_>>()?;
    let dir = root.join("target/vm");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // One initramfs per architecture, every binary in it static.
    let mut initramfs = Vec::new();
    for arch in arch::ALL {
        if !kernels.iter().any(|k| k.arch == arch) {
            continue;
        }
        let busybox = fetcher.busybox(arch)?;
        let sensor = dist::sensor(root, arch)?;
        let tests = dist::matrix_tests(root, arch)?;
        let path = dir.join(format!("initramfs-{arch}.cpio"));
        step(&format!(
            "writing {} ({}, {}, {}; no libraries)",
            path.display(),
            busybox.package,
            sensor.display(),
            tests.display()
        ));
        let contents = initramfs::Contents {
            arch,
            busybox: &busybox.file,
            sensor: &sensor,
            tests: &tests,
        };
        initramfs::build(
            &path,
            &dir.join(format!("stage-{arch}")),
            &contents,
            &args.test_args,
        )?;
        initramfs.push((arch, path));
    }
    let timeout = args.timeout.map_or(VM_TIMEOUT, Duration::from_secs);
    let mut rows = Vec::new();
    for (k, image) in kernels.iter().zip(&images) {
        step(&format!(
            "booting {}'s {} ({}, {}) under QEMU, running the matrix checks",
            k.distro, k.name, image.package, k.arch
        ));
        let log = dir.join(format!("{}.console.log", k.name));
        let cpio = initramfs
            .iter()
            .find(|(a, _)| *a == k.arch)
            .map(|(_, p)| p)
            .context("an initramfs for every architecture")?;
        let started = Instant::now();
        let boot = console::boot(k.arch, &image.file, cpio, &log, timeout, |line| {
            progress(k.name, line);
        })?;
        let row = row(k.name, &boot, &log, timeout, args.test_args.is_empty());
        step(&format!(
            "{} done in {:.0} s: {}",
            k.name,
            started.elapsed().as_secs_f64(),
            if row.failed() { "FAILED" } else { "passed" }
        ));
        rows.push(row);
    }
    Ok(rows)
}

/// One line per check as the VM reports it, so a slow run shows where it is.
fn progress(kernel: &str, line: &str) {
    let (checks, _) = report::parse([line]);
    for c in checks {
        let how = if c.ok { "ok" } else { "FAILED" };
        let secs = |ms: u64| Duration::from_millis(ms).as_secs_f64();
        let ready = match (c.ready_ms, c.failed_after_ms) {
            (Some(ms), _) => format!(", ready in {:.1} s", secs(ms)),
            (_, Some(ms)) => format!(", not loaded ({:.1} s)", secs(ms)),
            _ => String::new(),
        };
        step(&format!(
            "  [{kernel}] {} ({}): {how}{ready}",
            c.name, c.mode
        ));
    }
}

fn row(
    name: &str,
    boot: &console::Boot,
    log: &Path,
    timeout: Duration,
    expect_checks: bool,
) -> Row {
    let (checks, garbled) = report::parse(boot.console.iter().map(String::as_str));
    let mut problems = boot.problems(log, timeout, checks.iter().all(|c| c.ok));
    for line in garbled {
        problems.push(format!("unreadable report line: {line}"));
    }
    if boot.rc.is_some() && checks.is_empty() && expect_checks {
        problems.push(format!("no check reported ({})", log.display()));
    }
    Row {
        label: name.to_owned(),
        release: boot.release.clone().unwrap_or_else(|| "?".to_owned()),
        boot: boot.boot,
        checks_time: boot.checks,
        checks,
        problems,
    }
}

/// The host's row, from the report file the host's `cargo test` run appended to.
pub fn host_row(report_file: &Path) -> Result<Row> {
    let text = match fs::read_to_string(report_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", report_file.display())),
    };
    let (checks, garbled) = report::parse(text.lines());
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned());
    let ms: u64 = text
        .lines()
        .filter_map(|l| l.split_once(report::PREFIX))
        .filter_map(|(_, j)| serde_json::from_str::<Value>(j).ok()?.get("ms")?.as_u64())
        .sum();
    Ok(Row {
        label: "host".to_owned(),
        release,
        boot: None,
        checks_time: (!checks.is_empty()).then(|| Duration::from_millis(ms)),
        checks,
        problems: garbled
            .into_iter()
            .map(|l| format!("unreadable report line: {l}"))
            .collect(),
    })
}

/// Prints the table; fails when any row failed.
pub fn conclude(rows: &[Row]) -> Result<()> {
    println!("\nkernel matrix:\n{}", report::render(rows));
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.failed())
        .map(|r| format!("{} {}", r.label, r.release))
        .collect();
    if !failed.is_empty() {
        bail!("the kernel matrix failed on: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(console: &[&str], rc: Option<i32>) -> console::Boot {
        console::Boot {
            console: console.iter().map(|s| (*s).to_owned()).collect(),
            boot: Some(Duration::from_secs(5)),
            checks: Some(Duration::from_secs(30)),
            release: Some("6.1.0-57-amd64".into()),
            btf: Some(true),
            rc,
            ..Default::default()
        }
    }

    #[test]
    fn a_vm_without_its_end_line_fails_with_the_console_tail() {
        let b = boot(&["[ 1.0] Kernel panic - not syncing: boom"], None);
        let r = row("6.1", &b, Path::new("x.log"), VM_TIMEOUT, true);
        assert!(r.failed());
        assert!(r.problems[0].contains("Kernel panic"), "{:?}", r.problems);
    }

    #[test]
    fn a_crash_without_a_failed_check_still_fails() {
        let ok = r#"TINYEXEC-MATRIX {"check":"ready","mode":"default","ok":true}"#;
        assert!(
            !row(
                "6.1",
                &boot(&[ok], Some(0)),
                Path::new("x"),
                VM_TIMEOUT,
                true
            )
            .failed()
        );
        assert!(
            row(
                "6.1",
                &boot(&[ok], Some(101)),
                Path::new("x"),
                VM_TIMEOUT,
                true
            )
            .failed()
        );
        assert!(row("6.1", &boot(&[], Some(0)), Path::new("x"), VM_TIMEOUT, true).failed());
    }
}
