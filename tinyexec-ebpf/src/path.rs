//! Rebuilding the executed file's absolute path from the dentries and mounts
//! the kernel opened, the way `d_absolute_path()` does, not from the string
//! given to execve.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use tinyexec_ebpf::{NAME_MAX, PATH_BUF, PATH_MAX, flags};

use crate::kernel::{off, read};

/// Walks from the file's dentry up to the global root, writing components
/// backwards so the path ends at `PATH_MAX`. Returns where it starts and the
/// path flags (truncated, disconnected).
#[inline(always)]
pub(crate) unsafe fn walk(buf: *mut [u8; PATH_BUF], file: usize) -> (u32, u32) {
    let buf: *mut u8 = buf.cast();
    let mut pos = PATH_MAX;
    let (Ok(mut dentry), Ok(mut vfsmnt)) = (
        read::<usize>(file, off!(file_path_dentry)),
        read::<usize>(file, off!(file_path_mnt)),
    ) else {
        return (pos as u32, flags::PATH_TRUNCATED);
    };
    let mount_mnt = off!(mount_mnt);
    let mut mnt = vfsmnt.wrapping_sub(mount_mnt);
    let depth =
        unsafe { core::ptr::read_volatile(&raw const crate::program::CONFIG.max_path_depth) };
    let mut result = flags::PATH_TRUNCATED;
    for _ in 0..depth {
        let (Ok(root), Ok(parent)) = (
            read::<usize>(vfsmnt, off!(vfsmount_root)),
            read::<usize>(dentry, off!(dentry_parent)),
        ) else {
            break;
        };
        if dentry == root || dentry == parent {
            if dentry != root {
                // Not reachable from any root (memfd and other pseudo files):
                // its own name is all the path there is.
                if prepend(buf, &mut pos, dentry) {
                    result = flags::PATH_DISCONNECTED;
                }
                break;
            }
            let Ok(mnt_parent) = read::<usize>(mnt, off!(mount_parent)) else {
                break;
            };
            if mnt_parent == mnt {
                result = 0;
                break;
            }
            // Cross to the mount point in the parent mount.
            let Ok(mountpoint) = read::<usize>(mnt, off!(mount_mountpoint)) else {
                break;
            };
            dentry = mountpoint;
            mnt = mnt_parent;
            vfsmnt = mnt + mount_mnt;
            continue;
        }
        if !prepend(buf, &mut pos, dentry) {
            break;
        }
        dentry = parent;
    }
    if pos == PATH_MAX && result != flags::PATH_TRUNCATED {
        // The root itself.
        pos -= 1;
        unsafe { *buf.add(pos) = b'/' };
    }
    (pos as u32, result)
}

/// Writes "/name" of `dentry` in front of `buf[pos..]`. False when it does not fit or cannot be read.
#[inline(always)]
fn prepend(buf: *mut u8, pos: &mut usize, dentry: usize) -> bool {
    let (Ok(len), Ok(name)) = (
        read::<u32>(dentry, off!(dentry_name_len)),
        read::<usize>(dentry, off!(dentry_name_ptr)),
    ) else {
        return false;
    };
    let len = len as usize;
    if len == 0 || len > NAME_MAX || *pos < len + 1 {
        return false;
    }
    // The masks are no-ops on the values that reach them; they let the
    // verifier prove both writes stay inside `path` (PATH_MAX + NAME_MAX + 1).
    let start = (*pos - len) & (PATH_MAX - 1);
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
    *pos = slash;
    true
}
