//! Which cgroup hierarchy names a task's cgroup, chosen once at load: the
//! unified (v2) hierarchy when `/sys/fs/cgroup` is one, else a v1 controller's
//! (`pids`, `memory` or `cpu`, the first mounted), the way container runtimes
//! lay out their cgroups on either.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};
use tinyexec_ebpf::cgroup_mode;

use crate::kernel::btf::Btf;

/// Where systemd and every container runtime expect the cgroup file systems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `CGROUP2_SUPER_MAGIC` (statfs `f_type` of a cgroup2 mount).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// The v1 controllers whose hierarchy is used, in order of preference: every
/// runtime creates a container's cgroup in each of them.
const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2, mounted at `mount`.
    Unified { mount: PathBuf },
    /// A v1 controller's hierarchy, its `cgroup_subsys_id` and where it is mounted.
    Controller {
        name: &'static str,
        subsys: u32,
        mount: PathBuf,
    },
    /// Neither: records carry no cgroup.
    None,
}

impl Hierarchy {
    /// What the kernel program reads: [`tinyexec_ebpf::Config::cgroup_mode`] and `cgroup_subsys`.
    pub fn config(&self) -> (u32, u32) {
        match self {
            Self::Unified { .. } => (cgroup_mode::UNIFIED, 0),
            Self::Controller { subsys, .. } => (cgroup_mode::CONTROLLER, *subsys),
            Self::None => (cgroup_mode::NONE, 0),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Unified { mount } => format!("the unified hierarchy ({})", mount.display()),
            Self::Controller { name, mount, .. } => {
                format!("the v1 `{name}` hierarchy ({})", mount.display())
            }
            Self::None => format!(
                "none (neither cgroup2 at {CGROUP_ROOT} nor a v1 {} hierarchy is mounted)",
                CONTROLLERS.join("/")
            ),
        }
    }

    /// `path` of a cgroup in this hierarchy, as a directory of its mount.
    pub fn dir(&self, path: &str) -> Option<PathBuf> {
        let mount = match self {
            Self::Unified { mount } | Self::Controller { mount, .. } => mount,
            Self::None => return None,
        };
        Some(mount.join(path.trim_start_matches('/')))
    }

    /// This hierarchy's line of `/proc/PID/cgroup` text: the process's cgroup path.
    pub fn path_in(&self, proc_cgroup: &str) -> Option<String> {
        proc_cgroup.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = match self {
                Self::Unified { .. } => id == "0" && controllers.is_empty(),
                Self::Controller { name, .. } => controllers.split(',').any(|c| c == *name),
                Self::None => false,
            };
            ours.then(|| path.to_owned())
        })
    }
}

/// The hierarchy the loaded program reads, for the self-test to check it
/// against. Kept here, not passed along: it is a fact of the running sensor.
static CHOSEN: OnceLock<Hierarchy> = OnceLock::new();

pub fn set_chosen(hierarchy: Hierarchy) {
    // One program is loaded per process; a second choice is the same one.
    let _ = CHOSEN.set(hierarchy);
}

/// What [`set_chosen`] recorded (None before the program is loaded).
pub fn chosen() -> Option<&'static Hierarchy> {
    CHOSEN.get()
}

/// Chooses the hierarchy on this machine; v1 controller ids come from `btf`.
pub fn choose(btf: &Btf) -> Result<Hierarchy> {
    if is_cgroup2(Path::new(CGROUP_ROOT)) {
        return Ok(Hierarchy::Unified {
            mount: PathBuf::from(CGROUP_ROOT),
        });
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .context("reading /proc/self/mountinfo (the cgroup mounts)")?;
    let Some((name, mount)) = v1_controller(&mountinfo) else {
        return Ok(Hierarchy::None);
    };
    let id = btf
        .enum_value("cgroup_subsys_id", &format!("{name}_cgrp_id"))
        .context("the v1 cgroup controller's id")?;
    let slots = btf.member_size("css_set", "subsys")? / 8;
    let subsys = u32::try_from(id)
        .ok()
        .filter(|&id| id < slots)
        .with_context(|| {
            format!("kernel BTF: {name}_cgrp_id is {id}, outside css_set.subsys[{slots}]")
        })?;
    Ok(Hierarchy::Controller {
        name,
        subsys,
        mount,
    })
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a statfs buffer for the call to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    r == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// The first of [`CONTROLLERS`] mounted as a v1 hierarchy from its root, and where.
fn v1_controller(mountinfo: &str) -> Option<(&'static str, PathBuf)> {
    // `36 35 0:30 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids`
    let mounts: Vec<(PathBuf, Vec<&str>)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let head: Vec<&str> = head.split(' ').collect();
            let mut tail = tail.split(' ');
            let (fstype, _source, options) = (tail.next()?, tail.next()?, tail.next()?);
            // A bind mount of a sub-cgroup is no place to find every cgroup.
            let mount = head.get(4)?;
            (fstype == "cgroup" && head.get(3) == Some(&"/"))
                .then(|| (unescape(mount), options.split(',').collect()))
        })
        .collect();
    CONTROLLERS.iter().find_map(|name| {
        mounts
            .iter()
            .find(|(_, options)| options.contains(name))
            .map(|(mount, _)| (*name, mount.clone()))
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The cgroup of process `pid` in `hierarchy`: its path and id (the inode
/// of its directory), as the kernel program must report them.
pub fn of_process(hierarchy: &Hierarchy, pid: &str) -> Result<Option<(String, u64)>> {
    let file = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let Some(path) = hierarchy.path_in(&text) else {
        if *hierarchy == Hierarchy::None {
            return Ok(None);
        }
        bail!("{file} has no line for {}", hierarchy.describe());
    };
    let Some(dir) = hierarchy.dir(&path) else {
        return Ok(None);
    };
    let ino = fs::metadata(&dir)
        .with_context(|| format!("stat {}", dir.display()))?
        .ino();
    Ok(Some((path, ino)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 8:1 / / rw - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 /sub /mnt/memory rw - cgroup cgroup rw,memory
35 30 0:30 / /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory
";

    #[test]
    fn v1_prefers_pids_then_memory_then_cpu_mounted_from_the_root() {
        assert_eq!(
            v1_controller(HYBRID),
            Some(("memory", PathBuf::from("/sys/fs/cgroup/mem ory")))
        );
        let pids = format!("{HYBRID}36 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n");
        assert_eq!(
            v1_controller(&pids),
            Some(("pids", PathBuf::from("/sys/fs/cgroup/pids")))
        );
        let cpu_only: String = HYBRID.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            v1_controller(&cpu_only),
            Some(("cpu", PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")))
        );
        assert_eq!(v1_controller("25 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = "12:pids:/docker/abc\n4:cpu,cpuacct:/x\n1:name=systemd:/y\n0::/z/w\n";
        let unified = Hierarchy::Unified {
            mount: "/sys/fs/cgroup".into(),
        };
        let v1 = |name| Hierarchy::Controller {
            name,
            subsys: 0,
            mount: "/m".into(),
        };
        assert_eq!(unified.path_in(text).as_deref(), Some("/z/w"));
        assert_eq!(v1("pids").path_in(text).as_deref(), Some("/docker/abc"));
        assert_eq!(v1("cpu").path_in(text).as_deref(), Some("/x"));
        assert_eq!(v1("memory").path_in(text), None);
        assert_eq!(Hierarchy::None.path_in(text), None);
        assert_eq!(
            v1("pids").dir("/docker/abc"),
            Some(PathBuf::from("/m/docker/abc"))
        );
        assert_eq!(unified.dir("/"), Some(PathBuf::from("/sys/fs/cgroup/")));
    }

    /// On this machine: the hierarchy found holds the test's own cgroup, and
    /// /proc/self/cgroup's path names its directory.
    #[test]
    fn this_machines_hierarchy() {
        let btf = Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).unwrap();
        let h = choose(&btf).unwrap();
        assert_ne!(h, Hierarchy::None, "no cgroup hierarchy found");
        let (path, ino) = of_process(&h, "self").unwrap().unwrap();
        assert!(path.starts_with('/'), "{path}");
        assert!(ino > 0);
        if let Hierarchy::Controller { name, subsys, .. } = &h {
            let id = btf
                .enum_value("cgroup_subsys_id", &format!("{name}_cgrp_id"))
                .unwrap();
            assert_eq!(i64::from(*subsys), id);
        }
    }
}
