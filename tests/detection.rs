//! Detection at exec time, end to end: real execs of tiny ELFs that match the
//! rule (and near-twins that do not), under every way of reaching the file.

use std::{
    ffi::OsStr,
    fs,
    os::fd::AsRawFd as _,
    os::unix::fs::{MetadataExt, symlink},
    path::Path,
    process::Command,
};

use serde_json::Value;
use tinyexec_ebpf::rule::{S1, S2};
use tinyexec_harness::{
    Sensor, TempDir, corpus,
    elf::{Action, Arch},
    exec_of, execveat_fd, field, field_str, field_u64, matching_elf, memfd_with, run_ok,
    sha256_hex, spawn, tiny_exit0, unique, write_exe,
};

/// The alerts about `path` among `records`.
fn alerts_in<'a>(records: &'a [Value], path: &Path) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|v| exec_of(path)(v) && field(v, "event.kind") == "alert")
        .collect()
}

fn assert_alert(rec: &Value, bytes: &[u8], source: &str) {
    assert_eq!(field_str(rec, "event.kind"), "alert", "{rec}");
    assert_eq!(field_str(rec, "rule.name"), "EQGRP_tinyexec");
    assert_eq!(field_str(rec, "rule.verdict"), "match");
    assert_eq!(field_str(rec, "tinyexec.content_source"), source, "{rec}");
    assert_eq!(field_str(rec, "file.hash.sha256"), sha256_hex(bytes));
    assert_eq!(field_u64(rec, "file.size"), bytes.len() as u64);
    let offsets = |id: usize| field(rec, &format!("rule.strings.{id}.offsets")).clone();
    let find = |s: &[u8]| {
        (0..=bytes.len() - s.len())
            .filter(|&i| &bytes[i..i + s.len()] == s)
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(0), serde_json::json!(find(&S1)));
    assert_eq!(offsets(1), serde_json::json!(find(&S2)));
}

/// Alerts-only mode: every runnable corpus file is exec'd; one alert for each
/// matching file, none for the rest.
#[test]
fn corpus_execs_alert_exactly_on_matches() {
    let sensor = Sensor::start(Vec::<&str>::new());
    let dir = TempDir::new("corpus");
    let samples = corpus::write(dir.path()).expect("write corpus");
    let runnable: Vec<_> = samples
        .iter()
        .filter(|(_, s)| s.runnable.is_some())
        .collect();
    assert!(runnable.iter().any(|(_, s)| s.runnable == Some(Arch::I386)));
    assert!(
        runnable
            .iter()
            .any(|(_, s)| s.runnable == Some(Arch::X86_64))
    );
    for (path, _) in &runnable {
        run_ok(&mut Command::new(path));
    }
    for (path, s) in &runnable {
        if s.expect_match {
            let rec = sensor.wait_for(&s.name, exec_of(path));
            assert_alert(&rec, &s.bytes, field_str(&rec, "tinyexec.content_source"));
        }
    }
    let before = sensor.records_before_barrier();
    for (path, s) in &runnable {
        let n = alerts_in(&before, path).len();
        assert_eq!(n, usize::from(s.expect_match), "{}: {n} alerts", s.name);
    }
    // Nothing but alerts in this mode.
    let others: Vec<&Value> = before
        .iter()
        .filter(|v| field(v, "event.kind") != "alert")
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[test]
fn every_way_of_reaching_a_matching_file_alerts_on_what_ran() {
    // The same file run again must alert again: no repeat window.
    let sensor = Sensor::start(["--repeat-window", "0"]);
    let dir = TempDir::new("ways");
    let bytes = matching_elf(Arch::X86_64, vec![], None);
    let real = dir.exe(&unique("stager"), &bytes);

    // Directly, then renamed.
    run_ok(&mut Command::new(&real));
    assert_alert(&sensor.wait_for("direct", exec_of(&real)), &bytes, "kernel");
    let renamed = dir.path().join("update-firewall-rules");
    fs::rename(&real, &renamed).unwrap();
    run_ok(&mut Command::new(&renamed));
    assert_alert(
        &sensor.wait_for("renamed", exec_of(&renamed)),
        &bytes,
        "kernel",
    );

    // Through a symlink and by a relative path: the alert names the real file.
    let link = dir.path().join(unique("link"));
    symlink(&renamed, &link).unwrap();
    let marker = unique("via-link");
    run_ok(Command::new(&link).arg(&marker));
    let rec = sensor.wait_for("via symlink", |v| {
        field(v, "process.args.1") == marker.as_str()
    });
    assert_eq!(field_str(&rec, "file.path"), renamed.to_str().unwrap());
    assert_alert(&rec, &bytes, "kernel");
    let marker = unique("relative");
    run_ok(
        Command::new("./update-firewall-rules")
            .current_dir(dir.path())
            .arg(&marker),
    );
    let rec = sensor.wait_for("relative", |v| {
        field(v, "process.args.1") == marker.as_str()
    });
    assert_eq!(field_str(&rec, "file.path"), renamed.to_str().unwrap());

    // A hard link: same inode, its own name.
    let hard = dir.path().join(unique("hard"));
    fs::hard_link(&renamed, &hard).unwrap();
    run_ok(&mut Command::new(&hard));
    let rec = sensor.wait_for("hard link", exec_of(&hard));
    assert_eq!(
        field_u64(&rec, "file.inode"),
        fs::metadata(&hard).unwrap().ino()
    );
    assert_eq!(field_u64(&rec, "file.nlink"), 2);
    assert_alert(&rec, &bytes, "kernel");
}

#[test]
fn memfd_deleted_and_replaced_files_alert_on_what_ran() {
    // The same file run again must alert again: no repeat window.
    let sensor = Sensor::start(["--repeat-window", "0"]);
    let bytes = matching_elf(Arch::X86_64, vec![], None);

    // Fileless, from a memfd.
    let fd = memfd_with(&bytes);
    let marker = unique("memfd-run");
    assert!(
        execveat_fd(fd.as_raw_fd(), &marker)
            .wait()
            .unwrap()
            .success()
    );
    drop(fd);
    let rec = sensor.wait_for("memfd alert", |v| {
        field(v, "process.args.1") == marker.as_str()
    });
    assert_eq!(field(&rec, "file.memfd"), true);
    assert_alert(&rec, &bytes, "kernel");

    let dir = TempDir::new("gone");
    // Deleted while running.
    let sleeper = matching_elf(Arch::X86_64, vec![Action::SleepMs(300)], None);
    let path = dir.exe(&unique("deleted"), &sleeper);
    let mut child = spawn(&mut Command::new(&path));
    fs::remove_file(&path).unwrap();
    assert!(child.wait().unwrap().success());
    assert_alert(
        &sensor.wait_for("deleted while running", exec_of(&path)),
        &sleeper,
        "kernel",
    );

    // Replaced at the same path by a harmless file right after it started:
    // the alert describes what ran.
    let path = dir.exe(&unique("replaced"), &sleeper);
    let ran_inode = fs::metadata(&path).unwrap().ino();
    let mut child = spawn(&mut Command::new(&path));
    let tmp = dir.path().join(unique("harmless"));
    write_exe(&tmp, &tiny_exit0());
    fs::rename(&tmp, &path).unwrap();
    assert!(child.wait().unwrap().success());
    let rec = sensor.wait_for("replaced after start", exec_of(&path));
    assert_alert(&rec, &sleeper, "kernel");
    assert_eq!(field_u64(&rec, "file.inode"), ran_inode);
    // The harmless file now at that path raises nothing.
    run_ok(&mut Command::new(&path));
    assert_eq!(alerts_in(&sensor.records_before_barrier(), &path).len(), 1);
}

#[test]
fn tail_past_the_header_is_read_from_the_running_file() {
    let sensor = Sensor::start(Vec::<&str>::new());
    let dir = TempDir::new("tail");
    // 269 bytes, $s2 ends at the very end: the kernel's 256 bytes cannot decide.
    let bytes = matching_elf(Arch::X86_64, vec![Action::SleepMs(300)], Some(269));
    let path = dir.exe(&unique("tail"), &bytes);
    run_ok(&mut Command::new(&path));
    assert_alert(
        &sensor.wait_for("tail match", exec_of(&path)),
        &bytes,
        "kernel+exe",
    );

    // 270 bytes: never a match, never an alert.
    let twin = matching_elf(Arch::X86_64, vec![Action::SleepMs(300)], Some(270));
    let twin_path = dir.exe(&unique("twin"), &twin);
    run_ok(&mut Command::new(&twin_path));
    let before = sensor.records_before_barrier();
    assert!(alerts_in(&before, &twin_path).is_empty());
}

#[test]
fn undecidable_when_the_process_is_gone_and_the_file_deleted() {
    let mut sensor = Sensor::start(Vec::<&str>::new());
    let dir = TempDir::new("undetermined");
    let bytes = matching_elf(Arch::X86_64, vec![], Some(269));
    let path = dir.exe(&unique("gone"), &bytes);
    // Hold the sensor so the process has exited and the file is gone before it looks.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(sensor.pid().cast_signed(), libc::SIGSTOP) };
    run_ok(&mut Command::new(&path));
    fs::remove_file(&path).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(sensor.pid().cast_signed(), libc::SIGCONT) };
    let rec = sensor.wait_for("undetermined alert", exec_of(&path));
    assert_eq!(field_str(&rec, "event.kind"), "alert");
    assert_eq!(field_str(&rec, "rule.verdict"), "undetermined");
    assert_eq!(field_str(&rec, "tinyexec.content_source"), "none");
    assert!(field_str(&rec, "rule.reason").contains("/exe"), "{rec}");
    assert!(field(&rec, "file.hash").is_null());
    assert!(sensor.stop_with(libc::SIGTERM).success());
}

/// Alerts-only mode says nothing about ordinary execs, large or small.
#[test]
fn alerts_only_mode_emits_nothing_for_ordinary_execs() {
    let mut sensor = Sensor::start(Vec::<&str>::new());
    let dir = TempDir::new("quiet");
    let big = dir.path().join(unique("true"));
    fs::copy("/bin/true", &big).unwrap();
    run_ok(&mut Command::new(&big));
    let small = dir.exe(&unique("small"), &tiny_exit0());
    run_ok(&mut Command::new(&small));
    let before = sensor.records_before_barrier();
    assert!(sensor.stop_with(libc::SIGTERM).success());
    // Other tests' alerts may show here; none may be about these two.
    assert!(!before.iter().any(exec_of(&big)), "{before:?}");
    assert!(!before.iter().any(exec_of(&small)), "{before:?}");
}

/// Where the BTF-typed entry cannot be loaded (here `--btf` names a copy of
/// the kernel's BTF: a typed program attaches by the running kernel's own
/// type ids, which a copy does not vouch for), its raw-tracepoint build runs,
/// the log says which and why, and it detects alike: the stager alerts from
/// the kernel's header, its near-twin does not.
#[test]
fn the_raw_tracepoint_entry_detects_alike() {
    let dir = TempDir::new("raw-entry");
    let btf = dir.path().join("vmlinux-copy");
    fs::copy("/sys/kernel/btf/vmlinux", &btf).expect("copy the kernel's BTF");
    let sensor = Sensor::start([OsStr::new("--btf"), btf.as_os_str()]);
    let stderr = sensor.stderr();
    let entry = stderr
        .lines()
        .find(|l| l.contains("entry: "))
        .unwrap_or_else(|| panic!("no entry line:\n{stderr}"));
    assert!(
        entry.contains("tinyexec_rawtp (raw tracepoint") && entry.contains("vmlinux-copy"),
        "{entry}"
    );
    let bytes = matching_elf(Arch::X86_64, vec![], None);
    let stager = dir.exe(&unique("stager"), &bytes);
    run_ok(&mut Command::new(&stager));
    assert_alert(
        &sensor.wait_for("stager", exec_of(&stager)),
        &bytes,
        "kernel",
    );
    let mut twin = bytes.clone();
    let at = twin.len() - 1;
    twin[at] ^= 0xff; // the last byte of $s2
    let twin_path = dir.exe(&unique("twin"), &twin);
    run_ok(&mut Command::new(&twin_path));
    let before = sensor.records_before_barrier();
    assert!(
        alerts_in(&before, &twin_path).is_empty(),
        "the twin alerted"
    );
    assert_eq!(alerts_in(&before, &stager).len(), 1);
}
