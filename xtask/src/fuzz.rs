//! `cargo xtask fuzz [TARGET] [--seconds N]`: the cargo-fuzz targets in `fuzz/`
//! (what each checks: tinyexec-user/src/fuzzing.rs), each run for N seconds
//! from a seed corpus made in code. `cargo xtask test` runs every one for
//! [`SMOKE_SECONDS`]. A crash fails the run and names the input to check in.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run_cmd, setup, step};

/// The targets, as `fuzz/Cargo.toml` names their binaries.
pub const TARGETS: &[&str] = &["exclusions", "evaluate", "settings", "decode", "btf"];
/// Seconds per target in `cargo xtask test`.
pub const SMOKE_SECONDS: u64 = 20;
/// The fuzz crate, and its build kept under the workspace's `target/`.
const FUZZ_DIRS: [&str; 4] = ["--fuzz-dir", "fuzz", "--target-dir", "target/fuzz"];
/// Where inputs that failed are checked in, one directory per target.
const REGRESSIONS: &str = "tinyexec-user/tests/fuzz-regressions";

#[derive(clap::Args)]
pub struct Args {
    /// One target (default: all): exclusions, evaluate, settings, decode, btf.
    target: Option<String>,
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

pub fn run(root: &Path, args: &Args) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "no fuzz target `{t}`; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    fuzz(root, &targets, args.seconds)
}

/// Builds the targets, writes the seeds, then fuzzes each for `seconds`.
pub fn fuzz(root: &Path, targets: &[&str], seconds: u64) -> Result<()> {
    setup::toolchain(root)?;
    let cargo_fuzz = setup::cargo_fuzz(root)?;
    let corpus = root.join("fuzz/corpus");
    step("writing the fuzz seed corpora (tinyexec_user::fuzzing::seeds)");
    run_cmd(
        cargo()
            .current_dir(root)
            .args(["run", "--quiet", "--package", "tinyexec-user", "--example"])
            .args(["fuzz_seeds", "--"])
            .arg(&corpus),
    )?;
    let started = Instant::now();
    step("building the fuzz targets (nightly, libFuzzer, AddressSanitizer)");
    run_cmd(fuzz_cmd(root, &cargo_fuzz).arg("build").args(FUZZ_DIRS))?;
    step(&format!(
        "fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let mut summary = Vec::new();
    for target in targets {
        step(&format!("fuzzing `{target}` for {seconds} s"));
        let stats = run_target(root, &cargo_fuzz, target, &corpus.join(target), seconds)?;
        summary.push(format!("{target}: {stats}"));
    }
    for line in &summary {
        step(line);
    }
    Ok(())
}

/// `cargo fuzz` on nightly.
fn fuzz_cmd(root: &Path, cargo_fuzz: &Path) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(root)
        .arg("fuzz")
        // cargo-fuzz runs `cargo` itself: the rustup proxy, on nightly (the
        // sanitizer needs it), not the stable cargo running xtask.
        .env_remove("CARGO")
        .env("RUSTUP_TOOLCHAIN", "nightly");
    cmd
}

/// Runs one target; returns its figures, or fails naming the crashing input.
fn run_target(
    root: &Path,
    cargo_fuzz: &Path,
    target: &str,
    corpus: &Path,
    seconds: u64,
) -> Result<String> {
    let mut child = fuzz_cmd(root, cargo_fuzz)
        .args(["run", target])
        .arg(corpus)
        .args(FUZZ_DIRS)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // An input slower than this is a hang; a bigger appetite, a leak.
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo fuzz")?;
    let stderr = child.stderr.take().context("cargo fuzz's stderr")?;
    // libFuzzer is chatty: keep the tail for a failure, show the milestones.
    let mut tail = VecDeque::new();
    let (mut runs, mut exec_per_sec, mut corpus_units) = (None, None, None);
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz's output")?;
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            runs = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            exec_per_sec = Some(v.trim().to_owned());
        } else if line
            .split_whitespace()
            .nth(1)
            .is_some_and(|w| w == "DONE" || w == "INITED")
        {
            corpus_units = line
                .split_whitespace()
                .skip_while(|w| *w != "corp:")
                .nth(1)
                .map(str::to_owned);
            eprintln!("  {line}");
        } else if line.starts_with("==") || line.contains("panicked") || line.contains("SUMMARY") {
            eprintln!("  {line}");
        }
        tail.push_back(line);
        if tail.len() > 60 {
            tail.pop_front();
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    if !status.success() {
        let lines: Vec<String> = tail.into_iter().collect();
        let artifact = lines
            .iter()
            .rev()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("(see above)")
            .to_owned();
        bail!(
            "fuzz target `{target}` failed ({status}); its input: {artifact}\n\
             Fix it and check the input in as {REGRESSIONS}/{target}/NAME \
             (tests/fuzz_regressions.rs replays it).\n{}",
            lines.join("\n")
        );
    }
    Ok(format!(
        "{} runs in {seconds} s ({} per second), corpus {} inputs",
        runs.as_deref().unwrap_or("?"),
        exec_per_sec.as_deref().unwrap_or("?"),
        corpus_units.as_deref().unwrap_or("?")
    ))
}
