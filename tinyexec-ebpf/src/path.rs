//! Rebuilding the executed file's absolute path from the dentries and mounts
//! the kernel opened, the way `d_absolute_path()` does, not from the string
//! given to execve.
//!
//! The entry reads where each walk starts ([`start`]); the walk itself runs
//! in a stage of its own.
//!
//! Verifier cost: the walk is a bounded loop, checked once per level. Where
//! the path starts (`pos`) and its flags live in memory (`Carry`), not in
//! registers: a register carried from level to level with a different range
//! on each way through a level would keep the verifier from recognising the
//! ways as equivalent, and their number would multiply with every level.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use tinyexec_ebpf::{
    Carry, ExecRecord, NAME_MAX, PATH_BUF, PATH_MAX, PATH_SCRATCH, WalkStart, flags,
};

use crate::kernel::{Reader, Window, off, read};

#[inline(always)]
fn pos_of(carry: *mut Carry) -> usize {
    // Never above PATH_MAX; the mask shows the verifier a bound.
    (unsafe { core::ptr::read_volatile(&raw const (*carry).walk_pos) } as usize)
        & (2 * PATH_MAX - 1)
}

#[inline(always)]
fn set_pos(carry: *mut Carry, pos: usize) {
    unsafe { core::ptr::write_volatile(&raw mut (*carry).walk_pos, pos as u32) };
}

#[inline(always)]
fn set_flags(carry: *mut Carry, value: u32) {
    unsafe { core::ptr::write_volatile(&raw mut (*carry).walk_flags, value) };
}

/// Where `file`'s walk starts (all zero for no file), read by the entry
/// (with typed loads where it can: see `kernel::Reader`).
#[inline(always)]
pub(crate) fn start<R: Reader>(r: R, fl: &mut u32, file: usize) -> WalkStart {
    if file == 0 {
        return WalkStart::default();
    }
    let dentry: usize = r.get(fl, file, off!(file_path_dentry));
    let mnt: usize = r.get(fl, file, off!(file_path_mnt));
    let root: usize = r.get(fl, mnt, off!(vfsmount_root));
    WalkStart {
        dentry: dentry as u64,
        mnt: mnt as u64,
        root: root as u64,
    }
}

/// Walks path `which` of the carry (0: the executed file, 1: the parent's
/// executable) into its path scratch slot and notes its length and flags;
/// returns them.
#[inline(always)]
pub(crate) unsafe fn walk_into(work: *mut u8, carry: *mut Carry, which: usize) -> (u32, u32) {
    let rec: *mut ExecRecord = work.cast();
    let buf: *mut [u8; PATH_BUF] = unsafe { work.add(PATH_SCRATCH + which * PATH_BUF).cast() };
    let from = unsafe { core::ptr::read_volatile(&raw const (*carry).walks[which & 1]) };
    let (start, path_flags) = if from.dentry == 0 {
        (PATH_MAX as u32, 0)
    } else {
        unsafe { walk(buf, carry, from) }
    };
    let len = PATH_MAX as u32 - start.min(PATH_MAX as u32);
    unsafe {
        if which == 0 {
            (*rec).path_len = len;
            (*rec).flags |= path_flags;
        } else {
            (*rec).parent_path_len = len;
            (*rec).parent_path_flags = path_flags;
        }
    }
    (len, path_flags)
}

/// Walks from the file's dentry up to the global root, writing components
/// backwards so the path ends at `PATH_MAX`. Returns where it starts and the
/// path flags (truncated, disconnected).
#[inline(always)]
unsafe fn walk(buf: *mut [u8; PATH_BUF], carry: *mut Carry, from: WalkStart) -> (u32, u32) {
    let buf: *mut u8 = buf.cast();
    set_pos(carry, PATH_MAX);
    set_flags(carry, flags::PATH_TRUNCATED);
    let mut dentry = from.dentry as usize;
    let mount_mnt = off!(mount_mnt);
    let mut mnt = (from.mnt as usize).wrapping_sub(mount_mnt);
    // The mount's root, read again only when the walk crosses to another mount.
    let mut root = from.root as usize;
    let depth = unsafe { core::ptr::read_volatile(&raw const crate::maps::CONFIG.max_path_depth) };
    for _ in 0..depth {
        // The dentry's parent and name in one read.
        let mut failed = 0u32;
        let d = Window::read(&mut failed, dentry, off!(dentry_window));
        if failed != 0 {
            break;
        }
        let at = |field: usize| field - off!(dentry_window);
        let parent: usize = d.get(at(off!(dentry_parent)));
        let name = Name {
            len: d.get(at(off!(dentry_name_len))),
            ptr: d.get(at(off!(dentry_name_ptr))),
        };
        if dentry == root || dentry == parent {
            if dentry != root {
                // Not reachable from any root (memfd and other pseudo files):
                // its own name is all the path there is.
                if prepend(buf, carry, name) {
                    set_flags(carry, flags::PATH_DISCONNECTED);
                }
                break;
            }
            let Ok(mnt_parent) = read::<usize>(mnt, off!(mount_parent)) else {
                break;
            };
            if mnt_parent == mnt {
                set_flags(carry, 0);
                break;
            }
            // Cross to the mount point in the parent mount.
            let (Ok(mountpoint), Ok(parent_root)) = (
                read::<usize>(mnt, off!(mount_mountpoint)),
                read::<usize>(mnt_parent + mount_mnt, off!(vfsmount_root)),
            ) else {
                break;
            };
            dentry = mountpoint;
            mnt = mnt_parent;
            root = parent_root;
            continue;
        }
        if !prepend(buf, carry, name) {
            break;
        }
        dentry = parent;
    }
    let mut pos = pos_of(carry);
    let result = unsafe { core::ptr::read_volatile(&raw const (*carry).walk_flags) };
    if pos >= PATH_MAX && result != flags::PATH_TRUNCATED {
        // The root itself.
        pos = PATH_MAX - 1;
        unsafe { *buf.add(pos) = b'/' };
    }
    (pos as u32, result)
}

/// A dentry's name: `d_name`'s length and bytes (not NUL-terminated for us).
#[derive(Clone, Copy)]
struct Name {
    len: u32,
    ptr: usize,
}

/// Writes "/name" in front of the path so far. False when it does not fit
/// or cannot be read.
#[inline(always)]
fn prepend(buf: *mut u8, carry: *mut Carry, name: Name) -> bool {
    let Name { len, ptr: name } = name;
    let len = len as usize;
    let pos = pos_of(carry);
    if len == 0 || len > NAME_MAX || pos < len + 1 || pos > PATH_MAX {
        return false;
    }
    // The masks are no-ops on the values that reach them; they let the
    // verifier prove both writes stay inside `path` (PATH_MAX + NAME_MAX + 1).
    let start = (pos - len) & (PATH_MAX - 1);
    let r = unsafe {
        bpf_probe_read_kernel(
            buf.add(start).cast(),
            (len & NAME_MAX) as u32,
            name as *const _,
        )
    };
    if r != 0 {
        return false;
    }
    let slash = (start.wrapping_sub(1)) & (PATH_MAX - 1);
    unsafe { *buf.add(slash) = b'/' };
    set_pos(carry, slash);
    true
}
