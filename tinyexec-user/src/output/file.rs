//! An append-only JSON-lines file: one write(2) per record, mode 0600,
//! reopened on SIGHUP so logrotate can move it away, and before a batch of
//! records when the path no longer names the file open: the records read
//! after logrotate's rename go to the new file even when its SIGHUP is
//! served after them (the main loop may read the ring before the signal).
//!
//! Only a regular file is written. The path is opened without following a
//! symbolic link (`O_NOFOLLOW`): a link there, dangling or not, is refused and
//! its target is neither written nor created. A FIFO or a device is refused
//! too, without blocking on it (`O_NONBLOCK`, then `fstat`).
//!
//! The file holds whole lines only. A write that fails partway (a full disk
//! takes part of a record, then says ENOSPC) is cut back off with
//! `ftruncate`, and the record counts failed: the next one starts where the
//! failed one did, on a line of its own, instead of being glued to a torn
//! line. Cutting beats marking the gap with a newline: a marked gap would
//! still be a line no JSON parser takes. Should the cut itself fail (an
//! append-only file, `chattr +a`, cannot be truncated), the next record is
//! written after a newline, so that at least it is a line of its own.

use std::{
    fs::{self, File, FileType, OpenOptions},
    io::{self, Write},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};

use super::{
    item::Item,
    worker::{Failed, Sink, Written},
};

pub struct JsonFile {
    path: PathBuf,
    file: Option<File>,
    /// The open file's device and inode.
    id: (u64, u64),
    /// Why `file` is None: the last (re)open's error.
    closed: String,
    line: Vec<u8>,
    /// Part of a record stays at the file's end (cutting it off failed, e.g.
    /// on an append-only file, `chattr +a`): start the next record with a newline.
    torn: bool,
}

fn refused(path: &Path, t: FileType) -> anyhow::Error {
    let mut what = crate::textfile::file_kind(t).to_owned();
    if t.is_symlink()
        && let Ok(to) = fs::read_link(path)
    {
        what = format!("{what} (to {})", to.display());
    }
    anyhow!(
        "output file {} is {what}: only a regular file is written to, never through a link",
        path.display()
    )
}

/// Opens `path` for appending (creating it, mode 0600): a regular file, never
/// through a link. Returns it with its metadata.
fn open(path: &Path) -> Result<(File, fs::Metadata)> {
    let opened = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // O_NONBLOCK: a FIFO without a reader must not hang the open (it is
        // refused below); on a regular file it changes nothing.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            // ELOOP (a link), ENXIO (a FIFO nobody reads), EISDIR: say what is there.
            if let Ok(m) = fs::symlink_metadata(path)
                && !m.file_type().is_file()
            {
                return Err(refused(path, m.file_type()));
            }
            return Err(
                anyhow::Error::new(e).context(format!("opening output file {}", path.display()))
            );
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("fstat of output file {}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(refused(path, meta.file_type()));
    }
    Ok((file, meta))
}

/// Cuts off the `n` bytes a failed write appended (`O_APPEND`: they are the
/// file's last; `fstat` after the write, so a `copytruncate` before it is
/// seen).
fn cut(f: &File, n: u64) -> io::Result<()> {
    let end = f.metadata()?.len();
    f.set_len(end.saturating_sub(n))
}

impl JsonFile {
    /// Opens now, so a path that cannot work (no such directory, no
    /// permission, a link, not a regular file) stops the sensor at start
    /// with the reason.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, meta) = open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            id: (meta.dev(), meta.ino()),
            closed: String::new(),
            line: Vec::new(),
            torn: false,
        })
    }

    fn open_again(&mut self) -> Result<()> {
        self.file = None;
        match open(&self.path) {
            Ok((file, meta)) => {
                self.file = Some(file);
                self.id = (meta.dev(), meta.ino());
                // A new file (logrotate's) has no torn line; the same one still has.
                self.torn &= meta.len() > 0;
                Ok(())
            }
            Err(e) => {
                self.closed = format!("{e:#}");
                Err(e)
            }
        }
    }
}

/// Writes all of `buf`; on failure, how many bytes went in before it.
fn write_all(f: &mut File, buf: &[u8]) -> Result<(), (io::Error, usize)> {
    let mut done = 0;
    while done < buf.len() {
        match f.write(&buf[done..]) {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, done)),
        }
    }
    Ok(())
}

impl Sink for JsonFile {
    /// After a failed reopen: try again (the worker waits a backoff between tries).
    fn connect(&mut self) -> Result<()> {
        if self.file.is_none() {
            self.open_again()?;
        }
        Ok(())
    }

    /// One line, one write(2): records never interleave, and each is on disk
    /// (in the page cache) when this returns.
    fn write(&mut self, item: &Item) -> Result<Written, Failed> {
        let Some(f) = self.file.as_mut() else {
            return Err(Failed::record(
                anyhow!("not written, the file is not open: {}", self.closed),
                true,
            ));
        };
        self.line.clear();
        if self.torn {
            self.line.push(b'\n');
        }
        self.line.extend_from_slice(item.line());
        let (e, done) = match write_all(f, &self.line) {
            Ok(()) => {
                self.torn = false;
                return Ok(Written(1));
            }
            Err(failed) => failed,
        };
        let mut err = anyhow::Error::new(e).context(format!("writing {}", self.path.display()));
        if done > 0
            && let Err(c) = cut(f, done as u64)
        {
            self.torn = true;
            err = err.context(format!(
                "{done} bytes of the record stay in the file (cutting them off failed: {c}); \
                 the next record starts on a new line"
            ));
        }
        Err(Failed::record(err, false))
    }

    /// After logrotate moved the file: start a new one at the same path.
    fn reopen(&mut self) -> Result<()> {
        self.open_again()
    }

    /// One lstat(2) per batch: renamed, removed or replaced (by a new file,
    /// a link), the path is opened again, as on SIGHUP.
    fn follow(&mut self) -> Result<()> {
        if self.file.is_none() {
            return Ok(()); // connect() opens it, with backoff
        }
        match fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => Ok(()),
            _ => self
                .open_again()
                .with_context(|| format!("{} no longer names the file open", self.path.display())),
        }
    }
}
