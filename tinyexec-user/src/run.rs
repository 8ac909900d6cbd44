//! `tinyexec-sensor run`: load, attach, then stream records until SIGINT/SIGTERM.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use log::{info, warn};
use tinyexec_ebpf::{Config, names};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc::{UnboundedReceiver, unbounded_channel},
    time::sleep_until,
};

pub use crate::settings::RunArgs;
use crate::{
    decode, logging,
    output::{OutputOptions, Outputs},
    pipeline::{self, Pipeline},
    policy::Policy,
    preflight, reads,
    selftest::Canary,
    sensor::{self, LoadOptions, Sensor},
    settings::Settings,
};

/// How often the ring is drained without a wake-up and the lost-records counter read.
const TICK: Duration = Duration::from_millis(200);
/// How long the outputs may take at exit to deliver what they hold.
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// How long the canary's record may take to arrive (an exec takes milliseconds,
/// even in an emulated VM).
const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Canary runs before the self-test gives up, when records were lost meanwhile.
const SELF_TEST_ATTEMPTS: u32 = 3;

pub fn run(args: RunArgs) -> Result<()> {
    let args = Settings::resolve(args)?;
    logging::init(args.log_level)?;
    if let Some(file) = &args.config_file {
        info!("settings from {}", file.display());
    }
    let (policy, loaded) = Policy::load(args.exclusions.as_deref(), args.no_exclusions)?;
    info!("{loaded}");
    let outputs = Outputs::open(&OutputOptions {
        stdout: args.stdout,
        file: args.output_file.as_deref(),
        syslog: args.syslog.as_deref(),
        sentinel: args.sentinel.as_deref(),
        queue: args.output_queue as usize,
    })?;
    preflight::check_btf(&args.btf)?;
    preflight::check_privileges()?;
    if let Some(warning) = preflight::raise_memlock() {
        warn!("{warning}");
    }
    preflight::check_kernel()?;
    let sensor = sensor::load(&LoadOptions {
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
    let mode = match (args.all_execs, args.prevent) {
        (false, false) => "alerts only",
        (true, false) => "every exec",
        (false, true) => "alerts only, prevent",
        (true, true) => "every exec, prevent",
    };
    let (read_done, decided) = unbounded_channel();
    let pipeline = Pipeline::new(
        outputs,
        policy,
        &pipeline::Options {
            all_execs: args.all_execs,
            suppressed: args.suppressed,
            repeat_window_secs: u64::from(args.repeat_window),
            heartbeat_secs: u64::from(args.heartbeat_interval),
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
        .block_on(stream(sensor, pipeline, decided, every, mode, &args.btf))
}

/// The helper's subcommand.
pub use crate::reads::SUBCOMMAND as READ_FILES;

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

/// Says the sensor is ready, on stderr and to systemd.
fn announce_ready(mode: &str) {
    info!(
        "ready: {} attached to {} ({mode})",
        names::PROGRAM,
        names::TRACEPOINT
    );
    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        warn!("could not notify systemd: {err}");
    }
}

async fn stream(
    sensor: Sensor,
    mut pipeline: Pipeline,
    mut decided: UnboundedReceiver<reads::Done>,
    every: Every,
    mode: &str,
    btf: &Path,
) -> Result<()> {
    info!("verified instructions: {}", sensor.verified_summary());
    let Sensor {
        ebpf,
        events,
        lost,
        execs,
        stages: _stages,
        mut control,
        mut kernel_log,
        ..
    } = sensor;
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, which
    // deregisters it before dropping it.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|err| anyhow::anyhow!("polling the ring buffer: {err}"))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    sensor::set_self_test(&mut control, true)?;
    let tested = self_test(&mut events, &lost, &mut pipeline, btf).await;
    sensor::set_self_test(&mut control, false)?;
    tested?;
    // Only now: a SIGTERM right after `ready` must find its handler installed.
    announce_ready(mode);
    let mut tick = tokio::time::interval(TICK);
    let mut stats = tokio::time::interval(every.stats);
    stats.tick().await;
    let mut heartbeat = tokio::time::interval(every.heartbeat);
    heartbeat.tick().await;
    loop {
        let deadline = pipeline.read_deadline();
        tokio::select! {
            Some(done) = decided.recv() => pipeline.read_done(done)?,
            () = sleep_until(far_or(deadline)), if deadline.is_some() => {
                expire_reads(&mut pipeline, &mut decided)?;
            }
            guard = events.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    pipeline.handle(&item)?;
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // Records of ordinary execs are queued without a wake-up (see the
                // kernel's `wakeup`): deliver them at least this often.
                let ring = events.get_mut();
                while let Some(item) = ring.next() {
                    pipeline.handle(&item)?;
                }
                pipeline.tick();
                kernel_log.drain();
                pipeline.report_lost(sensor::lost_total(&lost)?);
                pipeline.reload_exclusions(false);
                pipeline.fatal()?;
            }
            _ = heartbeat.tick() => {
                pipeline.report_lost(sensor::lost_total(&lost)?);
                pipeline.heartbeat(sensor::execs_total(&execs)?, false);
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
    drop(ebpf);
    let ring = events.get_mut();
    while let Some(item) = ring.next() {
        pipeline.handle(&item)?;
    }
    kernel_log.drain();
    // The execs still waiting for their files: each within its deadline.
    while let Some(at) = pipeline.read_deadline() {
        tokio::select! {
            Some(done) = decided.recv() => pipeline.read_done(done)?,
            () = sleep_until(at.into()) => expire_reads(&mut pipeline, &mut decided)?,
        }
    }
    pipeline.report_lost(sensor::lost_total(&lost)?);
    pipeline.finish(sensor::execs_total(&execs)?, EXIT_GRACE)?;
    info!("stopped");
    Ok(())
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
fn expire_reads(
    pipeline: &mut Pipeline,
    decided: &mut UnboundedReceiver<reads::Done>,
) -> Result<()> {
    while let Ok(done) = decided.try_recv() {
        pipeline.read_done(done)?;
    }
    pipeline.expire_reads(std::time::Instant::now())
}

/// Runs the canary exec and checks the kernel's record of it; other execs
/// seen meanwhile go through the pipeline as usual. The canary's own record
/// never reaches an output. On a busy host the ring buffer may be full when
/// the canary runs: its record is then lost (and counted), and it runs again.
async fn self_test(
    events: &mut AsyncFd<RingBuf<MapData>>,
    lost: &PerCpuArray<MapData, u64>,
    pipeline: &mut Pipeline,
    btf: &Path,
) -> Result<()> {
    for attempt in 1..=SELF_TEST_ATTEMPTS {
        let lost_before = sensor::lost_total(lost)?;
        let canary = Canary::start()?;
        let what = canary.describe();
        if let Some(record) = canary_record(events, pipeline, canary.pid()).await {
            let checked = canary.check(&record, btf);
            canary.finish()?;
            checked?;
            info!("self-test passed: the kernel program read the canary exec {what} right");
            return Ok(());
        }
        canary.finish()?;
        let lost = sensor::lost_total(lost)? - lost_before;
        if lost > 0 && attempt < SELF_TEST_ATTEMPTS {
            warn!(
                "self-test: {lost} records were lost (the ring buffer was full) while the \
                 canary exec {what} ran; running it again"
            );
            continue;
        }
        bail!(
            "self-test failed: no kernel record of the canary exec {what} arrived within \
             {SELF_TEST_TIMEOUT:?} ({lost} records lost meanwhile): the kernel program does not \
             report execs on this kernel"
        );
    }
    unreachable!("the last attempt returns")
}

/// Reads the ring until the record of the exec by `pid` arrives (None after
/// `SELF_TEST_TIMEOUT`), handing every other record to the pipeline.
async fn canary_record(
    events: &mut AsyncFd<RingBuf<MapData>>,
    pipeline: &mut Pipeline,
    pid: u32,
) -> Option<decode::Exec> {
    let deadline = tokio::time::sleep(SELF_TEST_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.ok()?;
                let ring = guard.get_inner_mut();
                let mut found = None;
                while let Some(item) = ring.next() {
                    match decode::decode(&item) {
                        Ok(exec) if found.is_none() && exec.self_test_tgid == Some(pid) => {
                            found = Some(exec);
                        }
                        _ => {
                            if let Err(err) = pipeline.handle(&item) {
                                warn!("{err:#}");
                            }
                        }
                    }
                }
                guard.clear_ready();
                pipeline.flush();
                if found.is_some() {
                    return found;
                }
            }
            () = &mut deadline => return None,
        }
    }
}
