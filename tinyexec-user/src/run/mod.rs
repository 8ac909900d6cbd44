//! `tinyexec-sensor run`, the daemon: settings (`settings`) and the log
//! (`logging`); load and attach (`kernel/`), the self-test (`selftest`), then
//! the run loop below, which hands each kernel record to the data path
//! (`pipeline`: `exec/` → `record/` → exclusions → the flood bound,
//! `repeats` → `output/`) until SIGINT/SIGTERM. The top layer: it uses every
//! folder, and none uses it.

pub mod health;
mod logging;
mod pipeline;
mod repeats;
mod selftest;
pub mod settings;

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use log::{info, warn};
use tinyexec_ebpf::{Config, names};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc::{UnboundedReceiver, unbounded_channel},
    time::sleep_until,
};

pub use self::settings::RunArgs;
use self::{pipeline::Pipeline, settings::Settings};
use crate::{
    exclusions::policy::Policy,
    exec::{container, reads},
    kernel::{
        loader::{self, LoadOptions, Loaded, Prevent},
        preflight,
    },
    output::{OutputOptions, Outputs},
};

/// How often the ring is drained without a wake-up and the lost-records counter read.
const TICK: Duration = Duration::from_millis(200);
/// How long the outputs may take at exit to deliver what they hold.
const EXIT_GRACE: Duration = Duration::from_secs(3);

pub fn run(args: RunArgs) -> Result<()> {
    let args = Settings::resolve(args)?;
    logging::init(args.log_level)?;
    if let Some(file) = &args.config_file {
        info!("settings from {}", file.display());
    }
    let (policy, which) = Policy::load(args.exclusions.as_deref(), args.no_exclusions)?;
    info!("{which}");
    let outputs = Outputs::open(&OutputOptions {
        stdout: args.stdout,
        file: args.output_file.as_deref(),
        syslog: args.syslog.as_deref(),
        sentinel: args.sentinel.as_deref(),
        queue: args.output_queue as usize,
    })?;
    preflight::require_btf(&args.btf)?;
    preflight::require_privileges()?;
    if let Some(warning) = preflight::raise_memlock() {
        warn!("{warning}");
    }
    preflight::require_kernel()?;
    let loaded = loader::load(&LoadOptions {
        btf_path: &args.btf,
        config: Config {
            all_execs: u32::from(args.all_execs),
            max_path_depth: args.max_path_depth,
            prevent: u32::from(args.prevent),
            // The cgroup hierarchy is chosen at load, from the kernel's BTF.
            ..Config::default()
        },
        ring_buffer_bytes: args.ring_buffer_size,
    })?;
    // Read now rather than at the first record: a warning belongs to the start.
    container::init_host();
    let mode = if args.all_execs {
        "every exec"
    } else {
        "alerts only"
    };
    if matches!(loaded.prevent, Prevent::Kill { .. }) {
        // Said before `ready` too: the fallback is a warning, not a failure.
        warn!("{}", loaded.prevent.describe());
    }
    let (read_done, decided) = unbounded_channel();
    let pipeline = Pipeline::new(
        outputs,
        policy,
        &pipeline::Options {
            all_execs: args.all_execs,
            suppressed: args.suppressed,
            repeat_window_secs: u64::from(args.repeat_window),
            heartbeat_secs: u64::from(args.heartbeat_interval),
            prevent: loaded.prevent.clone(),
        },
        read_done,
    );
    let every = Every {
        stats: Duration::from_secs(args.stats_interval.max(1)),
        heartbeat: Duration::from_secs(u64::from(args.heartbeat_interval)),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(stream(
            loaded,
            pipeline,
            decided,
            every,
            mode,
            &args.btf,
            args.health_file.as_deref(),
        ))
}

/// The helper's subcommand.
pub use crate::exec::reads::SUBCOMMAND as READ_FILES;

/// `tinyexec-sensor read-files PARENT`: a helper that reads exec's files for
/// the sensor `PARENT` (see `reads`); not for people.
pub fn read_files(parent: u32) -> Result<()> {
    reads::serve(parent)
}

/// The periodic work's intervals.
struct Every {
    stats: Duration,
    heartbeat: Duration,
}

/// Says the sensor is ready, on stderr and to systemd: what it attached,
/// and with `--prevent`, which mechanism is in force and why the other is not.
fn announce_ready(entry: &str, mode: &str, prevent: &Prevent) {
    let prevent = match prevent {
        Prevent::Off => String::new(),
        p => format!("; {}", p.describe()),
    };
    info!(
        "ready: {entry} attached to {} ({mode}{prevent})",
        names::TRACEPOINT
    );
    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!("could not notify systemd: {err}");
    }
}

async fn stream(
    loaded: Loaded,
    mut pipeline: Pipeline,
    mut decided: UnboundedReceiver<reads::Done>,
    every: Every,
    mode: &str,
    btf: &Path,
    health_file: Option<&Path>,
) -> Result<()> {
    info!("entry: {}", loaded.entry.describe());
    info!("verified instructions: {}", loaded.verified_summary());
    let entry = loaded.entry.name();
    let prevent = loaded.prevent.clone();
    let Loaded {
        programs,
        events,
        lost,
        execs,
        mut control,
        mut kernel_log,
        ..
    } = loaded;
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, which
    // deregisters it before dropping it.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|err| anyhow::anyhow!("polling the ring buffer: {err}"))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    loader::set_self_test(&mut control, true)?;
    let tested = selftest::run(&mut events, &lost, &mut pipeline, btf).await;
    loader::set_self_test(&mut control, false)?;
    tested?;
    // Only now: a SIGTERM right after `ready` must find its handler installed.
    announce_ready(entry, mode, &prevent);
    let health = health_file
        .map(|p| health::HealthFile::create(p, entry, loader::execs_total(&execs)?))
        .transpose()?;
    let mut health_tick = tokio::time::interval(health::EVERY);
    health_tick.tick().await;
    let mut tick = tokio::time::interval(TICK);
    let mut stats = tokio::time::interval(every.stats);
    stats.tick().await;
    let mut heartbeat = tokio::time::interval(every.heartbeat);
    heartbeat.tick().await;
    loop {
        let deadline = pipeline.read_deadline();
        tokio::select! {
            Some(done) = decided.recv() => pipeline.read_done(done),
            () = sleep_until(far_or(deadline)), if deadline.is_some() => {
                expire_reads(&mut pipeline, &mut decided);
            }
            guard = events.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                drain(guard.get_inner_mut(), &mut pipeline);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // Records of ordinary execs are queued without a wake-up (see the
                // kernel's `wakeup`): deliver them at least this often.
                drain(events.get_mut(), &mut pipeline);
                pipeline.tick();
                kernel_log.drain();
                pipeline.report_lost(loader::lost_total(&lost)?);
                pipeline.reload_exclusions(false);
                pipeline.fatal()?;
            }
            _ = heartbeat.tick() => {
                pipeline.report_lost(loader::lost_total(&lost)?);
                pipeline.heartbeat(loader::execs_total(&execs)?, false);
            }
            _ = health_tick.tick(), if health.is_some() => {
                if let Some(h) = &health
                    && let Err(e) = h.update(loader::execs_total(&execs)?)
                {
                    warn!("{e:#}");
                }
            }
            _ = sighup.recv() => pipeline.hangup(),
            _ = stats.tick() => pipeline.log_counters(),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        // The batch just handled, to the outputs at once.
        pipeline.flush();
    }
    // Detach first (no new records), then deliver what is already in the ring.
    if let Some(h) = health {
        h.remove();
    }
    drop(programs);
    drain(events.get_mut(), &mut pipeline);
    kernel_log.drain();
    // The execs still waiting for their files: each within its deadline.
    while let Some(at) = pipeline.read_deadline() {
        tokio::select! {
            Some(done) = decided.recv() => pipeline.read_done(done),
            () = sleep_until(at.into()) => expire_reads(&mut pipeline, &mut decided),
        }
    }
    pipeline.report_lost(loader::lost_total(&lost)?);
    pipeline.finish(loader::execs_total(&execs)?, EXIT_GRACE)?;
    info!("stopped");
    Ok(())
}

/// Hands every record waiting in the ring to the pipeline, oldest first.
fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline) {
    while let Some(record) = ring.next() {
        pipeline.handle(&record);
    }
}

/// A read deadline to sleep until (a day away when none waits: that branch is off then).
fn far_or(deadline: Option<std::time::Instant>) -> tokio::time::Instant {
    deadline.map_or_else(
        || tokio::time::Instant::now() + Duration::from_hours(24),
        Into::into,
    )
}

/// A deadline has come: answers already in (they were in time) first, then
/// the execs still without one are decided without their files.
fn expire_reads(pipeline: &mut Pipeline, decided: &mut UnboundedReceiver<reads::Done>) {
    while let Ok(done) = decided.try_recv() {
        pipeline.read_done(done);
    }
    pipeline.expire_reads(std::time::Instant::now());
}
