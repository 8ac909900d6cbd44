//! Batches waiting for delivery, on disk: they survive an outage and a restart,
//! and leave in the order they came. Bounded: past the limit the oldest go,
//! and how many records went is counted. A batch the service finds too large
//! is split in place; what it refuses for good is set aside in `rejected/`.

use std::{
    fs,
    io::{Read as _, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use serde_json::value::RawValue;

/// `<key>-<records>.json.gz`. The key orders batches: a 16-digit sequence number,
/// then `.0`/`.1` for each halving (`…05` < `…05.0` < `…05.1` < `…06` as strings);
/// the record count says how many records dropping one loses.
const SUFFIX: &str = ".json.gz";
const REJECTED: &str = "rejected";

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    next: u64,
}

/// A spooled batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub path: PathBuf,
    key: String,
    pub records: u64,
}

fn parse_name(path: &Path) -> Option<(String, u64)> {
    let name = path.file_name()?.to_str()?.strip_suffix(SUFFIX)?;
    let (key, n) = name.rsplit_once('-')?;
    let seq = key.split('.').next()?;
    if seq.len() != 16 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((key.to_owned(), n.parse().ok()?))
}

/// Spooled batches, oldest first.
pub fn list(dir: &Path) -> Vec<Batch> {
    let mut v: Vec<Batch> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let (key, records) = parse_name(&path)?;
            Some(Batch { path, key, records })
        })
        .collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

/// The body as sent: a JSON array of the records, gzip'd.
fn gzip_array(records: &[&str]) -> Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(b"[")?;
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            gz.write_all(b",")?;
        }
        gz.write_all(r.as_bytes())?;
    }
    gz.write_all(b"]")?;
    Ok(gz.finish()?)
}

/// Writes a batch file; rename, so a crash never leaves a half-written batch under a real name.
fn write(dir: &Path, key: &str, records: &[&str], body: &[u8]) -> Result<PathBuf> {
    let name = format!("{key}-{}{SUFFIX}", records.len());
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("spooling {}", path.display()))?;
    Ok(path)
}

/// The records of a spooled batch, as the JSON texts they were sent as.
fn read_records(path: &Path) -> Result<Vec<Box<RawValue>>> {
    let mut json = Vec::new();
    GzDecoder::new(fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
        .read_to_end(&mut json)
        .with_context(|| format!("decompressing {}", path.display()))?;
    serde_json::from_slice(&json).with_context(|| format!("{}: not a JSON array", path.display()))
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating spool {}", dir.display()))?;
        let next = list(dir)
            .last()
            .and_then(|b| b.key.split('.').next()?.parse::<u64>().ok())
            .map_or(1, |seq| seq + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            next,
        })
    }

    /// Writes one batch (a JSON array, gzip'd: the body as it will be sent), in
    /// halves while the gzip'd body is over `max_body` (incompressible data grows
    /// a little). Returns how many records older batches lost to the size bound.
    pub fn push(&mut self, records: &[&str], max_body: usize) -> Result<u64> {
        let key = format!("{:016}", self.next);
        self.next += 1;
        let mut newest = PathBuf::new();
        let mut todo = vec![(key, records)];
        while let Some((key, part)) = todo.pop() {
            let body = gzip_array(part)?;
            if body.len() > max_body && part.len() > 1 {
                let (a, b) = part.split_at(part.len() / 2);
                // Popped last-in first: the first half is written first.
                todo.push((format!("{key}.1"), b));
                todo.push((format!("{key}.0"), a));
                continue;
            }
            newest = write(&self.dir, &key, part, &body)?;
        }
        Ok(self.enforce_bound(&newest))
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
            let len = fs::metadata(&b.path).map_or(0, |m| m.len());
            if fs::remove_file(&b.path).is_ok() {
                total = total.saturating_sub(len);
                dropped += b.records;
            }
        }
        dropped
    }

    /// Keeps records that can never be sent (one record over the API's limit) in
    /// `rejected/`, as a batch file, so an analyst can read them.
    pub fn set_aside(&mut self, records: &[&str]) -> Result<PathBuf> {
        let dir = self.dir.join(REJECTED);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = format!("{:016}", self.next);
        self.next += 1;
        write(&dir, &key, records, &gzip_array(records)?)
    }
}

/// Replaces a batch by its two halves, in its place in the order. Deterministic, so
/// a crash before the original is removed only repeats the same split.
pub fn split(batch: &Batch) -> Result<()> {
    let records = read_records(&batch.path)?;
    if records.len() < 2 {
        bail!("{}: one record cannot be split", batch.path.display());
    }
    let texts: Vec<&str> = records.iter().map(|r| r.get()).collect();
    let (a, b) = texts.split_at(texts.len() / 2);
    let dir = batch.path.parent().unwrap_or(Path::new("."));
    for (half, part) in [("0", a), ("1", b)] {
        write(
            dir,
            &format!("{}.{half}", batch.key),
            part,
            &gzip_array(part)?,
        )?;
    }
    fs::remove_file(&batch.path).with_context(|| format!("removing {}", batch.path.display()))
}

/// Moves a batch the service refused for good to `rejected/`; returns its new path.
pub fn reject(batch: &Batch) -> Result<PathBuf> {
    let dir = batch.path.parent().unwrap_or(Path::new(".")).join(REJECTED);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(batch.path.file_name().unwrap_or_default());
    fs::rename(&batch.path, &dest).with_context(|| format!("moving {}", batch.path.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tinyexec-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn splits_keep_the_order_and_the_records() {
        let dir = tmpdir("split");
        let mut spool = Spool::open(&dir, u64::MAX).unwrap();
        spool
            .push(&[r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#], usize::MAX)
            .unwrap();
        spool.push(&[r#"{"a":4}"#], usize::MAX).unwrap();
        let first = list(&dir).remove(0);
        split(&first).unwrap();
        let halves = list(&dir);
        split(&halves[1]).unwrap();
        let order: Vec<String> = list(&dir)
            .iter()
            .flat_map(|b| read_records(&b.path).unwrap())
            .map(|r| r.get().to_owned())
            .collect();
        assert_eq!(
            order,
            [r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#, r#"{"a":4}"#]
        );
        assert_eq!(list(&dir).iter().map(|b| b.records).sum::<u64>(), 4);
        // A restart numbers new batches after the split ones.
        assert_eq!(Spool::open(&dir, u64::MAX).unwrap().next, 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_body_over_the_limit_is_spooled_in_halves() {
        let dir = tmpdir("halves");
        let mut spool = Spool::open(&dir, u64::MAX).unwrap();
        // Records gzip cannot shrink much: SHA-256 digests in hex.
        let recs: Vec<String> = (0..64u64)
            .map(|i| {
                use sha2::Digest as _;
                let d = sha2::Sha256::digest(i.to_le_bytes());
                format!(
                    "\"{}\"",
                    d.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            })
            .collect();
        let refs: Vec<&str> = recs.iter().map(String::as_str).collect();
        spool.push(&refs, 1500).unwrap();
        let batches = list(&dir);
        assert!(batches.len() > 1);
        assert!(
            batches
                .iter()
                .all(|b| fs::metadata(&b.path).unwrap().len() <= 1500)
        );
        let order: Vec<String> = batches
            .iter()
            .flat_map(|b| read_records(&b.path).unwrap())
            .map(|r| r.get().to_owned())
            .collect();
        assert_eq!(order, recs);
        fs::remove_dir_all(&dir).unwrap();
    }
}
