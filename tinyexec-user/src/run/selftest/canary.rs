//! The canary exec: written, started, compared field by field with the
//! kernel's record of it, cleaned up.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::{
        fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
        process::ExitStatusExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

use super::elf;
use crate::{
    exec::{
        container::{self, NAMES},
        decode::Exec,
    },
    kernel::cgroups,
};

/// The canary's file name; also its `comm` (15 bytes, what `TASK_COMM_LEN` keeps).
const NAME: &str = "tinyexec-canary";

/// A running canary exec, and what the kernel must report for it.
pub struct Canary {
    dir: PathBuf,
    path: PathBuf,
    bytes: Vec<u8>,
    ino: u64,
    dev: u64,
    nonce: String,
    child: Child,
}

/// Directories to run the canary from, in order: systemd's runtime
/// directory, /run, the temporary directory. A `noexec` mount refuses the
/// exec; the next one is tried.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("RUNTIME_DIRECTORY")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/run"));
    dirs.push(std::env::temp_dir());
    dirs
}

impl Canary {
    /// Writes the canary and starts it.
    pub fn start() -> Result<Self> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let nonce = format!("tinyexec-self-test-{}-{stamp}", std::process::id());
        let mut tried = Vec::new();
        for base in candidate_dirs() {
            match Self::start_in(&base, &nonce) {
                Ok(canary) => return Ok(canary),
                Err(err) => tried.push(format!("{}: {err:#}", base.display())),
            }
        }
        bail!(
            "self-test: cannot run the canary exec anywhere ({})",
            tried.join("; ")
        )
    }

    fn start_in(base: &Path, nonce: &str) -> Result<Self> {
        let dir = base.join(nonce);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        // The path the kernel resolves: no symlink in it.
        let dir = fs::canonicalize(&dir)?;
        let started = Self::write_and_spawn(&dir, nonce);
        if started.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        started
    }

    fn write_and_spawn(dir: &Path, nonce: &str) -> Result<Self> {
        let path = dir.join(NAME);
        let bytes = elf::exit0_elf();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(&bytes)?;
        let md = file.metadata()?;
        // Closed before the exec, which would otherwise fail with ETXTBSY.
        drop(file);
        let child = Command::new(&path)
            .arg(nonce)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("executing {}", path.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            bytes,
            ino: md.ino(),
            dev: md.dev(),
            nonce: nonce.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn describe(&self) -> String {
        format!("{} (pid {})", self.path.display(), self.pid())
    }

    /// Compares the kernel's record of the canary with the truth. Every field
    /// that differs is named with the kernel struct members it is read from.
    pub fn verify(&self, exec: &Exec, btf: &Path) -> Result<()> {
        let mut wrong = Vec::new();
        let mut expect = |what: &str, got: String, want: String| {
            if got != want {
                wrong.push(format!("{what}: read {got}, but it is {want}"));
            }
        };
        // SAFETY: these getters cannot fail.
        let (uid, gid, euid, egid) = unsafe {
            (
                libc::getuid(),
                libc::getgid(),
                libc::geteuid(),
                libc::getegid(),
            )
        };
        expect(
            "linux_binprm.file, file.f_inode, inode.i_size (the file's size)",
            exec.size.to_string(),
            self.bytes.len().to_string(),
        );
        expect("inode.i_ino", exec.inode.to_string(), self.ino.to_string());
        expect(
            "inode.i_sb, super_block.s_dev (the file's device)",
            exec.device.to_string(),
            self.dev.to_string(),
        );
        expect("inode.i_nlink", exec.nlink.to_string(), "1".into());
        expect(
            "inode.i_mode",
            format!("{:o}", exec.mode),
            format!("{:o}", libc::S_IFREG | 0o700),
        );
        expect(
            "linux_binprm.buf (the file's first bytes)",
            format!("{:02x?}", exec.header.as_deref().unwrap_or_default()),
            format!("{:02x?}", self.bytes),
        );
        expect(
            "task_struct.tgid",
            exec.pid.to_string(),
            self.pid().to_string(),
        );
        expect(
            "task_struct.real_parent, task_struct.group_leader (the parent's pid)",
            exec.ppid.to_string(),
            std::process::id().to_string(),
        );
        expect(
            "task_struct.comm",
            format!("{:?}", exec.comm),
            format!("{NAME:?}"),
        );
        expect(
            "task_struct.comm of the parent",
            format!("{:?}", exec.parent_comm),
            format!("{:?}", own_comm()),
        );
        expect(
            "task_struct.cred, cred.uid",
            exec.uid.to_string(),
            uid.to_string(),
        );
        expect("cred.gid", exec.gid.to_string(), gid.to_string());
        expect("cred.euid", exec.euid.to_string(), euid.to_string());
        expect("cred.egid", exec.egid.to_string(), egid.to_string());
        expect(
            "task_struct.loginuid",
            format!("{:?}", exec.login_uid),
            format!("{:?}", own_loginuid()),
        );
        expect("linux_binprm.argc", exec.argc.to_string(), "2".into());
        expect(
            "task_struct.mm, mm_struct.arg_start, mm_struct.arg_end (the arguments)",
            format!("{:?}", exec.args),
            format!(
                "{:?}",
                [self.path.to_string_lossy(), self.nonce.as_str().into()]
            ),
        );
        expect(
            "the path walk: file.f_path, dentry.d_parent, dentry.d_name, mount.mnt, \
             mount.mnt_parent, mount.mnt_mountpoint, vfsmount.mnt_root",
            format!("{:?}", exec.path),
            format!("{:?}", self.path.to_string_lossy()),
        );
        if let Some(own) = own_exe() {
            expect(
                "mm_struct.exe_file (the parent's executable)",
                format!("{:?}", exec.parent_path.as_deref().unwrap_or_default()),
                format!("{own:?}"),
            );
        }
        self.check_context(exec, &mut expect)?;
        if exec.read_error {
            wrong.push("some kernel reads failed (the record is flagged read_error)".into());
        }
        if wrong.is_empty() {
            return Ok(());
        }
        bail!(
            "self-test failed: the kernel program misread the canary exec {}:\n  {}\n\
             The struct offsets come from the BTF file {}, which does not describe the \
             running kernel ({}); the sensor would be blind. Use this kernel's own BTF \
             (/sys/kernel/btf/vmlinux, the default for --btf).",
            self.describe(),
            wrong.join("\n  "),
            btf.display(),
            kernel_release()
        )
    }

    /// The container stage's fields: the canary shares the sensor's
    /// namespaces and cgroup, and its pid namespace numbers it and its parent.
    fn check_context(
        &self,
        exec: &Exec,
        expect: &mut impl FnMut(&str, String, String),
    ) -> Result<()> {
        let own = container::namespaces_of("self")
            .context("self-test: reading the sensor's own namespaces (/proc/self/ns)")?;
        for (i, name) in NAMES.iter().enumerate() {
            let read_through = match *name {
                "user" => "task_struct.cred, cred.user_ns, user_namespace.ns.inum".to_owned(),
                "pid" => {
                    "task_struct.thread_pid, pid.numbers, upid.ns, pid_namespace.ns.inum".to_owned()
                }
                "cgroup" => "nsproxy.cgroup_ns, cgroup_namespace.ns.inum".to_owned(),
                "net" => "nsproxy.net_ns, net.ns.inum".to_owned(),
                other => format!("nsproxy.{other}_ns, {other}_namespace.ns.inum"),
            };
            expect(
                &format!("task_struct.nsproxy, {read_through} (the {name} namespace)"),
                exec.namespaces[i].to_string(),
                own[i].to_string(),
            );
        }
        // The last NSpid is the pid in the process's own pid namespace.
        let canary_vpid = ns_pid(&self.pid().to_string())?;
        let own_vpid = ns_pid("self")?;
        expect(
            "task_struct.thread_pid, pid.level, pid.numbers, upid.nr (the pid in its namespace)",
            exec.vpid.to_string(),
            canary_vpid.to_string(),
        );
        expect(
            "the parent's task_struct.thread_pid, pid.numbers, upid.ns, upid.nr              (the parent's pid in the namespace)",
            exec.parent_vpid.to_string(),
            own_vpid.to_string(),
        );
        let Some(hierarchy) = cgroups::chosen() else {
            return Ok(());
        };
        let truth = cgroups::of_process(hierarchy, "self").context("self-test")?;
        let (got_id, got_path) = exec
            .cgroup
            .as_ref()
            .map_or((0, None), |c| (c.id, c.path.clone()));
        let Some((path, ino)) = truth else {
            expect(
                "the cgroup (none was to be read)",
                got_id.to_string(),
                "0".into(),
            );
            return Ok(());
        };
        let via = match hierarchy {
            cgroups::Hierarchy::Unified { .. } => "css_set.dfl_cgrp",
            _ => "css_set.subsys, cgroup_subsys_state.cgroup",
        };
        expect(
            &format!(
                "task_struct.cgroups, {via}, cgroup.kn, kernfs_node.id (the cgroup of {})",
                hierarchy.describe()
            ),
            got_id.to_string(),
            ino.to_string(),
        );
        // In a cgroup namespace of its own, /proc shows the path from that
        // namespace's root; the kernel's is from the hierarchy's.
        let got = got_path.unwrap_or_default();
        let host_cgroup_ns = container::host_namespaces().is_some_and(|h| h[5] == own[5]);
        let fits = if host_cgroup_ns || path == "/" {
            got == path || !host_cgroup_ns
        } else {
            Path::new(&got).ends_with(path.trim_start_matches('/'))
        };
        if !fits {
            expect(
                "kernfs_node.parent, kernfs_node.name (the cgroup path)",
                format!("{got:?}"),
                format!("{path:?}"),
            );
        }
        Ok(())
    }

    /// Waits for the canary to exit and removes its directory. A canary that
    /// did not exit 0 is an error: something stopped a harmless exec.
    pub fn finish(mut self) -> Result<()> {
        let status = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
        let status = status.context("waiting for the canary exec")?;
        if !status.success() {
            let how = status
                .signal()
                .map_or_else(|| format!("{status}"), |s| format!("signal {s}"));
            bail!(
                "self-test: the canary exec {} ended with {how}",
                self.path.display()
            );
        }
        Ok(())
    }
}

fn own_comm() -> String {
    fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// The audit login uid, None when unset (or when the kernel has no audit).
fn own_loginuid() -> Option<u32> {
    let v: u32 = fs::read_to_string("/proc/self/loginuid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (v != u32::MAX).then_some(v)
}

/// The sensor's own executable, as the kernel walks it (readlink adds
/// " (deleted)" to a replaced binary; the kernel's walk does not).
fn own_exe() -> Option<String> {
    let link = fs::read_link("/proc/self/exe").ok()?;
    let s = link.to_string_lossy();
    Some(s.strip_suffix(" (deleted)").unwrap_or(&s).to_owned())
}

/// A process's pid in its own pid namespace: the last of its `NSpid` numbers.
fn ns_pid(pid: &str) -> Result<u32> {
    let file = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&file).with_context(|| format!("self-test: reading {file}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
        .with_context(|| format!("self-test: {file} has no NSpid line"))
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(
        |e: io::Error| format!("release unknown: {e}"),
        |s| s.trim().to_owned(),
    )
}
