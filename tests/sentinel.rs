//! Delivery to Microsoft Sentinel's Logs Ingestion API, against an HTTPS
//! stand-in this test starts (`tests/harness/sentinel_server.py`): the documented
//! request shape, outages, time-outs, a restart mid-outage, and the spool bound.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    fs,
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tinyexec_harness::{
    Sensor, TempDir, field, only_alerts_from, run_ok, sensor_path,
    sentinel::{Ingest, SECRET, STREAM, TENANT, write_private},
    stager, unique, wait_until,
};

fn sensor(settings: &Path) -> Sensor {
    Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions", "--no-stdout", "--sentinel"])
            .arg(settings),
    )
}

/// [`sensor`], delivering the alerts of files in `dir` only. Every sensor sees
/// every matching exec on the host; where other tests' alerts would change
/// the outcome (the spool bound pushes out the oldest, whoever's they are), an
/// exclusion counts, so drops, every alert from outside `dir`.
fn sensor_for(settings: &Path, dir: &TempDir) -> Sensor {
    Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--no-stdout"])
            .args(only_alerts_from(dir))
            .arg("--sentinel")
            .arg(settings),
    )
}

/// Dotted paths of a record's leaves (arrays are leaves).
fn leaf_paths(v: &Value) -> Vec<String> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            Some(o) => {
                for (k, v) in o {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            None => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

fn path_of(r: &Value) -> &str {
    field(r, "file.path").as_str().unwrap_or_default()
}

fn spooled(spool: &Path) -> usize {
    fs::read_dir(spool).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json.gz"))
            .count()
    })
}

#[test]
fn alerts_arrive_in_the_documented_shape() {
    let dir = TempDir::new("ingest");
    let ingest = Ingest::start(dir.path());
    let spool = dir.path().join("spool");
    let s = sensor(&ingest.settings(dir.path(), &spool, ""));
    let path = dir.exe(&unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    let d = ingest.wait_delivered("the alert", |d| {
        d.iter().any(|r| path_of(r) == path.to_str().unwrap())
    });
    let rec = d
        .iter()
        .find(|r| path_of(r) == path.to_str().unwrap())
        .unwrap();
    assert_eq!(field(rec, "event.kind"), "alert");
    assert_eq!(field(rec, "rule.name"), "EQGRP_tinyexec");
    assert!(rec.get("@timestamp").is_none() && rec["TimeGenerated"].is_string());
    assert!(field(rec, "agent.ephemeral_id").is_string());
    // The DCR we ship declares a column for every top-level key we send.
    let dcr: Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sentinel/dcr.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let columns: Vec<&str> =
        dcr["resources"][0]["properties"]["streamDeclarations"][STREAM]["columns"]
            .as_array()
            .expect("stream columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
    for key in rec.as_object().unwrap().keys() {
        assert!(columns.contains(&key.as_str()), "no DCR column for `{key}`");
    }
    // And every field the sensor sent reaches a column of the custom table: the
    // transform names each one (the "Same as" aliases of docs/events.md share one).
    let transform = dcr["resources"][0]["properties"]["dataFlows"][0]["transformKql"]
        .as_str()
        .expect("transform");
    for path in leaf_paths(rec) {
        if [
            "process.parent_process_name",
            "user.id",
            "user.name",
            "TimeGenerated",
        ]
        .contains(&path.as_str())
        {
            continue;
        }
        assert!(
            transform.contains(&format!("({path})"))
                || [",", "\n"]
                    .iter()
                    .any(|end| transform.contains(&format!("= {path}{end}"))),
            "the custom table's transform has no column for `{path}`"
        );
    }
    let kinds: Vec<Value> = ingest.entries().iter().map(|e| e["kind"].clone()).collect();
    assert!(kinds.contains(&"token".into()));
    assert!(
        !kinds.contains(&"bad-request".into()),
        "{:#?}",
        ingest.entries()
    );
    // The secret is nowhere on the command line.
    assert!(
        !fs::read_to_string(format!("/proc/{}/cmdline", s.pid()))
            .unwrap()
            .contains(SECRET)
    );
}

#[test]
fn an_outage_spools_and_a_restart_delivers_in_order() {
    let dir = TempDir::new("outage");
    let ingest = Ingest::start(dir.path());
    let spool = dir.path().join("spool");
    let settings = ingest.settings(dir.path(), &spool, "");
    ingest.mode("refuse");
    let mut s = sensor(&settings);
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.exe(&unique(&format!("s{i}")), &stager());
            run_ok(&mut Command::new(&p));
            thread::sleep(Duration::from_millis(300)); // separate batches
            p
        })
        .collect();
    s.wait_stderr("delivery failed", 0);
    wait_until("3 batches spooled", || spooled(&spool) >= 3);
    // Killed mid-outage: nothing graceful.
    assert_eq!(
        tinyexec_harness::signalled(&s.stop_with(libc::SIGKILL)),
        Some(libc::SIGKILL)
    );
    assert!(ingest.delivered().is_empty());

    ingest.mode("ok");
    let _s = sensor(&settings);
    let want: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let d = ingest.wait_delivered("the spooled alerts", |d| {
        want.iter().all(|w| d.iter().any(|r| path_of(r) == *w))
    });
    let order: Vec<&str> = d.iter().map(path_of).filter(|p| want.contains(p)).collect();
    assert_eq!(
        order, want,
        "delivered once each, in the order they happened"
    );
    wait_until("the spool emptied", || spooled(&spool) == 0);
}

#[test]
fn a_hanging_service_times_out_and_is_retried() {
    let dir = TempDir::new("timeout");
    let ingest = Ingest::start(dir.path());
    let spool = dir.path().join("spool");
    ingest.mode("timeout");
    let s = sensor(&ingest.settings(dir.path(), &spool, ""));
    let path = dir.exe(&unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    s.wait_stderr("delivery failed", 0);
    ingest.mode("ok");
    ingest.wait_delivered("after the time-out", |d| {
        d.iter().any(|r| path_of(r) == path.to_str().unwrap())
    });
}

#[test]
fn the_spool_is_bounded_and_says_what_it_dropped() {
    let dir = TempDir::new("bound");
    let ingest = Ingest::start(dir.path());
    let spool = dir.path().join("spool");
    ingest.mode("refuse");
    // Room for about one batch: each new one pushes the oldest out.
    let s = sensor_for(
        &ingest.settings(dir.path(), &spool, "spool_max_bytes = 1500"),
        &dir,
    );
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.exe(&unique(&format!("b{i}")), &stager());
            run_ok(&mut Command::new(&p));
            thread::sleep(Duration::from_millis(400));
            p
        })
        .collect();
    s.wait_stderr("dropped the oldest", 0);
    ingest.mode("ok");
    let last = paths.last().unwrap().to_str().unwrap();
    let d = ingest.wait_delivered("the newest alert", |d| d.iter().any(|r| path_of(r) == last));
    assert!(
        !d.iter().any(|r| path_of(r) == paths[0].to_str().unwrap()),
        "the oldest was dropped"
    );
    // The stand-in is reachable the whole time; only the bound lost records.
    assert!(TcpStream::connect(("127.0.0.1", ingest.port)).is_ok());
}

#[test]
fn certificate_and_environment_credentials() {
    let dir = TempDir::new("creds");
    let ingest = Ingest::start(dir.path());
    // A certificate: the token request carries a signed client assertion.
    let cert = format!(
        "client_certificate_file = {:?}",
        ingest.client_pem.to_str().unwrap()
    );
    let settings = ingest.settings_with(dir.path(), &dir.path().join("spool-cert"), &cert, "");
    let s = sensor(&settings);
    let path = dir.exe(&unique("by-cert"), &stager());
    run_ok(&mut Command::new(&path));
    ingest.wait_delivered("with a certificate", |d| {
        d.iter().any(|r| path_of(r) == path.to_str().unwrap())
    });
    drop(s);
    let creds: Vec<Value> = ingest
        .entries()
        .iter()
        .filter(|e| e["kind"] == "token")
        .map(|e| e["credential"].clone())
        .collect();
    assert_eq!(creds, ["certificate"], "{:#?}", ingest.entries());

    // The secret from the environment.
    let settings = ingest.settings_with(dir.path(), &dir.path().join("spool-env"), "", "");
    let _s = Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions", "--no-stdout", "--sentinel"])
            .arg(&settings)
            .env("TINYEXEC_SENTINEL_CLIENT_SECRET", SECRET),
    );
    let path = dir.exe(&unique("by-env"), &stager());
    run_ok(&mut Command::new(&path));
    ingest.wait_delivered("with the secret from the environment", |d| {
        d.iter().any(|r| path_of(r) == path.to_str().unwrap())
    });

    // No credential at all: a clear error at start.
    let mut bad = Sensor::spawn(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions", "--sentinel"])
            .arg(&settings)
            .env_remove("TINYEXEC_SENTINEL_CLIENT_SECRET"),
    );
    assert!(!bad.wait_exit().success());
    assert!(
        bad.stderr().contains("TINYEXEC_SENTINEL_CLIENT_SECRET"),
        "{}",
        bad.stderr()
    );
}

/// Starts a sensor with these Sentinel settings, which must refuse to start:
/// returns what it said.
fn refused(settings: &Path) -> String {
    let mut s = Sensor::spawn(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions", "--sentinel"])
            .arg(settings),
    );
    assert!(!s.wait_exit().success(), "started: {}", s.stderr());
    s.stderr()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The settings line naming a credential file.
fn credential(key: &str, path: &Path) -> String {
    format!("{key} = {:?}", path.to_str().expect("a UTF-8 path"))
}

#[test]
fn credential_files_open_to_others_or_reached_through_a_link_are_refused() {
    let dir = TempDir::new("exposed");
    let ingest = Ingest::start(dir.path());
    let spool = dir.path().join("spool");
    let secret = dir.path().join("exposed-secret");
    write_private(&secret, format!("{SECRET}\n").as_bytes());
    let secret_settings = ingest.settings_with(
        dir.path(),
        &spool,
        &credential("client_secret_file", &secret),
        "",
    );
    let shown = secret.to_str().expect("a UTF-8 path");
    // Open to group or others, in any way: refused, naming the setting, the
    // file, its mode and the fix.
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o601] {
        chmod(&secret, mode);
        let err = refused(&secret_settings);
        for want in [
            format!("{}: client_secret_file", secret_settings.display()),
            format!("client secret file {shown} has mode {mode:04o}"),
            "refused".to_owned(),
            format!("chmod 600 {shown}"),
        ] {
            assert!(err.contains(&want), "mode {mode:o}: no {want:?} in: {err}");
        }
    }
    chmod(&secret, 0o600);

    // Owned by someone else, who could open it up at any time.
    let other = dir.path().join("others-secret");
    write_private(&other, format!("{SECRET}\n").as_bytes());
    std::os::unix::fs::chown(&other, Some(4321), Some(4321)).expect("chown 4321");
    let err = refused(&ingest.settings_with(
        dir.path(),
        &spool,
        &credential("client_secret_file", &other),
        "",
    ));
    assert!(
        err.contains(&format!("{} is owned by uid 4321", other.display()))
            && err.contains("only root or the sensor's own user")
            && err.contains(&format!("chown root {}", other.display())),
        "{err}"
    );

    // A symbolic link, even to a protected file: whoever controls the link
    // would choose the credential.
    let link = dir.path().join("secret-link");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    let err = refused(&ingest.settings_with(
        dir.path(),
        &spool,
        &credential("client_secret_file", &link),
        "",
    ));
    assert!(
        err.contains(&format!("{} is a symbolic link", link.display())) && err.contains("refused"),
        "{err}"
    );

    // The certificate's file holds its private key: the same rules.
    let pem = dir.path().join("exposed.pem");
    fs::copy(&ingest.client_pem, &pem).expect("copying the client PEM");
    chmod(&pem, 0o644);
    let pem_settings = ingest.settings_with(
        dir.path(),
        &spool,
        &credential("client_certificate_file", &pem),
        "",
    );
    let err = refused(&pem_settings);
    assert!(
        err.contains(&format!(
            "{}: client_certificate_file",
            pem_settings.display()
        )) && err.contains(&format!(
            "client certificate file {} has mode 0644",
            pem.display()
        )) && err.contains(&format!("chmod 600 {}", pem.display())),
        "{err}"
    );
    let pem_link = dir.path().join("pem-link");
    std::os::unix::fs::symlink(&ingest.client_pem, &pem_link).expect("symlink");
    let err = refused(&ingest.settings_with(
        dir.path(),
        &spool,
        &credential("client_certificate_file", &pem_link),
        "",
    ));
    assert!(
        err.contains(&format!("{} is a symbolic link", pem_link.display())),
        "{err}"
    );

    // The fix the message gives is enough: both are taken once chmod 600.
    chmod(&pem, 0o600);
    for settings in [&secret_settings, &pem_settings] {
        let s = sensor(settings);
        let path = dir.exe(&unique("after-chmod"), &stager());
        run_ok(&mut Command::new(&path));
        ingest.wait_delivered("with the file made private", |d| {
            d.iter().any(|r| path_of(r) == path.to_str().unwrap())
        });
        drop(s);
    }
}

#[test]
fn a_token_response_over_the_limit_is_reported_as_too_large() {
    let dir = TempDir::new("huge-token");
    let ingest = Ingest::start(dir.path());
    // Over the sensor's limit, and over ureq's own 10 MiB default too (which
    // the body used to be read with, to nothing: "not JSON: EOF").
    ingest.mode(&format!("token-bytes:{}", 11 << 20));
    let s = sensor(&ingest.settings(dir.path(), &dir.path().join("spool"), ""));
    let path = dir.exe(&unique("stager"), &stager());
    run_ok(&mut Command::new(&path));
    let line = s.wait_stderr("too large", 0) - 1;
    let said = s.stderr().lines().nth(line).unwrap_or_default().to_owned();
    let token_url = format!(
        "https://127.0.0.1:{}/{TENANT}/oauth2/v2.0/token",
        ingest.port
    );
    assert!(
        said.contains("delivery failed, retrying")
            && said.contains(&format!(
                "the response from {token_url} is too large (over 1048576 bytes)"
            )),
        "{said}"
    );
    assert!(!s.stderr().contains("not JSON"), "{}", s.stderr());
    assert!(
        ingest.entries().iter().any(|e| e["kind"] == "huge-token"),
        "{:#?}",
        ingest.entries()
    );
    // Retried: a token of the usual size is taken and the alert delivered.
    ingest.mode("ok");
    ingest.wait_delivered("after a token response of the usual size", |d| {
        d.iter().any(|r| path_of(r) == path.to_str().unwrap())
    });
}

/// A stager with a command line of about 1 KB: `path` and one long argument.
fn long_command(path: &Path, tag: &str) -> Command {
    let mut c = Command::new(path);
    c.arg(
        format!("--{tag}=")
            .chars()
            .chain(std::iter::repeat_n('x', 1000))
            .collect::<String>(),
    );
    c
}

fn ingests(ingest: &Ingest) -> Vec<Value> {
    ingest
        .entries()
        .into_iter()
        .filter(|e| e["kind"] == "ingest")
        .collect()
}

#[test]
fn batches_are_cut_by_bytes_within_the_limit() {
    let dir = TempDir::new("bytes");
    let ingest = Ingest::start(dir.path());
    let spool = dir.path().join("spool");
    // A long delay: only the byte bound can end these batches early.
    let _s = sensor(&ingest.settings(
        dir.path(),
        &spool,
        "batch_max_bytes = 8000\nbatch_max_delay_ms = 3000",
    ));
    let paths: Vec<PathBuf> = (0..6)
        .map(|i| {
            let p = dir.exe(&unique(&format!("bytes{i}")), &stager());
            run_ok(&mut long_command(&p, &i.to_string()));
            p
        })
        .collect();
    let want: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let d = ingest.wait_delivered("six alerts", |d| {
        want.iter().all(|w| d.iter().any(|r| path_of(r) == *w))
    });
    let order: Vec<&str> = d.iter().map(path_of).filter(|p| want.contains(p)).collect();
    assert_eq!(order, want, "each once, in order");
    let posts = ingests(&ingest);
    assert!(
        posts.len() >= 3,
        "six 3 KB records in 8000-byte batches: {posts:#?}"
    );
    for p in &posts {
        assert!(
            p["bytes"].as_u64().unwrap() <= 8000,
            "a body over batch_max_bytes: {p:#?}"
        );
    }
    assert!(
        posts.iter().any(|p| p["count"].as_u64() > Some(1)),
        "records batched together"
    );
}

#[test]
fn a_413_splits_the_batch_and_a_record_refused_alone_is_counted() {
    let dir = TempDir::new("too-large");
    let ingest = Ingest::start(dir.path());
    let spool = dir.path().join("spool");
    // The service takes 8000 bytes, the client offers up to 1 MB: it learns from the 413s.
    ingest.mode("max:8000");
    let mut s = sensor(&ingest.settings(dir.path(), &spool, "batch_max_delay_ms = 2000"));
    let paths: Vec<PathBuf> = (0..6)
        .map(|i| {
            let p = dir.exe(&unique(&format!("split{i}")), &stager());
            run_ok(&mut long_command(&p, &i.to_string()));
            p
        })
        .collect();
    let want: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let d = ingest.wait_delivered("six alerts in smaller parts", |d| {
        want.iter().all(|w| d.iter().any(|r| path_of(r) == *w))
    });
    let order: Vec<&str> = d.iter().map(path_of).filter(|p| want.contains(p)).collect();
    assert_eq!(order, want, "each once, in order, after the splits");
    assert!(
        ingest.entries().iter().any(|e| e["kind"] == "too-large"),
        "the stand-in answered 413: {:#?}",
        ingest.entries()
    );
    // One record over what the service takes: set aside, counted, logged; nothing else stops.
    // Every sensor sees every matching exec on the host: other tests' alerts
    // pass through this one too, and under `max:1000` any of them is refused
    // alone as well (each is over 1000 bytes). So the checks follow this
    // test's record by its path, not the first refusal the sensor logs.
    let at = s.stderr_lines();
    ingest.mode("max:1000");
    let big = dir.exe(&unique("refused"), &stager());
    let big_path = big.to_str().unwrap();
    run_ok(&mut long_command(&big, "refused"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rejected(&spool)
        .iter()
        .any(|(_, recs)| recs.iter().any(|r| path_of(r) == big_path))
    {
        assert!(
            Instant::now() < deadline,
            "the refused record is not in rejected/ (delivered: {}); the stand-in answered {:?}; \
             the sensor said:\n{}",
            ingest.delivered().iter().any(|r| path_of(r) == big_path),
            ingest
                .entries()
                .iter()
                .map(|e| format!("{} {} {}", e["kind"], e["count"], e["bytes"]))
                .collect::<Vec<_>>(),
            s.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let kept_in = rejected(&spool)
        .into_iter()
        .find(|(_, recs)| recs.iter().any(|r| path_of(r) == big_path))
        .map(|(file, _)| file)
        .expect("the file holding the refused record");
    // The line that says so names the file it is kept in, and the 413.
    let name = kept_in.file_name().unwrap().to_string_lossy().into_owned();
    let line = s.wait_stderr(&name, at) - 1;
    let said = s.stderr().lines().nth(line).unwrap_or_default().to_owned();
    assert!(
        said.contains("rejected 1 records (HTTP 413"),
        "the refusal is logged: {said}"
    );
    ingest.mode("ok");
    let after = dir.exe(&unique("after"), &stager());
    run_ok(&mut Command::new(&after));
    ingest.wait_delivered("the alert after the rejection", |d| {
        d.iter().any(|r| path_of(r) == after.to_str().unwrap())
    });
    assert!(
        !ingest.delivered().iter().any(|r| path_of(r) == big_path),
        "the refused record was not delivered"
    );
    assert!(s.stop_with(libc::SIGTERM).success());
    let kept = rejected(&spool);
    let copies = kept
        .iter()
        .flat_map(|(_, recs)| recs)
        .filter(|r| path_of(r) == big_path)
        .count();
    assert_eq!(copies, 1, "the refused record is kept in rejected/, once");
    // Counted with any other test's records refused meanwhile.
    let total: usize = kept.iter().map(|(_, recs)| recs.len()).sum();
    assert!(
        s.stderr().contains(&format!("rejected {total},")),
        "the counters line reports the {total} records in rejected/: {}",
        s.stderr()
    );
}

/// The batches in the spool's `rejected/` and the records each holds.
fn rejected(spool: &Path) -> Vec<(PathBuf, Vec<Value>)> {
    let Ok(dir) = fs::read_dir(spool.join("rejected")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .map(|p| {
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(fs::File::open(&p).expect("a rejected batch")),
                &mut text,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let recs: Vec<Value> =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, recs)
        })
        .collect()
}

/// The DCR transform's column for a record field, e.g. `ProcessCommandLine` for
/// `process.command_line` (`Column = tostring(field)`).
fn column_of(transform: &str, field: &str) -> String {
    transform
        .lines()
        .find(|l| l.contains(&format!("({field})")))
        .and_then(|l| l.trim().split(" = ").next())
        .unwrap_or_else(|| panic!("no column for {field}"))
        .trim_start_matches("| project TimeGenerated,")
        .trim()
        .to_owned()
}

#[test]
fn a_1kb_command_line_reaches_every_route_whole() {
    let dir = TempDir::new("one-kb");
    let ingest = Ingest::start(dir.path());
    let rsyslog = tinyexec_harness::rsyslog::Rsyslog::start(dir.path());
    let spool = dir.path().join("spool");
    let settings = ingest.settings(dir.path(), &spool, "");
    let s = Sensor::start_with(
        Command::new(sensor_path())
            .args(["run", "--no-exclusions", "--sentinel"])
            .arg(&settings)
            .arg("--syslog")
            .arg(format!("udp://127.0.0.1:{}", rsyslog.udp_port)),
    );
    let name = unique("onekb");
    let path = dir.exe(&name, &stager());
    run_ok(&mut long_command(&path, "onekb"));
    let rec = s.wait_for("the alert", tinyexec_harness::exec_of(&path));
    let command_line = field(&rec, "process.command_line")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(command_line.len() > 1000, "{command_line}");
    // Logs Ingestion: the record as the DCR receives it.
    let d = ingest.wait_delivered("the alert", |d| {
        d.iter().any(|r| path_of(r) == path.to_str().unwrap())
    });
    let sent = d
        .iter()
        .find(|r| path_of(r) == path.to_str().unwrap())
        .unwrap();
    assert_eq!(field(sent, "process.command_line"), command_line.as_str());
    // CEF: what the Azure Monitor Agent reads.
    let lines = rsyslog.wait_for_line(&name, |l| l.contains(&name));
    let line = lines.iter().find(|l| l.contains(&name)).unwrap();
    let (_, ext) = tinyexec_harness::cef::parse(line);
    assert_eq!(ext["cs1"], command_line, "the whole command line in cs1");
    let dcr: Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sentinel/dcr.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let flows = &dcr["resources"][0]["properties"]["dataFlows"];
    let custom = column_of(
        flows[0]["transformKql"].as_str().unwrap(),
        "process.command_line",
    );
    let asim = column_of(
        flows[1]["transformKql"].as_str().unwrap(),
        "process.command_line",
    );
    eprintln!(
        "a {}-byte command line: TinyexecAlerts_CL.{custom}, ASimProcessEventLogs.{asim}, \
         CommonSecurityLog.DeviceCustomString1 (cs1, {} bytes, the last of {} CEF keys; the CEF line is {} bytes)",
        command_line.len(),
        ext["cs1"].len(),
        ext.len(),
        line.len()
    );
    assert_eq!(custom, "ProcessCommandLine");
    assert_eq!(asim, "TargetProcessCommandLine");
}
