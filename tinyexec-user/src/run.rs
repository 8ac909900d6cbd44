//! `tinyexec-sensor run`: load, attach, then stream records until SIGINT/SIGTERM.

use std::{io, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use tinyexec_ebpf::{Config, names};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    pipeline::{Pipeline, Suppressed},
    policy::Policy,
    preflight,
    sensor::{self, LoadOptions, Sensor},
};

/// How often the lost-records counter is read.
const LOST_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Emit every exec, not only alerts.
    #[arg(long)]
    pub all_execs: bool,
    /// Kill a matching exec in the kernel before its first instruction (files the
    /// kernel's 256-byte header decides); others are alerted as usual.
    #[arg(long)]
    pub prevent: bool,
    /// Exclusions file (default: /etc/tinyexec/exclusions.txt if present, else the
    /// built-in defaults). Reloaded on SIGHUP and when it changes on disk.
    #[arg(long, value_name = "FILE", conflicts_with = "no_exclusions")]
    pub exclusions: Option<PathBuf>,
    /// Apply no exclusions.
    #[arg(long)]
    pub no_exclusions: bool,
    /// What to do with alerts an exclusion covers.
    #[arg(long, value_enum, default_value = "emit")]
    pub suppressed: Suppressed,
    /// Seconds between logs of the per-exclusion counters (also logged at exit).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub stats_interval: u64,
    /// Kernel BTF to read struct offsets from.
    #[arg(long, value_name = "FILE", default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// Kernel-to-user ring buffer size in bytes (power of two, >= 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub ring_buffer_size: u32,
    /// Most path components (directories and mount crossings) walked per exec.
    /// The kernel's verifier must prove the walk ends: very large values are refused.
    #[arg(long, value_name = "N", default_value_t = tinyexec_ebpf::DEFAULT_PATH_DEPTH)]
    pub max_path_depth: u32,
}

pub fn run(args: RunArgs) -> Result<()> {
    let (policy, loaded) = Policy::load(args.exclusions.as_deref(), args.no_exclusions)?;
    eprintln!("tinyexec-sensor: {loaded}");
    preflight::check_btf(&args.btf)?;
    preflight::check_privileges()?;
    if let Some(warning) = preflight::raise_memlock() {
        eprintln!("tinyexec-sensor: warning: {warning}");
    }
    let sensor = sensor::load(&LoadOptions {
        btf_path: &args.btf,
        config: Config {
            all_execs: u32::from(args.all_execs),
            max_path_depth: args.max_path_depth,
            prevent: u32::from(args.prevent),
        },
        ring_buffer_bytes: args.ring_buffer_size,
    })?;
    let mode = match (args.all_execs, args.prevent) {
        (false, false) => "alerts only",
        (true, false) => "every exec",
        (false, true) => "alerts only, prevent",
        (true, true) => "every exec, prevent",
    };
    eprintln!(
        "tinyexec-sensor: ready: {} attached to {} ({mode})",
        names::PROGRAM,
        names::TRACEPOINT
    );
    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        eprintln!("tinyexec-sensor: warning: could not notify systemd: {err}");
    }
    let pipeline = Pipeline::new(
        io::BufWriter::new(io::stdout().lock()),
        args.all_execs,
        policy,
        args.suppressed,
    );
    let stats = Duration::from_secs(args.stats_interval.max(1));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(stream(sensor, pipeline, stats))
}

async fn stream<W: io::Write>(
    sensor: Sensor,
    mut pipeline: Pipeline<W>,
    stats_every: Duration,
) -> Result<()> {
    let Sensor { events, lost, .. } = sensor;
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, which
    // deregisters it before dropping it.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|err| anyhow::anyhow!("polling the ring buffer: {err}"))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(LOST_POLL);
    let mut stats = tokio::time::interval(stats_every);
    stats.tick().await;
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    pipeline.handle(&item)?;
                }
                guard.clear_ready();
                pipeline.flush()?;
            }
            _ = tick.tick() => {
                pipeline.tick();
                pipeline.report_lost(sensor::lost_total(&lost)?)?;
                pipeline.reload_exclusions(false);
            }
            _ = sighup.recv() => pipeline.reload_exclusions(true),
            _ = stats.tick() => pipeline.log_counters(),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    // Detach first (no new records), then deliver what is already in the ring.
    let ring = events.get_mut();
    while let Some(item) = ring.next() {
        pipeline.handle(&item)?;
    }
    pipeline.report_lost(sensor::lost_total(&lost)?)?;
    pipeline.flush()?;
    pipeline.log_counters();
    eprintln!("tinyexec-sensor: stopped");
    Ok(())
}
