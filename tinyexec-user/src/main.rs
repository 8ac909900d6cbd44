//! tinyexec-sensor: real-time detection of the EQGRP tinyexec stager at exec time.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tinyexec_user::{check, run, scan};

/// The static builds' allocator (Cargo.toml says why); glibc builds keep glibc's.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[derive(Debug, Parser)]
#[command(name = "tinyexec-sensor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch every exec on this host and print JSON records on stdout.
    Run(run::RunArgs),
    /// Hunt on disk: print every file the rule matches, as `yara` does.
    Scan(scan::ScanArgs),
    /// Parse an exclusions file: each exclusion normalized, warnings, errors.
    Check(check::CheckArgs),
    /// Probe a running sensor through its `--health-file`: exit 0 when it is
    /// attached and its loop alive (a Kubernetes liveness/readiness check).
    Health(run::health::HealthArgs),
    /// The sensor's own helper that reads exec's files (`run` starts it).
    #[command(name = run::READ_FILES, hide = true)]
    ReadFiles { parent: u32 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Scan(args) => return scan::scan(&args),
        Command::Check(args) => return check::check(&args),
        Command::Health(args) => return run::health::probe(&args),
        Command::ReadFiles { parent } => run::read_files(parent),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tinyexec-sensor: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
