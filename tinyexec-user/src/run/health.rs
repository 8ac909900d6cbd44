//! The sensor's health as a file, for probes that cannot read its log
//! (Kubernetes' liveness and readiness checks): written once the kernel
//! program is attached and its self-test passed, again every
//! [`EVERY`] while the run loop turns (with the kernel's exec counter, read
//! from the attached program's map), removed at exit. `tinyexec-sensor
//! health FILE` is the probe: healthy while the file is fresh and its
//! sensor alive.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// How often the file is rewritten.
pub const EVERY: Duration = Duration::from_secs(5);
/// How old the file may be for the probe (three missed writes).
pub const MAX_AGE: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize, Deserialize)]
struct Health {
    /// The sensor's pid.
    pid: u32,
    /// The kernel program in force (`tinyexec_exec` or `tinyexec_rawtp`).
    entry: String,
    /// Execs the kernel program has counted.
    execs_seen: u64,
    /// When written, seconds since the epoch.
    updated: u64,
}

/// The file while the sensor runs.
#[derive(Debug)]
pub struct HealthFile {
    path: PathBuf,
    entry: String,
}

impl HealthFile {
    /// Writes it a first time: the sensor is ready.
    pub fn create(path: &Path, entry: &str, execs_seen: u64) -> Result<Self> {
        let file = Self {
            path: path.to_path_buf(),
            entry: entry.to_owned(),
        };
        file.update(execs_seen)?;
        Ok(file)
    }

    /// Rewrites it whole (a probe never reads half a file): written beside
    /// it, then renamed over it.
    pub fn update(&self, execs_seen: u64) -> Result<()> {
        let health = Health {
            pid: std::process::id(),
            entry: self.entry.clone(),
            execs_seen,
            updated: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let mut name = self.path.clone().into_os_string();
        name.push(".new");
        let new = PathBuf::from(name);
        let mut f = fs::File::create(&new)
            .with_context(|| format!("writing the health file {}", new.display()))?;
        serde_json::to_writer(&mut f, &health)?;
        f.write_all(b"\n")?;
        fs::rename(&new, &self.path)
            .with_context(|| format!("renaming {} to {}", new.display(), self.path.display()))
    }

    /// The sensor stops: no longer healthy.
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `path` says a live, attached sensor wrote it within `max_age`.
fn check(path: &Path, max_age: Duration) -> Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("{}: no health file (not ready, or stopped)", path.display()))?;
    let h: Health = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a health file", path.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = now.saturating_sub(h.updated);
    if age > max_age.as_secs() {
        bail!(
            "{}: last written {age} s ago (more than {} s): the sensor's loop is stuck or gone",
            path.display(),
            max_age.as_secs()
        );
    }
    if !Path::new(&format!("/proc/{}", h.pid)).exists() {
        bail!("{}: its sensor, pid {}, is gone", path.display(), h.pid);
    }
    Ok(format!(
        "healthy: pid {}, {} attached, {} execs seen, written {age} s ago",
        h.pid, h.entry, h.execs_seen
    ))
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The file `run --health-file` writes.
    pub file: PathBuf,
    /// Seconds the file may be old [default: 15].
    #[arg(long, value_name = "SECS")]
    pub max_age: Option<u64>,
}

/// `tinyexec-sensor health FILE`: exit 0 when healthy, 1 (saying why) when not.
pub fn probe(args: &HealthArgs) -> ExitCode {
    let max_age = args.max_age.map_or(MAX_AGE, Duration::from_secs);
    match check(&args.file, max_age) {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tinyexec-sensor: unhealthy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_is_healthy_stale_and_missing_are_not() {
        let path = std::env::temp_dir().join(format!("tx-health-{}", std::process::id()));
        assert!(check(&path, MAX_AGE).is_err());
        let file = HealthFile::create(&path, "tinyexec_exec", 3).unwrap();
        let said = check(&path, MAX_AGE).unwrap();
        assert!(
            said.contains("tinyexec_exec attached, 3 execs seen"),
            "{said}"
        );
        let mut old: Health = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        old.updated -= 60;
        fs::write(&path, serde_json::to_string(&old).unwrap()).unwrap();
        let why = check(&path, MAX_AGE).unwrap_err().to_string();
        assert!(why.contains("stuck or gone"), "{why}");
        file.remove();
        assert!(!path.exists());
    }
}
