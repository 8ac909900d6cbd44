//! Prevent mode: the kernel kills a matching exec before its first instruction.
//!
//! Its own test binary: a prevent-mode sensor kills every matching exec on the
//! host, so it must not run beside tests that expect their stagers to run.

use std::{
    fs,
    os::{
        fd::AsRawFd as _,
        unix::{ffi::OsStrExt, process::ExitStatusExt},
    },
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use tinyexec_ebpf::rule::{S1, S2};
use tinyexec_harness::{
    Sensor, TempDir,
    elf::{Action, Arch, TinyElf},
    exec_of, execveat_fd, field, field_str, field_u64, matching_elf, memfd_with, run_ok, spawn,
    unique,
};

fn assert_alert(rec: &serde_json::Value, bytes: &[u8]) {
    let sha = tinyexec_harness::sha256_hex(bytes);
    assert_eq!(field_str(rec, "event.kind"), "alert", "{rec}");
    assert_eq!(field_str(rec, "rule.name"), "EQGRP_tinyexec");
    assert_eq!(field_str(rec, "tinyexec.content_source"), "kernel");
    assert_eq!(field_str(rec, "file.hash.sha256"), sha);
    assert_eq!(field_u64(rec, "file.size"), bytes.len() as u64);
}

#[test]
fn prevent_kills_before_the_first_instruction() {
    for arch in [Arch::X86_64, Arch::I386] {
        let sensor = Sensor::start(["--prevent"]);
        let dir = TempDir::new("prevent");
        let marker = dir.path().join(unique("marker"));
        let bytes = matching_elf(
            arch,
            vec![Action::CreateFile(marker.as_os_str().as_bytes().to_vec())],
            None,
        );
        let path = dir.exe(&unique("stager"), &bytes);
        let status = spawn(&mut Command::new(&path)).wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{arch:?}: {status}");
        assert!(!marker.exists(), "{arch:?}: the killed program ran");
        let rec = sensor.wait_for("kill alert", exec_of(&path));
        assert_eq!(field_str(&rec, "event.action"), "killed");
        assert_alert(&rec, &bytes);

        // The same program without the strings runs and writes its marker.
        let mut t = TinyElf::new(arch);
        t.actions = vec![Action::CreateFile(marker.as_os_str().as_bytes().to_vec())];
        let harmless = dir.exe(&unique("harmless"), &t.build().unwrap());
        run_ok(&mut Command::new(&harmless));
        assert!(marker.exists());
    }
}

/// 257 to 269 bytes: the kernel kills when both strings lie in its 256-byte
/// header; when a string lies past it, the program runs and user space alerts.
#[test]
fn prevent_decides_from_the_header_alone() {
    let sensor = Sensor::start(["--prevent"]);
    let dir = TempDir::new("prevent-269");
    let mut early = TinyElf::new(Arch::X86_64);
    early.actions = vec![Action::SleepMs(300)];
    early.trailer = [&S1[..], &S2[..], &[0u8; 40][..]].concat();
    early.total_len = Some(269);
    let early = early.build().unwrap();
    let path = dir.exe(&unique("early"), &early);
    let status = spawn(&mut Command::new(&path)).wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let rec = sensor.wait_for("kill of a 269-byte file", exec_of(&path));
    assert_eq!(field_str(&rec, "event.action"), "killed");

    let mut late = TinyElf::new(Arch::X86_64);
    late.actions = vec![Action::SleepMs(300)];
    late.trailer = [&S1[..], &S2[..]].concat();
    late.total_len = Some(269);
    let late = late.build().unwrap();
    let path = dir.exe(&unique("late"), &late);
    run_ok(&mut Command::new(&path));
    let rec = sensor.wait_for("alert on a 269-byte file", exec_of(&path));
    assert_eq!(field_str(&rec, "event.action"), "exec");
    assert_eq!(field_str(&rec, "rule.verdict"), "match");
    assert_eq!(field_str(&rec, "tinyexec.content_source"), "kernel+exe");
}

/// The 256-byte match in a memfd whose size another thread flips between 256
/// and 300 while children exec it: the kernel read the header at whatever
/// size the file had then, so the size read afterwards is no guide. Every
/// exec is killed before it can write its marker.
#[test]
fn a_memfd_whose_size_flips_is_killed_every_time() {
    // Every exec of the one memfd must give its own record: no aggregation.
    let sensor = Sensor::start(["--prevent", "--repeat-window", "0"]);
    let dir = TempDir::new("flip");
    let marker = dir.path().join(unique("marker"));
    let bytes = matching_elf(
        Arch::X86_64,
        vec![Action::CreateFile(marker.as_os_str().as_bytes().to_vec())],
        Some(256),
    );
    let fd = memfd_with(&bytes);
    let file = fs::File::from(fd.try_clone().expect("dup"));
    let stop = AtomicBool::new(false);
    // Stops the flipping however the scope ends (a failed assertion included).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    thread::scope(|s| {
        let _stop = Stop(&stop);
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for len in [300, 256] {
                    file.set_len(len).expect("ftruncate");
                }
            }
        });
        for i in 0..50 {
            let tag = unique("flip");
            let status = execveat_fd(fd.as_raw_fd(), &tag).wait().expect("wait");
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "exec {i} of the flipping memfd was not killed: {status}"
            );
            let rec = sensor.wait_for("the kill", |v| field(v, "process.args.1") == tag.as_str());
            assert_eq!(field_str(&rec, "event.action"), "killed", "{rec}");
            assert_eq!(field(&rec, "file.writable"), true);
        }
    });
    assert!(!marker.exists(), "a killed exec ran");
}

/// `--prevent` says which mechanism is in force, and why the refusal is not,
/// on stderr before and in its `ready` line and in every heartbeat. Where
/// the kernel lists no `bpf` among its active LSMs (or the list cannot be
/// read, as here, where the kernel also refuses BPF LSM programs with EPERM)
/// it is the kill, the mechanism the tests above exercise.
#[test]
fn prevent_says_which_mechanism_is_in_force_and_why() {
    let sensor = Sensor::start(["--prevent", "--heartbeat-interval", "1"]);
    let stderr = sensor.stderr();
    let ready = stderr
        .lines()
        .find(|l| l.contains("tinyexec-sensor: ready: "))
        .unwrap_or_else(|| panic!("no ready line:\n{stderr}"));
    let heartbeat = sensor.wait_for("a heartbeat", tinyexec_harness::is_heartbeat);
    let bpf_listed = fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.trim().split(',').any(|m| m == "bpf"));
    if ready.contains("prevent: lsm") {
        assert!(
            bpf_listed,
            "the refusal without bpf among the active LSMs: {ready}"
        );
        assert_eq!(field_str(&heartbeat, "heartbeat.prevent"), "lsm");
        return;
    }
    let (_, why) = ready
        .split_once("prevent: kill (")
        .and_then(|(_, rest)| rest.split_once("no LSM refusal: "))
        .unwrap_or_else(|| panic!("the ready line names no mechanism and reason: {ready}"));
    let why = why.strip_suffix("))").unwrap_or(why);
    assert!(!why.is_empty(), "{ready}");
    // Said as a warning before `ready` too.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("warning: prevent: kill") && l.contains(why)),
        "{stderr}"
    );
    assert_eq!(field_str(&heartbeat, "heartbeat.prevent"), "kill");
    assert_eq!(field_str(&heartbeat, "heartbeat.prevent_reason"), why);
}

/// `run --help` says what `--prevent` does and which mechanism this
/// machine's kernel allows as far as its list of active LSMs tells.
#[test]
fn run_help_says_which_mechanism_this_kernel_allows() {
    let out = Command::new(tinyexec_harness::sensor_path())
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    let line = help
        .lines()
        .find(|l| l.contains("On this machine now: "))
        .unwrap_or_else(|| panic!("no word on this machine under --prevent:\n{help}"));
    match fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if list.trim().split(',').any(|m| m == "bpf") => {
            assert!(line.contains("the refusal, if the kernel takes"), "{line}");
        }
        Ok(_) => assert!(line.contains("the kill: bpf is not in"), "{line}"),
        Err(_) => assert!(
            line.contains("cannot read /sys/kernel/security/lsm"),
            "{line}"
        ),
    }
}
