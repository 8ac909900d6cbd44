//! The exclusions in force: loaded from a file (or the built-in defaults),
//! reloaded on SIGHUP or when the file changes, with per-exclusion counters.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Result, bail};

use crate::{
    exclusions::{self, Exclusion},
    textfile,
};

/// Where the default install keeps its exclusions.
pub const DEFAULT_PATH: &str = "/etc/tinyexec/exclusions.txt";
/// The analysts' four complete scenarios, used when no file is installed.
pub const BUILT_IN: &str = include_str!("../../../config/exclusions.txt");
const BUILT_IN_NAME: &str = "built-in exclusions";

/// What happens to an alert an exclusion covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suppressed {
    /// Emit it with `event.kind: "suppressed"` and the exclusion's name.
    Emit,
    /// Only count it (per-exclusion counters are logged).
    Count,
}

/// What identifies a version of the file on disk: a change to any of these
/// (an editor's rename-over included) triggers a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: Option<SystemTime>,
    ctime: i64,
    ctime_nsec: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let md = fs::metadata(path).ok()?;
    Some(Stamp {
        dev: md.dev(),
        ino: md.ino(),
        size: md.len(),
        mtime: md.modified().ok(),
        ctime: md.ctime(),
        ctime_nsec: md.ctime_nsec(),
    })
}

/// An exclusions file's text: a regular file of at most
/// [`exclusions::MAX_FILE_BYTES`], opened without blocking (see [`textfile`]),
/// so neither a start nor a reload can hang on it.
pub fn read(path: &Path) -> Result<String> {
    textfile::read(path, "exclusions", exclusions::MAX_FILE_BYTES)
}

/// Parses exclusions; every error is reported, with its place, as one message.
pub fn parse_all(name: &str, text: &str) -> Result<Vec<Exclusion>> {
    // The log shows the first errors only: a file of garbage lines must not
    // turn into megabytes of log; `check` lists them all.
    const SHOWN: usize = 20;
    let parsed = exclusions::parse(name, text);
    if !parsed.errors.is_empty() {
        let mut msgs: Vec<String> = parsed
            .errors
            .iter()
            .take(SHOWN)
            .map(ToString::to_string)
            .collect();
        if parsed.errors.len() > SHOWN {
            msgs.push(format!(
                "... and {} more errors (`tinyexec-sensor check {name}` lists them all)",
                parsed.errors.len() - SHOWN
            ));
        }
        bail!("{}", msgs.join("\n"));
    }
    Ok(parsed.exclusions)
}

/// What [`Policy::reload`] did, and what to log about it.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// Not forced, and the file has not changed (or none is watched).
    Unchanged,
    /// The file's exclusions are in force now: what changed.
    Reloaded(String),
    /// The file was refused (unreadable, or a line does not parse) and the
    /// running exclusions stay: why.
    Refused(String),
}

pub struct Policy {
    /// The file watched, if any.
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
    exclusions: Vec<Exclusion>,
    /// The fields they use ([`exclusions::fields_used`]).
    used: Vec<bool>,
    /// Suppressions per exclusion name, kept across reloads.
    counters: BTreeMap<String, u64>,
}

impl Policy {
    /// At start-up a broken file is fatal: a sensor must not run with
    /// exclusions other than the ones asked for.
    pub fn load(path: Option<&Path>, disabled: bool) -> Result<(Self, String)> {
        if disabled {
            return Ok((Self::with(None, None, Vec::new()), "no exclusions".into()));
        }
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => {
                let ex = parse_all(BUILT_IN_NAME, BUILT_IN)?;
                let what = format!("{} {BUILT_IN_NAME} (no {DEFAULT_PATH})", ex.len());
                return Ok((Self::with(None, None, ex), what));
            }
        };
        let st = stamp(&path);
        let text = read(&path)?;
        let ex = parse_all(&path.display().to_string(), &text)?;
        let what = format!("{} exclusions from {}", ex.len(), path.display());
        Ok((Self::with(Some(path), st, ex), what))
    }

    fn with(path: Option<PathBuf>, stamp: Option<Stamp>, exclusions: Vec<Exclusion>) -> Self {
        let mut p = Self {
            path,
            stamp,
            exclusions: Vec::new(),
            used: Vec::new(),
            counters: BTreeMap::new(),
        };
        p.set(exclusions);
        p
    }

    fn set(&mut self, exclusions: Vec<Exclusion>) {
        for e in &exclusions {
            self.counters.entry(e.name.clone()).or_insert(0);
        }
        self.used = exclusions::fields_used(&exclusions);
        self.exclusions = exclusions;
    }

    /// Reloads when forced (SIGHUP) or when the file changed on disk (a file
    /// that fails to parse keeps the running exclusions).
    pub fn reload(&mut self, forced: bool) -> Reload {
        let Some(path) = self.path.clone() else {
            return Reload::Unchanged;
        };
        let st = stamp(&path);
        if !forced && st == self.stamp {
            return Reload::Unchanged;
        }
        self.stamp = st;
        let text = match read(&path) {
            Ok(t) => t,
            Err(e) => {
                return Reload::Refused(format!(
                    "exclusions reload failed, keeping the {} running: {e:#}",
                    self.exclusions.len(),
                ));
            }
        };
        match parse_all(&path.display().to_string(), &text) {
            Err(e) => Reload::Refused(format!(
                "exclusions reload failed, keeping the {} running:\n{e:#}",
                self.exclusions.len()
            )),
            Ok(new) => {
                let msg = describe_change(&self.exclusions, &new, &path);
                self.set(new);
                Reload::Reloaded(msg)
            }
        }
    }

    /// The first exclusion matching `record`, counted.
    pub fn suppressing(&mut self, record: &impl serde::Serialize) -> Option<&Exclusion> {
        let hit = exclusions::first_match(&self.exclusions, record, &self.used)?;
        *self.counters.entry(hit.name.clone()).or_insert(0) += 1;
        Some(hit)
    }

    pub fn is_empty(&self) -> bool {
        self.exclusions.is_empty()
    }

    /// Whether any exclusion in force reads one of `names` (dotted fields).
    pub fn uses_any(&self, names: &[&str]) -> bool {
        names.iter().any(|name| {
            exclusions::fields::index(name)
                .and_then(|i| self.used.get(i))
                .is_some_and(|&used| used)
        })
    }

    /// `"name"=N, ...` for every exclusion seen in this run.
    pub fn counters_line(&self) -> String {
        let parts: Vec<String> = self
            .counters
            .iter()
            .map(|(name, n)| format!("{name:?}={n}"))
            .collect();
        parts.join(", ")
    }
}

fn describe_change(old: &[Exclusion], new: &[Exclusion], path: &Path) -> String {
    let by_name = |v: &[Exclusion]| -> BTreeMap<String, String> {
        v.iter()
            .map(|e| (e.name.clone(), e.expr.normalized()))
            .collect()
    };
    let (o, n) = (by_name(old), by_name(new));
    let added: Vec<&String> = n.keys().filter(|k| !o.contains_key(*k)).collect();
    let removed: Vec<&String> = o.keys().filter(|k| !n.contains_key(*k)).collect();
    let changed: Vec<&String> = n
        .iter()
        .filter(|(k, v)| o.get(*k).is_some_and(|ov| ov != *v))
        .map(|(k, _)| k)
        .collect();
    format!(
        "exclusions reloaded from {}: {} active; added {added:?}, removed {removed:?}, changed {changed:?}",
        path.display(),
        new.len()
    )
}
