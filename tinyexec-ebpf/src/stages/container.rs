//! Which container an exec ran in: the task's namespaces ([`namespaces`],
//! which the entry calls: it reads them with typed loads), its pids as its
//! own pid namespace numbers them, and its cgroup (id and path) in the
//! hierarchy user space chose. This stage runs for every record sent; an
//! ordinary exec in alerts-only mode never gets here.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel_str, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tinyexec_ebpf::{
    CGROUP_DEPTH, CGROUP_PATH_MAX, CGROUP_SCRATCH, Carry, ExecRecord, NAME_MAX, cgroup_mode, flags,
    stage,
};

use crate::{
    kernel::{Probed, Reader, off, read, read_or_flag},
    log::debug_if,
    maps::{CONFIG, next_stage, work_and_carry},
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]
pub fn tinyexec_container(ctx: RawTracePointContext) -> i32 {
    if let Some((work, carry)) = work_and_carry() {
        let rec: *mut ExecRecord = work.cast();
        let fl = unsafe { fill(rec, work.add(CGROUP_SCRATCH), &*carry) };
        debug_if!(
            fl & flags::CGROUP_PATH_TRUNCATED != 0,
            &ctx,
            "pid {}: the cgroup path was cut short: {} bytes kept (deeper than {} levels, \
             longer than {} bytes, or a name unreadable)",
            unsafe { (*rec).pid },
            unsafe { (*rec).cgroup_path_len },
            CGROUP_DEPTH,
            CGROUP_PATH_MAX as u32
        );
        debug_if!(
            fl & flags::READ_ERROR != 0,
            &ctx,
            "pid {}: a kernel read failed: pids or cgroup are zero",
            unsafe { (*rec).pid }
        );
    }
    next_stage::<{ stage::EMIT }>(&ctx);
    0
}

/// Deepest pid namespace nesting the kernel allows (`MAX_PID_NS_LEVEL`).
const MAX_PID_NS_LEVEL: u32 = 32;

/// Fills the record's namespace, pid and cgroup fields, and writes the
/// cgroup path into `path` (see [`cgroup_path`]); returns the flags it added.
#[inline(always)]
unsafe fn fill(rec: *mut ExecRecord, path: *mut u8, carry: &Carry) -> u32 {
    let (task, parent) = (carry.task as usize, carry.parent as usize);
    let mut fl = 0u32;
    unsafe {
        // The work area holds the previous record's values: nothing stale stays.
        (*rec).vpid = 0;
        (*rec).parent_vpid = 0;
        (*rec).ns_pid = 0;
        pids(rec, task, parent, &mut fl);
        let (id, len) = cgroup(path, task, &mut fl);
        (*rec).cgroup_id = id;
        (*rec).cgroup_path_len = len;
        (*rec).flags |= fl;
    }
    fl
}

/// `ns.inum` of the namespace at `ns` (0, flagged, when unreadable).
#[inline(always)]
fn inum<R: Reader>(r: R, fl: &mut u32, ns: usize, offset: usize) -> u32 {
    if ns == 0 {
        *fl |= flags::READ_ERROR;
        return 0;
    }
    r.get(fl, ns, offset)
}

/// The namespaces' inode numbers. The entry reads them: there they are
/// typed loads (`kernel::Typed`), where this stage would need a helper
/// call each.
#[inline(always)]
pub(crate) unsafe fn namespaces<R: Reader>(
    r: R,
    rec: *mut ExecRecord,
    task: usize,
    cred: usize,
    fl: &mut u32,
) {
    let nsproxy: usize = r.get(fl, task, off!(task_nsproxy));
    let member = |fl: &mut u32, field: usize| -> usize { r.get(fl, nsproxy, field) };
    let user_ns: usize = r.get(fl, cred, off!(cred_user_ns));
    unsafe {
        let ns = member(fl, off!(nsproxy_uts));
        (*rec).ns_uts = inum(r, fl, ns, off!(uts_inum));
        let ns = member(fl, off!(nsproxy_mnt));
        (*rec).ns_mnt = inum(r, fl, ns, off!(mnt_inum));
        let ns = member(fl, off!(nsproxy_net));
        (*rec).ns_net = inum(r, fl, ns, off!(net_inum));
        let ns = member(fl, off!(nsproxy_cgroup));
        (*rec).ns_cgroup = inum(r, fl, ns, off!(cgroup_ns_inum));
        (*rec).ns_user = inum(r, fl, user_ns, off!(user_inum));
    }
}

/// The `struct upid` at `level` of `pid`'s numbers, in one read: its
/// number and its namespace.
#[inline(always)]
fn upid(pid: usize, level: u32) -> Result<(u32, usize), i32> {
    let at = pid + off!(pid_numbers) + (level as usize) * off!(upid_size);
    let u: [u8; UPID_READ] = read(at, 0)?;
    // The offsets are below UPID_READ (checked by user space); the masks show it.
    let field = |o: usize| unsafe { u.as_ptr().add(o & (UPID_READ - 1)) };
    let nr = unsafe { core::ptr::read_unaligned(field(off!(upid_nr)).cast::<u32>()) };
    let ns = unsafe { core::ptr::read_unaligned(field(off!(upid_ns)).cast::<usize>()) };
    Ok((nr, ns))
}

/// Bytes of `struct upid` read: `int nr` and `struct pid_namespace *ns`.
const UPID_READ: usize = 16;

/// The process's pid namespace (the one its pid lives in, as
/// `/proc/PID/ns/pid` shows) and its pids as that namespace numbers them.
#[inline(always)]
unsafe fn pids(rec: *mut ExecRecord, task: usize, parent: usize, fl: &mut u32) {
    let pid: usize = read_or_flag(fl, task, off!(task_thread_pid));
    let level: u32 = read_or_flag(fl, pid, off!(pid_level));
    if pid == 0 || level > MAX_PID_NS_LEVEL {
        *fl |= flags::READ_ERROR;
        return;
    }
    let Ok((vpid, ns)) = upid(pid, level) else {
        *fl |= flags::READ_ERROR;
        return;
    };
    // The parent's number at our level, when it lives in our namespace
    // (`task_tgid_nr_ns`); outside it, the parent has no number there.
    let mut parent_vpid = 0u32;
    if let Ok(ppid) = read::<usize>(parent, off!(task_thread_pid))
        && let Ok(plevel) = read::<u32>(ppid, off!(pid_level))
        && plevel >= level
        && let Ok((nr, pns)) = upid(ppid, level)
        && pns == ns
    {
        parent_vpid = nr;
    }
    unsafe {
        (*rec).vpid = vpid;
        (*rec).parent_vpid = parent_vpid;
        (*rec).ns_pid = inum(Probed, fl, ns, off!(pid_ns_inum));
    }
}

/// The task's cgroup in the configured hierarchy: its id and the length of
/// its path, written into `path`. (0, 0) when no hierarchy is configured.
#[inline(always)]
fn cgroup(path: *mut u8, task: usize, fl: &mut u32) -> (u64, u32) {
    let mode = unsafe { core::ptr::read_volatile(&raw const CONFIG.cgroup_mode) };
    if mode == cgroup_mode::NONE {
        return (0, 0);
    }
    let cset: usize = read_or_flag(fl, task, off!(task_cgroups));
    let cgrp: usize = if mode == cgroup_mode::UNIFIED {
        read_or_flag(fl, cset, off!(css_set_dfl_cgrp))
    } else {
        let subsys = unsafe { core::ptr::read_volatile(&raw const CONFIG.cgroup_subsys) };
        let css: usize = read_or_flag(fl, cset, off!(css_set_subsys) + subsys as usize * 8);
        read_or_flag(fl, css, off!(css_cgroup))
    };
    let kn: usize = read_or_flag(fl, cgrp, off!(cgroup_kn));
    if kn == 0 {
        *fl |= flags::READ_ERROR | flags::CGROUP_PATH_TRUNCATED;
        return (0, 0);
    }
    let id: u64 = read_or_flag(fl, kn, off!(kernfs_id));
    (id, cgroup_path(path, kn, fl))
}

/// Copies the names of `kn` and its ancestors, up to the hierarchy's root
/// (whose name is empty), leaf first, each with its NUL; returns the bytes
/// written. Leaf first: a path too long keeps the container's part.
#[inline(always)]
fn cgroup_path(path: *mut u8, mut kn: usize, fl: &mut u32) -> u32 {
    let mut pos = 0usize;
    let mut reached_root = false;
    for _ in 0..CGROUP_DEPTH {
        let Ok(parent) = read::<usize>(kn, off!(kernfs_parent)) else {
            break;
        };
        if parent == 0 {
            reached_root = true;
            break;
        }
        let Ok(name) = read::<usize>(kn, off!(kernfs_name)) else {
            break;
        };
        if pos >= CGROUP_PATH_MAX {
            break;
        }
        // The mask is a no-op on the values that reach it; with the size it
        // bounds the copy inside the path's part of the work area.
        let at = pos & (CGROUP_PATH_MAX - 1);
        let r = unsafe {
            bpf_probe_read_kernel_str(path.add(at).cast(), (NAME_MAX + 1) as u32, name as *const _)
        };
        if r <= 0 || at + r as usize > CGROUP_PATH_MAX {
            break;
        }
        pos = at + r as usize;
        kn = parent;
    }
    if !reached_root {
        *fl |= flags::CGROUP_PATH_TRUNCATED;
    }
    pos as u32
}
