//! Checks made before touching BPF, so the common failures get a clear cause and fix.

use std::{fs, path::Path};

use anyhow::{Result, bail};
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
    util::KernelVersion,
};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Loading tracing programs needs `CAP_BPF` with `CAP_PERFMON`, or `CAP_SYS_ADMIN`.
pub fn require_privileges() -> Result<()> {
    let caps = effective_caps().unwrap_or(0);
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    bail!(
        "insufficient privileges (euid {euid}, CapEff {caps:#x}): loading the exec tracepoint needs \
         root, or CAP_BPF and CAP_PERFMON; run it with sudo or grant those capabilities"
    )
}

/// The kernel's BTF must exist: the programs' struct offsets come from it.
pub fn require_btf(path: &Path) -> Result<()> {
    if let Err(err) = fs::metadata(path) {
        bail!(
            "cannot read kernel BTF at {}: {err}. tinyexec needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (it provides /sys/kernel/btf/vmlinux); pass --btf FILE \
             to use BTF from elsewhere",
            path.display()
        );
    }
    Ok(())
}

fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// Refuses a kernel that lacks what the programs need, naming what is missing,
/// before anything is loaded. A probe that cannot run says nothing: the load
/// itself then gives the kernel's words.
pub fn require_kernel() -> Result<()> {
    let missing = [
        (
            is_map_supported(MapType::RingBuf).ok(),
            "BPF ring buffers (BPF_MAP_TYPE_RINGBUF, Linux 5.8)",
        ),
        (
            is_program_supported(ProgramType::RawTracePoint).ok(),
            "raw tracepoint programs (BPF_PROG_TYPE_RAW_TRACEPOINT, Linux 4.17)",
        ),
    ];
    for (supported, what) in missing {
        if supported == Some(false) {
            bail!(
                "this kernel ({}) has no {what}: tinyexec needs Linux 5.8 or later",
                release()
            );
        }
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to `RLIMIT_MEMLOCK`; newer ones to the memory
/// cgroup. Raising it is best effort: failing is only worth a warning, a
/// louder one where the limit counts.
pub fn raise_memlock() -> Option<String> {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) };
    if ret == 0 {
        return None;
    }
    let err = std::io::Error::last_os_error();
    let charged = KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(5, 11, 0));
    Some(if charged {
        format!(
            "could not raise RLIMIT_MEMLOCK ({err}): this kernel ({}) charges BPF memory to it, \
             so loading may fail; allow it (root with CAP_SYS_RESOURCE, `ulimit -l unlimited`, \
             or LimitMEMLOCK=infinity in the systemd unit)",
            release()
        )
    } else {
        format!(
            "could not raise RLIMIT_MEMLOCK ({err}); fine on kernels that account BPF memory to the memory cgroup (5.11+)"
        )
    })
}
