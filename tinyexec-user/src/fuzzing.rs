//! What each fuzz target checks, defined once: the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` call these, and `tests/fuzz_regressions.rs` replays
//! through them every input a fuzzer ever failed on. A target panics on a
//! broken invariant; whatever the input, it must not overflow the stack,
//! hang or grow without bound (libFuzzer's timeout and memory limit catch those).
//!
//! `seeds` (built for the tests and with the feature `fuzz-seeds` only) makes
//! each target's starting corpus in code: the shipped exclusions and
//! configuration, records in the kernel's wire layout, and synthetic BTF (no
//! real kernel's BTF is in the repository).

use serde_json::{Value, json};
use tinyexec_ebpf::rule;
#[cfg(any(test, feature = "fuzz-seeds"))]
use tinyexec_ebpf::{ExecRecord, flags};

use crate::{exclusions, exec::decode, kernel::btf, run::settings, textfile};

/// A target's check of one input.
pub type Check = fn(&[u8]);

/// Every target, by the name its fuzz binary has.
pub const TARGETS: &[(&str, Check)] = &[
    ("exclusions", exclusions),
    ("evaluate", evaluate),
    ("settings", settings),
    ("decode", decode),
    ("btf", btf),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// An exclusions file: parse, print, re-parse, lint, show the errors.
pub fn exclusions(data: &[u8]) {
    // The UTF-8 check is the sensor's own, with its error's place.
    let Ok(text) = textfile::utf8("fuzz", data.to_vec()) else {
        return;
    };
    let parsed = exclusions::parse("fuzz", &text);
    for err in &parsed.errors {
        assert!(
            (1..=err.text.chars().count() + 1).contains(&err.column),
            "column {} outside the line: {err:?}",
            err.column
        );
        let shown = err.to_string();
        // A bad line is shown around its column, never whole.
        assert!(
            shown.len() <= err.message.len() + 200 * 4 + 64 + err.file.len(),
            "{} bytes shown for a line of {}",
            shown.len(),
            err.text.len()
        );
    }
    for e in &parsed.exclusions {
        let normalized = e.expr.normalized();
        let again = exclusions::parse("fuzz", &normalized);
        assert!(
            again.errors.is_empty() && again.exclusions.len() == 1,
            "{:?} normalized to {normalized:?}, which does not parse back: {:?}",
            e.source,
            again.errors
        );
        assert_eq!(
            again.exclusions[0].expr, e.expr,
            "{:?} normalized to {normalized:?}, which parses to something else",
            e.source
        );
        assert_eq!(again.exclusions[0].expr.normalized(), normalized);
        let _ = exclusions::lint(e);
    }
}

/// A record for [`evaluate`]: JSON when the bytes are a JSON object, else an
/// alert-like record whose text fields are the bytes.
fn record(bytes: &[u8]) -> Value {
    if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    let text = String::from_utf8_lossy(bytes);
    let args: Vec<&str> = text.split(' ').collect();
    json!({
        "event": {"action": "exec", "kind": "alert", "sequence": bytes.len()},
        "process": {
            "name": args.first().copied().unwrap_or_default(),
            "executable": text,
            "command_line": text,
            "args": args,
            "uid": bytes.first().copied().unwrap_or(0),
            "user": text,
            "parent": {"name": text, "pid": 1, "executable": null},
            "parent_process_name": text,
        },
        "file": {"path": text, "name": text, "size": bytes.len(), "deleted": bytes.len().is_multiple_of(2)},
    })
}

/// Exclusions, a NUL, then a record: the first match equals matching each
/// exclusion on its own (the prepared fields change nothing).
pub fn evaluate(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let rec = record(data.get(split + 1..).unwrap_or_default());
    let parsed = exclusions::parse("fuzz", text);
    let used = exclusions::fields_used(&parsed.exclusions);
    let first = exclusions::first_match(&parsed.exclusions, &rec, &used).map(|e| e.line);
    let one_by_one = parsed
        .exclusions
        .iter()
        .find(|e| e.expr.matches(&rec))
        .map(|e| e.line);
    assert_eq!(first, one_by_one, "{text:?} on {rec}");
}

/// A configuration file: what it accepts is within every range.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = settings::parse_file("fuzz", text) else {
        return;
    };
    let s = settings::Settings::merge(settings::RunArgs::default(), file, None);
    assert_eq!(
        settings::ring_buffer_size(s.ring_buffer_size),
        Ok(s.ring_buffer_size)
    );
    assert_eq!(
        settings::max_path_depth(s.max_path_depth),
        Ok(s.max_path_depth)
    );
    assert_eq!(
        settings::heartbeat_interval(s.heartbeat_interval),
        Ok(s.heartbeat_interval)
    );
    assert_eq!(
        settings::repeat_window(s.repeat_window),
        Ok(s.repeat_window)
    );
    assert_eq!(settings::output_queue(s.output_queue), Ok(s.output_queue));
}

/// A kernel record: decoded or refused, and the rule's verdict on its header
/// agrees with the rule on whole files.
pub fn decode(data: &[u8]) {
    let Ok(exec) = decode::decode(data) else {
        return;
    };
    let _ = (exec.is_memfd(), exec.is_deleted());
    let (Some(head), Ok(size)) = (&exec.header, u64::try_from(exec.size)) else {
        return;
    };
    // The kernel's header decision, taken again by the daemon on these bytes.
    let Some(verdict) = crate::exec::detect::header_decision(&exec) else {
        return;
    };
    if head.len() as u64 == size {
        let whole = if rule::evaluate(head).is_some() {
            rule::HeaderVerdict::Match
        } else {
            rule::HeaderVerdict::NoMatch
        };
        assert_eq!(verdict, whole);
    }
}

/// Lookups the sensor and the tests make, tried on every blob that parses.
const BTF_LOOKUPS: &[(&str, &str)] = &[
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "loginuid.val"),
    ("task_struct", "comm"),
    ("task_struct", "exec_name.len"),
    ("task_struct", "in_execve"),
    ("dentry", "d_parent"),
    ("dentry", "d_name.len"),
    ("dentry", "d_name.name"),
    ("qstr", "hash_len"),
    ("kuid_t", "val"),
    ("dup", "a"),
    ("grows", "b"),
    ("old_bits", "flags"),
    ("odd", "nibble"),
];

/// Raw BTF: parsed or refused, and lookups answer or fail, never panic.
pub fn btf(data: &[u8]) {
    let Ok(btf) = btf::Btf::from_bytes(data) else {
        return;
    };
    for (s, f) in BTF_LOOKUPS {
        if let (Ok(off), Ok(size)) = (btf.member_offset(s, f), btf.member_size(s, f)) {
            let _ = off.checked_add(size);
        }
    }
    let _ = btf.enum_value("cgroup_subsys_id", "pids_cgrp_id");
    let _ = btf.struct_size("upid");
}

/// A kernel record with `flags`, a header, arguments, a path and a parent's path.
#[cfg(any(test, feature = "fuzz-seeds"))]
fn wire(f: u32, size: i64, header: &[u8], args: &[u8], path: &[u8], parent: &[u8]) -> Vec<u8> {
    // SAFETY: all-zero is a valid ExecRecord (plain integers and byte arrays).
    let mut rec: ExecRecord = unsafe { std::mem::zeroed() };
    rec.flags = f;
    rec.file_size = size;
    rec.pid = 4242;
    rec.loginuid = u32::MAX;
    rec.comm[..6].copy_from_slice(b"stager");
    let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX);
    (
        rec.header_len,
        rec.args_len,
        rec.path_len,
        rec.parent_path_len,
    ) = (len(header), len(args), len(path), len(parent));
    decode::encode(&rec, &[header, args, path, parent].concat())
}

/// Starting inputs for target `name`, named for the files they are written to
/// (the `fuzz_seeds` example writes them; only it and the tests build this).
#[cfg(any(test, feature = "fuzz-seeds"))]
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let shipped: &[(&str, &str)] = &[
        ("built-in", crate::exclusions::policy::BUILT_IN),
        ("spec", include_str!("../../spec/exclusions.txt")),
        (
            "syntax",
            "process.name:a OR (NOT file.path:\"/etc/cron.d/\" AND process.args:*x*)\n\
             process.user==“root” and not process.uid:0 or file.name:\"a \\\"b\\\" c\\\\\"\n\
             # named\nfile.path:*snort OR file.path:snort* OR process.command_line:„x y“\n\
             ((process.name:a)) OR NOT NOT file.hash.sha256==abc\n\
             process.nmae:a\nprocess.name: a\nprocess.name:'a'\n(process.name:a\n",
        ),
    ];
    let stager = {
        let mut s = rule::MAGIC.to_vec();
        s.resize(120, 0);
        s.extend_from_slice(&rule::S1);
        s.extend_from_slice(&rule::S2);
        s
    };
    #[expect(clippy::cast_possible_wrap, reason = "a stager is < 270 bytes")]
    let stager_size = stager.len() as i64;
    match name {
        "exclusions" => shipped
            .iter()
            .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
            .collect(),
        "evaluate" => {
            let recs = [
                json!({"process": {"name": "snort", "parent_process_name": "cron", "user": "root",
                    "command_line": "sudo /opt/update-firewall-rules.sh --apply",
                    "args": ["sudo", "/opt/update-firewall-rules.sh"], "uid": 0},
                    "file": {"path": "/etc/cron.d/backup", "name": "backup", "size": 153}})
                .to_string()
                .into_bytes(),
                b"/usr/sbin/snort --daemon".to_vec(),
            ];
            shipped
                .iter()
                .flat_map(|(n, t)| {
                    recs.iter()
                        .enumerate()
                        .map(move |(i, r)| (format!("{n}-{i}"), [t.as_bytes(), b"\0", r].concat()))
                })
                .collect()
        }
        "settings" => vec![
            (
                "deploy".into(),
                include_bytes!("../../deploy/config.toml").to_vec(),
            ),
            (
                "every-key".into(),
                b"all_execs = true\nprevent = false\nexclusions = \"/x\"\nno_exclusions = false\n\
                  suppressed = \"count\"\nstats_interval = 60\nstdout = true\n\
                  output_file = \"/var/log/x.json\"\nsyslog = \"udp://127.0.0.1:514\"\n\
                  sentinel = \"/etc/s.toml\"\nbtf = \"/sys/kernel/btf/vmlinux\"\n\
                  ring_buffer_size = 4096\nmax_path_depth = 64\n"
                    .to_vec(),
            ),
        ],
        "decode" => vec![
            (
                "stager".into(),
                wire(
                    flags::HEADER | flags::CANDIDATE,
                    stager_size,
                    &stager,
                    b"/tmp/stager\0-x\0",
                    b"/tmp/stager",
                    b"/bin/sh",
                ),
            ),
            (
                "partial-header".into(),
                wire(
                    flags::HEADER | flags::CANDIDATE,
                    269,
                    &stager[..stager.len() - 3],
                    b"a",
                    b"/memfd:x (deleted)",
                    b"",
                ),
            ),
            (
                "plain".into(),
                wire(0, 123_456, b"", b"ls\0-l\0", b"/usr/bin/ls", b"/bin/bash"),
            ),
            (
                "killed".into(),
                wire(
                    flags::HEADER | flags::CANDIDATE | flags::KILLED | flags::ARGS_TRUNCATED,
                    stager_size,
                    &stager,
                    b"",
                    b"",
                    b"",
                ),
            ),
        ],
        "btf" => [
            ("a", btf::synthetic::LAYOUT_A),
            ("b", btf::synthetic::LAYOUT_B),
        ]
        .into_iter()
        .flat_map(|(n, layout)| {
            let w = btf::synthetic::synthetic(layout);
            [
                (format!("{n}-le"), w.bytes(false)),
                (format!("{n}-be"), w.bytes(true)),
            ]
        })
        .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_seeds_and_passes_them() {
        for (name, run) in TARGETS {
            let seeds = seeds(name);
            assert!(!seeds.is_empty(), "{name}");
            for (seed, bytes) in seeds {
                eprintln!("{name}/{seed}: {} bytes", bytes.len());
                run(&bytes);
            }
        }
    }

    #[test]
    fn seeds_are_meaningful() {
        // The decoder's seeds decode; the BTF seeds parse and resolve.
        for (n, bytes) in seeds("decode") {
            decode::decode(&bytes).unwrap_or_else(|e| panic!("{n}: {e:#}"));
        }
        for (n, bytes) in seeds("btf") {
            let b = btf::Btf::from_bytes(&bytes).unwrap_or_else(|e| panic!("{n}: {e:#}"));
            b.member_offset("dentry", "d_name.len").unwrap();
        }
        for (n, bytes) in seeds("settings") {
            settings::parse_file(&n, std::str::from_utf8(&bytes).unwrap()).unwrap();
        }
    }
}
