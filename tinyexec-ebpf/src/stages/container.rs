//! Which container an exec ran in: the task's namespaces, its pids as its
//! own pid namespace numbers them, and its cgroup (id and path) in the
//! hierarchy user space chose. The entry reads what typed loads can reach
//! ([`namespaces`], [`pid_of`], [`cgroup_node`]); this stage, tail-called
//! with plain numbers, what needs a helper call: the pids at a level, and
//! the cgroup's names. It runs for every record sent; an ordinary exec in
//! alerts-only mode never gets here.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel_str, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tinyexec_ebpf::{
    CGROUP_DEPTH, CGROUP_PATH_MAX, CGROUP_SCRATCH, Carry, ExecRecord, NAME_MAX, cgroup_mode, flags,
    stage,
};

use crate::{
    kernel::{Probed, Reader, off, read},
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

/// Fills the record's in-namespace pids, and writes the cgroup path into
/// `path` (see [`cgroup_path`]); returns the flags it added.
#[inline(always)]
unsafe fn fill(rec: *mut ExecRecord, path: *mut u8, carry: &Carry) -> u32 {
    let mut fl = 0u32;
    unsafe {
        // The work area holds the previous record's values: nothing stale stays.
        (*rec).vpid = 0;
        (*rec).parent_vpid = 0;
        (*rec).ns_pid = 0;
        pids(rec, carry, &mut fl);
        (*rec).cgroup_path_len = cgroup_path_of(path, carry.cgroup_kn as usize, &mut fl);
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
    // The inode number of the namespace `nsproxy` points to at `member`.
    let inum_of = |fl: &mut u32, member: usize, offset: usize| {
        let ns: usize = r.get(fl, nsproxy, member);
        inum(r, fl, ns, offset)
    };
    let user_ns: usize = r.get(fl, cred, off!(cred_user_ns));
    unsafe {
        (*rec).ns_uts = inum_of(fl, off!(nsproxy_uts), off!(uts_inum));
        (*rec).ns_mnt = inum_of(fl, off!(nsproxy_mnt), off!(mnt_inum));
        (*rec).ns_net = inum_of(fl, off!(nsproxy_net), off!(net_inum));
        (*rec).ns_cgroup = inum_of(fl, off!(nsproxy_cgroup), off!(cgroup_ns_inum));
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

/// A task's `struct pid` and its level, read by the entry (typed loads
/// where it can); 0 and 0 for no pid.
#[inline(always)]
pub(crate) fn pid_of<R: Reader>(r: R, fl: &mut u32, task: usize) -> (usize, u32) {
    let pid: usize = r.get(fl, task, off!(task_thread_pid));
    if pid == 0 {
        return (0, 0);
    }
    (pid, r.get(fl, pid, off!(pid_level)))
}

/// The process's pid namespace (the one its pid lives in, as
/// `/proc/PID/ns/pid` shows) and its pids as that namespace numbers them.
/// The `struct upid` at a level is a variable offset into `struct pid`,
/// which only a helper call reads: that is why it is done here.
#[inline(always)]
unsafe fn pids(rec: *mut ExecRecord, carry: &Carry, fl: &mut u32) {
    let (pid, level) = (carry.pid as usize, carry.pid_level);
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
    let (ppid, plevel) = (carry.parent_pid as usize, carry.parent_pid_level);
    let mut parent_vpid = 0u32;
    if ppid != 0
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

/// The task's cgroup in the configured hierarchy: its `struct kernfs_node`
/// (0 when no hierarchy is configured), its id into the record. Read by the
/// entry (typed loads where it can).
#[inline(always)]
pub(crate) unsafe fn cgroup_node<R: Reader>(
    r: R,
    rec: *mut ExecRecord,
    task: usize,
    fl: &mut u32,
) -> usize {
    unsafe { (*rec).cgroup_id = 0 };
    let mode = unsafe { core::ptr::read_volatile(&raw const CONFIG.cgroup_mode) };
    if mode == cgroup_mode::NONE {
        return 0;
    }
    let cset: usize = r.get(fl, task, off!(task_cgroups));
    let cgrp: usize = if mode == cgroup_mode::UNIFIED {
        r.get(fl, cset, off!(css_set_dfl_cgrp))
    } else {
        let subsys = unsafe { core::ptr::read_volatile(&raw const CONFIG.cgroup_subsys) };
        let css: usize = r.get(fl, cset, off!(css_set_subsys) + subsys as usize * 8);
        r.get(fl, css, off!(css_cgroup))
    };
    let kn: usize = r.get(fl, cgrp, off!(cgroup_kn));
    if kn != 0 {
        unsafe { (*rec).cgroup_id = r.get(fl, kn, off!(kernfs_id)) };
    }
    kn
}

/// The cgroup path of `kn` (see [`cgroup_path`]) into `path`; its length.
/// A configured hierarchy without a node is a failed read.
#[inline(always)]
fn cgroup_path_of(path: *mut u8, kn: usize, fl: &mut u32) -> u32 {
    let mode = unsafe { core::ptr::read_volatile(&raw const CONFIG.cgroup_mode) };
    if mode == cgroup_mode::NONE {
        return 0;
    }
    if kn == 0 {
        *fl |= flags::READ_ERROR | flags::CGROUP_PATH_TRUNCATED;
        return 0;
    }
    cgroup_path(path, kn, fl)
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
