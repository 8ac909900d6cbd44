//! The kernel struct offsets the eBPF programs need, read from the running
//! kernel's BTF at load time (Rust eBPF has no CO-RE relocations here).

use std::cell::RefCell;

use anyhow::{Context as _, Result, bail};
use tinyexec_ebpf::{ABSENT, COMM_LEN, HEADER_LEN, Offsets, WINDOW};

use crate::kernel::btf::Btf;

/// The kernel's BTF, and every `(struct, member path)` read from it so far:
/// the list of kernel fields tinyexec depends on comes from [`resolve`]
/// itself, so the tests that check them (btf.rs) cannot drift from it.
struct Reader<'a> {
    btf: &'a Btf,
    read: RefCell<Vec<(&'static str, &'static str)>>,
}

impl<'a> Reader<'a> {
    fn new(btf: &'a Btf) -> Self {
        Self {
            btf,
            read: RefCell::new(Vec::new()),
        }
    }

    /// Offset of `strukt.path`; recorded as read when the kernel has it.
    fn offset(&self, strukt: &'static str, path: &'static str) -> Result<u32> {
        let offset = self
            .btf
            .member_offset(strukt, path)
            .with_context(|| format!("kernel BTF has no usable `{strukt}.{path}`"))?;
        self.read.borrow_mut().push((strukt, path));
        Ok(offset)
    }

    /// Offset of `strukt.path`, checking that the kernel's field has the width the programs read.
    fn field(&self, strukt: &'static str, path: &'static str, width: u32) -> Result<u32> {
        let offset = self.offset(strukt, path)?;
        let size = self.btf.member_size(strukt, path)?;
        if size != width {
            bail!("kernel BTF: `{strukt}.{path}` is {size} bytes, tinyexec reads {width}");
        }
        Ok(offset)
    }

    /// The first of `paths` the kernel has, for fields renamed across versions.
    fn first_of(&self, strukt: &'static str, paths: &[(&'static str, &[u32])]) -> Result<u32> {
        for (path, widths) in paths {
            if let Ok(offset) = self.offset(strukt, path) {
                let size = self.btf.member_size(strukt, path)?;
                if !widths.contains(&size) {
                    bail!(
                        "kernel BTF: `{strukt}.{path}` is {size} bytes, tinyexec reads {widths:?}"
                    );
                }
                return Ok(offset);
            }
        }
        let names: Vec<&str> = paths.iter().map(|(p, _)| *p).collect();
        bail!("kernel BTF has none of `{strukt}.{}`", names.join("`, `"))
    }
}

/// Where a [`WINDOW`]-byte read that holds every `(offset, width)` of `fields`
/// starts: on an 8-byte boundary of the struct, so that each field (aligned
/// in the struct) is aligned in the program's 8-byte-aligned buffer and read
/// with one load.
fn window(strukt: &str, fields: &[(&str, u32, u32)]) -> Result<u32> {
    let start = fields.iter().map(|f| f.1).min().unwrap_or(0) & !7;
    let end = fields.iter().map(|f| f.1 + f.2).max().unwrap_or(0);
    let names = || fields.iter().map(|f| f.0).collect::<Vec<_>>().join("`, `");
    if (end - start) as usize > WINDOW {
        bail!(
            "kernel BTF: `{strukt}.{}` span {} bytes, more than the {WINDOW} tinyexec reads at once",
            names(),
            end - start
        );
    }
    if let Some((name, offset, width)) =
        fields.iter().find(|f| f.2 == 0 || (f.1 - start) % f.2 != 0)
    {
        bail!("kernel BTF: `{strukt}.{name}` at byte {offset} is not aligned to its {width} bytes");
    }
    Ok(start)
}

/// Resolves every field in [`Offsets`] from `btf`.
pub fn resolve(btf: &Btf) -> Result<Offsets> {
    read_all(&Reader::new(btf))
}

/// [`resolve`], and every `(struct, member path)` it read from `btf`, in order.
#[cfg(test)]
pub fn resolve_reading(btf: &Btf) -> Result<(Offsets, Vec<(&'static str, &'static str)>)> {
    let r = Reader::new(btf);
    let offsets = read_all(&r)?;
    Ok((offsets, r.read.into_inner()))
}

fn read_all(r: &Reader) -> Result<Offsets> {
    const PTR: u32 = 8;
    let btf = r.btf;
    let f = |s, p, w| r.field(s, p, w);
    let (bprm_file, bprm_filename, bprm_interp) = (
        f("linux_binprm", "file", PTR)?,
        f("linux_binprm", "filename", PTR)?,
        f("linux_binprm", "interp", PTR)?,
    );
    let (inode_nlink, inode_size) = (f("inode", "i_nlink", 4)?, f("inode", "i_size", 8)?);
    let (dentry_parent, dentry_name_len, dentry_name_ptr) = (
        f("dentry", "d_parent", PTR)?,
        f("dentry", "d_name.len", 4)?,
        f("dentry", "d_name.name", PTR)?,
    );
    let (nsproxy_uts, nsproxy_mnt, nsproxy_net, nsproxy_cgroup) = (
        f("nsproxy", "uts_ns", PTR)?,
        f("nsproxy", "mnt_ns", PTR)?,
        f("nsproxy", "net_ns", PTR)?,
        f("nsproxy", "cgroup_ns", PTR)?,
    );
    // `numbers` is a flexible array: its elements' size is the struct's.
    let upid_size = btf.struct_size("upid")?;
    let (upid_nr, upid_ns) = (f("upid", "nr", 4)?, f("upid", "ns", PTR)?);
    // The program reads the first 16 bytes of a `struct upid` at once.
    if upid_size < 16 || upid_nr + 4 > 16 || upid_ns + PTR > 16 {
        bail!(
            "kernel BTF: `struct upid` ({upid_size} bytes, nr at {upid_nr}, ns at {upid_ns}) \
             does not hold both fields in the 16 bytes tinyexec reads"
        );
    }
    Ok(Offsets {
        bprm_window: window(
            "linux_binprm",
            &[
                ("file", bprm_file, PTR),
                ("filename", bprm_filename, PTR),
                ("interp", bprm_interp, PTR),
            ],
        )?,
        inode_window: window(
            "inode",
            &[("i_nlink", inode_nlink, 4), ("i_size", inode_size, 8)],
        )?,
        bprm_file,
        bprm_filename,
        bprm_interp,
        inode_nlink,
        inode_size,
        task_tgid: f("task_struct", "tgid", 4)?,
        task_real_parent: f("task_struct", "real_parent", PTR)?,
        task_group_leader: f("task_struct", "group_leader", PTR)?,
        task_cred: f("task_struct", "cred", PTR)?,
        task_mm: f("task_struct", "mm", PTR)?,
        task_comm: f("task_struct", "comm", u32::try_from(COMM_LEN)?)?,
        // Only with CONFIG_AUDIT; its absence is not an error.
        task_loginuid: f("task_struct", "loginuid.val", 4).unwrap_or(ABSENT),
        cred_uid: f("cred", "uid.val", 4)?,
        cred_gid: f("cred", "gid.val", 4)?,
        cred_euid: f("cred", "euid.val", 4)?,
        cred_egid: f("cred", "egid.val", 4)?,
        mm_arg_start: f("mm_struct", "arg_start", PTR)?,
        mm_arg_end: f("mm_struct", "arg_end", PTR)?,
        mm_exe_file: f("mm_struct", "exe_file", PTR)?,
        bprm_buf: f("linux_binprm", "buf", u32::try_from(HEADER_LEN)?)?,
        bprm_argc: f("linux_binprm", "argc", 4)?,
        file_path_mnt: f("file", "f_path.mnt", PTR)?,
        file_path_dentry: f("file", "f_path.dentry", PTR)?,
        file_inode: f("file", "f_inode", PTR)?,
        inode_mode: f("inode", "i_mode", 2)?,
        inode_ino: f("inode", "i_ino", 8)?,
        inode_sb: f("inode", "i_sb", PTR)?,
        inode_writecount: f("inode", "i_writecount.counter", 4)?,
        // The change time's fields were renamed in 6.6 and split in 6.11.
        inode_ctime_sec: r.first_of(
            "inode",
            &[
                ("i_ctime_sec", &[8]),
                ("__i_ctime.tv_sec", &[8]),
                ("i_ctime.tv_sec", &[8]),
            ],
        )?,
        inode_ctime_nsec: r.first_of(
            "inode",
            &[
                ("i_ctime_nsec", &[4]),
                ("__i_ctime.tv_nsec", &[8]),
                ("i_ctime.tv_nsec", &[8]),
            ],
        )?,
        sb_dev: f("super_block", "s_dev", 4)?,
        dentry_window: window(
            "dentry",
            &[
                ("d_parent", dentry_parent, PTR),
                ("d_name.len", dentry_name_len, 4),
                ("d_name.name", dentry_name_ptr, PTR),
            ],
        )?,
        dentry_parent,
        dentry_name_len,
        dentry_name_ptr,
        mount_mnt: f("mount", "mnt", btf.member_size("mount", "mnt")?)?,
        mount_parent: f("mount", "mnt_parent", PTR)?,
        mount_mountpoint: f("mount", "mnt_mountpoint", PTR)?,
        vfsmount_root: f("vfsmount", "mnt_root", PTR)?,
        task_nsproxy: f("task_struct", "nsproxy", PTR)?,
        task_thread_pid: f("task_struct", "thread_pid", PTR)?,
        task_cgroups: f("task_struct", "cgroups", PTR)?,
        cred_user_ns: f("cred", "user_ns", PTR)?,
        nsproxy_uts,
        nsproxy_mnt,
        nsproxy_net,
        nsproxy_cgroup,
        uts_inum: f("uts_namespace", "ns.inum", 4)?,
        mnt_inum: f("mnt_namespace", "ns.inum", 4)?,
        net_inum: f("net", "ns.inum", 4)?,
        cgroup_ns_inum: f("cgroup_namespace", "ns.inum", 4)?,
        user_inum: f("user_namespace", "ns.inum", 4)?,
        pid_ns_inum: f("pid_namespace", "ns.inum", 4)?,
        pid_level: f("pid", "level", 4)?,
        pid_numbers: r.offset("pid", "numbers")?,
        upid_size,
        upid_nr,
        upid_ns,
        css_set_dfl_cgrp: f("css_set", "dfl_cgrp", PTR)?,
        css_set_subsys: r.offset("css_set", "subsys")?,
        css_cgroup: f("cgroup_subsys_state", "cgroup", PTR)?,
        cgroup_kn: f("cgroup", "kn", PTR)?,
        // Renamed when kernfs made the parent RCU-protected (6.15).
        kernfs_parent: r.first_of("kernfs_node", &[("__parent", &[8]), ("parent", &[8])])?,
        kernfs_name: f("kernfs_node", "name", PTR)?,
        kernfs_id: f("kernfs_node", "id", 8)?,
    })
}
