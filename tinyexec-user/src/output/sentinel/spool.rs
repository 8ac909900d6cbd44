//! Batches waiting for delivery, on disk: they survive an outage and a restart,
//! and leave in the order they came. Bounded: past the limit the oldest go,
//! and how many records went is counted.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use flate2::{Compression, write::GzEncoder};

/// `<sequence>-<records>.json.gz`: the name orders batches and says how many
/// records dropping one loses.
const SUFFIX: &str = ".json.gz";

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    next: u64,
}

/// A spooled batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub path: PathBuf,
    pub records: u64,
}

fn parse_name(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?.strip_suffix(SUFFIX)?;
    let (seq, n) = name.split_once('-')?;
    Some((seq.parse().ok()?, n.parse().ok()?))
}

/// Spooled batches, oldest first.
pub fn list(dir: &Path) -> Vec<Batch> {
    let mut v: Vec<(u64, Batch)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let (seq, records) = parse_name(&path)?;
            Some((seq, Batch { path, records }))
        })
        .collect();
    v.sort_by_key(|(seq, _)| *seq);
    v.into_iter().map(|(_, b)| b).collect()
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating spool {}", dir.display()))?;
        let next = list(dir)
            .last()
            .and_then(|b| parse_name(&b.path))
            .map_or(1, |(seq, _)| seq + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            next,
        })
    }

    /// Writes one batch (a JSON array, gzip'd: the body as it will be sent).
    /// Returns how many records older batches lost to the size bound.
    pub fn push(&mut self, records: &[String]) -> Result<u64> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(b"[")?;
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                gz.write_all(b",")?;
            }
            gz.write_all(r.as_bytes())?;
        }
        gz.write_all(b"]")?;
        let body = gz.finish()?;
        let name = format!("{:016}-{}{SUFFIX}", self.next, records.len());
        self.next += 1;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(name);
        fs::write(&tmp, &body).with_context(|| format!("writing {}", tmp.display()))?;
        // Rename: a crash never leaves a half-written batch under a real name.
        fs::rename(&tmp, &path).with_context(|| format!("spooling {}", path.display()))?;
        Ok(self.enforce_bound(&path))
    }

    /// Drops the oldest batches (never the newest) while the spool is over its bound.
    fn enforce_bound(&self, newest: &Path) -> u64 {
        let batches = list(&self.dir);
        let mut total: u64 = batches
            .iter()
            .filter_map(|b| fs::metadata(&b.path).ok())
            .map(|m| m.len())
            .sum();
        let mut dropped = 0;
        for b in &batches {
            if total <= self.max_bytes || b.path == newest {
                break;
            }
            let len = fs::metadata(&b.path).map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(&b.path).is_ok() {
                total = total.saturating_sub(len);
                dropped += b.records;
            }
        }
        dropped
    }
}
