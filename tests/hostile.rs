//! Hostile files and races (issue 11): writable memfds rewritten after exec,
//! matches that exit at once, decoys that would flood the SOC with
//! `undetermined` alerts, and a `binfmt_misc` handler whose target is the stager.
//! And where files are read (issue 22): a file system that never answers
//! stalls nothing; files are read in the exec's own mount namespace, from a
//! sensor in another (the unit's `PrivateTmp`), under names that are not
//! UTF-8; a name swapped for a device is never opened.
//! (The size-flipping memfd under `--prevent` is in tests/prevent.rs: a
//! prevent-mode sensor kills every matching exec on the machine.)
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    ffi::OsStr,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::{
            ffi::OsStrExt as _,
            fs::{FileExt as _, PermissionsExt as _},
            process::CommandExt as _,
        },
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tinyexec_ebpf::rule::{S1, S2};
use tinyexec_harness::{
    Sensor, TempDir,
    elf::{Action, Arch, TinyElf},
    exec_of, execveat_fd, field, field_str, field_u64,
    fuse::StallingFs,
    is_heartbeat, matching_elf, memfd_with, run_ok, sensor_path, sha256_hex, stager, tiny_exit0,
    unique, write_exe,
};

/// A 269-byte match whose `$s2` lies past the kernel's 256-byte header.
fn late_match(actions: Vec<Action>) -> Vec<u8> {
    matching_elf(Arch::X86_64, actions, Some(269))
}

/// The same, but not a match: its last byte is not `$s2`'s, and only the
/// bytes past the header show it.
fn late_decoy() -> Vec<u8> {
    let mut bytes = late_match(vec![]);
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    assert!(tinyexec_ebpf::rule::evaluate(&bytes).is_none());
    bytes
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

/// A 269-byte match served by a FUSE file system that never answers the
/// sensor's opens: its alerts come at the read deadline as `undetermined`,
/// and meanwhile another stager alerts at once, heartbeats go on, and SIGTERM
/// stops the sensor. (Before: the data path waited in the open for ever: no
/// alert, no heartbeat, SIGTERM ignored.)
#[test]
fn a_file_system_that_never_answers_stalls_nothing() {
    let mut sensor = Sensor::start(["--heartbeat-interval", "1"]);
    let dir = TempDir::new("fuse");
    let fuse = StallingFs::mount(&dir, "stager", &late_match(vec![]), sensor.pid());
    let markers: Vec<String> = (0..3).map(|_| unique("stalled")).collect();
    for m in &markers {
        run_ok(Command::new(fuse.path()).arg(m));
    }
    // Another stager, while those reads hang: alerted at once.
    let other = dir.exe(&unique("other"), &stager());
    run_ok(&mut Command::new(&other));
    let rec = sensor.wait_for("the other stager's alert", exec_of(&other));
    let (_, arrived) = sensor
        .records_timed(exec_of(&other))
        .into_iter()
        .next()
        .expect("its arrival");
    let latency_ms = (arrived - field_u64(&rec, "tinyexec.ktime_ns")) / 1_000_000;
    assert!(
        latency_ms < 400,
        "the other stager's alert took {latency_ms} ms: held back by the hanging reads"
    );
    for m in &markers {
        let rec = sensor.wait_for("the stalled file's alert", |v| {
            field(v, "process.args.1") == m.as_str()
        });
        assert_eq!(field_str(&rec, "rule.verdict"), "undetermined", "{rec}");
        assert!(
            field_str(&rec, "rule.reason").contains("did not finish within"),
            "{rec}"
        );
    }
    // Heartbeats go on.
    let seen = sensor.records(is_heartbeat).len();
    sensor.wait_for_n("a heartbeat after the stall", seen + 1, is_heartbeat);
    let asked = Instant::now();
    let st = sensor.stop_with(libc::SIGTERM);
    eprintln!(
        "other stager's alert after {latency_ms} ms; stopped {:?} after SIGTERM",
        asked.elapsed()
    );
    assert!(st.success(), "{st}: {}", sensor.stderr());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        asked.elapsed()
    );
}

/// A shell in a mount namespace of its own, with a tmpfs over `hidden` (the
/// sensor sees the directory empty) holding copies of `src`'s files: it runs
/// each once when told, then waits until dropped.
struct OwnNamespace {
    child: std::process::Child,
    lines: BufReader<std::process::ChildStdout>,
}

impl OwnNamespace {
    fn start(hidden: &Path, src: &Path) -> Self {
        let script = r#"mount -t tmpfs none "$1" && cp -p "$2"/* "$1"/ && sleep 0.2 && echo ready \
            && read go && for f in "$1"/*; do "$f"; done; echo done; read end"#;
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(hidden)
            .arg(src)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        lines.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "ready", "the namespace's shell did not start");
        Self { child, lines }
    }

    /// Runs the files, and returns when they have exited.
    fn run_all(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write");
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "done");
    }
}

impl Drop for OwnNamespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The record of the exec of `path`, by its text in the record (a name that
/// is not UTF-8 is shown with U+FFFD).
fn exec_of_lossy(path: &Path) -> impl Fn(&Value) -> bool + '_ {
    move |v| field(v, "file.path") == path.to_string_lossy().as_ref()
}

/// `src` with a late-bytes match and a late-bytes decoy, each under a UTF-8
/// name and one that is not.
fn late_files(src: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    fs::create_dir_all(src).expect("mkdir");
    let name = |tag: &str, raw: bool| {
        let mut n = unique(tag).into_bytes();
        if raw {
            n.extend_from_slice(b"-\xff\xfe");
        }
        OsStr::from_bytes(&n).to_owned()
    };
    let mut matches = Vec::new();
    let mut decoys = Vec::new();
    for raw in [false, true] {
        let m = src.join(name("late", raw));
        write_exe(&m, &late_match(vec![]));
        matches.push(m);
        let d = src.join(name("decoy", raw));
        write_exe(&d, &late_decoy());
        decoys.push(d);
    }
    (matches, decoys)
}

/// Matches decided from the file where the exec saw it, decoys not alerted:
/// every exec is a record (`--all-execs`), so "no alert" is what its own
/// record says, not an absence.
fn assert_decided_where_they_ran(sensor: &Sensor, matches: &[PathBuf], decoys: &[PathBuf]) {
    for m in matches {
        let rec = sensor.wait_for("the late match's record", exec_of_lossy(m));
        assert_eq!(field_str(&rec, "event.kind"), "alert", "{rec}");
        assert_eq!(field_str(&rec, "rule.verdict"), "match", "{rec}");
        assert_eq!(
            field_str(&rec, "tinyexec.content_source"),
            "kernel+path",
            "{rec}"
        );
        assert_eq!(
            field_str(&rec, "file.hash.sha256"),
            sha256_hex(&late_match(vec![]))
        );
    }
    for d in decoys {
        let rec = sensor.wait_for("the decoy's record", exec_of_lossy(d));
        assert_eq!(
            field_str(&rec, "event.kind"),
            "event",
            "a false alert: {rec}"
        );
        assert!(field(&rec, "rule").is_null(), "{rec}");
    }
}

/// Files run from a tmpfs mounted in a mount namespace of their own (the
/// sensor sees an empty directory at that path), exited before the sensor
/// looks: read under their parent's root, where they ran. (Before: the path
/// opened in the sensor's namespace: matches `undetermined`, decoys alerted.)
#[test]
fn files_behind_a_mount_of_the_exec_s_namespace_are_read_there() {
    let sensor = Sensor::start(["--all-execs"]);
    let dir = TempDir::new("mntns");
    let hidden = dir.path().join("hidden");
    fs::create_dir_all(&hidden).expect("mkdir");
    let (matches, decoys) = late_files(&dir.path().join("src"));
    let mut ns = OwnNamespace::start(&hidden, &dir.path().join("src"));
    with_sensor_stopped(&sensor, || ns.run_all());
    let in_ns = |p: &PathBuf| hidden.join(p.file_name().expect("name"));
    let matches: Vec<PathBuf> = matches.iter().map(in_ns).collect();
    let decoys: Vec<PathBuf> = decoys.iter().map(in_ns).collect();
    assert_decided_where_they_ran(&sensor, &matches, &decoys);
}

/// The sensor in a mount namespace of its own with a tmpfs over the
/// directory the files run from, as the unit's `PrivateTmp` puts one over
/// `/tmp`: matches that exit at once are `match`, decoys are no alert, and a
/// `binfmt_misc` stager there alerts. (Before: `undetermined`, false alerts,
/// and the stager missed.)
#[test]
fn a_sensor_in_a_private_mount_namespace_reads_where_the_exec_ran() {
    let dir = TempDir::new("private");
    let shown = dir.path().join("shown");
    fs::create_dir_all(&shown).expect("mkdir");
    let sensor = Sensor::start_with(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs none "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(&shown)
            .arg(sensor_path())
            .args(["run", "--all-execs"]),
    );
    let (matches, decoys) = late_files(&shown);
    // binfmt_misc: the interpreter runs, the stager is read by name.
    let interp = dir.exe(&unique("interp"), &tiny_exit0());
    let tag = unique("p").into_bytes();
    let tag = &tag[tag.len() - 8..];
    let mut t = TinyElf::new(Arch::X86_64);
    t.trailer = [&S1[..], &S2[..], tag].concat();
    let target_bytes = t.build().expect("tiny ELF");
    let target = shown.join(unique("target"));
    write_exe(&target, &target_bytes);
    let name = format!("tinyexec-p{}", std::process::id());
    let magic: String = tag.iter().map(|b| format!("\\x{b:02x}")).collect();
    let root = binfmt_misc();
    fs::write(
        root.join("register"),
        format!(
            ":{name}:M:{}:{magic}::{}:",
            target_bytes.len() - tag.len(),
            interp.display()
        ),
    )
    .expect("register the binfmt_misc handler");
    let _handler = Handler(root.join(&name));
    settle();
    with_sensor_stopped(&sensor, || {
        for f in matches.iter().chain(&decoys).chain([&target]) {
            run_ok(&mut Command::new(f));
        }
    });
    assert_decided_where_they_ran(&sensor, &matches, &decoys);
    let rec = sensor.wait_for("the binfmt_misc target's record", |v| {
        field(v, "process.exec_path") == target.to_str().expect("UTF-8")
    });
    assert_eq!(field_str(&rec, "event.kind"), "alert", "{rec}");
    assert_eq!(field_str(&rec, "rule.verdict"), "match", "{rec}");
    assert_eq!(field_str(&rec, "tinyexec.content_source"), "path");
}

/// Counts opens of a file (inotify `IN_OPEN`): an `O_PATH` open is none.
struct OpenWatch {
    fd: std::os::fd::OwnedFd,
}

impl OpenWatch {
    fn new(path: &Path) -> Self {
        // SAFETY: plain syscalls; the descriptor is owned at once.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        // SAFETY: as above.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("C path");
        // SAFETY: a valid descriptor and C string.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_OPEN) };
        assert!(wd >= 0, "inotify_add_watch {}", path.display());
        Self { fd }
    }

    fn opened(&self) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        n > 0
    }
}

/// A `#!` script exec'd by name, its name then swapped for a link to a
/// device, by root and by `nobody`: the sensor never opens the device (it
/// finds the name `O_PATH`, sees no regular file, and stops). (Before: it
/// opened the device, 20/20.)
#[test]
fn a_script_name_swapped_for_a_device_is_never_opened() {
    let sensor = Sensor::start(["--all-execs"]);
    for nobody in [false, true] {
        let dir = TempDir::new("swap");
        let interp = dir.exe(&unique("interp"), &tiny_exit0());
        let dev = dir.path().join("null");
        let c = std::ffi::CString::new(dev.as_os_str().as_bytes()).expect("C path");
        // SAFETY: mknod of a character device (1,3: the null device) at a C path.
        let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(made, 0, "mknod {}", dev.display());
        if nobody {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        let script = dir.path().join(unique("script"));
        fs::write(&script, format!("#!{}\n", interp.display())).expect("script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        let watch = OpenWatch::new(&dev);
        with_sensor_stopped(&sensor, || {
            let as_who = |cmd: &mut Command| {
                if nobody {
                    cmd.uid(65534).gid(65534);
                }
            };
            let mut run = Command::new(&script);
            as_who(&mut run);
            run_ok(&mut run);
            let mut swap = Command::new("ln");
            swap.arg("-sfn").arg(&dev).arg(&script);
            as_who(&mut swap);
            run_ok(&mut swap);
        });
        let rec = sensor.wait_for("the script's record", |v| {
            field(v, "process.exec_path") == script.to_str().expect("UTF-8")
        });
        assert_eq!(field_str(&rec, "event.kind"), "event", "{rec}");
        assert!(
            !watch.opened(),
            "the sensor opened the device a script's name was swapped for (as nobody: {nobody})"
        );
    }
}
