//! `run`'s settings: command-line flags over `/etc/tinyexec/config.toml` over defaults.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Deserializer, de::Error as _};
use tinyexec_ebpf::MAX_PATH_DEPTH;

use crate::{exclusions::policy::Suppressed, run::logging::Level, textfile};

/// Where the default install keeps the configuration.
pub const DEFAULT_CONFIG: &str = "/etc/tinyexec/config.toml";
/// Largest ring buffer: the largest power of two a `u32` holds.
pub const MAX_RING_BUFFER: u32 = 1 << 31;
/// Default seconds between heartbeats, and the most allowed (a day).
pub const DEFAULT_HEARTBEAT: u32 = 60;
pub const MAX_INTERVAL: u32 = 86_400;
/// Default repeat window, seconds (see `repeats`).
pub const DEFAULT_REPEAT_WINDOW: u32 = 60;
/// Default and largest records per output queue. The default holds about a
/// second of a busy host's `--all-execs` records in a few MiB.
pub const DEFAULT_OUTPUT_QUEUE: u32 = 4096;
pub const MAX_OUTPUT_QUEUE: u32 = 1_000_000;

/// `--prevent` in `-h`.
const PREVENT_SHORT: &str = "Stop a matching exec in the kernel: refuse it (BPF LSM) where the \
    kernel allows, else kill it before its first instruction (--help says which here)";
/// What `--prevent` does.
const PREVENT_HELP: &str = "Stop a matching exec in the kernel (files the kernel's 256-byte \
    header decides; others are alerted as usual). Where the kernel runs BPF LSM programs (`bpf` \
    in /sys/kernel/security/lsm; on arm64 from 6.4) the exec is refused: execve fails with EPERM \
    and nothing of the file runs (`denied` alerts). Elsewhere it is killed (SIGKILL) before its \
    first instruction (`killed`). The `ready` line and the heartbeats say which is in force, and \
    why the refusal is not.";

/// `--prevent`'s `--help`: what it does, and which mechanism this machine's
/// kernel allows as far as its list of active LSMs tells (whether it takes
/// the program only a start shows).
fn prevent_long_help() -> String {
    let here = match crate::kernel::loader::bpf_lsm_active() {
        Ok(None) => "bpf is in /sys/kernel/security/lsm: the refusal, if the kernel takes the \
                     program"
            .to_owned(),
        Ok(Some(unknown)) => {
            format!("{unknown}: the refusal if the kernel takes the program, else the kill")
        }
        Err(why) => format!("the kill: {why}"),
    };
    format!("{PREVENT_HELP}\n\nOn this machine now: {here}.")
}

#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Configuration file (default: /etc/tinyexec/config.toml when present).
    /// Every key is a flag's long name with `_` for `-`; flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Emit every exec, not only alerts.
    #[arg(long)]
    pub all_execs: bool,
    /// Stop a matching exec in the kernel ([`PREVENT_HELP`]; `--help` adds
    /// what this machine's kernel says of the refusal now).
    #[arg(long, help = PREVENT_SHORT, long_help = prevent_long_help())]
    pub prevent: bool,
    /// Exclusions file (default: /etc/tinyexec/exclusions.txt if present, else the
    /// built-in defaults). Reloaded on SIGHUP and when it changes on disk.
    #[arg(long, value_name = "FILE", conflicts_with = "no_exclusions")]
    pub exclusions: Option<PathBuf>,
    /// Apply no exclusions.
    #[arg(long)]
    pub no_exclusions: bool,
    /// What to do with alerts an exclusion covers [default: emit].
    #[arg(long, value_enum)]
    pub suppressed: Option<Suppressed>,
    /// Seconds between logs of the per-exclusion counters, also logged at exit [default: 300].
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<u64>,
    /// Do not write records to stdout.
    #[arg(long)]
    pub no_stdout: bool,
    /// Also append records to this JSON-lines file (mode 0600, reopened on SIGHUP).
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,
    /// Also send records as CEF to syslog: `unix:///dev/log`, `udp://HOST:PORT` or `tcp://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    pub syslog: Option<String>,
    /// Also deliver records to Microsoft Sentinel (Logs Ingestion API) with the
    /// settings in this TOML file (deploy/sentinel/README.md). The client secret comes from a
    /// file named there or `$TINYEXEC_SENTINEL_CLIENT_SECRET`, never from the command line.
    #[arg(long, value_name = "FILE")]
    pub sentinel: Option<PathBuf>,
    /// Kernel BTF to read struct offsets from [default: /sys/kernel/btf/vmlinux].
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// Kernel-to-user ring buffer size in bytes: a power of two, at least the
    /// page size (4096 here), at most 2147483648 [default: 2097152].
    #[arg(long, value_name = "BYTES", value_parser = flag(ring_buffer_size))]
    pub ring_buffer_size: Option<u32>,
    /// Most path components (directories and mount crossings) walked per exec,
    /// from 1 to the largest the kernel's verifier accepts [default: 64].
    #[arg(long, value_name = "N", value_parser = flag(max_path_depth))]
    pub max_path_depth: Option<u32>,
    /// Seconds between heartbeat records (counters of the kernel program, the
    /// pipeline and every output), from 1 to 86400; one more at exit [default: 60].
    #[arg(long, value_name = "SECS", value_parser = flag(heartbeat_interval))]
    pub heartbeat_interval: Option<u32>,
    /// Seconds during which repeats of an alert (the same file, content and
    /// verdict) are counted into one aggregate record instead of alerted, from
    /// 0 (off: every exec alerts) to 86400 [default: 60].
    #[arg(long, value_name = "SECS", value_parser = flag(repeat_window))]
    pub repeat_window: Option<u32>,
    /// Records each output may queue while it is slow or away (alerts and
    /// heartbeats have a quarter more); past it records are dropped, and
    /// counted. From 1 to 1000000 [default: 4096].
    #[arg(long, value_name = "N", value_parser = flag(output_queue))]
    pub output_queue: Option<u32>,
    /// The least severe messages logged on stderr; `RUST_LOG` (`env_logger`'s
    /// syntax, e.g. `debug` or `info,aya=debug`) applies over it [default: info].
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<Level>,
    /// Keep this file saying the sensor is attached and alive (written once
    /// ready, every 5 s after, removed at exit), for `tinyexec-sensor health
    /// FILE` as a liveness and readiness probe.
    #[arg(long, value_name = "FILE")]
    pub health_file: Option<PathBuf>,
}

/// The system's page size: the ring buffer is made of whole pages.
fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).unwrap_or(4096)
}

/// A valid `ring_buffer_size`, or why not (with the valid range).
pub fn ring_buffer_size(n: u32) -> Result<u32, String> {
    let page = page_size();
    if n.is_power_of_two() && n >= page {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a valid ring buffer size: it must be a power of two from {page} \
             (the page size) to {MAX_RING_BUFFER}, e.g. 2097152"
        ))
    }
}

/// A valid `max_path_depth`, or why not (with the valid range).
pub fn max_path_depth(n: u32) -> Result<u32, String> {
    if (1..=MAX_PATH_DEPTH).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a valid path depth: it must be from 1 to {MAX_PATH_DEPTH} \
             (the most the kernel's verifier accepts)"
        ))
    }
}

/// A valid `heartbeat_interval`, or why not.
pub fn heartbeat_interval(n: u32) -> Result<u32, String> {
    if (1..=MAX_INTERVAL).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a valid heartbeat interval: it must be from 1 to {MAX_INTERVAL} seconds"
        ))
    }
}

/// A valid `repeat_window`, or why not.
pub fn repeat_window(n: u32) -> Result<u32, String> {
    if n <= MAX_INTERVAL {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a valid repeat window: it must be from 0 (off) to {MAX_INTERVAL} seconds"
        ))
    }
}

/// A valid `output_queue`, or why not.
pub fn output_queue(n: u32) -> Result<u32, String> {
    if (1..=MAX_OUTPUT_QUEUE).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a valid output queue length: it must be from 1 to {MAX_OUTPUT_QUEUE} records"
        ))
    }
}

/// A clap value parser for a `u32` flag checked by `check`; clap names the flag.
fn flag(check: fn(u32) -> Result<u32, String>) -> impl Fn(&str) -> Result<u32, String> + Clone {
    move |text| {
        let n = text
            .parse::<u32>()
            .map_err(|e| format!("`{text}` is not a whole number from 0 to {}: {e}", u32::MAX))?;
        check(n)
    }
}

/// A TOML key checked by `check`; toml's error adds the line, column and key.
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    check: fn(u32) -> Result<u32, String>,
) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    check(n)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("`{key}`: {e}")))
}

fn ring_buffer_size_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, "ring_buffer_size", ring_buffer_size)
}

fn max_path_depth_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, "max_path_depth", max_path_depth)
}

fn heartbeat_interval_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, "heartbeat_interval", heartbeat_interval)
}

fn repeat_window_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, "repeat_window", repeat_window)
}

fn output_queue_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, "output_queue", output_queue)
}

/// The same settings as the file spells them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSettings {
    all_execs: Option<bool>,
    prevent: Option<bool>,
    exclusions: Option<PathBuf>,
    no_exclusions: Option<bool>,
    suppressed: Option<Suppressed>,
    stats_interval: Option<u64>,
    stdout: Option<bool>,
    output_file: Option<PathBuf>,
    syslog: Option<String>,
    sentinel: Option<PathBuf>,
    btf: Option<PathBuf>,
    #[serde(default, deserialize_with = "ring_buffer_size_key")]
    ring_buffer_size: Option<u32>,
    #[serde(default, deserialize_with = "max_path_depth_key")]
    max_path_depth: Option<u32>,
    #[serde(default, deserialize_with = "heartbeat_interval_key")]
    heartbeat_interval: Option<u32>,
    #[serde(default, deserialize_with = "repeat_window_key")]
    repeat_window: Option<u32>,
    #[serde(default, deserialize_with = "output_queue_key")]
    output_queue: Option<u32>,
    log_level: Option<Level>,
    health_file: Option<PathBuf>,
}

/// Everything `run` needs, resolved.
#[derive(Debug)]
pub struct Settings {
    pub all_execs: bool,
    pub prevent: bool,
    pub exclusions: Option<PathBuf>,
    pub no_exclusions: bool,
    pub suppressed: Suppressed,
    pub stats_interval: u64,
    pub stdout: bool,
    pub output_file: Option<PathBuf>,
    pub syslog: Option<String>,
    pub sentinel: Option<PathBuf>,
    pub btf: PathBuf,
    pub ring_buffer_size: u32,
    pub max_path_depth: u32,
    pub heartbeat_interval: u32,
    pub repeat_window: u32,
    pub output_queue: u32,
    pub log_level: Level,
    pub health_file: Option<PathBuf>,
    /// Which configuration file was read, if any.
    pub config_file: Option<PathBuf>,
}

fn read_file(path: &Path) -> Result<FileSettings> {
    let text = textfile::read(path, "configuration", textfile::MAX_CONFIG_BYTES)?;
    parse_file(&path.display().to_string(), &text)
}

/// A configuration file's text; `name` is only used in messages.
pub(crate) fn parse_file(name: &str, text: &str) -> Result<FileSettings> {
    // toml's errors give line and column and show the line.
    toml::from_str(text).with_context(|| format!("in {name}"))
}

impl Settings {
    pub fn resolve(args: RunArgs) -> Result<Self> {
        let config_file = match args.config.clone() {
            Some(p) => Some(p),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let f = match &config_file {
            Some(p) => read_file(p)?,
            None => FileSettings::default(),
        };
        Ok(Self::merge(args, f, config_file))
    }

    /// Flags over the file's settings over the defaults.
    pub(crate) fn merge(args: RunArgs, f: FileSettings, config_file: Option<PathBuf>) -> Self {
        let no_exclusions =
            args.no_exclusions || (args.exclusions.is_none() && f.no_exclusions.unwrap_or(false));
        Self {
            all_execs: args.all_execs || f.all_execs.unwrap_or(false),
            prevent: args.prevent || f.prevent.unwrap_or(false),
            exclusions: args.exclusions.or(f.exclusions),
            no_exclusions,
            suppressed: args.suppressed.or(f.suppressed).unwrap_or(Suppressed::Emit),
            stats_interval: args.stats_interval.or(f.stats_interval).unwrap_or(300),
            stdout: !args.no_stdout && f.stdout.unwrap_or(true),
            output_file: args.output_file.or(f.output_file),
            syslog: args.syslog.or(f.syslog),
            sentinel: args.sentinel.or(f.sentinel),
            btf: args
                .btf
                .or(f.btf)
                .unwrap_or_else(|| PathBuf::from(crate::kernel::btf::KERNEL_BTF)),
            ring_buffer_size: args
                .ring_buffer_size
                .or(f.ring_buffer_size)
                .unwrap_or(2 << 20),
            max_path_depth: args
                .max_path_depth
                .or(f.max_path_depth)
                .unwrap_or(tinyexec_ebpf::DEFAULT_PATH_DEPTH),
            heartbeat_interval: args
                .heartbeat_interval
                .or(f.heartbeat_interval)
                .unwrap_or(DEFAULT_HEARTBEAT),
            repeat_window: args
                .repeat_window
                .or(f.repeat_window)
                .unwrap_or(DEFAULT_REPEAT_WINDOW),
            output_queue: args
                .output_queue
                .or(f.output_queue)
                .unwrap_or(DEFAULT_OUTPUT_QUEUE),
            log_level: args.log_level.or(f.log_level).unwrap_or(Level::Info),
            health_file: args.health_file.or(f.health_file),
            config_file,
        }
    }
}
