//! `tinyexec-sensor check FILE`: parse an exclusions file, show each exclusion
//! as it will be applied, warn about fields an attacker controls.

use std::{path::PathBuf, process::ExitCode};

use crate::exclusions::{self, policy};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The exclusions file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Exit status: 0 when every line parses, 1 when any does not, 2 when the file
/// cannot be read as the sensor would (missing, not a regular file, over the
/// size limit, not UTF-8).
pub fn check(args: &CheckArgs) -> ExitCode {
    let name = args.file.display().to_string();
    let text = match policy::read(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tinyexec-sensor: check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let parsed = exclusions::parse(&name, &text);
    let mut warnings = 0;
    for e in &parsed.exclusions {
        println!("{name}:{}: {}", e.line, e.name);
        println!("    {}", e.expr.normalized());
        for w in exclusions::lint(e) {
            warnings += 1;
            println!("    warning: {}", w.message);
        }
    }
    for err in &parsed.errors {
        println!("{err}");
    }
    println!(
        "{} exclusions, {} errors, {warnings} warnings",
        parsed.exclusions.len(),
        parsed.errors.len()
    );
    if parsed.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
