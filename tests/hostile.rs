//! Hostile files and races (issue 11): writable memfds rewritten after exec,
//! matches that exit at once, decoys that would flood the SOC with
//! `undetermined` alerts, and a `binfmt_misc` handler whose target is the stager.
//! (The size-flipping memfd under `--prevent` is in tests/prevent.rs: a
//! prevent-mode sensor kills every matching exec on the machine.)
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    fs,
    os::{fd::AsRawFd as _, unix::fs::FileExt as _},
    path::Path,
    process::Command,
};

use serde_json::Value;
use tinyexec_ebpf::rule::{S1, S2};
use tinyexec_harness::{
    Sensor, TempDir,
    elf::{Action, Arch, TinyElf},
    exec_of, execveat_fd, field, field_str, field_u64, memfd_with, run_ok, sha256_hex, tiny_exit0,
    unique,
};

/// A 269-byte match whose `$s2` lies past the kernel's 256-byte header.
fn late_match(actions: Vec<Action>) -> Vec<u8> {
    let mut t = TinyElf::new(Arch::X86_64);
    t.actions = actions;
    t.trailer = [&S1[..], &S2[..]].concat();
    t.total_len = Some(269);
    t.build().expect("tiny ELF")
}

/// Waits out the sensor's bound on files changed just before they ran
/// (`CHANGE_TIME_GRAIN` in detect.rs, 50 ms).
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// Stops the sensor (SIGSTOP) while `f` runs: the execs in it are over, and
/// their processes gone, before the sensor looks at them.
fn with_sensor_stopped(sensor: &Sensor, f: impl FnOnce()) {
    // SAFETY: signals to our own child.
    unsafe { libc::kill(sensor.pid().cast_signed(), libc::SIGSTOP) };
    f();
    // SAFETY: as above.
    unsafe { libc::kill(sensor.pid().cast_signed(), libc::SIGCONT) };
}

/// A match in a memfd with a writable descriptor, its tail overwritten right
/// after the exec: the bytes that decide were not captured at exec, so the
/// verdict is `undetermined` (an alert) in every mode, never "no match".
#[test]
fn a_writable_memfd_rewritten_after_exec_still_alerts() {
    for mode in [&[][..], &["--all-execs"][..]] {
        let sensor = Sensor::start(mode.iter().copied());
        let bytes = late_match(vec![Action::SleepMs(200)]);
        let tail = bytes.len() - S2.len();
        for _ in 0..10 {
            let fd = memfd_with(&bytes);
            let marker = unique("rewritten");
            let mut child = execveat_fd(fd.as_raw_fd(), &marker);
            let f = fs::File::from(fd.try_clone().expect("dup"));
            f.write_all_at(&[0u8; 10], tail as u64)
                .expect("overwrite the tail");
            assert!(child.wait().expect("wait").success());
            let rec = sensor.wait_for("an alert for the rewritten memfd", |v| {
                field(v, "process.args.1") == marker.as_str()
            });
            assert_eq!(field_str(&rec, "event.kind"), "alert", "{mode:?}: {rec}");
            assert_eq!(field_str(&rec, "rule.verdict"), "undetermined", "{rec}");
            assert!(field_str(&rec, "rule.reason").contains("written"), "{rec}");
            assert_eq!(field(&rec, "file.writable"), true);
            assert_eq!(field(&rec, "file.memfd"), true);
        }
    }
}

/// A 269-byte match that has exited (file not deleted) before the sensor
/// reads its tail: decided from the unchanged file at the kernel's path.
#[test]
fn a_match_that_exited_at_once_is_decided_from_its_unchanged_file() {
    let sensor = Sensor::start(Vec::<&str>::new());
    let dir = TempDir::new("exited");
    let bytes = late_match(vec![]);
    let paths: Vec<_> = (0..20).map(|_| dir.exe(&unique("quick"), &bytes)).collect();
    // Files changed moments before they run are not trusted (their change
    // time could hide a later write): these were written well before.
    settle();
    with_sensor_stopped(&sensor, || {
        for p in &paths {
            run_ok(&mut Command::new(p));
        }
    });
    for p in &paths {
        let rec = sensor.wait_for("the quick match's alert", exec_of(p));
        assert_eq!(field_str(&rec, "rule.verdict"), "match", "{rec}");
        assert_eq!(
            field_str(&rec, "tinyexec.content_source"),
            "kernel+path",
            "{rec}"
        );
        assert_eq!(field_str(&rec, "file.hash.sha256"), sha256_hex(&bytes));
    }
    // Changed after it ran (same inode, new change time): not the bytes that ran.
    let changed = dir.exe(&unique("changed"), &bytes);
    settle();
    with_sensor_stopped(&sensor, || {
        run_ok(&mut Command::new(&changed));
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&changed)
            .expect("open");
        f.write_all_at(&bytes[..1], 0).expect("rewrite a byte");
    });
    let rec = sensor.wait_for("the changed file's alert", exec_of(&changed));
    assert_eq!(field_str(&rec, "rule.verdict"), "undetermined", "{rec}");
    assert!(
        field_str(&rec, "rule.reason").contains("unchanged"),
        "{rec}"
    );
}

/// A non-matching 260-byte ELF whose header ends with `$s2`'s first 6 bytes:
/// thousands of execs of it gave as many `undetermined` alerts. Decided from
/// the file, they give none.
#[test]
fn a_decoy_that_cannot_match_gives_no_alerts() {
    let sensor = Sensor::start(Vec::<&str>::new());
    let dir = TempDir::new("decoy");
    let mut t = TinyElf::new(Arch::X86_64);
    // $s1, then padding up to a header that ends with the start of $s2, then 4 bytes.
    let mut trailer = S1.to_vec();
    t.trailer = Vec::new();
    t.total_len = None;
    let body = t.min_len();
    trailer.resize(256 - body - 6, 0x90);
    trailer.extend_from_slice(&S2[..6]);
    trailer.extend_from_slice(&[0x90; 4]);
    t.trailer = trailer;
    let decoy_bytes = t.build().expect("tiny ELF");
    assert_eq!(decoy_bytes.len(), 260);
    assert_eq!(&decoy_bytes[250..256], &S2[..6]);
    let decoy = dir.exe(&unique("decoy"), &decoy_bytes);
    settle();
    with_sensor_stopped(&sensor, || {
        for _ in 0..500 {
            run_ok(&mut Command::new(&decoy));
        }
    });
    let before = sensor.records_before_barrier();
    let about: Vec<&Value> = before.iter().filter(|v| exec_of(&decoy)(v)).collect();
    assert!(
        about.is_empty(),
        "{} records for the decoy: {:?}",
        about.len(),
        about.first()
    );
}

/// The mount point of `binfmt_misc`, mounted if it is not.
fn binfmt_misc() -> &'static Path {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("register").exists() {
        let st = Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mounting binfmt_misc failed: {st}");
    }
    dir
}

/// Unregisters a `binfmt_misc` entry when dropped.
struct Handler(std::path::PathBuf);

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = fs::write(&self.0, "-1");
    }
}

/// A `binfmt_misc` handler, matched by magic bytes, whose target is the stager
/// and whose interpreter is some harmless program: the kernel runs the
/// interpreter, and the stager is checked by the name given to exec.
#[test]
fn a_binfmt_misc_target_that_matches_alerts_by_name() {
    let sensor = Sensor::start(Vec::<&str>::new());
    let dir = TempDir::new("binfmt");
    let interp = dir.exe(&unique("interp"), &tiny_exit0());
    // The stager with a unique tag after the strings, for the handler's magic.
    let tag = unique("m").into_bytes();
    let tag = &tag[tag.len() - 8..];
    let mut t = TinyElf::new(Arch::X86_64);
    t.trailer = [&S1[..], &S2[..], tag].concat();
    let stager = t.build().expect("tiny ELF");
    let offset = stager.len() - tag.len();
    let target = dir.exe(&unique("target"), &stager);
    let name = format!("tinyexec-{}", std::process::id());
    let magic: String = tag.iter().map(|b| format!("\\x{b:02x}")).collect();
    let root = binfmt_misc();
    fs::write(
        root.join("register"),
        format!(":{name}:M:{offset}:{magic}::{}:", interp.display()),
    )
    .expect("register the binfmt_misc handler");
    let _handler = Handler(root.join(&name));

    let marker = unique("binfmt");
    run_ok(Command::new(&target).arg(&marker));
    let rec = sensor.wait_for("the target's alert", |v| {
        field(v, "event.kind") == "alert"
            && field(v, "process.exec_path") == target.as_os_str().to_str().unwrap()
    });
    assert_eq!(
        field_str(&rec, "file.path"),
        interp.to_str().unwrap(),
        "{rec}"
    );
    assert_eq!(
        field_str(&rec, "file.target.path"),
        target.to_str().unwrap()
    );
    assert_eq!(field_u64(&rec, "file.target.size"), stager.len() as u64);
    assert_eq!(
        field_str(&rec, "file.target.hash.sha256"),
        sha256_hex(&stager)
    );
    assert_eq!(field_str(&rec, "tinyexec.content_source"), "path");
    assert_eq!(field_str(&rec, "rule.verdict"), "match");
    assert!(field(&rec, "file.hash").is_null(), "{rec}");
}
