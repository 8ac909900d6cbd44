//! The floor: an empty program (`r0 = 0; exit`) on `sched_process_exec`.
//! What the kernel's `bpf_stats` says it costs per exec is what any program
//! in its place there costs on this machine (the clock reads around it, the
//! call through a retpoline). The sensor's storms attach one before the
//! sensor and one after it (`sensor.rs`); the sensor's own work is its
//! figure less the one's after it, on the same execs.
//!
//! Loaded with the `bpf` system call directly: two instructions need no
//! object file, and a clang or an aya loader in xtask for them would be the
//! whole toolchain for nothing.

use std::{
    ffi::{CStr, CString},
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::OnceLock,
};

use anyhow::{Context as _, Result};
use tinyexec_ebpf::names;
use tinyexec_harness::btf::{self, KERNEL_BTF};

use super::proc::{self, ProgStats};

// From include/uapi/linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;

/// `r0 = 0; exit`.
const EMPTY: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

/// The empty program, attached while this lives.
pub struct Floor {
    prog: OwnedFd,
    _link: OwnedFd,
}

impl Floor {
    /// The same kind of program as the sensor's entry: typed where the
    /// kernel takes it, a raw tracepoint otherwise.
    pub fn attach() -> Result<Self> {
        let typed = trace_type_id().and_then(|id| {
            let prog = load(BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, id)?;
            let link = open(&prog, None)?;
            Ok((prog, link))
        });
        let (prog, link) = if let Ok(pl) = typed {
            pl
        } else {
            let prog = load(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0)
                .context("loading the empty raw tracepoint program (the bench's floor)")?;
            let tracepoint = CString::new(names::TRACEPOINT)?;
            let link = open(&prog, Some(&tracepoint))
                .with_context(|| format!("attaching the empty program to {}", names::TRACEPOINT))?;
            (prog, link)
        };
        Ok(Self { prog, _link: link })
    }

    /// Its run time and count so far (this process's fdinfo of it).
    pub fn stats(&self) -> ProgStats {
        proc::fd_prog_stats(std::process::id().cast_signed(), self.prog.as_raw_fd())
            .unwrap_or_default()
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<OwnedFd> {
    // SAFETY: the attribute buffer is as large as we say, and the pointers in
    // it point at statics or at locals that outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel handed us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load(prog_type: u32, attach_type: u32, btf_id: u32) -> Result<OwnedFd> {
    static LICENSE: &CStr = c"GPL";
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    a[4..8].copy_from_slice(&(EMPTY.len() as u32).to_ne_bytes());
    a[8..16].copy_from_slice(&(EMPTY.as_ptr() as u64).to_ne_bytes());
    a[16..24].copy_from_slice(&(LICENSE.as_ptr() as u64).to_ne_bytes());
    a[48..53].copy_from_slice(b"floor");
    a[68..72].copy_from_slice(&attach_type.to_ne_bytes());
    a[108..112].copy_from_slice(&btf_id.to_ne_bytes());
    bpf(BPF_PROG_LOAD, &mut a).context("BPF_PROG_LOAD")
}

fn open(prog: &OwnedFd, name: Option<&CStr>) -> Result<OwnedFd> {
    let mut a = [0u8; 128];
    let name = name.map_or(0, |n| n.as_ptr() as u64);
    a[0..8].copy_from_slice(&name.to_ne_bytes());
    a[8..12].copy_from_slice(&prog.as_raw_fd().to_ne_bytes());
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut a).context("BPF_RAW_TRACEPOINT_OPEN")
}

/// The tracepoint's type id in the running kernel's BTF, read once.
fn trace_type_id() -> Result<u32> {
    static ID: OnceLock<Result<u32, String>> = OnceLock::new();
    ID.get_or_init(|| {
        let b = fs::read(KERNEL_BTF).map_err(|e| format!("reading {KERNEL_BTF}: {e}"))?;
        btf::typedef_id(&b, names::TRACEPOINT_TYPE).map_err(|e| format!("{KERNEL_BTF}: {e}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}
