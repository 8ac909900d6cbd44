//! Rule evaluation for one exec, on the bytes that really ran.
//!
//! The kernel sends the file's first 256 bytes (`linux_binprm::buf`) for every
//! candidate. That is the whole file up to 256 bytes; for 257 to 269 bytes the
//! header decides alone where it can, and otherwise the rest is read from the
//! very file that ran: `/proc/PID/exe` while the process lives, else the path
//! the kernel resolved, found where the exec saw it ([`crate::exec::files`]) and
//! accepted only if device, inode, size and change time are those of the exec.
//! A file that could be written while it ran (`Exec::is_writable`) is judged
//! on the kernel's bytes alone.
//!
//! When the kernel ran an interpreter for the file named in exec, that file is
//! checked too, by name: not bound to what ran, and said so.
//!
//! Reading a file can block (a FUSE file system that never answers), so the
//! data path calls [`detect`] with [`Files::Deferred`]: a verdict that needs a
//! file says so, and the exec is decided again by a file reader
//! ([`crate::exec::reads`]) with [`Files::Read`], or with [`Files::Unavailable`] when
//! that read did not come back in time.

use std::{fs, io::Read, os::unix::fs::MetadataExt};

use sha2::{Digest, Sha256};
use tinyexec_ebpf::{
    HEADER_LEN,
    rule::{self, HeaderVerdict},
};

use crate::exec::{
    clock::BootClock,
    decode::Exec,
    files::{self, Links},
};

/// Far above the coarse clock that stamps change times (a tick: 1 to 10 ms).
const CHANGE_TIME_GRAIN: std::time::Duration = std::time::Duration::from_millis(50);

/// Where the bytes behind a verdict came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Source {
    /// The kernel's header buffer held the whole file, or decided alone.
    Kernel,
    /// The kernel's header plus the rest read through `/proc/PID/exe`.
    KernelExe,
    /// The kernel's header plus the rest read from the path the kernel
    /// resolved, which still held the same, unchanged file.
    KernelPath,
    /// The file named in exec, read by name (an interpreter ran for it).
    Path,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::KernelExe => "kernel+exe",
            Self::KernelPath => "kernel+path",
            Self::Path => "path",
        }
    }
}

/// The file named in exec, when it (not what the kernel ran) matched.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub path: String,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
}

/// (Serialised only between the sensor and its file readers, `reads`.)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    Match {
        source: Source,
        /// Present when every byte of the file was seen.
        sha256: Option<String>,
        /// Every offset of each string, in the bytes seen.
        s1_offsets: Vec<usize>,
        s2_offsets: Vec<usize>,
        target: Option<Target>,
    },
    /// A candidate whose verdict needs bytes that could not be read.
    Undetermined { reason: String },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn matched(content: &[u8], source: Source, complete: bool) -> Verdict {
    matched_in(content, source, complete, None)
}

fn matched_in(content: &[u8], source: Source, complete: bool, target: Option<Target>) -> Verdict {
    Verdict::Match {
        source,
        sha256: complete.then(|| sha256_hex(content)),
        s1_offsets: rule::find_all(content, &rule::S1).collect(),
        s2_offsets: rule::find_all(content, &rule::S2).collect(),
        target,
    }
}

/// How [`detect`] may reach the files behind an exec.
#[derive(Clone, Copy, Debug)]
pub enum Files<'a> {
    /// On the data path: no file is touched; a verdict that needs one is
    /// [`NeedsFile`].
    Deferred,
    /// In a file reader's helper process: files are opened and read; its
    /// clock dates the exec against the file's change time.
    Read(&'a BootClock),
    /// The read did not come back in time, or could not be started: why.
    Unavailable(&'a str),
}

/// The verdict needs a file read: decide again off the data path.
#[derive(Debug, PartialEq, Eq)]
pub struct NeedsFile;

/// The rule's verdict on this exec: None when it does not match. `header` is
/// [`header_decision`] on it, taken once by the caller.
pub fn detect(
    exec: &Exec,
    header: Option<HeaderVerdict>,
    files: Files<'_>,
) -> Result<Option<Verdict>, NeedsFile> {
    if let Some(verdict) = detect_executed(exec, header, files)? {
        return Ok(Some(verdict));
    }
    let Some(name) = exec.exec_path_bytes.as_deref() else {
        return Ok(None);
    };
    match files {
        Files::Deferred => Err(NeedsFile),
        // Only a match by name is an alert: what cannot be read is not what ran.
        Files::Unavailable(_) => Ok(None),
        Files::Read(_) => Ok(detect_named(exec, name)),
    }
}

/// The whole file that ran, as `files` allows.
fn rest(
    exec: &Exec,
    size: u64,
    files: Files<'_>,
) -> Result<Result<(Vec<u8>, Source), String>, NeedsFile> {
    match files {
        Files::Deferred => Err(NeedsFile),
        Files::Read(clock) => Ok(read_rest(exec, size, clock)),
        Files::Unavailable(why) => Ok(Err(why.to_owned())),
    }
}

/// The verdict on the file the kernel ran.
fn detect_executed(
    exec: &Exec,
    header: Option<HeaderVerdict>,
    files: Files<'_>,
) -> Result<Option<Verdict>, NeedsFile> {
    if !exec.candidate {
        return Ok(None);
    }
    let Ok(size) = u64::try_from(exec.size) else {
        return Ok(None);
    };
    let head = exec.header.as_deref().unwrap_or_default();
    let writable = exec.is_writable();
    Ok(match header.unwrap_or(HeaderVerdict::NeedRest) {
        HeaderVerdict::NoMatch => None,
        // The whole file as the kernel read it at exec (for a writable file,
        // the bytes at that moment: the hash is theirs).
        HeaderVerdict::Match if head.len() as u64 == size => {
            Some(matched(head, Source::Kernel, true))
        }
        // Writable, and longer than the header now: the header alone, no hash.
        HeaderVerdict::Match if writable => Some(matched(head, Source::Kernel, false)),
        // Decided by the header alone; the rest only adds the hash and offsets.
        HeaderVerdict::Match => Some(match rest(exec, size, files)? {
            Ok((all, source)) => matched(&all, source, true),
            Err(_) => matched(head, Source::Kernel, false),
        }),
        HeaderVerdict::NeedRest if writable => Some(Verdict::Undetermined {
            reason: "the file could be written while it ran (its writer count was not \
                     negative: a memfd with a writable descriptor, say), and the bytes \
                     past the 256 the kernel read at exec decide; bytes read later need \
                     not be the ones that ran"
                .to_owned(),
        }),
        HeaderVerdict::NeedRest => match rest(exec, size, files)? {
            Ok((all, source)) => rule::evaluate(&all).map(|_| matched(&all, source, true)),
            Err(reason) => Some(Verdict::Undetermined { reason }),
        },
    })
}

/// The size the kernel decided for: a writable file may have been smaller
/// when its header was read, so it is judged as the largest size that can match.
fn decided_size(exec: &Exec) -> Option<u64> {
    let size = u64::try_from(exec.size).ok()?;
    Some(if exec.is_writable() && !rule::size_can_match(size) {
        rule::FILESIZE_LT - 1
    } else {
        size
    })
}

/// The decision the kernel takes on the header, taken again on the same bytes;
/// None without a usable header.
pub fn header_decision(exec: &Exec) -> Option<HeaderVerdict> {
    let size = decided_size(exec)?;
    let head = exec.header.as_deref()?;
    let buf = header_buffer(head, size)?;
    Some(rule::header_verdict(&buf, head.len(), size))
}

/// The kernel's header as the 256-byte buffer it decided on, when it holds
/// what the kernel reads: the file's first `min(size, 256)` bytes.
fn header_buffer(head: &[u8], size: u64) -> Option<[u8; HEADER_LEN]> {
    if head.len() as u64 != size.min(HEADER_LEN as u64) {
        return None;
    }
    Some(rule::header_of(head).0)
}

/// The whole file that ran: through `/proc/PID/exe` while the process lives,
/// else from the path the kernel resolved if it still holds that file unchanged.
fn read_rest(exec: &Exec, size: u64, clock: &BootClock) -> Result<(Vec<u8>, Source), String> {
    let by_exe = match read_exe(exec, size) {
        Ok(all) => return Ok((all, Source::KernelExe)),
        Err(reason) => reason,
    };
    match read_resolved_path(exec, size, clock) {
        Ok(all) => Ok((all, Source::KernelPath)),
        Err(by_path) => Err(format!("{by_exe}; and {by_path}")),
    }
}

/// The whole file that ran, through `/proc/PID/exe`, if it is still that file.
fn read_exe(exec: &Exec, size: u64) -> Result<Vec<u8>, String> {
    let path = format!("/proc/{}/exe", exec.pid);
    let found = files::find_proc_link(&path).map_err(|e| {
        let deleted = if exec.is_deleted() {
            " and the file was deleted"
        } else {
            ""
        };
        format!("cannot open {path} ({e}): the process is gone{deleted}")
    })?;
    let md = &found.meta;
    if md.ino() != exec.inode || md.dev() != exec.device {
        return Err(format!(
            "{path} is no longer the file that ran (inode {} on device {}, expected {} on {}): \
             the process exited or exec'd again",
            md.ino(),
            md.dev(),
            exec.inode,
            exec.device
        ));
    }
    let mut f = found.open().map_err(|e| format!("opening {path}: {e}"))?;
    read_checked(&mut f, &path, exec, size)
}

/// The file at the path the kernel resolved, found where the exec saw it (its
/// root, its parent's, PID 1's), if it is the file that ran and has not
/// changed since: same device, inode, size and change time (any write or
/// truncation moves the change time).
fn read_resolved_path(exec: &Exec, size: u64, clock: &BootClock) -> Result<Vec<u8>, String> {
    let path = &exec.path;
    if exec.path_disconnected || exec.path_truncated || exec.is_deleted() {
        return Err(format!(
            "{path} cannot be opened again (deleted, or not a path from a root)"
        ));
    }
    // A write moves the change time only to the kernel's coarse clock (one
    // tick, at most 10 ms): one within a tick of the change time the exec saw
    // could leave it as it was. Later writes cannot.
    let exec_wall = clock.wall(exec.ktime_ns);
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(u64::try_from(exec.ctime.0).unwrap_or(0), exec.ctime.1);
    if exec_wall
        .duration_since(changed)
        .is_ok_and(|d| d < CHANGE_TIME_GRAIN)
    {
        return Err(format!(
            "{path} changed less than {CHANGE_TIME_GRAIN:?} before it ran, so its change time \
             cannot show a later write"
        ));
    }
    let mut tried = Vec::new();
    for root in files::roots(exec.pid, exec.ppid) {
        match unchanged_under(exec, size, &root) {
            Ok(mut f) => return read_checked(&mut f, path, exec, size),
            Err(why) => tried.push(format!("under the root of pid {}: {why}", root.pid)),
        }
    }
    Err(format!(
        "{path} is not the unchanged file that ran ({})",
        tried.join("; ")
    ))
}

/// The kernel's path under the root of process `root`, opened if it is the
/// unchanged file that ran.
fn unchanged_under(exec: &Exec, size: u64, root: &files::Root) -> Result<fs::File, String> {
    let found = root
        .find(&exec.path_bytes, Links::None)
        .map_err(|e| e.to_string())?;
    let md = &found.meta;
    let ctime = (
        md.ctime(),
        u32::try_from(md.ctime_nsec()).unwrap_or(u32::MAX),
    );
    if md.dev() != exec.device || md.ino() != exec.inode || md.size() != size || ctime != exec.ctime
    {
        return Err(format!(
            "device {} inode {} size {} ctime {ctime:?}; it ran as device {} inode {} size {size} \
             ctime {:?}",
            md.dev(),
            md.ino(),
            md.size(),
            exec.device,
            exec.inode,
            exec.ctime
        ));
    }
    found.open().map_err(|e| e.to_string())
}

/// Reads `size` bytes (one more shows growth) and checks they begin with the
/// kernel's header.
fn read_checked(f: &mut fs::File, path: &str, exec: &Exec, size: u64) -> Result<Vec<u8>, String> {
    let mut all = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    f.by_ref()
        .take(size + 1)
        .read_to_end(&mut all)
        .map_err(|e| format!("reading {path}: {e}"))?;
    if all.len() as u64 != size {
        return Err(format!(
            "{path} now has {} bytes, {} when it ran",
            all.len(),
            size
        ));
    }
    if let Some(head) = &exec.header
        && !all.starts_with(head)
    {
        return Err(format!(
            "{path} no longer starts with the bytes the kernel read"
        ));
    }
    Ok(all)
}

/// The file named in exec, found where the exec saw it: `/dev/fd/N` is the
/// process's descriptor N; other names are resolved from the working
/// directory and root of the first of the exec, its parent and PID 1 that is
/// still there.
fn find_named(exec: &Exec, name: &[u8]) -> Option<files::Found> {
    if let Some(fd) = name.strip_prefix(b"/dev/fd/") {
        let fd = std::str::from_utf8(fd).ok()?;
        return files::find_proc_link(&format!("/proc/{}/fd/{fd}", exec.pid)).ok();
    }
    // The first root still there decides: a name missing from a live
    // process's root is missing, not to be looked for elsewhere.
    let root = files::roots(exec.pid, exec.ppid).next()?;
    let cwd = if name.starts_with(b"/") {
        Vec::new()
    } else {
        root.cwd().ok()?
    };
    root.find(&files::join(&cwd, name), Links::InRoot).ok()
}

/// The rule on the file named in exec, read by name. Only a match is an
/// alert: what cannot be read is not what ran, and every script exec comes here.
fn detect_named(exec: &Exec, name: &[u8]) -> Option<Verdict> {
    let found = find_named(exec, name)?;
    if !rule::size_can_match(found.meta.size()) {
        return None;
    }
    // Only a regular file is opened: a name swapped for a device is not.
    let mut f = found.open().ok()?;
    let mut all = Vec::with_capacity(rule::FILESIZE_LT_LEN);
    f.by_ref()
        .take(rule::FILESIZE_LT)
        .read_to_end(&mut all)
        .ok()?;
    rule::evaluate(&all)?;
    let target = Target {
        path: files::show(name),
        size: all.len() as u64,
        inode: found.meta.ino(),
        device: found.meta.dev(),
    };
    Some(matched_in(&all, Source::Path, true, Some(target)))
}
