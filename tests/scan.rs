//! `tinyexec-sensor scan` against Debian's `yara` on the whole corpus: the
//! product claims YARA's verdicts, so YARA itself is the judge, and the
//! corpus's stated verdicts judge them both.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use tinyexec_harness::{
    TempDir,
    corpus::{self, Sample},
    field_str, sensor_path, spawn,
};

const RULE_NAME: &str = "EQGRP_tinyexec";

/// The corpus written to a fresh directory.
fn corpus_dir() -> (TempDir, Vec<(PathBuf, Sample)>) {
    let dir = TempDir::new("scan-corpus");
    let written = corpus::write(dir.path()).expect("write corpus");
    (dir, written)
}

fn expected(written: &[(PathBuf, Sample)]) -> BTreeSet<PathBuf> {
    written
        .iter()
        .filter(|(_, s)| s.expect_match)
        .map(|(p, _)| p.clone())
        .collect()
}

/// The analysts' `.yar` file, handed to yara as it is. It lives outside the
/// scanned directory (yara -r would otherwise scan it too).
fn rule_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/EQGRP_tinyexec.yar")
}

/// Runs `yara -r RULE DIR`. A missing yara fails: this test is the proof of
/// agreement, and passing without it would prove nothing.
fn yara(rule: &Path, dir: &Path) -> Output {
    let out = Command::new("yara")
        .arg("-r")
        .arg(rule)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `yara` ({e}): it is the reference this test compares against; \
                 `cargo xtask test` installs it (or `apt-get install yara`)"
            )
        });
    assert!(
        out.status.success(),
        "yara: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `tinyexec-sensor scan ARGS`, output captured.
fn scan<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(sensor_path());
    cmd.arg("scan")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(&mut cmd).wait_with_output().expect("wait scan")
}

/// Paths from `EQGRP_tinyexec PATH` lines; any other line is a format error.
fn matched_paths(who: &str, stdout: &[u8]) -> BTreeSet<PathBuf> {
    let text = String::from_utf8(stdout.to_vec()).expect("UTF-8 output");
    let lines: Vec<&str> = text.lines().collect();
    let set: BTreeSet<PathBuf> = lines
        .iter()
        .map(|l| {
            let path = l
                .strip_prefix(RULE_NAME)
                .and_then(|r| r.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{who} printed {l:?}, not `{RULE_NAME} PATH`"));
            PathBuf::from(path)
        })
        .collect();
    assert_eq!(
        set.len(),
        lines.len(),
        "{who} reported a file twice:\n{text}"
    );
    set
}

/// Equality with the differing sample names spelled out.
fn assert_same(what: &str, got: &BTreeSet<PathBuf>, want: &BTreeSet<PathBuf>) {
    let name = |p: &PathBuf| {
        p.file_name().map_or(p.display().to_string(), |n| {
            n.to_string_lossy().into_owned()
        })
    };
    let extra: Vec<_> = got.difference(want).map(name).collect();
    let missing: Vec<_> = want.difference(got).map(name).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: reported but not expected {extra:?}; expected but not reported {missing:?}"
    );
}

#[test]
fn scan_agrees_with_yara_on_the_corpus() {
    let rule = rule_file();
    let (dir, written) = corpus_dir();
    let want = expected(&written);
    assert!(!want.is_empty() && want.len() < written.len());

    let by_yara = matched_paths("yara", &yara(&rule, dir.path()).stdout);
    assert_same("yara vs the corpus's verdicts", &by_yara, &want);

    let out = scan([dir.path()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "scan: {}\n{stderr}", out.status);
    let by_scan = matched_paths("scan", &out.stdout);
    assert_same("scan vs yara", &by_scan, &by_yara);
}

#[test]
fn scan_exit_codes_and_errors() {
    let (dir, written) = corpus_dir();
    let find = |m: bool| {
        written
            .iter()
            .find(|(_, s)| s.expect_match == m)
            .map(|(p, _)| p.clone())
            .unwrap()
    };
    let (hit, miss) = (find(true), find(false));

    let out = scan([&miss]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = scan([&hit]);
    assert_eq!(out.status.code(), Some(1));
    assert_same(
        "one file",
        &matched_paths("scan", &out.stdout),
        &BTreeSet::from([hit.clone()]),
    );

    // An error anywhere wins the exit status, yet the hunt goes on around it.
    let gone = dir.path().join("no-such-file");
    let last_hit = written
        .iter()
        .rfind(|(_, s)| s.expect_match)
        .unwrap()
        .0
        .clone();
    assert_ne!(hit, last_hit);
    let out = scan([&hit, &gone, &last_hit]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(gone.to_str().unwrap()), "{stderr}");
    assert_same(
        "matches around a missing path",
        &matched_paths("scan", &out.stdout),
        &BTreeSet::from([hit, last_hit]),
    );
}

#[test]
fn scan_json_one_object_per_match() {
    let (dir, written) = corpus_dir();
    let out = scan(["--json".as_ref(), dir.path().as_os_str()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let mut paths = BTreeSet::new();
    for line in text.lines() {
        let rec: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(field_str(&rec, "rule.name"), RULE_NAME, "{rec}");
        assert!(
            paths.insert(PathBuf::from(field_str(&rec, "file.path"))),
            "twice: {rec}"
        );
    }
    assert_eq!(paths.len(), text.lines().count());
    assert_same("scan --json", &paths, &expected(&written));
}
