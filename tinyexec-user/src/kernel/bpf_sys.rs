//! The few bpf(2) commands the loader issues itself (aya's own loader is not
//! used: see `loader.rs`). Each attribute struct is the leading part of
//! `union bpf_attr` for its command; the kernel reads the fields a shorter
//! attribute omits as zero.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use aya_obj::generated::bpf_insn;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_MAP_FREEZE: libc::c_long = 22;

pub const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
pub const BPF_PROG_TYPE_TRACING: u32 = 26;
pub const BPF_PROG_TYPE_LSM: u32 = 29;
/// `expected_attach_type` of a BPF LSM program.
pub const BPF_LSM_MAC: u32 = 27;
/// `expected_attach_type` of a BTF-typed tracepoint program.
pub const BPF_TRACE_RAW_TP: u32 = 23;
/// Verifier log levels: the trace of every instruction, and the statistics.
pub const BPF_LOG_LEVEL1: u32 = 1;
pub const BPF_LOG_STATS: u32 = 4;
/// The kernel refuses log buffers above this (`UINT_MAX >> 8` before 6.4).
pub const LOG_MAX: usize = (u32::MAX >> 8) as usize;

fn sys_bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    call(cmd, std::ptr::from_ref(attr).cast(), size_of::<T>())
}

/// For the commands whose answer the kernel writes into the attribute.
fn sys_bpf_mut<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    call(
        cmd,
        std::ptr::from_mut(attr).cast_const().cast(),
        size_of::<T>(),
    )
}

fn call(cmd: libc::c_long, attr: *const libc::c_void, size: usize) -> io::Result<libc::c_long> {
    // SAFETY: `attr` points to a valid, initialised bpf_attr prefix of `size`
    // bytes, writable when the command writes it; every pointer inside it
    // outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A descriptor the kernel just returned, owned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `map[key] = value`, both as raw bytes of the map's key and value sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd().cast_unsigned(),
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags: 0,
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &attr).map(drop)
}

/// Removes `map[key]` (the key as raw bytes of the map's key size).
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd().cast_unsigned(),
        _pad: 0,
        key: key.as_ptr() as u64,
        value: 0,
        flags: 0,
    };
    sys_bpf(BPF_MAP_DELETE_ELEM, &attr).map(drop)
}

#[repr(C)]
struct MapFdAttr {
    map_fd: u32,
}

/// Makes a map read-only for user space, so the verifier may treat its
/// contents (the offsets, the configuration) as constants.
pub fn map_freeze(map: BorrowedFd<'_>) -> io::Result<()> {
    sys_bpf(
        BPF_MAP_FREEZE,
        &MapFdAttr {
            map_fd: map.as_raw_fd().cast_unsigned(),
        },
    )
    .map(drop)
}

#[repr(C)]
struct NextIdAttr {
    start_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The ids of every map in the kernel. Walks the ids only, opens no map
/// (the kernel wants `CAP_SYS_ADMIN` for it: `EPERM` without).
pub fn map_ids() -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut attr = NextIdAttr {
        start_id: 0,
        next_id: 0,
        open_flags: 0,
    };
    loop {
        match sys_bpf_mut(BPF_MAP_GET_NEXT_ID, &mut attr) {
            Ok(_) => {
                ids.push(attr.next_id);
                attr.start_id = attr.next_id;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(ids),
            Err(e) => return Err(e),
        }
    }
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// How a program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgKind {
    RawTracepoint,
    /// A BTF-typed tracepoint on the kernel's type `attach_btf_id`
    /// (`btf_trace_<tracepoint>`), whose arguments the verifier types.
    BtfTracepoint {
        attach_btf_id: u32,
    },
    /// A BPF LSM program on the kernel's function `attach_btf_id`
    /// (`bpf_lsm_<hook>`), attached like a typed tracepoint (no name).
    Lsm {
        attach_btf_id: u32,
    },
}

/// Loads a program with the verifier's log at `log_level` into `log`.
/// Returns the program's descriptor, or the error with whatever the log holds.
pub fn prog_load(
    kind: ProgKind,
    name: &str,
    insns: &[bpf_insn],
    license: &CStr,
    log_level: u32,
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    // The kernel keeps 15 bytes of a name, of [A-Za-z0-9_.] only.
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let (prog_type, expected_attach_type, attach_btf_id) = match kind {
        ProgKind::RawTracepoint => (BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0),
        ProgKind::BtfTracepoint { attach_btf_id } => {
            (BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, attach_btf_id)
        }
        ProgKind::Lsm { attach_btf_id } => (BPF_PROG_TYPE_LSM, BPF_LSM_MAC, attach_btf_id),
    };
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::other("program too long"))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size: u32::try_from(log.len()).unwrap_or(u32::MAX),
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type,
        prog_btf_fd: 0,
        func_info_rec_size: 0,
        func_info: 0,
        func_info_cnt: 0,
        line_info_rec_size: 0,
        line_info: 0,
        line_info_cnt: 0,
        attach_btf_id,
    };
    owned(sys_bpf(BPF_PROG_LOAD, &attr)?)
}

#[repr(C)]
struct RawTracepointOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// Attaches a tracepoint program: a raw one to the tracepoint `name`, a
/// BTF-typed one or an LSM program (no name) where its load said. The link lives as long as
/// the descriptor.
pub fn raw_tracepoint_open(name: Option<&CStr>, prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let attr = RawTracepointOpenAttr {
        name: name.map_or(0, |n| n.as_ptr() as u64),
        prog_fd: prog.as_raw_fd().cast_unsigned(),
        _pad: 0,
    };
    owned(sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &attr)?)
}

/// The text a log buffer holds, up to its NUL.
pub fn log_text(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).into_owned()
}

/// "processed 12345 insns (limit 1000000) ..." -> 12345: the verifier's own
/// count of the instructions it processed (`BPF_LOG_STATS`), on every kernel;
/// `bpf_prog_info.verified_insns` reports the same only from 5.16 on.
pub fn processed_insns(log: &str) -> Option<u32> {
    log.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix("processed ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_statistics_line() {
        let log = "func#0 @0\nprocessed 20871 insns (limit 1000000) max_states_per_insn 4 \
                   total_states 1205 peak_states 623 mark_read 61\n";
        assert_eq!(super::processed_insns(log), Some(20871));
        assert_eq!(super::processed_insns("nothing"), None);
        assert_eq!(super::log_text(b"ab\0cd"), "ab");
    }
}
