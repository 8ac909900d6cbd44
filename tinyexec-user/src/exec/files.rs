//! Opening an exec's files where the exec saw them, and nothing but regular files.
//!
//! The kernel's path is walked from the root of the exec's mount namespace,
//! and the name given to exec from its root and working directory: the sensor
//! may live in another namespace (the unit's `PrivateTmp` and `ProtectHome`, a
//! container, a Kubernetes pod) or see another file at the same name (a bind
//! mount in the exec's namespace). So a name is resolved under the exec's own
//! `/proc/PID/root`, else its parent's, else PID 1's (an exec that has exited
//! leaves its parent), with `openat2(RESOLVE_IN_ROOT)`: symlinks stay inside
//! that root, as they did for the exec. The caller checks that what it finds
//! is the file that ran (device, inode, size, change time); a root of another
//! namespace finds another file or none, and the next root is tried.
//!
//! Nothing is opened for reading before `fstat` has said it is a regular file:
//! a name is first opened `O_PATH`, which has no effect on what it names (no
//! device's open, no FIFO's wait), and only a regular file is then reopened
//! through `/proc/self/fd`, the very inode found. A name swapped for a link to
//! a device, or a FIFO, is never opened.
//!
//! Opening a regular file can still block (a FUSE file system that never
//! answers): callers run in the helper processes of [`crate::exec::reads`], never on
//! the data path.

use std::{
    ffi::{CStr, CString, OsStr},
    fs::{File, Metadata},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::{OsStrExt as _, OsStringExt as _},
    },
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

/// A file found by name and not opened yet: an `O_PATH` descriptor and what
/// `fstat` says of it.
pub struct Found {
    fd: OwnedFd,
    pub meta: Metadata,
}

impl Found {
    /// Opens the inode found for reading, if it is a regular file.
    pub fn open(&self) -> io::Result<File> {
        if !self.meta.is_file() {
            return Err(io::Error::other(format!(
                "not a regular file ({})",
                crate::textfile::file_kind(self.meta.file_type())
            )));
        }
        // The descriptor's magic link reopens the inode itself, whatever its
        // name points to now.
        let link = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        open_at(
            libc::AT_FDCWD,
            link.as_bytes(),
            libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
            0,
        )
        .map(File::from)
    }
}

/// `struct open_how` of `openat2(2)` (libc's cannot be built: it is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Set once `openat2(2)` failed with ENOSYS: the seccomp filter that
/// refuses it holds for the rest of the process's life, so later opens go
/// straight to the fallback.
static OPENAT2_REFUSED: AtomicBool = AtomicBool::new(false);

/// `openat2(2)`; the descriptor is close-on-exec. Where a seccomp filter
/// refuses `openat2` (ENOSYS: a filter cannot look into its struct, so
/// systemd's `RestrictSUIDSGID=`, which the unit sets, and some container
/// profiles fail it so that callers fall back), the same with `openat(2)`:
/// directly when nothing is asked of the resolution, else component by
/// component ([`walk_in_root`]).
fn open_at(dir: libc::c_int, name: &[u8], flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let c_name = CString::new(name).map_err(|_| io::Error::other("a NUL byte in the name"))?;
    let how = OpenHow {
        flags: u64::try_from(flags | libc::O_CLOEXEC).unwrap_or_default(),
        mode: 0,
        resolve,
    };
    while !OPENAT2_REFUSED.load(Ordering::Relaxed) {
        // SAFETY: `c_name` is a C string and `how` an `open_how` of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                c_name.as_ptr(),
                &raw const how,
                size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            let fd = libc::c_int::try_from(fd).map_err(io::Error::other)?;
            // SAFETY: the kernel just returned this descriptor to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOSYS) => OPENAT2_REFUSED.store(true, Ordering::Relaxed),
            _ => return Err(err),
        }
    }
    if resolve == 0 {
        return plain_open_at(dir, &c_name, flags);
    }
    walk_in_root(dir, name, flags, resolve).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{e} (resolved by openat(2): openat2(2) refused with ENOSYS)"),
        )
    })
}

/// `openat(2)`, close-on-exec.
fn plain_open_at(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is a C string.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The kernel's bound on links followed in one resolution (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// What `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS [| RESOLVE_NO_SYMLINKS])`
/// does, with `openat(2)` one component at a time: each component opened
/// `O_PATH | O_NOFOLLOW` (a link, magic or not, is opened as itself, never
/// followed by the kernel); a link's text resolved again under `root` (an
/// absolute one from `root`, as a chroot would), or refused with
/// `RESOLVE_NO_SYMLINKS`; `..` never above `root`. Only `O_PATH` opens
/// (`flags` may add `O_DIRECTORY`): callers reopen what they found.
fn walk_in_root(
    root: libc::c_int,
    name: &[u8],
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let loops = || io::Error::from_raw_os_error(libc::ELOOP);
    if flags & !(libc::O_PATH | libc::O_DIRECTORY) != 0 {
        return Err(io::Error::other(
            "resolving in a root by openat(2) opens O_PATH only",
        ));
    }
    // Directories from the root down; empty: at the root.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut left: std::collections::VecDeque<Vec<u8>> = components(name).collect();
    let mut links = 0;
    while let Some(part) = left.pop_front() {
        if part == b".." {
            dirs.pop();
            continue;
        }
        let at = dirs.last().map_or(root, std::os::fd::AsRawFd::as_raw_fd);
        let c_part = CString::new(part).map_err(|_| io::Error::other("a NUL byte in the name"))?;
        let fd = plain_open_at(at, &c_part, libc::O_PATH | libc::O_NOFOLLOW)?;
        let kind = File::from(fd.try_clone()?).metadata()?.file_type();
        if kind.is_symlink() {
            links += 1;
            if resolve & libc::RESOLVE_NO_SYMLINKS != 0 || links > MAX_LINKS {
                return Err(loops());
            }
            let target = read_link(&fd)?;
            if target.starts_with(b"/") {
                dirs.clear();
            }
            for part in components(&target).collect::<Vec<_>>().into_iter().rev() {
                left.push_front(part);
            }
        } else if left.is_empty() {
            if flags & libc::O_DIRECTORY != 0 && !kind.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            return Ok(fd);
        } else if kind.is_dir() {
            dirs.push(fd);
        } else {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
    }
    // The name ended at a directory (`/`, `..`): that directory itself.
    match dirs.pop() {
        Some(fd) => Ok(fd),
        None => plain_open_at(root, c".", libc::O_PATH | libc::O_DIRECTORY),
    }
}

/// The components of a name, without empty ones and `.`.
fn components(name: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    name.split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(<[u8]>::to_vec)
}

/// The text of the link `fd` was opened on (`O_PATH | O_NOFOLLOW`).
fn read_link(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for its length; "" names `fd` itself.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(buf)
}

/// Opens `name` (`O_PATH`: no effect on what it names) and stats it.
fn find_at(dir: libc::c_int, name: &[u8], resolve: u64) -> io::Result<Found> {
    let fd = open_at(dir, name, libc::O_PATH, resolve)?;
    let meta = File::from(fd.try_clone()?).metadata()?;
    Ok(Found { fd, meta })
}

/// A magic link of `/proc` (`/proc/PID/exe`, `/proc/PID/fd/N`): the file the
/// process holds, found without opening it.
pub fn find_proc_link(link: &str) -> io::Result<Found> {
    find_at(libc::AT_FDCWD, link.as_bytes(), 0)
}

/// How a name is resolved under a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// The kernel's own path of a file: no component can be a link, so one
    /// that is says the name no longer leads to the file that ran.
    None,
    /// A name given to exec: links are followed, as exec followed them, but
    /// inside the root.
    InRoot,
}

/// `openat2`'s resolution of a name under a root.
fn resolve_flags(links: Links) -> u64 {
    libc::RESOLVE_IN_ROOT
        | libc::RESOLVE_NO_MAGICLINKS
        | match links {
            Links::None => libc::RESOLVE_NO_SYMLINKS,
            Links::InRoot => 0,
        }
}

/// The processes whose roots are tried, in order.
fn root_pids(pid: u32, ppid: u32) -> Vec<u32> {
    let mut v = vec![pid];
    for p in [ppid, 1] {
        if p != 0 && !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

/// The root directory of a process, held (`O_PATH`) while names are resolved under it.
pub struct Root {
    fd: OwnedFd,
    pub pid: u32,
}

impl Root {
    /// Fails when the process is gone (or a zombie, whose root is gone with it).
    pub fn of(pid: u32) -> io::Result<Self> {
        let fd = open_at(
            libc::AT_FDCWD,
            format!("/proc/{pid}/root").as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        Ok(Self { fd, pid })
    }

    /// `name` (absolute, as seen from this root) resolved under it.
    pub fn find(&self, name: &[u8], links: Links) -> io::Result<Found> {
        find_at(self.fd.as_raw_fd(), name, resolve_flags(links))
    }

    /// The process's working directory, as a path from this root.
    pub fn cwd(&self) -> io::Result<Vec<u8>> {
        Ok(std::fs::read_link(format!("/proc/{}/cwd", self.pid))?
            .into_os_string()
            .into_vec())
    }
}

/// The roots of the processes that can show where an exec found its files:
/// the exec's own, its parent's, PID 1's (the host's, or the sensor's
/// container's when it has its own pid namespace), those still there, once each.
pub fn roots(pid: u32, ppid: u32) -> impl Iterator<Item = Root> {
    root_pids(pid, ppid)
        .into_iter()
        .filter_map(|p| Root::of(p).ok())
}

/// `name` made absolute from directory `dir` (both as bytes: a name need not
/// be UTF-8).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if name.starts_with(b"/") {
        return name.to_vec();
    }
    let mut v = dir.to_vec();
    if !v.ends_with(b"/") {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// A name as text for a reason or a log line (invalid UTF-8 replaced).
pub fn show(name: &[u8]) -> String {
    Path::new(OsStr::from_bytes(name)).display().to_string()
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::{
            fd::AsRawFd as _,
            unix::fs::{MetadataExt as _, symlink},
        },
    };

    use super::{File, Links, Root, join, open_at, root_pids, walk_in_root};

    /// The resolution by `openat(2)` finds what `openat2(2)` finds (this
    /// kernel has it): the same inode, or the same error.
    #[test]
    fn the_walk_by_openat_resolves_as_openat2_does() {
        let top = std::env::temp_dir().join(format!("tx-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&top);
        let root = top.join("root");
        fs::create_dir_all(root.join("a/b")).expect("dirs");
        fs::write(root.join("a/b/f"), b"x").expect("file");
        fs::write(top.join("outside"), b"y").expect("file outside");
        symlink("/a/b", root.join("abs")).expect("link");
        symlink("b/f", root.join("a/rel")).expect("link");
        symlink("../../../../outside", root.join("a/b/up")).expect("link");
        symlink("loop", root.join("loop")).expect("link");
        symlink("/proc/self/exe", root.join("magic")).expect("link");
        let dir = Root {
            fd: File::open(&root).expect("root").into(),
            pid: 0,
        };
        let names: [&[u8]; 12] = [
            b"/a/b/f",
            b"a/b/f",
            b"/abs/f",
            b"/a/rel",
            b"/../../a/./b//f",
            b"/a/b/up",
            b"/loop",
            b"/magic",
            b"/a/b/f/x",
            b"/nothing",
            b"/",
            b"/a/..",
        ];
        for links in [Links::InRoot, Links::None] {
            for name in names {
                let by_openat2 = dir.find(name, links).map(|f| (f.meta.dev(), f.meta.ino()));
                let resolve = super::resolve_flags(links);
                let by_walk = walk_in_root(dir.fd.as_raw_fd(), name, libc::O_PATH, resolve)
                    .and_then(|fd| File::from(fd).metadata())
                    .map(|m| (m.dev(), m.ino()));
                let show = String::from_utf8_lossy(name);
                match (&by_openat2, &by_walk) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{show} ({links:?})"),
                    (Err(a), Err(b)) => {
                        assert_eq!(a.raw_os_error(), b.raw_os_error(), "{show} ({links:?})");
                    }
                    _ => panic!("{show} ({links:?}): openat2 {by_openat2:?}, the walk {by_walk:?}"),
                }
            }
        }
        // A plain open with no resolution asked is the same call either way.
        assert!(open_at(libc::AT_FDCWD, b"/proc/self/exe", libc::O_PATH, 0).is_ok());
        let _ = fs::remove_dir_all(&top);
    }

    #[test]
    fn roots_are_the_exec_its_parent_and_pid_1_once_each() {
        assert_eq!(root_pids(10, 9), [10, 9, 1]);
        assert_eq!(root_pids(10, 1), [10, 1]);
        assert_eq!(root_pids(10, 0), [10, 1]);
        assert_eq!(root_pids(1, 0), [1]);
    }

    #[test]
    fn relative_names_join_the_working_directory() {
        assert_eq!(join(b"/tmp", b"x"), b"/tmp/x");
        assert_eq!(join(b"/", b"./x"), b"/./x");
        assert_eq!(join(b"/tmp", b"/bin/x"), b"/bin/x");
        assert_eq!(join(b"/t\xff", b"x"), b"/t\xff/x");
    }
}
