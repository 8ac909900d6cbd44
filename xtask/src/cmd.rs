//! Asking the system about commands: where one is, what one prints.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// Where `sudo` may leave the system's administration commands off PATH.
const SBIN: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// A command's stdout, trimmed, when it runs and succeeds (its stderr silenced:
/// a probe's failure is an answer, not an error).
pub fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A command on PATH or in the sbin directories.
pub fn find_cmd(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(SBIN.map(PathBuf::from));
    let dirs = std::env::join_paths(dirs).ok()?;
    which::which_in_global(name, Some(dirs)).ok()?.next()
}

/// How to tell that a Debian package is installed.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// A command it provides is on PATH (or in the sbin directories).
    Command(&'static str),
    /// A shell test that succeeds.
    Shell(&'static str),
}

impl Probe {
    pub fn holds(self) -> bool {
        match self {
            Probe::Command(name) => find_cmd(name).is_some(),
            Probe::Shell(test) => output_of(Command::new("sh").args(["-c", test])).is_some(),
        }
    }
}
