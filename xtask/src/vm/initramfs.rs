//! The VMs' initramfs: Debian's busybox-static, the static sensor and the
//! static matrix test binary (debug info stripped), for the VM's
//! architecture, and nothing else: no library, no loader. Every binary is
//! checked static first, so a sensor that needed anything from a userland
//! could not pass the matrix. `/init` mounts what the sensor and the tests
//! use, runs the tests and powers off. A newc cpio, written with the `cpio` crate.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{BufWriter, Write as _},
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};
use cpio::NewcBuilder;

use super::console;
use crate::{arch::Arch, dist, run_cmd};

const BUSYBOX: &str = "/bin/busybox";
/// Where the binaries go inside the VM.
pub const SENSOR: &str = "/bin/tinyexec-sensor";
const TESTS: &str = "/bin/matrix";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Timeouts the harness uses inside the VMs (seconds): the verifier and
/// everything else run many times slower under emulation than on the host.
const READY_TIMEOUT_SECS: u32 = 600;
const EVENT_TIMEOUT_SECS: u32 = 60;

/// The binaries of one VM, all static and for `arch`.
pub struct Contents<'a> {
    pub arch: Arch,
    pub busybox: &'a Path,
    pub sensor: &'a Path,
    pub tests: &'a Path,
}

/// Writes the initramfs to `out`, staging stripped binaries in `stage`.
pub fn build(out: &Path, stage: &Path, c: &Contents<'_>, test_args: &[String]) -> Result<()> {
    fs::create_dir_all(stage).with_context(|| format!("creating {}", stage.display()))?;
    let mut cpio = Cpio::create(out)?;
    for dir in [
        "/bin",
        "/sbin",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/etc",
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/root",
    ] {
        cpio.dir(dir)?;
    }
    dist::ensure_static(c.busybox, c.arch)?;
    cpio.file(
        BUSYBOX,
        &fs::read(c.busybox).with_context(|| format!("reading {}", c.busybox.display()))?,
        0o755,
    )?;
    // The one link /init needs to start; it makes the others itself.
    cpio.symlink("/bin/sh", BUSYBOX)?;
    for (from, to) in [(c.sensor, SENSOR), (c.tests, TESTS)] {
        dist::ensure_static(from, c.arch)?;
        let stripped = stage.join(Path::new(to).file_name().context("binary name")?);
        run_cmd(
            Command::new(c.arch.objcopy())
                .arg("--strip-debug")
                .arg(from)
                .arg(&stripped),
        )
        .with_context(|| format!("stripping {}", from.display()))?;
        cpio.file(to, &fs::read(&stripped)?, 0o755)?;
    }
    cpio.file("/init", init_script(test_args).as_bytes(), 0o755)?;
    cpio.finish()
}

/// Single-quotes `arg` for the init shell.
fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn init_script(test_args: &[String]) -> String {
    let args: Vec<String> = test_args.iter().map(|a| quote(a)).collect();
    let m = console::MARKER;
    format!(
        r#"#!/bin/sh
# /init of the kernel matrix's VMs (written by xtask/src/vm/initramfs.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t proc proc /proc
# Every applet as a link to busybox (it finds itself through /proc/self/exe).
/bin/busybox --install -s
echo "{m} init uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r) machine=$(uname -m)"
fail() {{ echo "{m} setup-failed $*"; }}
mount -t sysfs sysfs /sys || fail sysfs
mount -t devtmpfs devtmpfs /dev || fail devtmpfs
mount -t tmpfs tmpfs /tmp || fail tmpfs /tmp
mount -t tmpfs tmpfs /run || fail tmpfs /run
mount -t bpf bpf /sys/fs/bpf || fail bpffs
mount -t tracefs tracefs /sys/kernel/tracing || fail tracefs
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail cgroup2
mount -t securityfs securityfs /sys/kernel/security || fail securityfs
if [ -e /sys/kernel/btf/vmlinux ]; then echo "{m} btf=yes"; else echo "{m} btf=no"; fi
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > /etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' > /etc/group
hostname tinyexec-vm
cd /tmp
echo "{m} checks-start uptime=$(cut -d' ' -f1 /proc/uptime)"
TINYEXEC_SENSOR={SENSOR} TINYEXEC_READY_TIMEOUT={READY_TIMEOUT_SECS} TINYEXEC_EVENT_TIMEOUT={EVENT_TIMEOUT_SECS} RUST_BACKTRACE=0 \
  {TESTS} --test-threads=1 --nocapture {args}
rc=$?
echo "{m} end rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"#,
        args = args.join(" ")
    )
}

/// A newc archive being written; parent directories are added as needed.
struct Cpio {
    out: BufWriter<File>,
    path: PathBuf,
    dirs: BTreeSet<String>,
    ino: u32,
}

impl Cpio {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
            dirs: BTreeSet::new(),
            ino: 0,
        })
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.parents(path)?;
        self.ino += 1;
        // Names are relative to the root, as the kernel's unpacker expects.
        let name = path.trim_start_matches('/');
        let size = u32::try_from(data.len()).with_context(|| format!("{path}: over 4 GiB"))?;
        let mut w = NewcBuilder::new(name)
            .ino(self.ino)
            .mode(mode)
            .nlink(1)
            .write(&mut self.out, size);
        let what = || format!("writing {}", self.path.display());
        w.write_all(data).with_context(what)?;
        w.finish().with_context(what)?;
        Ok(())
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        let mut dir = PathBuf::from("/");
        let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
        for c in parent.components() {
            if let Component::Normal(c) = c {
                dir.push(c);
                self.dir(dir.to_str().context("non-UTF-8 path")?)?;
            }
        }
        Ok(())
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        if self.dirs.insert(path.to_owned()) {
            self.entry(path, S_IFDIR | 0o755, &[])?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, data: &[u8], perm: u32) -> Result<()> {
        self.entry(path, S_IFREG | perm, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.entry(path, S_IFLNK | 0o777, target.as_bytes())
    }

    fn finish(self) -> Result<()> {
        let mut out = cpio::newc::trailer(self.out)
            .with_context(|| format!("writing {}", self.path.display()))?;
        out.flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    /// Parent directories come first and once; entries read back as written.
    #[test]
    fn archive_reads_back() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.cpio");
        let mut c = Cpio::create(&path).unwrap();
        c.file("/usr/share/x/data", b"elf", 0o755).unwrap();
        c.symlink("/bin/sh", "/bin/busybox").unwrap();
        c.dir("/usr").unwrap();
        c.finish().unwrap();
        let mut r = File::open(&path).unwrap();
        let mut seen = Vec::new();
        loop {
            let entry = cpio::NewcReader::new(r).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            seen.push((
                entry.entry().name().to_owned(),
                entry.entry().mode(),
                entry.entry().file_size(),
            ));
            r = entry.finish().unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            seen,
            [
                ("usr".to_owned(), S_IFDIR | 0o755, 0),
                ("usr/share".to_owned(), S_IFDIR | 0o755, 0),
                ("usr/share/x".to_owned(), S_IFDIR | 0o755, 0),
                ("usr/share/x/data".to_owned(), S_IFREG | 0o755, 3),
                ("bin".to_owned(), S_IFDIR | 0o755, 0),
                ("bin/sh".to_owned(), S_IFLNK | 0o777, 12),
            ]
        );
    }
}
