//! Exec capture end to end: the real sensor, real execs, the JSON that comes out.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    ffi::CString,
    fs,
    os::fd::AsRawFd as _,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, symlink},
        process::CommandExt,
    },
    process::Command,
    sync::{Arc, Barrier},
    thread,
};

use serde_json::Value;
use tinyexec_harness::{
    Sensor, TempDir, exec_of, execveat_fd, field, field_str, field_u64, memfd_named, own_comm,
    run_ok, spawn, tiny_exit0, tiny_sleeper, unique,
};

fn all_execs() -> Sensor {
    Sensor::start(["--all-execs"])
}

/// The facts every exec record must get right about a file we wrote.
fn assert_file_facts(rec: &Value, path: &std::path::Path) {
    let md = fs::metadata(path).expect("stat");
    let path_str = path.to_str().expect("UTF-8 path");
    assert_eq!(field_str(rec, "file.path"), path_str);
    assert_eq!(field_str(rec, "process.executable"), path_str);
    assert_eq!(
        field_str(rec, "file.name"),
        path.file_name()
            .and_then(|n| n.to_str())
            .expect("a file name")
    );
    assert_eq!(field_u64(rec, "file.size"), md.len());
    assert_eq!(field_u64(rec, "file.inode"), md.ino());
    assert_eq!(field_u64(rec, "file.device"), md.dev());
}

#[test]
fn exec_with_unique_path_and_args_from_known_parent() {
    let sensor = all_execs();
    let dir = TempDir::new("plain");
    let name = unique("bin");
    let path = dir.exe(&name, &tiny_exit0());
    let arg1 = unique("arg");
    let mut child = spawn(Command::new(&path).args([arg1.as_str(), "second arg", ""]));
    let pid = child.id();
    assert!(child.wait().unwrap().success());

    let rec = sensor.wait_for("the exec", exec_of(&path));
    assert_file_facts(&rec, &path);
    assert_eq!(field_str(&rec, "event.action"), "exec");
    assert!(field_u64(&rec, "event.sequence") >= 1);
    assert_eq!(field_u64(&rec, "process.pid"), u64::from(pid));
    assert_eq!(
        field(&rec, "process.args"),
        &serde_json::json!([path.to_str().unwrap(), arg1, "second arg", ""])
    );
    assert_eq!(field_u64(&rec, "process.args_count"), 4);
    assert_eq!(
        field_str(&rec, "process.command_line"),
        format!("{} {arg1} second arg ", path.display())
    );
    // The kernel names the process after the file (truncated to 15 bytes).
    let comm: String = name.chars().take(15).collect();
    assert_eq!(field_str(&rec, "process.name"), comm);
    assert_eq!(
        field_u64(&rec, "process.parent.pid"),
        u64::from(std::process::id())
    );
    assert_eq!(field_str(&rec, "process.parent.name"), own_comm());
    assert_eq!(field_str(&rec, "process.parent_process_name"), own_comm());
    assert_eq!(
        field_str(&rec, "process.parent.executable"),
        fs::canonicalize(std::env::current_exe().unwrap())
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert_eq!(field_u64(&rec, "process.uid"), 0);
    assert_eq!(field_str(&rec, "process.user"), "root");
    assert_eq!(field_u64(&rec, "file.nlink"), 1);
    assert_eq!(field(&rec, "file.deleted"), false);
    assert_eq!(field(&rec, "file.memfd"), false);
    assert_eq!(field(&rec, "file.path_truncated"), false);
    assert!(!field_str(&rec, "host.hostname").is_empty());
    assert!(field_str(&rec, "@timestamp").ends_with('Z'));
}

#[test]
fn symlink_and_relative_path_name_the_real_file() {
    let sensor = all_execs();
    let dir = TempDir::new("links");
    let real = dir.exe(&unique("real"), &tiny_exit0());
    let link = dir.path().join(unique("link"));
    symlink(&real, &link).unwrap();
    let via_link = unique("via-link");
    run_ok(Command::new(&link).arg(&via_link));
    let via_rel = unique("via-rel");
    let rel = format!("./{}", real.file_name().unwrap().to_str().unwrap());
    run_ok(Command::new(&rel).current_dir(dir.path()).arg(&via_rel));

    for marker in [via_link, via_rel] {
        let rec = sensor.wait_for(&marker, |v| {
            field(v, "process.args")
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == marker.as_str()))
        });
        assert_file_facts(&rec, &real);
    }
}

#[test]
fn exec_as_another_uid() {
    let sensor = all_execs();
    let dir = TempDir::new("nobody");
    let path = dir.exe(&unique("bin"), &tiny_exit0());
    run_ok(Command::new(&path).uid(65534).gid(65534));
    let rec = sensor.wait_for("the exec as nobody", exec_of(&path));
    assert_eq!(field_u64(&rec, "process.uid"), 65534);
    assert_eq!(field_u64(&rec, "process.gid"), 65534);
    assert_eq!(field_u64(&rec, "process.euid"), 65534);
    assert_eq!(field_str(&rec, "process.user"), "nobody");
    assert_eq!(field_str(&rec, "user.name"), "nobody");
}

#[test]
fn memfd_exec_is_flagged() {
    let sensor = all_execs();
    let bytes = tiny_exit0();
    let (fd, name) = memfd_named(&bytes);
    let marker = unique("fileless");
    assert!(
        execveat_fd(fd.as_raw_fd(), &marker)
            .wait()
            .unwrap()
            .success()
    );
    drop(fd);

    let rec = sensor.wait_for("the memfd exec", |v| {
        field(v, "process.args").get(1).and_then(Value::as_str) == Some(marker.as_str())
    });
    assert_eq!(field(&rec, "file.memfd"), true, "{rec}");
    assert_eq!(field(&rec, "file.path_disconnected"), true, "{rec}");
    assert_eq!(field_str(&rec, "file.path"), format!("/memfd:{name}"));
    assert_eq!(field_u64(&rec, "file.size"), bytes.len() as u64);
}

#[test]
fn file_deleted_while_running_and_before_exec() {
    let sensor = all_execs();
    let dir = TempDir::new("deleted");
    // Deleted right after it starts: the record still describes what ran.
    let path = dir.exe(&unique("sleeper"), &tiny_sleeper(500));
    let md = fs::metadata(&path).unwrap();
    let mut child = spawn(&mut Command::new(&path));
    fs::remove_file(&path).unwrap();
    let rec = sensor.wait_for("the exec of the file deleted while running", exec_of(&path));
    assert!(child.wait().unwrap().success());
    assert_eq!(field_u64(&rec, "file.inode"), md.ino());
    assert_eq!(field_u64(&rec, "file.size"), md.len());

    // Deleted before it ran (exec through an fd): flagged.
    let path = dir.exe(&unique("unlinked"), &tiny_exit0());
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string; the fd stays open across fork.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    fs::remove_file(&path).unwrap();
    let marker = unique("after-unlink");
    assert!(execveat_fd(fd, &marker).wait().unwrap().success());
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    let rec = sensor.wait_for("the exec of an unlinked file", |v| {
        field(v, "process.args").get(1).and_then(Value::as_str) == Some(marker.as_str())
    });
    assert_eq!(field(&rec, "file.deleted"), true, "{rec}");
    assert_eq!(field_u64(&rec, "file.nlink"), 0);
    assert_eq!(field_str(&rec, "file.path"), path.to_str().unwrap());
}

#[test]
fn fifty_concurrent_execs_fifty_records() {
    const N: usize = 50;
    let sensor = all_execs();
    let dir = TempDir::new("storm");
    let path = dir.exe(&unique("bin"), &tiny_exit0());
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                run_ok(Command::new(&path).arg(i.to_string()));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    sensor.wait_for_n("50 execs", N, exec_of(&path));
    // Anything more before the barrier would be a duplicate.
    let recs: Vec<Value> = sensor
        .records_before_barrier()
        .into_iter()
        .filter(exec_of(&path))
        .collect();
    assert_eq!(recs.len(), N, "exactly one record per exec");
    let mut args: Vec<u64> = recs
        .iter()
        .map(|r| field_str(r, "process.args.1").parse().unwrap())
        .collect();
    args.sort_unstable();
    assert_eq!(args, (0..N as u64).collect::<Vec<_>>());
    let mut pids: Vec<u64> = recs.iter().map(|r| field_u64(r, "process.pid")).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), N, "distinct pids");
}
