//! Rule evaluation for one exec, on the bytes that really ran.
//!
//! The kernel sends the file's first 256 bytes (`linux_binprm::buf`) for every
//! candidate. That is the whole file up to 256 bytes; for 257 to 269 bytes the
//! rest is read from the very file that ran, `/proc/PID/exe`, checked against the
//! kernel's inode and device, never by looking the path up again.

use std::{fs, io::Read, os::unix::fs::MetadataExt};

use sha2::{Digest, Sha256};
use tinyexec_ebpf::{
    HEADER_LEN,
    rule::{self, HeaderVerdict},
};

use crate::decode::Exec;

/// Where the bytes behind a verdict came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The kernel's header buffer held the whole file, or decided alone.
    Kernel,
    /// The kernel's header plus the rest read through `/proc/PID/exe`.
    KernelExe,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::KernelExe => "kernel+exe",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Match {
        source: Source,
        /// Present when every byte of the file was seen.
        sha256: Option<String>,
        /// Every offset of each string, in the bytes seen.
        s1_offsets: Vec<usize>,
        s2_offsets: Vec<usize>,
    },
    /// A candidate whose verdict needs bytes that could not be read.
    Undetermined { reason: String },
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn matched(content: &[u8], source: Source, complete: bool) -> Verdict {
    Verdict::Match {
        source,
        sha256: complete.then(|| sha256_hex(content)),
        s1_offsets: rule::find_all(content, &rule::S1).collect(),
        s2_offsets: rule::find_all(content, &rule::S2).collect(),
    }
}

/// The rule's verdict on this exec: None when it does not match.
pub fn detect(exec: &Exec) -> Option<Verdict> {
    if !exec.candidate {
        return None;
    }
    let size = u64::try_from(exec.size).ok()?;
    let head = exec.header.as_deref().unwrap_or_default();
    match header_decision(exec).unwrap_or(HeaderVerdict::NeedRest) {
        HeaderVerdict::NoMatch => None,
        HeaderVerdict::Match if head.len() as u64 == size => {
            Some(matched(head, Source::Kernel, true))
        }
        // Decided by the header alone; the rest only adds the hash and offsets.
        HeaderVerdict::Match => Some(match read_exe(exec, size) {
            Ok(all) => matched(&all, Source::KernelExe, true),
            Err(_) => matched(head, Source::Kernel, false),
        }),
        HeaderVerdict::NeedRest => match read_exe(exec, size) {
            Ok(all) => rule::evaluate(&all).map(|_| matched(&all, Source::KernelExe, true)),
            Err(reason) => Some(Verdict::Undetermined { reason }),
        },
    }
}

/// The decision the kernel takes on the header, taken again on the same bytes;
/// None without a usable header.
pub fn header_decision(exec: &Exec) -> Option<HeaderVerdict> {
    let size = u64::try_from(exec.size).ok()?;
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
    let mut buf = [0u8; HEADER_LEN];
    buf[..head.len()].copy_from_slice(head);
    Some(buf)
}

/// The whole file that ran, through `/proc/PID/exe`, if it is still that file.
fn read_exe(exec: &Exec, size: u64) -> Result<Vec<u8>, String> {
    let path = format!("/proc/{}/exe", exec.pid);
    let mut f = fs::File::open(&path).map_err(|e| {
        let deleted = if exec.is_deleted() {
            " and the file was deleted"
        } else {
            ""
        };
        format!("cannot open {path} ({e}): the process is gone{deleted}")
    })?;
    let md = f.metadata().map_err(|e| format!("stat {path}: {e}"))?;
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
