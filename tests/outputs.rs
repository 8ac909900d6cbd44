//! Where records go: a versioned record shape, a JSON-lines file that
//! logrotate can move (or copy and truncate), that is never a link, a FIFO or
//! a device, and that holds only whole lines when the disk fills up, and CEF
//! to a real rsyslog over UDP, TCP and the local socket, with crafted paths
//! that must not forge a field or a record.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tinyexec_harness::{
    OutputCounts, Sensor, TempDir, exec_of, field, field_str, field_u64, is_heartbeat,
    only_alerts_from, output_counts, rsyslog::Rsyslog, run_ok, sensor_path, stager, tmpfs::Tmpfs,
    unique, wait_until, write_exe,
};

fn sensor(args: &[&str]) -> Sensor {
    Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions"])
            .args(args),
    )
}

/// The whole lines of a JSON-lines file (none if it is missing): those that
/// are JSON, parsed, and how many are not. A last line without its newline
/// may be a write still under way: it is left out.
fn file_lines(path: &Path) -> (Vec<Value>, usize) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut bad = 0;
    let good = text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| {
            let v = serde_json::from_str(l).ok();
            bad += usize::from(v.is_none());
            v
        })
        .collect();
    (good, bad)
}

/// [`file_lines`], every one of which must be JSON.
fn json_lines(path: &Path) -> Vec<Value> {
    let (good, bad) = file_lines(path);
    assert_eq!(
        bad,
        0,
        "{}: {bad} lines that are not JSON:\n{}",
        path.display(),
        fs::read_to_string(path).unwrap_or_default()
    );
    good
}

/// SIGHUP to the sensor, as logrotate's `postrotate` sends it.
fn hup(s: &Sensor) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(s.pid().cast_signed(), libc::SIGHUP) };
}

/// A sensor emitting only the alerts of files in `dir`, a heartbeat a second,
/// writing to `file` too.
fn own_sensor(dir: &TempDir, file: &Path) -> Sensor {
    Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--heartbeat-interval", "1", "--output-file"])
            .arg(file)
            .args(only_alerts_from(dir)),
    )
}

/// Runs a new matching file of `dir` (with `args`): an alert of the test's own.
fn alert(dir: &TempDir, args: &[&str]) -> PathBuf {
    let path = dir.exe(&unique("stager"), &stager());
    run_ok(Command::new(&path).args(args));
    path
}

/// The first heartbeat on stdout numbered after record `after` whose output
/// file counters satisfy `pred` (waiting up to 10 s).
fn file_heartbeat(
    s: &Sensor,
    after: u64,
    pred: impl Fn(&OutputCounts) -> bool,
) -> (Value, OutputCounts) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = s.records(is_heartbeat).into_iter().find_map(|h| {
            let c = output_counts(&h, "file");
            (field_u64(&h, "event.sequence") > after && pred(&c)).then_some((h, c))
        });
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat after record {after} with the expected file counters; the last: {:?}\nstderr:\n{}",
            s.records(is_heartbeat).last(),
            s.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// What stands for `/etc/passwd`: a file the sensor must never append to.
fn passwd_like(dir: &TempDir) -> (PathBuf, Vec<u8>) {
    let path = dir.path().join("passwd");
    let content: String = (0..20)
        .map(|i| format!("user{i}:x:{0}:{0}::/home/user{i}:/bin/sh\n", 1000 + i))
        .collect();
    fs::write(&path, &content).expect("writing the stand-in for /etc/passwd");
    (path, content.into_bytes())
}

#[test]
fn every_record_carries_schema_run_id_sequence_and_losses() {
    let dir = TempDir::new("schema");
    let path = dir.exe(&unique("stager"), &stager());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut s = sensor(&["--all-execs"]);
        run_ok(&mut Command::new(&path));
        s.wait_for("the alert", exec_of(&path));
        assert!(s.stop_with(libc::SIGTERM).success());
        let recs = s.records(|_| true);
        let seqs: Vec<u64> = recs
            .iter()
            .map(|r| field_u64(r, "event.sequence"))
            .collect();
        assert_eq!(seqs, (1..=recs.len() as u64).collect::<Vec<_>>(), "no gaps");
        for r in &recs {
            assert_eq!(field_str(r, "tinyexec.schema_version"), "1.2");
            assert_eq!(field_u64(r, "tinyexec.lost_since_previous"), 0);
            assert_eq!(field_str(r, "agent.name"), "tinyexec");
            assert!(!field_str(r, "host.boot_id").is_empty());
        }
        let run_ids: Vec<&str> = recs
            .iter()
            .map(|r| field_str(r, "agent.ephemeral_id"))
            .collect();
        assert!(run_ids.windows(2).all(|w| w[0] == w[1]), "one id per run");
        ids.push(run_ids[0].to_owned());
    }
    assert_ne!(ids[0], ids[1], "a new id every start");
}

#[test]
fn each_schema_only_adds_optional_fields_to_the_one_before() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema");
    let read = |v: &str| -> Value {
        let p = root.join(format!("tinyexec-record-{v}.schema.json"));
        serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap()
    };
    for [old, new] in [["1.0", "1.1"], ["1.1", "1.2"]] {
        let breaches = tinyexec_harness::schema::only_adds(&read(old), &read(new));
        assert!(breaches.is_empty(), "{old} -> {new}: {breaches:#?}");
    }
}

#[test]
fn file_output_is_private_flushed_and_reopened_on_sighup_before_the_next_record() {
    let dir = TempDir::new("file-out");
    let out = dir.path().join("alerts.json");
    let mut s = sensor(&["--no-stdout", "--output-file", out.to_str().unwrap()]);
    let first = dir.exe(&unique("first"), &stager());
    run_ok(&mut Command::new(&first));
    // Flushed per alert: it is in the file while the sensor runs.
    wait_until(&format!("an alert in {}", out.display()), || {
        json_lines(&out).iter().any(exec_of(&first))
    });
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // logrotate, round after round: move the file away, SIGHUP, and an alert
    // at once. Each alert belongs in the new file. Before, the worker took
    // its next record before the SIGHUP: the alert went to the file just
    // moved; then, when the sensor's loop read the alert before the signal
    // (6 of 64 rounds with the other tests running), until the worker also
    // checked before each batch that the path still names its file.
    let rounds = 8;
    let mut misplaced = Vec::new();
    for round in 1..=rounds {
        let rotated = dir.path().join(format!("alerts.json.{round}"));
        fs::rename(&out, &rotated).unwrap();
        hup(&s);
        let after = dir.exe(&unique("after-hup"), &stager());
        run_ok(&mut Command::new(&after));
        wait_until("the alert in the new or the rotated file", || {
            json_lines(&out).iter().any(exec_of(&after))
                || json_lines(&rotated).iter().any(exec_of(&after))
        });
        if !json_lines(&out).iter().any(exec_of(&after)) {
            misplaced.push(round);
        }
    }
    assert!(
        misplaced.is_empty(),
        "rounds whose alert went to the rotated file: {misplaced:?} of {rounds}"
    );
    assert!(
        json_lines(&dir.path().join("alerts.json.1"))
            .iter()
            .any(exec_of(&first))
    );
    // Once it has exited, all it ever wrote to stdout has been read: nothing.
    assert!(s.stop_with(libc::SIGTERM).success());
    assert!(
        s.records(|_| true).is_empty(),
        "nothing on stdout with --no-stdout"
    );
}

#[test]
fn copytruncate_leaves_whole_lines_from_the_start_of_the_file() {
    let dir = TempDir::new("copytruncate");
    let out = dir.path().join("alerts.json");
    let mut s = sensor(&["--no-stdout", "--output-file", out.to_str().unwrap()]);
    let first = dir.exe(&unique("first"), &stager());
    run_ok(&mut Command::new(&first));
    wait_until("the first alert in the file", || {
        json_lines(&out).iter().any(exec_of(&first))
    });
    // logrotate's copytruncate: copy, then truncate in place; no SIGHUP.
    let rotated = dir.path().join("alerts.json.1");
    fs::copy(&out, &rotated).unwrap();
    let before = fs::metadata(&out).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .and_then(|f| f.set_len(0))
        .unwrap();
    let second = dir.exe(&unique("second"), &stager());
    run_ok(&mut Command::new(&second));
    wait_until("the second alert in the truncated file", || {
        json_lines(&out).iter().any(exec_of(&second))
    });
    assert!(s.stop_with(libc::SIGTERM).success());
    // Appended at the new end (O_APPEND), not at the old offset after a hole.
    let bytes = fs::read(&out).unwrap();
    assert!(
        !bytes.contains(&0),
        "a hole of NULs: written at the offset before the truncation ({before} bytes)"
    );
    assert!(bytes.ends_with(b"\n"));
    assert!(!json_lines(&out).iter().any(exec_of(&first)));
    assert!(json_lines(&rotated).iter().any(exec_of(&first)));
}

#[test]
fn an_output_file_removed_or_replaced_is_followed_without_a_signal() {
    let dir = TempDir::new("follow");
    let out = dir.path().join("alerts.json");
    let mut s = sensor(&["--no-stdout", "--output-file", out.to_str().unwrap()]);
    let first = dir.exe(&unique("first"), &stager());
    run_ok(&mut Command::new(&first));
    wait_until("the first alert in the file", || {
        json_lines(&out).iter().any(exec_of(&first))
    });
    // Removed: the next record creates it again (not written to the unlinked file).
    fs::remove_file(&out).unwrap();
    let second = dir.exe(&unique("second"), &stager());
    run_ok(&mut Command::new(&second));
    wait_until("the second alert in a new file", || {
        json_lines(&out).iter().any(exec_of(&second))
    });
    // Replaced by another file (logrotate's `create` before its signal).
    let moved = dir.path().join("alerts.json.1");
    fs::rename(&out, &moved).unwrap();
    fs::write(&out, "").unwrap();
    let third = dir.exe(&unique("third"), &stager());
    run_ok(&mut Command::new(&third));
    wait_until("the third alert in the new file", || {
        json_lines(&out).iter().any(exec_of(&third))
    });
    assert!(!json_lines(&moved).iter().any(exec_of(&third)));
    assert!(s.stop_with(libc::SIGTERM).success());
}

/// Starts a sensor that must refuse its settings: it exits non-zero without
/// getting ready. Returns its stderr.
fn refused_at_start(args: &[&str]) -> String {
    let mut s = Sensor::spawn(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions"])
            .args(args),
    );
    let ready = s.try_wait_ready();
    assert!(ready.is_err(), "the sensor started with {args:?}");
    assert!(!s.wait_exit().success());
    s.stderr()
}

#[test]
fn an_output_file_that_is_a_link_a_fifo_or_a_device_is_refused_at_start() {
    let dir = TempDir::new("not-a-file");
    let (victim, content) = passwd_like(&dir);
    let link = dir.path().join("alerts.json");
    symlink(&victim, &link).unwrap();
    let err = refused_at_start(&["--output-file", link.to_str().unwrap()]);
    let said = format!("output file {} is a symbolic link", link.display());
    assert!(err.contains(&said), "{err}");
    assert_eq!(
        fs::read(&victim).unwrap(),
        content,
        "written through the link"
    );

    // A dangling link: its target is not created.
    let target = dir.path().join("created-through-the-link");
    let dangling = dir.path().join("dangling.json");
    symlink(&target, &dangling).unwrap();
    let err = refused_at_start(&["--output-file", dangling.to_str().unwrap()]);
    let said = format!("output file {} is a symbolic link", dangling.display());
    assert!(err.contains(&said), "{err}");
    assert!(
        fs::symlink_metadata(&target).is_err(),
        "the link's target was created"
    );

    // A FIFO nobody reads: refused at once, not waited on for a reader.
    let fifo = dir.path().join("fifo.json");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let started = Instant::now();
    let err = refused_at_start(&["--output-file", fifo.to_str().unwrap()]);
    let said = format!("output file {} is a FIFO", fifo.display());
    assert!(err.contains(&said), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let err = refused_at_start(&["--output-file", "/dev/full"]);
    assert!(
        err.contains("output file /dev/full is a character device"),
        "{err}"
    );
}

#[test]
fn a_link_found_at_sighup_is_refused_until_it_is_gone() {
    let dir = TempDir::new("hup-link");
    let out = dir.path().join("alerts.json");
    let (victim, content) = passwd_like(&dir);
    let mut s = own_sensor(&dir, &out);
    let first = alert(&dir, &[]);
    wait_until("the first alert in the file", || {
        json_lines(&out).iter().any(exec_of(&first))
    });
    let said = format!("output file {} is a symbolic link", out.display());
    let mut stderr_at = 0;
    let mut failed = 0;
    // A link to a file that must stay as it is, then a dangling one, each
    // where logrotate moved the file away.
    let dangling = dir.path().join("created-through-the-link");
    for (round, target) in [&victim, &dangling].into_iter().enumerate() {
        fs::rename(&out, dir.path().join(format!("alerts.json.{round}"))).unwrap();
        symlink(target, &out).unwrap();
        hup(&s);
        let after = alert(&dir, &[]);
        // A clear error, at once; the records after it count failed, not written.
        stderr_at = s.wait_stderr(&said, stderr_at);
        let rec = s.wait_for("the alert after the SIGHUP", exec_of(&after));
        let (_, c) = file_heartbeat(&s, field_u64(&rec, "event.sequence"), |c| c.failed > failed);
        failed = c.failed;
        assert_eq!(
            fs::read(&victim).unwrap(),
            content,
            "written through the link"
        );
        assert!(
            fs::symlink_metadata(&dangling).is_err(),
            "the link's target was created"
        );
        // The operator removes the link: the worker's retries (with backoff)
        // open a new regular file, and delivery resumes.
        fs::remove_file(&out).unwrap();
        let resumed = alert(&dir, &[]);
        wait_until("an alert in the new file", || {
            json_lines(&out).iter().any(exec_of(&resumed))
        });
        assert!(fs::symlink_metadata(&out).unwrap().file_type().is_file());
    }
    assert!(s.stop_with(libc::SIGTERM).success());
    assert_eq!(
        fs::read(&victim).unwrap(),
        content,
        "written through the link"
    );
    assert!(
        fs::symlink_metadata(&dangling).is_err(),
        "the link's target was created"
    );
}

/// The output file on a real full disk (a tmpfs of 8 pages, filled up):
/// records that do not fit fail, then once there is space again every record
/// counted written is a whole JSON line of the file. With `append_only` the
/// file is `chattr +a`, so a record cut short cannot be cut off: its part
/// stays as a line of its own, never glued to the next record.
fn full_disk(append_only: bool) {
    let dir = TempDir::new("enospc");
    let disk = Tmpfs::mount(&dir.path().join("disk"), 32 * 1024);
    let out = disk.path().join("alerts.json");
    let s = own_sensor(&dir, &out);
    if append_only {
        run_ok(Command::new("chattr").arg("+a").arg(&out));
    }
    // Plain: every line must be JSON at every look; append-only: the
    // lines that are JSON.
    let lines = || {
        if append_only {
            file_lines(&out)
        } else {
            (json_lines(&out), 0)
        }
    };
    let first = alert(&dir, &[]);
    wait_until("the first alert in the file", || {
        lines().0.iter().any(exec_of(&first))
    });
    let filler = disk.fill("filler");
    let len = fs::metadata(&out).expect("the output file").len();
    eprintln!(
        "the file's last page has {} bytes free",
        (4096 - len % 4096) % 4096
    );
    // Alerts of over a page each (3000 bytes of argument, twice in the
    // record): whatever the last page has free, the write needs a new page
    // and is cut short by ENOSPC after part of the record.
    let fat = "x".repeat(3000);
    let fats: Vec<PathBuf> = (0..3).map(|_| alert(&dir, &[&fat])).collect();
    let last_fat = s.wait_for("the last fat alert", exec_of(&fats[2]));
    let (_, c) = file_heartbeat(&s, field_u64(&last_fat, "event.sequence"), |c| {
        c.queued == 0 && c.failed >= 3
    });
    assert_eq!(c.dropped, 0, "{c:?}");
    s.wait_stderr("No space left on device", 0);
    // Space again: the next records are whole lines of their own.
    fs::remove_file(&filler).expect("removing the filler");
    let after = alert(&dir, &[]);
    wait_until("the alert after the disk was full", || {
        lines().0.iter().any(exec_of(&after))
    });
    let rec = s.wait_for("the alert after the disk was full", exec_of(&after));
    let (h, c) = file_heartbeat(&s, field_u64(&rec, "event.sequence"), |c| c.queued == 0);
    let bytes = fs::read(&out).expect("the output file");
    if append_only {
        run_ok(Command::new("chattr").arg("-a").arg(&out));
    }
    assert!(bytes.ends_with(b"\n"), "the file ends in a torn line");
    let (records, not_json) = lines();
    let before_h = records
        .iter()
        .filter(|l| field_u64(l, "event.sequence") < field_u64(&h, "event.sequence"))
        .count() as u64;
    assert_eq!(
        before_h, c.written,
        "every record counted written is a JSON line of the file, and only those: {c:?}"
    );
    assert!(
        not_json as u64 <= c.failed,
        "{not_json} lines not JSON: {c:?}"
    );
    for f in &fats {
        assert!(
            !records.iter().any(exec_of(f)),
            "a failed record is in the file"
        );
    }
}

#[test]
fn a_full_disk_leaves_no_torn_line_and_every_written_record_is_a_line() {
    full_disk(false);
}

#[test]
fn on_an_append_only_file_a_torn_record_never_swallows_the_next() {
    full_disk(true);
}

#[test]
fn settings_come_from_the_config_file_and_flags_win() {
    let dir = TempDir::new("config");
    let out = dir.path().join("from-config.json");
    let conf = dir.path().join("config.toml");
    fs::write(
        &conf,
        format!(
            "all_execs = true\nno_exclusions = true\nstdout = false\noutput_file = {:?}\n",
            out.to_str().unwrap()
        ),
    )
    .unwrap();
    // `--no-stdout` is in the file; the flag-less sensor must honour it.
    let mut s = Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--config"])
            .arg(&conf),
    );
    let plain = dir.exe(&unique("plain"), &tinyexec_harness::tiny_exit0());
    run_ok(&mut Command::new(&plain));
    wait_until("all_execs from the file", || {
        json_lines(&out).iter().any(exec_of(&plain))
    });
    assert!(s.stop_with(libc::SIGTERM).success());
    assert!(s.records(|_| true).is_empty());

    // A mistake in the file is an error naming the file and the line.
    fs::write(&conf, "all_execs = true\nno_such_setting = 1\n").unwrap();
    let mut bad = Sensor::spawn(
        Command::new(sensor_path())
            .args(["run", "--config"])
            .arg(&conf),
    );
    assert!(!bad.wait_exit().success());
    let err = bad.stderr();
    assert!(
        err.contains(conf.to_str().unwrap()) && err.contains("no_such_setting"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
}

/// A directory whose name tries to end the record and start a forged one.
fn crafted_dir(base: &Path) -> PathBuf {
    let evil = base.join("x|y=z\\w\nCEF:0|forged|forged|1|1|forged|10|act=forged spid=1 \\");
    fs::create_dir(&evil).expect("creating the directory");
    fs::set_permissions(&evil, fs::Permissions::from_mode(0o755))
        .expect("making the directory world-writable");
    evil
}

#[test]
fn cef_to_a_real_rsyslog_over_udp_tcp_and_the_local_socket() {
    let dir = TempDir::new("rsyslog");
    let rsyslog = Rsyslog::start(dir.path());
    let evil = crafted_dir(dir.path());
    let urls = [
        format!("udp://127.0.0.1:{}", rsyslog.udp_port),
        format!("tcp://127.0.0.1:{}", rsyslog.tcp_port),
        format!("unix://{}", rsyslog.socket.display()),
    ];
    for url in &urls {
        let s = sensor(&["--syslog", url]);
        let name = unique("stager");
        let path = evil.join(&name);
        write_exe(&path, &stager());
        run_ok(&mut Command::new(&path));
        let rec = s.wait_for("the alert", exec_of(&path));
        let lines = rsyslog.wait_for_line(&name, |l| l.contains(&name));
        let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&name)).collect();
        assert_eq!(ours.len(), 1, "{url}: one syslog line per record: {ours:?}");
        // The forged record appears only as escaped text inside our filePath.
        for l in &lines {
            assert!(
                !l.replace("\\nCEF:0|forged", "").contains("CEF:0|forged"),
                "{url}: forged record: {l}"
            );
        }
        let (header, ext) = tinyexec_harness::cef::parse(ours[0]);
        assert_eq!(
            header,
            [
                "CEF:0",
                "tinyexec",
                "tinyexec-sensor",
                env!("CARGO_PKG_VERSION"),
                "EQGRP_tinyexec",
                "EQGRP_tinyexec alert (exec)",
                "10"
            ],
            "{url}: {}",
            ours[0]
        );
        assert_eq!(ext["filePath"], path.to_str().unwrap(), "{url}");
        assert_eq!(
            ext["act"], "exec",
            "{url}: the forged act= stayed inside filePath"
        );
        assert_eq!(ext["spid"], field(&rec, "process.pid").to_string(), "{url}");
        assert_eq!(ext["fileHash"], field_str(&rec, "file.hash.sha256"));
        assert_eq!(
            ext["flexString1"],
            field(&rec, "event.sequence").to_string()
        );
        assert_eq!(ext["cs6"], field_str(&rec, "agent.ephemeral_id"));
        assert_eq!(ext["cs3Label"], "ruleVerdict");
        assert_eq!(ext["cs3"], "match");
        assert_eq!(ext["fileId"], field(&rec, "file.inode").to_string());
        cef_is_typed_for_common_security_log(ours[0]);
    }
}

/// Every key of a real record is in Microsoft's CEF mapping, docs/outputs.md names the
/// same column, the column's type holds the value, and the filterable keys come first.
fn cef_is_typed_for_common_security_log(line: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ws: Value = serde_json::from_str(
        &fs::read_to_string(root.join("tests/kusto/workspace.json"))
            .expect("reading tests/kusto/workspace.json"),
    )
    .expect("parsing tests/kusto/workspace.json");
    let mapping = &ws["cef_mapping"]["keys"];
    let types: BTreeMap<&str, &str> = ws["tables"]["CommonSecurityLog"]["columns"]
        .as_array()
        .expect("CommonSecurityLog's columns, an array")
        .iter()
        .filter_map(|c| c.as_str()?.split_once(':'))
        .collect();
    let docs = fs::read_to_string(root.join("docs/outputs.md")).expect("reading docs/outputs.md");
    // `| `key` ... | `Column` | type | ...`: the key's row in the CEF table.
    let documented = |key: &str| -> Option<(String, String)> {
        docs.lines().find_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let first = cells.get(1)?;
            (first.split_whitespace().next()? == format!("`{key}`"))
                .then(|| (cells[2].trim_matches('`').to_owned(), cells[3].to_owned()))
        })
    };
    let (_, pairs) = tinyexec_harness::cef::parse_ordered(line);
    for (key, value) in &pairs {
        let column = mapping[key.as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("CEF key `{key}` is not in Microsoft's mapping"));
        if key.ends_with("Label") {
            continue;
        }
        let (doc_col, doc_type) =
            documented(key).unwrap_or_else(|| panic!("docs/outputs.md has no row for `{key}`"));
        assert_eq!(
            doc_col, column,
            "docs/outputs.md: `{key}` lands in {column}"
        );
        let ty = types[column];
        assert_eq!(doc_type, ty, "docs/outputs.md: {column} is {ty}");
        match ty {
            "int" => assert!(
                value.parse::<i32>().is_ok(),
                "`{key}={value}` does not fit int {column}"
            ),
            "long" => assert!(
                value.parse::<i64>().is_ok(),
                "`{key}={value}` does not fit long {column}"
            ),
            "string" => {}
            other => panic!("`{key}` lands in {column} of type {other}"),
        }
    }
    let pos = |k: &str| {
        pairs
            .iter()
            .position(|(key, _)| key == k)
            .unwrap_or_else(|| panic!("no `{k}`"))
    };
    for early in ["act", "cat", "cs3", "fileHash", "cs5"] {
        for late in ["filePath", "cs2", "cs1"] {
            assert!(
                pos(early) < pos(late),
                "`{early}` must come before `{late}`: {line}"
            );
        }
    }
    assert_eq!(
        pairs.last().map(|(k, _)| k.as_str()),
        Some("cs1"),
        "the command line is last"
    );
}
