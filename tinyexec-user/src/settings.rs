//! `run`'s settings: command-line flags over `/etc/tinyexec/config.toml` over defaults.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::Deserialize;

use crate::pipeline::Suppressed;

/// Where the default install keeps the configuration.
pub const DEFAULT_CONFIG: &str = "/etc/tinyexec/config.toml";

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (default: /etc/tinyexec/config.toml when present).
    /// Every key is a flag's long name with `_` for `-`; flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Also send records as CEF to syslog: unix:///dev/log, udp://HOST:PORT or tcp://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub syslog: Option<String>,
    /// Also deliver records to Microsoft Sentinel (Logs Ingestion API) with the
    /// settings in this TOML file (deploy/sentinel/README.md). The client secret comes from a
    /// file named there or $TINYEXEC_SENTINEL_CLIENT_SECRET, never from the command line.
    #[arg(long, value_name = "FILE")]
    pub sentinel: Option<PathBuf>,
    /// Kernel BTF to read struct offsets from [default: /sys/kernel/btf/vmlinux].
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// Kernel-to-user ring buffer size in bytes, a power of two >= 4096 [default: 2097152].
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_size: Option<u32>,
    /// Most path components (directories and mount crossings) walked per exec [default: 64].
    /// The kernel's verifier must prove the walk ends: very large values are refused.
    #[arg(long, value_name = "N")]
    pub max_path_depth: Option<u32>,
}

/// The same settings as the file spells them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
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
    ring_buffer_size: Option<u32>,
    max_path_depth: Option<u32>,
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
    /// Which configuration file was read, if any.
    pub config_file: Option<PathBuf>,
}

fn read_file(path: &Path) -> Result<FileSettings> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // toml's errors give line and column and show the line.
    toml::from_str(&text).with_context(|| format!("in {}", path.display()))
}

impl Settings {
    pub fn resolve(args: RunArgs) -> Result<Self> {
        let config_file = match args.config {
            Some(p) => Some(p),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let f = match &config_file {
            Some(p) => read_file(p)?,
            None => FileSettings::default(),
        };
        let no_exclusions =
            args.no_exclusions || (args.exclusions.is_none() && f.no_exclusions.unwrap_or(false));
        Ok(Self {
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
                .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux")),
            ring_buffer_size: args
                .ring_buffer_size
                .or(f.ring_buffer_size)
                .unwrap_or(2 << 20),
            max_path_depth: args
                .max_path_depth
                .or(f.max_path_depth)
                .unwrap_or(tinyexec_ebpf::DEFAULT_PATH_DEPTH),
            config_file,
        })
    }
}
