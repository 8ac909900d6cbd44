//! Checks made before touching BPF, so the common failures get a clear cause and fix.

use std::{fs, path::Path};

use anyhow::{Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Loading tracing programs needs CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
pub fn check_privileges() -> Result<()> {
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
pub fn check_btf(path: &Path) -> Result<()> {
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

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones to the memory
/// cgroup. Raising it is best effort: failing is only worth a warning.
pub fn raise_memlock() -> Option<String> {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    (ret != 0).then(|| {
        format!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels that account BPF memory to the memory cgroup (5.11+)",
            std::io::Error::last_os_error()
        )
    })
}
