//! A FUSE file system that serves one file and never answers the sensor's
//! opens of it: the exec itself opens and reads it as usual, the sensor's
//! process and its children (its file readers) wait for ever (Debian's
//! `python3-fusepy`, which `cargo xtask test` installs, and a few lines of
//! Python). Dropped, it aborts its connection: whatever still waits is freed.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::TempDir;

const SERVER: &str = r#"
import errno, os, stat, sys, threading, time
from fusepy import FUSE, FuseOSError, Operations, fuse_get_context

mount, name, data_path, stalled_tgid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(data_path, "rb").read()
now = time.time() - 10  # changed well before it runs
forever = threading.Event()

def status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1

def stalled(tid):
    tgid = status(tid, "Tgid")
    return stalled_tgid in (tgid, status(tgid, "PPid"))

class One(Operations):
    def getattr(self, path, fh=None):
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_ctime=now, st_mtime=now, st_atime=now)
        if path == "/" + name:
            return dict(st_mode=stat.S_IFREG | 0o755, st_nlink=1, st_size=len(data), st_ctime=now, st_mtime=now, st_atime=now, st_ino=2)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", name]

    def open(self, path, flags):
        if stalled(fuse_get_context()[2]):
            forever.wait()  # the sensor's open: never answered
        return 0

    def read(self, path, size, offset, fh):
        return data[offset:offset + size]

print("serving", flush=True)
FUSE(One(), mount, foreground=True, nothreads=False, allow_other=True)
"#;

/// The mounted file system; when dropped, its connection is aborted (what
/// waits in it fails), it is unmounted and its server killed.
#[derive(Debug)]
pub struct StallingFs {
    mount: PathBuf,
    server: Child,
    /// Its connection's directory under `/sys/fs/fuse/connections`.
    connection: PathBuf,
    pub file: PathBuf,
}

impl StallingFs {
    /// Serves `bytes` as `NAME` (mode 0755) under a new directory of `dir`,
    /// and never answers an open of it by process `stalled_tgid`.
    pub fn mount(dir: &TempDir, name: &str, bytes: &[u8], stalled_tgid: u32) -> Self {
        let mount = dir.path().join("fuse");
        fs::create_dir_all(&mount).expect("mount point");
        let data = dir.path().join("fuse-data");
        fs::write(&data, bytes).expect("the served bytes");
        let script = dir.path().join("fuse-server.py");
        fs::write(&script, SERVER).expect("the server's script");
        // Debian's interpreter, where python3-fusepy is installed.
        let mut server = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&mount)
            .arg(name)
            .arg(&data)
            .arg(stalled_tgid.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the FUSE server (/usr/bin/python3 with python3-fusepy)");
        let mut line = String::new();
        BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the FUSE server's first line");
        assert_eq!(line.trim(), "serving", "the FUSE server did not start");
        let file = mount.join(name);
        crate::wait_until("the FUSE file system to be mounted", || file.exists());
        // fusectl names a connection by the kernel's device number of the mount.
        let dev = fs::metadata(&mount).expect("stat the mount").dev();
        let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xf_ff00));
        let connections = Path::new("/sys/fs/fuse/connections");
        if fs::read_dir(connections).is_ok_and(|mut d| d.next().is_none()) {
            let _ = Command::new("mount")
                .args(["-t", "fusectl", "none"])
                .arg(connections)
                .status();
        }
        Self {
            mount,
            server,
            connection: connections.join(((major << 20) | minor).to_string()),
            file,
        }
    }

    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl Drop for StallingFs {
    fn drop(&mut self) {
        let _ = fs::write(self.connection.join("abort"), "1");
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
