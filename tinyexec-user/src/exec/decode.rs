//! Kernel records to owned Rust values.
// Outside input: an index out of bounds here is a crash an attacker chooses.
#![warn(clippy::indexing_slicing)]

use anyhow::{Result, bail};
use tinyexec_ebpf::{ExecRecord, RECORD_FIXED, flags, rule::HeaderVerdict};

use crate::exec::container::{self, Namespaces, Workload};

/// One exec as the kernel reported it, decoded.
#[derive(Clone, Debug)]
pub struct Exec {
    pub ktime_ns: u64,
    pub pid: u32,
    pub exec_tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// None when unset (or the kernel has no audit support).
    pub login_uid: Option<u32>,
    pub comm: String,
    pub parent_comm: String,
    pub args: Vec<String>,
    pub argc: u32,
    pub args_truncated: bool,
    pub args_unreadable: bool,
    /// The kernel's path as text (invalid UTF-8 replaced), for records.
    pub path: String,
    /// The same path as the kernel gave it, to open: a replaced byte names another file.
    pub path_bytes: Vec<u8>,
    pub path_truncated: bool,
    pub path_disconnected: bool,
    /// The parent process's executable, as the kernel resolved it (None for kernel threads).
    pub parent_path: Option<String>,
    pub size: i64,
    pub inode: u64,
    /// In user space's `st_dev` encoding.
    pub device: u64,
    pub nlink: u32,
    pub mode: u32,
    pub candidate: bool,
    /// The file's first `min(size, 256)` bytes, when the kernel sent them.
    pub header: Option<Vec<u8>>,
    pub read_error: bool,
    /// Prevent mode: the kernel sent SIGKILL before the first instruction.
    pub killed: bool,
    /// Prevent mode: the rule matched in the kernel but no signal could be sent.
    pub kill_failed: bool,
    /// Prevent mode: the LSM program refused the exec (`execve` failed with
    /// EPERM in its caller). The identity is the caller's, and there are no
    /// arguments, parent path, cgroup or namespaces.
    pub denied: bool,
    /// Sent during the start-up self-test: the exec'ing process's tgid as the
    /// kernel's helper gave it, without any struct offset.
    pub self_test_tgid: Option<u32>,
    /// The kernel's decision on the header, when it took one.
    pub kernel_verdict: Option<HeaderVerdict>,
    /// `i_writecount` at exec: 0 or more means nothing stopped writes to the
    /// file while it ran.
    pub writers: i32,
    /// The file's change time at exec (seconds, nanoseconds).
    pub ctime: (i64, u32),
    /// The name given to exec, when the kernel ran an interpreter for it.
    pub exec_path: Option<String>,
    /// The same name as the kernel gave it, to open.
    pub exec_path_bytes: Option<Vec<u8>>,
    pub exec_path_truncated: bool,
    /// The task's cgroup in the hierarchy the sensor reads (None without one).
    pub cgroup: Option<Cgroup>,
    /// The container and pod its cgroup path names.
    pub workload: Workload,
    /// Inode numbers of its namespaces ([`crate::exec::container::NAMES`]); 0 when unread.
    pub namespaces: Namespaces,
    /// Its pid and its parent's in its own pid namespace (0 for a parent outside it).
    pub vpid: u32,
    pub parent_vpid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The kernfs node id: the inode number of the cgroup's directory.
    pub id: u64,
    /// From the hierarchy's root; None when not even its last component was read.
    pub path: Option<String>,
    /// The walk stopped before the root: `path` is its tail.
    pub truncated: bool,
}

impl Exec {
    /// Prevent mode stopped it, one way or the other.
    pub fn prevented(&self) -> bool {
        self.killed || self.denied
    }

    /// Memfd files live on an internal tmpfs mount and are named `memfd:NAME`.
    pub fn is_memfd(&self) -> bool {
        self.path_disconnected && self.path.starts_with("/memfd:")
    }

    /// A file with no links left was deleted (before or during the exec).
    pub fn is_deleted(&self) -> bool {
        self.nlink == 0
    }

    /// Nothing stopped writes to the file while it ran, so bytes read later
    /// need not be the ones that ran: its writer count was not negative, or it
    /// is a memfd (written through descriptors the writer count does not see:
    /// on 6.18 a memfd with a writable descriptor runs with the count at -2).
    pub fn is_writable(&self) -> bool {
        self.writers >= 0 || self.is_memfd()
    }
}

/// Text up to the first NUL; invalid UTF-8 is replaced, never dropped.
fn c_str(bytes: &[u8]) -> String {
    let text = bytes.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

/// The kernel's internal `dev_t` (12-bit major, 20-bit minor) to the encoding `stat` reports.
pub fn user_dev(kdev: u32) -> u64 {
    let major = u64::from(kdev >> 20);
    let minor = u64::from(kdev & 0xf_ffff);
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Splits the NUL-separated argument area; a trailing cut-off string is kept.
fn split_args(area: &[u8]) -> Vec<String> {
    let area = area.strip_suffix(&[0]).unwrap_or(area);
    if area.is_empty() {
        return Vec::new();
    }
    area.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The kernel's cgroup path area (names from the leaf up, each ending in
/// NUL) as a path from the root.
fn cgroup_path(area: &[u8], truncated: bool) -> Option<String> {
    let area = area.strip_suffix(&[0]).unwrap_or(area);
    if area.is_empty() {
        return (!truncated).then(|| "/".to_owned());
    }
    let mut path = String::with_capacity(area.len() + 1);
    for name in area.rsplit(|&b| b == 0) {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(name));
    }
    Some(path)
}

/// Takes the next `len` bytes of a record's variable part.
fn take<'a>(rest: &mut &'a [u8], len: u32, what: &str) -> Result<&'a [u8]> {
    let len = len as usize;
    if rest.len() < len {
        bail!(
            "kernel record cut short in its {what} ({len} bytes announced, {} left)",
            rest.len()
        );
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

pub fn decode(bytes: &[u8]) -> Result<Exec> {
    let Some(mut rest) = bytes.get(RECORD_FIXED..) else {
        bail!(
            "kernel record of {} bytes, shorter than its fixed part ({RECORD_FIXED})",
            bytes.len()
        );
    };
    // SAFETY: ExecRecord is Pod (any bit pattern is valid) and the length was
    // checked; read_unaligned makes no assumption about the buffer's alignment.
    let ev: ExecRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let header = take(&mut rest, ev.header_len, "header")?;
    let args = take(&mut rest, ev.args_len, "arguments")?;
    let path = take(&mut rest, ev.path_len, "path")?;
    let parent_path = take(&mut rest, ev.parent_path_len, "parent's path")?;
    let exec_path = take(&mut rest, ev.exec_path_len, "name given to exec")?;
    let cgroup_area = take(&mut rest, ev.cgroup_path_len, "cgroup path")?;
    let f = ev.flags;
    let denied = f & flags::DENIED != 0;
    // The LSM program's path is the kernel's d_path, which names a file
    // without links (a memfd, a deleted file) with this suffix; the
    // tracepoint's own walk names it without.
    let path = match path.strip_suffix(b" (deleted)") {
        Some(name) if denied && f & flags::PATH_DISCONNECTED != 0 => name,
        _ => path,
    };
    let cgroup_truncated = f & flags::CGROUP_PATH_TRUNCATED != 0;
    let cgroup = (ev.cgroup_id != 0).then(|| Cgroup {
        id: ev.cgroup_id,
        path: cgroup_path(cgroup_area, cgroup_truncated),
        truncated: cgroup_truncated,
    });
    Ok(Exec {
        ktime_ns: ev.ktime_ns,
        pid: ev.pid,
        exec_tid: ev.old_pid,
        ppid: ev.ppid,
        uid: ev.uid,
        gid: ev.gid,
        euid: ev.euid,
        egid: ev.egid,
        login_uid: (ev.loginuid != u32::MAX).then_some(ev.loginuid),
        comm: c_str(&ev.comm),
        parent_comm: c_str(&ev.parent_comm),
        args: split_args(args),
        argc: ev.argc,
        args_truncated: f & flags::ARGS_TRUNCATED != 0,
        args_unreadable: f & flags::ARGS_UNREADABLE != 0,
        path: String::from_utf8_lossy(path).into_owned(),
        path_bytes: path.to_vec(),
        path_truncated: f & flags::PATH_TRUNCATED != 0,
        path_disconnected: f & flags::PATH_DISCONNECTED != 0,
        parent_path: (!parent_path.is_empty())
            .then(|| String::from_utf8_lossy(parent_path).into_owned()),
        size: ev.file_size,
        inode: ev.ino,
        device: user_dev(ev.dev),
        nlink: ev.nlink,
        mode: ev.mode,
        candidate: f & flags::CANDIDATE != 0,
        header: (f & flags::HEADER != 0).then(|| header.to_vec()),
        read_error: f & flags::READ_ERROR != 0,
        killed: f & flags::KILLED != 0,
        kill_failed: f & flags::KILL_FAILED != 0,
        denied,
        self_test_tgid: (f & flags::SELF_TEST != 0).then_some(ev.self_test_tgid),
        kernel_verdict: HeaderVerdict::from_wire(ev.kernel_verdict),
        writers: ev.writers,
        // Since 6.13 the top bit of `i_ctime_nsec` marks a queried time
        // (multigrain timestamps), not nanoseconds.
        ctime: (ev.ctime_sec, ev.ctime_nsec & !(1 << 31)),
        exec_path: (f & flags::INTERPRETED != 0)
            .then(|| String::from_utf8_lossy(exec_path).into_owned()),
        exec_path_bytes: (f & flags::INTERPRETED != 0).then(|| exec_path.to_vec()),
        exec_path_truncated: f & flags::EXEC_PATH_TRUNCATED != 0,
        workload: cgroup
            .as_ref()
            .and_then(|c| c.path.as_deref())
            .map(container::parse)
            .unwrap_or_default(),
        cgroup,
        namespaces: [
            ev.ns_mnt,
            ev.ns_pid,
            ev.ns_net,
            ev.ns_user,
            ev.ns_uts,
            ev.ns_cgroup,
        ],
        vpid: ev.vpid,
        parent_vpid: ev.parent_vpid,
    })
}

/// A record as the kernel sends it: the fixed part, then `tail` (its variable
/// parts, as long as the fixed part's lengths say). For tests and fuzz seeds.
pub fn encode(rec: &ExecRecord, tail: &[u8]) -> Vec<u8> {
    // SAFETY: ExecRecord is a plain repr(C) struct without padding, RECORD_FIXED bytes long.
    let fixed =
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(rec).cast::<u8>(), RECORD_FIXED) };
    [fixed, tail].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_libc_makedev() {
        for (major, minor) in [(8u32, 1u32), (259, 3), (0, 27), (4095, 0xf_ffff), (1, 256)] {
            let kdev = (major << 20) | minor;
            assert_eq!(
                user_dev(kdev),
                libc::makedev(major, minor),
                "{major}:{minor}"
            );
        }
    }

    #[test]
    fn variable_parts_follow_the_fixed_part_in_order() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut rec: ExecRecord = unsafe { std::mem::zeroed() };
        rec.flags = flags::HEADER | flags::CANDIDATE;
        (
            rec.header_len,
            rec.args_len,
            rec.path_len,
            rec.parent_path_len,
        ) = (4, 5, 6, 3);
        let exec = decode(&encode(&rec, b"\x7fELFa\0bc\0/tmp/x/sh")).unwrap();
        assert_eq!(exec.header.as_deref(), Some(&b"\x7fELF"[..]));
        assert_eq!(exec.args, ["a", "bc"]);
        assert_eq!(exec.path, "/tmp/x");
        assert_eq!(exec.parent_path.as_deref(), Some("/sh"));
    }

    #[test]
    fn the_cgroup_path_comes_leaf_first() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut rec: ExecRecord = unsafe { std::mem::zeroed() };
        rec.path_len = 2;
        rec.cgroup_id = 77;
        rec.cgroup_path_len = 13;
        (rec.vpid, rec.parent_vpid, rec.ns_net) = (2, 1, 4_026_532_000);
        let exec = decode(&encode(&rec, b"/xinner\0docker\0")).unwrap();
        assert_eq!(exec.path, "/x");
        assert_eq!(
            exec.cgroup,
            Some(Cgroup {
                id: 77,
                path: Some("/docker/inner".into()),
                truncated: false
            })
        );
        assert_eq!((exec.vpid, exec.parent_vpid), (2, 1));
        assert_eq!(exec.namespaces[2], 4_026_532_000);
        // The root cgroup has no name; a walk that read nothing has no path.
        assert_eq!(cgroup_path(b"", false).as_deref(), Some("/"));
        assert_eq!(cgroup_path(b"", true), None);
        assert_eq!(cgroup_path(b"leaf\0", true).as_deref(), Some("/leaf"));
        // No cgroup read: none reported.
        rec.cgroup_id = 0;
        rec.cgroup_path_len = 0;
        assert_eq!(decode(&encode(&rec, b"/x")).unwrap().cgroup, None);
    }

    #[test]
    fn a_cut_short_record_is_an_error_naming_the_part() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut rec: ExecRecord = unsafe { std::mem::zeroed() };
        rec.path_len = 10;
        let err = decode(&encode(&rec, b"/tmp")).unwrap_err().to_string();
        assert!(err.contains("path") && err.contains("10 bytes"), "{err}");
        assert!(decode(&[0; 3]).is_err());
    }

    #[test]
    fn a_refusal_names_a_file_without_links_as_the_walk_does() {
        // SAFETY: all-zero is a valid ExecRecord.
        let mut rec: ExecRecord = unsafe { std::mem::zeroed() };
        rec.flags = flags::DENIED | flags::PATH_DISCONNECTED;
        rec.path_len = 18;
        let exec = decode(&encode(&rec, b"/memfd:x (deleted)")).unwrap();
        assert!(exec.denied && exec.prevented() && !exec.killed);
        assert_eq!(exec.path, "/memfd:x");
        assert!(exec.is_memfd());
        // A linked file keeps its name, however it ends.
        rec.flags = flags::DENIED;
        rec.path_len = 16;
        let exec = decode(&encode(&rec, b"/tmp/a (deleted)")).unwrap();
        assert_eq!(exec.path, "/tmp/a (deleted)");
    }

    #[test]
    fn args_split_keeps_empty_and_cut_strings() {
        assert_eq!(split_args(b"a\0\0b\0"), ["a", "", "b"]);
        assert_eq!(split_args(b"a\0bc"), ["a", "bc"]);
        assert!(split_args(b"").is_empty());
    }
}
