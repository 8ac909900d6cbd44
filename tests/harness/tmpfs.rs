//! A real small filesystem a test fills up: a tmpfs of a few pages, mounted
//! for the test and unmounted when dropped.

use std::{
    fs,
    io::{ErrorKind, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

/// A tmpfs mounted on a fresh directory; unmounted (lazily: the sensor may
/// still hold a file) and removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes (whole pages) on `dir`, created here.
    pub fn mount(dir: &Path, size: u64) -> Self {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {}: {status}",
            dir.display()
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills every free page with the file `name`; returns its path (remove
    /// it to free the space). A file already there keeps the free bytes of its
    /// last page: its next write that needs a new page is cut short by ENOSPC.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut f =
            fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let page = [0u8; 4096];
        loop {
            match f.write(&page) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                other => panic!("filling {}: {other:?}", path.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
    }
}
