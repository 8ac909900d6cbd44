//! The barrier that negative checks rest on: after the case, exec a known
//! matching file and wait for its own record. The kernel program writes each
//! exec's record before that exec returns, into one ring buffer the sensor
//! reads in order; the barrier's verdict needs the bytes past the kernel's
//! 256-byte header, so the sensor decides it through its file readers, which
//! release what they decide in the order the execs came. So every record of
//! an exec that finished before the barrier ran, decided on the data path or
//! by a reader, has arrived once the barrier's has. "Nothing arrived" is then
//! asserted on what came before the barrier, never after a sleep.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

use crate::{
    Sensor, TempDir,
    elf::{Arch, TinyElf},
    exec_of, run_or_killed, unique,
};

/// A fresh matching file, unique in name and content, whose `$s2` lies past
/// the kernel's 256-byte header: the kernel cannot decide it (no kill under
/// `--prevent`), user space must read its last bytes, and it yields an alert
/// in every mode (`match`, or `undetermined` should its file not be read in
/// time). The stager's case that a sensor blind to the file's directory
/// misses (issue 23: `/tmp`, `/home` under the unit's sandbox).
///
/// Unique content, not only a unique name: the flood bound (`--repeat-window`)
/// folds an exec into an earlier alert with the same device, inode, size and
/// content, and a deleted file's inode may be given to the next one. `name`,
/// in the trailer between the rule's strings, makes its hash one no other
/// file has.
///
/// # Panics
///
/// When `name` is too long for the bytes to stay a rule candidate.
#[must_use]
pub fn late_match(name: &str) -> Vec<u8> {
    let mut t = TinyElf::new(Arch::native());
    t.trailer = [
        &tinyexec_ebpf::rule::S1[..],
        name.as_bytes(),
        &tinyexec_ebpf::rule::S2[..],
    ]
    .concat();
    t.total_len = Some(tinyexec_ebpf::rule::FILESIZE_LT_LEN - 1);
    let bytes = t.build().expect("a tiny ELF with $s2 past the header");
    assert!(
        bytes.len() - tinyexec_ebpf::rule::S2.len() >= tinyexec_ebpf::HEADER_LEN,
        "$s2 must lie past the kernel's {} B header",
        tinyexec_ebpf::HEADER_LEN
    );
    assert!(
        tinyexec_ebpf::rule::evaluate(&bytes).is_some(),
        "the file must match"
    );
    bytes
}

/// A barrier: a [`late_match`] file in `dir`.
fn barrier_file(dir: &TempDir) -> PathBuf {
    let name = unique("barrier");
    dir.exe(&name, &late_match(&name))
}

impl Sensor {
    /// Runs a barrier and waits for its record; returns that record and every
    /// record (of any kind, from anyone) that arrived before it, in order.
    ///
    /// Execs the caller wants covered must have returned (their process
    /// waited for, or at least started) before this is called.
    /// It reads the sensor's stdout: not for a sensor run with `--no-stdout`,
    /// nor one whose exclusions count (`--suppressed count`) an alert on a
    /// file named `tx-barrier-…` run by the test (it would never arrive).
    ///
    /// # Panics
    ///
    /// When the barrier's record does not arrive within [`crate::event_timeout`].
    #[must_use]
    pub fn barrier(&self) -> (Value, Vec<Value>) {
        let dir = TempDir::new("barrier");
        let path = barrier_file(&dir);
        run_or_killed(&mut Command::new(&path));
        let rec = self.wait_for("the barrier's record", exec_of(&path));
        let mut all = self.records(|_| true);
        let at = all
            .iter()
            .position(exec_of(&path))
            .expect("the barrier's record was read");
        all.truncate(at);
        (rec, all)
    }

    /// Every record that arrived before a barrier run now: what a negative
    /// check ("no record of X") looks at.
    ///
    /// # Panics
    ///
    /// As [`Sensor::barrier`].
    #[must_use]
    pub fn records_before_barrier(&self) -> Vec<Value> {
        self.barrier().1
    }
}
