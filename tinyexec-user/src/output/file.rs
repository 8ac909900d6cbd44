//! An append-only JSON-lines file: one write(2) per record, mode 0600,
//! reopened on SIGHUP so logrotate can move it away. A failed write (a full
//! disk) fails that record only; the next one is tried as usual.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::{
    Item,
    worker::{Failed, Sink, Written},
};

pub struct JsonFile {
    path: PathBuf,
    file: Option<File>,
    line: Vec<u8>,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening output file {}", path.display()))
}

impl JsonFile {
    /// Opens now, so a path that cannot work (no such directory, no
    /// permission) stops the sensor at start with the reason.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(open(path)?),
            line: Vec::new(),
        })
    }
}

impl Sink for JsonFile {
    /// After a failed reopen: try again (the worker waits a backoff between tries).
    fn connect(&mut self) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(open(&self.path)?);
        }
        Ok(())
    }

    /// One line, one write(2): records never interleave, and each is on disk
    /// (in the page cache) when this returns.
    fn write(&mut self, item: &Item) -> Result<Written, Failed> {
        self.line.clear();
        self.line.extend_from_slice(item.json().as_bytes());
        self.line.push(b'\n');
        let Some(f) = self.file.as_mut() else {
            return Err(Failed::record(
                anyhow::anyhow!("{} is not open", self.path.display()),
                true,
            ));
        };
        f.write_all(&self.line)
            .map(|()| Written(1))
            .with_context(|| format!("writing {}", self.path.display()))
            .map_err(|e| Failed::record(e, false))
    }

    /// After logrotate moved the file: start a new one at the same path.
    fn reopen(&mut self) -> Result<()> {
        self.file = None;
        self.file = Some(open(&self.path)?);
        Ok(())
    }
}
