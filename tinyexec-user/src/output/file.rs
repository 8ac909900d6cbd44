//! An append-only JSON-lines file: flushed per record, mode 0600, reopened on
//! SIGHUP so logrotate can move it away.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

pub struct JsonFile {
    path: PathBuf,
    file: File,
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
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: open(path)?,
        })
    }

    /// One line, one write(2): records never interleave, and each is on disk
    /// (in the page cache) when this returns.
    pub fn write_line(&mut self, json: &str) -> Result<()> {
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// After logrotate moved the file: start a new one at the same path.
    pub fn reopen(&mut self) -> Result<()> {
        self.file = open(&self.path)?;
        Ok(())
    }
}
