//! Cgroups and namespaces for the container tests: the hierarchy the sensor
//! reads (cgroup2 at /sys/fs/cgroup, else the v1 `pids` one, as
//! tinyexec-user/src/kernel/cgroups.rs chooses on the machines we test), cgroups
//! made and removed by the test, processes started inside them and in
//! namespaces of their own, and an OCI bundle for a real runtime.

use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

/// The namespaces records carry, in the order of `/proc/PID/ns` names used here.
pub const NAMESPACES: [&str; 6] = ["mnt", "pid", "net", "user", "uts", "cgroup"];

/// Where the cgroups the sensor reads are: cgroup2 at /sys/fs/cgroup, else
/// the v1 `pids` hierarchy (the first of pids, memory, cpu; pids here).
pub fn hierarchy() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    let c = CString::new(root.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a valid C string and a buffer for statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let unified =
        unsafe { libc::statfs(c.as_ptr(), &raw mut st) } == 0 && st.f_type as i64 == 0x6367_7270;
    if unified {
        return root.to_path_buf();
    }
    let pids = root.join("pids");
    assert!(
        pids.join("cgroup.procs").exists(),
        "neither cgroup2 at /sys/fs/cgroup nor a v1 pids hierarchy at {}",
        pids.display()
    );
    pids
}

/// Whether the sensor reads the unified (v2) hierarchy on this machine.
pub fn unified() -> bool {
    hierarchy() == Path::new("/sys/fs/cgroup")
}

/// This process's cgroup path in [`hierarchy`], from `/proc/self/cgroup`.
pub fn own_cgroup() -> String {
    let text = fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let v2 = unified();
    text.lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (id, ctl, path) = (p.next()?, p.next()?, p.next()?);
            let ours = if v2 {
                id == "0" && ctl.is_empty()
            } else {
                ctl.split(',').any(|c| c == "pids")
            };
            ours.then(|| path.to_owned())
        })
        .unwrap_or_else(|| {
            panic!("no line for the sensor's hierarchy in /proc/self/cgroup:\n{text}")
        })
}

/// The inode numbers of `/proc/PID/ns/NAME` for each of [`NAMESPACES`]
/// (`pid_for_children` in place of `pid` when `children`).
pub fn namespaces_of(pid: &str, children: bool) -> [u64; 6] {
    NAMESPACES.map(|n| {
        let n = if n == "pid" && children {
            "pid_for_children"
        } else {
            n
        };
        let p = format!("/proc/{pid}/ns/{n}");
        fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .ino()
    })
}

/// A cgroup the test made (every missing level of `path` under
/// [`hierarchy`]); the levels it made are removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: String,
    dir: PathBuf,
    made: Vec<PathBuf>,
}

impl TestCgroup {
    pub fn new(path: &str) -> Self {
        let root = hierarchy();
        let mut made = Vec::new();
        let mut dir = root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                made.push(dir.clone());
            }
        }
        Self {
            path: format!("/{}", path.trim_matches('/')),
            dir,
            made,
        }
    }

    /// Its path from the hierarchy's root, as records carry it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its id: the inode number of its directory.
    pub fn id(&self) -> u64 {
        fs::metadata(&self.dir).expect("cgroup dir").ino()
    }

    /// `cgroup.procs`, where writing "0" moves the writer in.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// 64 lower-case hex digits from `seed`: a container id as runtimes make them.
pub fn container_id(seed: &str) -> String {
    crate::sha256_hex(seed.as_bytes())
}

/// A containerd container's cgroup in a Kubernetes pod, named as the
/// kubelet's systemd driver names it
/// (`kubepods-QOS-podUID.slice/cri-containerd-ID.scope`, the uid's dashes
/// written as underscores), made for a test.
#[derive(Debug)]
pub struct PodCgroup {
    pub id: String,
    pub uid: String,
    pub cgroup: TestCgroup,
}

impl PodCgroup {
    /// `qos`: `besteffort` or `burstable`; ids and uid derived from `seed`.
    pub fn new(qos: &str, seed: &str) -> Self {
        let id = container_id(&format!("{seed}-container"));
        let h = container_id(&format!("{seed}-pod"));
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let cgroup = TestCgroup::new(&format!(
            "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        ));
        Self { id, uid, cgroup }
    }

    /// Asserts that `rec` carries this container, its pod and its cgroup.
    pub fn assert_in(&self, rec: &Value) {
        use crate::{field_str, field_u64};
        assert_eq!(field_str(rec, "container.id"), self.id, "{rec}");
        assert_eq!(field_str(rec, "container.runtime"), "containerd", "{rec}");
        assert_eq!(field_str(rec, "kubernetes.pod.uid"), self.uid, "{rec}");
        assert_eq!(field_str(rec, "orchestrator.type"), "kubernetes", "{rec}");
        assert_eq!(
            field_str(rec, "process.cgroup.path"),
            self.cgroup.path(),
            "{rec}"
        );
        assert_eq!(
            field_u64(rec, "process.cgroup.id"),
            self.cgroup.id(),
            "{rec}"
        );
    }
}

/// A process started by [`spawn_isolated`].
#[derive(Debug)]
pub struct Isolated {
    /// The first child (in the test's pid namespace): it waits for the program.
    pub pid: libc::pid_t,
    /// The namespaces the program runs in, read while it ran: the first
    /// child's, with its pid namespace for children as the pid namespace.
    pub namespaces: [u64; 6],
}

impl Isolated {
    /// Waits for the program; its exit status as the first child passes it on.
    pub fn wait(self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(self.pid, &raw mut status, 0) };
        assert_eq!(r, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        status
    }
}

/// Runs `program` the way a container runtime starts a container's first
/// process: moved into the cgroup whose `cgroup.procs` is `procs`, with new
/// mount, UTS, IPC, network and cgroup namespaces, and as pid 1 of a new pid
/// namespace (a first child unshares, then forks the program and waits).
pub fn spawn_isolated(program: &Path, procs: &Path) -> Isolated {
    let prog = CString::new(program.as_os_str().as_bytes()).expect("no NUL");
    let procs = CString::new(procs.as_os_str().as_bytes()).expect("no NUL");
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // The child says its namespaces are in place; we say when we have read them.
    let (mut sync, mut go) = ([0i32; 2], [0i32; 2]);
    // SAFETY: two pipes into arrays of two descriptors.
    assert_eq!(unsafe { libc::pipe(sync.as_mut_ptr()) }, 0);
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // SAFETY: the child calls only async-signal-safe functions on data made
    // before the fork, and ends in _exit or execve.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe {
            libc::close(sync[0]);
            libc::close(go[1]);
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(120);
            }
            libc::close(fd);
            let flags = libc::CLONE_NEWNS
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWCGROUP
                | libc::CLONE_NEWPID;
            if libc::unshare(flags) != 0 {
                libc::_exit(121);
            }
            let child = libc::fork();
            if child == 0 {
                libc::close(sync[1]);
                libc::close(go[0]);
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(122);
            }
            // The namespaces are in place; they stay while we live.
            libc::write(sync[1], b"x".as_ptr().cast(), 1);
            let mut byte = 0u8;
            libc::read(go[0], (&raw mut byte).cast(), 1);
            let mut status = 0;
            if child < 0 || libc::waitpid(child, &raw mut status, 0) != child {
                libc::_exit(123);
            }
            libc::_exit(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                124
            });
        }
    }
    let mut byte = 0u8;
    // SAFETY: our ends of the pipes; one byte into a local.
    let n = unsafe {
        libc::close(sync[1]);
        libc::close(go[0]);
        let n = libc::read(sync[0], (&raw mut byte).cast(), 1);
        libc::close(sync[0]);
        n
    };
    if n != 1 {
        let mut status = 0;
        // SAFETY: reaping our own child, which failed before the sync.
        unsafe {
            libc::close(go[1]);
            libc::waitpid(pid, &raw mut status, 0);
        }
        panic!(
            "the isolated child failed before running {} (exit {})",
            program.display(),
            libc::WEXITSTATUS(status)
        );
    }
    let namespaces = namespaces_of(&pid.to_string(), true);
    // SAFETY: our end of the pipe: closing it lets the child wait for the program.
    unsafe { libc::close(go[1]) };
    Isolated { pid, namespaces }
}

/// A container's root file system in `root`: Debian's static busybox as its
/// userland (`/bin/sh`, `/bin/sleep`), `files` copied in, executable.
pub fn rootfs(root: &Path, files: &[(&str, &[u8])]) {
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(root.join(d)).expect("rootfs dirs");
    }
    let busybox = fs::read("/bin/busybox")
        .expect("/bin/busybox (busybox-static, which `cargo xtask test` installs)");
    crate::write_exe(&root.join("bin/busybox"), &busybox);
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    for (name, bytes) in files {
        crate::write_exe(&root.join(name.trim_start_matches('/')), bytes);
    }
}

/// A [`rootfs`] in `dir/rootfs` and its tarball, `dir/rootfs.tar`, for a
/// runtime's `import`; returns both paths.
///
/// # Panics
///
/// When the tarball cannot be made.
pub fn rootfs_tarball(dir: &Path, files: &[(&str, &[u8])]) -> (PathBuf, PathBuf) {
    let root = dir.join("rootfs");
    rootfs(&root, files);
    let tar = dir.join("rootfs.tar");
    crate::stdout_of(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    (root, tar)
}

/// An OCI runtime bundle (`config.json` and `rootfs/`) in `dir`: busybox as
/// the container's userland, `files` copied in, `script` run by its shell,
/// Docker's cgroupfs layout (`/docker/<id>`) for its cgroup, and its own
/// pid, mount, network, IPC, UTS and cgroup namespaces.
pub fn oci_bundle(dir: &Path, id: &str, files: &[(&str, &[u8])], script: &str) -> Value {
    rootfs(&dir.join("rootfs"), files);
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "tx-container",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "cgroupsPath": format!("/docker/{id}"),
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "network"},
                {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}
            ]
        }
    });
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("JSON"),
    )
    .expect("write config.json");
    config
}

/// `podman` with the settings this machine needs: its default open-files
/// limit for containers exceeds the hard limit here, so none is set
/// (`CONTAINERS_CONF`, written once per test process).
///
/// # Panics
///
/// When the settings file cannot be written.
#[must_use]
pub fn podman() -> std::process::Command {
    static CONF: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let conf = CONF.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("tinyexec-containers-{}.conf", std::process::id()));
        fs::write(&path, "[containers]\ndefault_ulimits = []\n").expect("containers.conf");
        path
    });
    let mut cmd = std::process::Command::new("podman");
    cmd.env("CONTAINERS_CONF", conf);
    cmd
}
