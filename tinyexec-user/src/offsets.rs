//! The kernel struct offsets the eBPF programs need, read from the running
//! kernel's BTF at load time (Rust eBPF has no CO-RE relocations here).

use anyhow::{Context as _, Result, bail};
use tinyexec_ebpf::{ABSENT, COMM_LEN, HEADER_LEN, Offsets};

use crate::btf::Btf;

/// Offset of `strukt.path`, checking that the kernel's field has the width the programs read.
fn field(btf: &Btf, strukt: &str, path: &str, width: u32) -> Result<u32> {
    let offset = btf
        .member_offset(strukt, path)
        .with_context(|| format!("kernel BTF has no usable `{strukt}.{path}`"))?;
    let size = btf.member_size(strukt, path)?;
    if size != width {
        bail!("kernel BTF: `{strukt}.{path}` is {size} bytes, tinyexec reads {width}");
    }
    Ok(offset)
}

/// Resolves every field in [`Offsets`] from `btf`.
pub fn resolve(btf: &Btf) -> Result<Offsets> {
    const PTR: u32 = 8;
    let f = |s, p, w| field(btf, s, p, w);
    Ok(Offsets {
        task_tgid: f("task_struct", "tgid", 4)?,
        task_real_parent: f("task_struct", "real_parent", PTR)?,
        task_group_leader: f("task_struct", "group_leader", PTR)?,
        task_cred: f("task_struct", "cred", PTR)?,
        task_mm: f("task_struct", "mm", PTR)?,
        task_comm: f("task_struct", "comm", COMM_LEN as u32)?,
        // Only with CONFIG_AUDIT; its absence is not an error.
        task_loginuid: f("task_struct", "loginuid.val", 4).unwrap_or(ABSENT),
        cred_uid: f("cred", "uid.val", 4)?,
        cred_gid: f("cred", "gid.val", 4)?,
        cred_euid: f("cred", "euid.val", 4)?,
        cred_egid: f("cred", "egid.val", 4)?,
        mm_arg_start: f("mm_struct", "arg_start", PTR)?,
        mm_arg_end: f("mm_struct", "arg_end", PTR)?,
        mm_exe_file: f("mm_struct", "exe_file", PTR)?,
        bprm_file: f("linux_binprm", "file", PTR)?,
        bprm_buf: f("linux_binprm", "buf", HEADER_LEN as u32)?,
        bprm_argc: f("linux_binprm", "argc", 4)?,
        file_path_mnt: f("file", "f_path.mnt", PTR)?,
        file_path_dentry: f("file", "f_path.dentry", PTR)?,
        file_inode: f("file", "f_inode", PTR)?,
        inode_mode: f("inode", "i_mode", 2)?,
        inode_ino: f("inode", "i_ino", 8)?,
        inode_size: f("inode", "i_size", 8)?,
        inode_nlink: f("inode", "i_nlink", 4)?,
        inode_sb: f("inode", "i_sb", PTR)?,
        sb_dev: f("super_block", "s_dev", 4)?,
        dentry_parent: f("dentry", "d_parent", PTR)?,
        dentry_name_len: f("dentry", "d_name.len", 4)?,
        dentry_name_ptr: f("dentry", "d_name.name", PTR)?,
        mount_mnt: f("mount", "mnt", btf.member_size("mount", "mnt")?)?,
        mount_parent: f("mount", "mnt_parent", PTR)?,
        mount_mountpoint: f("mount", "mnt_mountpoint", PTR)?,
        vfsmount_root: f("vfsmount", "mnt_root", PTR)?,
    })
}
