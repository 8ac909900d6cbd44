//! Boots one kernel under QEMU with the initramfs and reads its serial console.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::arch::Arch;

/// What `/init` prints before each of its own lines.
pub const MARKER: &str = "TINYEXEC-VM";
/// How long QEMU may take to power off after `/init`'s end line.
const POWEROFF_GRACE: Duration = Duration::from_mins(1);

/// What one boot showed.
#[derive(Default)]
pub struct Boot {
    pub console: Vec<String>,
    /// QEMU's start to `/init`'s first line (host clock).
    pub boot: Option<Duration>,
    /// `/init`'s first line to its end line.
    pub checks: Option<Duration>,
    /// The guest's `uname -r`.
    pub release: Option<String>,
    pub btf: Option<bool>,
    /// The test binary's exit status.
    pub rc: Option<i32>,
    /// Mounts that `/init` could not make.
    pub setup_failures: Vec<String>,
    pub timed_out: bool,
}

/// Console lines shown when a VM did not finish.
pub const CONSOLE_TAIL: usize = 40;

impl Boot {
    /// What went wrong outside the checks' own reports: QEMU killed at
    /// `timeout`, the VM's first or end line missing (each with the console's
    /// last lines, from `log`), no BTF, a mount `/init` could not make, or a
    /// test binary that failed though every check it reported passed.
    pub fn problems(&self, log: &Path, timeout: Duration, checks_ok: bool) -> Vec<String> {
        let tail = || {
            let lines = &self.console[self.console.len().saturating_sub(CONSOLE_TAIL)..];
            format!("console tail ({}):\n{}", log.display(), lines.join("\n"))
        };
        let mut problems = Vec::new();
        if self.timed_out {
            problems.push(format!(
                "the VM did not finish within {} s: QEMU killed; {}",
                timeout.as_secs(),
                tail()
            ));
        } else if self.boot.is_none() {
            problems.push(format!("the VM never printed its first line; {}", tail()));
        } else if self.rc.is_none() {
            problems.push(format!(
                "QEMU ended before the VM's end line (a kernel panic?); {}",
                tail()
            ));
        }
        if self.btf == Some(false) {
            problems.push("this kernel has no /sys/kernel/btf/vmlinux".to_owned());
        }
        for what in &self.setup_failures {
            problems.push(format!("/init could not mount {what}"));
        }
        if let Some(rc) = self.rc
            && rc != 0
            && checks_ok
        {
            problems.push(format!(
                "the test binary exited {rc} with no failed check reported; {}",
                tail()
            ));
        }
        problems
    }
}

/// The emulator of `arch`'s machine and its serial console's name in the guest.
fn machine(arch: Arch) -> (&'static str, &'static [&'static str], &'static str) {
    match arch {
        // `-cpu max` for RDRAND: the guest's random pool is ready at once.
        Arch::X86_64 => ("qemu-system-x86_64", &["-cpu", "max"], "ttyS0"),
        // The generic Arm board with a PL011 UART; `max` has RNDR for the
        // random pool. Its pointer authentication emulated the cheap way
        // (QEMU's own hash, not the architected QARMA): the same checks, and
        // every return in the kernel pays for them.
        Arch::Aarch64 => (
            "qemu-system-aarch64",
            &["-machine", "virt", "-cpu", "max,pauth-impdef=on"],
            "ttyAMA0",
        ),
    }
}

/// Boots `vmlinuz` (a kernel for `arch`) with `initramfs`, copying the
/// console to `log` (each line with the host's seconds since QEMU started)
/// and passing each line to `on_line` as it comes; kills QEMU after `timeout`.
pub fn boot(
    arch: Arch,
    vmlinuz: &Path,
    initramfs: &Path,
    log: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Boot> {
    let mut log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let (emulator, cpu, console) = machine(arch);
    let mut qemu = Command::new(emulator);
    // This host's KVM cannot run unmodified kernels, nor another
    // architecture's: TCG. No devices but the serial console; `panic=-1` with
    // `-no-reboot` ends QEMU on a kernel panic.
    qemu.args([
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .args(cpu)
    .args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", "2048"])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initramfs)
    .arg("-append")
    .arg(format!("console={console} panic=-1 rdinit=/init"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("starting {emulator}"))?;
    let (tx, rx) = mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line: String = String::from_utf8_lossy(&buf)
                    .chars()
                    .filter(|c| !c.is_control() || *c == '\t')
                    .collect();
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let deadline = start + timeout;
    let mut b = Boot::default();
    let mut init_at = None;
    let mut ended_at = None;
    loop {
        let limit = ended_at.map_or(deadline, |t: Instant| (t + POWEROFF_GRACE).min(deadline));
        let left = limit.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                let _ = writeln!(log_file, "[{:8.2}] {line}", (at - start).as_secs_f64());
                on_line(&line);
                if let Some(rest) = line.find(MARKER).map(|i| &line[i + MARKER.len()..]) {
                    let rest = rest.trim();
                    if let Some(init) = rest.strip_prefix("init ") {
                        init_at = Some(at);
                        b.boot = Some(at - start);
                        b.release = word(init, "kernel=").map(str::to_owned);
                    } else if let Some(btf) = rest.strip_prefix("btf=") {
                        b.btf = Some(btf == "yes");
                    } else if let Some(what) = rest.strip_prefix("setup-failed ") {
                        b.setup_failures.push(what.to_owned());
                    } else if let Some(end) = rest.strip_prefix("end ") {
                        ended_at = Some(at);
                        b.checks = init_at.map(|i| at - i);
                        b.rc = word(end, "rc=").and_then(|v| v.parse().ok());
                    }
                }
                b.console.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                b.timed_out = ended_at.is_none();
                break;
            }
        }
    }
    stop(&mut child);
    Ok(b)
}

/// The value of `key` (`key=value`) among the words of `text`.
fn word<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key))
}

fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}
