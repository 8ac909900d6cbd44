//! The floor: an empty program (`r0 = 0; exit`) on `sched_process_exec`,
//! attached beside the sensor during its storms. What the kernel's
//! `bpf_stats` says it costs per exec is what any program there costs on
//! this machine (the clock reads around it, the call through a retpoline),
//! measured on the same execs as the sensor's program; the sensor's own work
//! is its figure less this one.
//!
//! Loaded with the `bpf` system call directly: two instructions need no
//! object file, and a clang or an aya loader in xtask for them would be the
//! whole toolchain for nothing.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

use super::proc::{self, ProgStats};
use crate::cmd::{find_cmd, output_of};

// From include/uapi/linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;

/// `r0 = 0; exit`.
const EMPTY: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

/// The tracepoint's BTF type, which a typed program attaches by.
const TRACE_TYPE: &str = "btf_trace_sched_process_exec";

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
            let link = open(&prog, Some(c"sched_process_exec"))
                .context("attaching the empty program to sched_process_exec")?;
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

/// The tracepoint's type id in the running kernel's BTF (bpftool's dump:
/// `[ID] TYPEDEF 'btf_trace_sched_process_exec' type_id=N`).
fn trace_type_id() -> Result<u32> {
    static ID: OnceLock<Result<u32, String>> = OnceLock::new();
    ID.get_or_init(|| find_trace_type_id().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_trace_type_id() -> Result<u32> {
    let bpftool = find_cmd("bpftool").context("bpftool is not installed")?;
    let dump =
        output_of(Command::new(bpftool).args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"]))
            .context("bpftool btf dump file /sys/kernel/btf/vmlinux")?;
    let want = format!(" TYPEDEF '{TRACE_TYPE}' ");
    for line in dump.lines().filter(|l| l.contains(&want)) {
        if let Some(id) = line
            .strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .and_then(|id| id.parse().ok())
        {
            return Ok(id);
        }
    }
    bail!("no {TRACE_TYPE} in the kernel's BTF")
}
