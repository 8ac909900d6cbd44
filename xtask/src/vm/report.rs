//! The matrix's table: one row per kernel from the checks' `TINYEXEC-MATRIX`
//! lines (tests/matrix.rs), plus what the boot itself showed.

use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

/// What tests/matrix.rs prints before each check's JSON.
pub const PREFIX: &str = "TINYEXEC-MATRIX ";
/// The sensor's modes, in the table's order, as the checks name them.
const MODES: [&str; 4] = ["default", "all-execs", "prevent", "all-execs+prevent"];
/// Lines of a failed check's error shown under the table, and their width
/// (the 5.10 verifier's register states run to hundreds of characters).
const ERROR_LINES: usize = 8;
const ERROR_WIDTH: usize = 200;
/// How tests/matrix.rs begins the error of a check it could not make.
const NOT_CHECKED: &str = "not checked:";

/// One check's report line.
pub struct Check {
    pub name: String,
    pub mode: String,
    pub ok: bool,
    pub loaded: Option<bool>,
    pub ready_ms: Option<u64>,
    /// When it did not become ready: how long the attempt took.
    pub failed_after_ms: Option<u64>,
    pub verified: Option<u64>,
    pub error: Option<String>,
    /// `prevent-mechanism`: `lsm` or `kill`, the LSM program's verified
    /// instructions, and why the kill (the sensor's words).
    pub mechanism: Option<String>,
    pub lsm_verified: Option<u64>,
    pub reason: Option<String>,
    /// `prevent-cost`: ns per ordinary exec of the LSM program and of the
    /// tracepoint's entry (`bpf_stats`).
    pub lsm_ns: Option<u64>,
    pub entry_ns: Option<u64>,
}

/// One kernel's results.
pub struct Row {
    /// `host`, or the matrix's kernel name.
    pub label: String,
    /// `uname -r` where the checks ran.
    pub release: String,
    pub boot: Option<Duration>,
    pub checks_time: Option<Duration>,
    pub checks: Vec<Check>,
    /// Failures outside the checks (timeout, no BTF, a crashed test binary).
    pub problems: Vec<String>,
}

impl Row {
    pub fn failed(&self) -> bool {
        !self.problems.is_empty() || self.checks.iter().any(|c| !c.ok)
    }

    fn ready(&self, mode: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.name == "ready" && c.mode == mode)
    }

    /// `--prevent`'s mechanism as the matrix found it.
    fn prevent(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == "prevent-mechanism")
    }

    /// `; N ns/exec, entry M` when the LSM program's cost was measured.
    fn prevent_cost(&self) -> String {
        self.checks
            .iter()
            .find(|c| c.name == "prevent-cost")
            .and_then(|c| Some(format!("; {} ns/exec, entry {}", c.lsm_ns?, c.entry_ns?)))
            .unwrap_or_default()
    }

    fn verified(&self, mode: &str) -> Option<u64> {
        self.checks
            .iter()
            .find(|c| c.name == "verified" && c.mode == mode)
            .and_then(|c| c.verified)
    }
}

/// The checks' lines among `lines` (console or report file), with the lines
/// that carried the prefix but no valid report (e.g. cut by a kernel message).
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> (Vec<Check>, Vec<String>) {
    let mut checks = Vec::new();
    let mut garbled = Vec::new();
    for line in lines {
        let Some(at) = line.find(PREFIX) else {
            continue;
        };
        let json = &line[at + PREFIX.len()..];
        match serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|v| check(&v))
        {
            Some(c) => checks.push(c),
            None => garbled.push(line.to_owned()),
        }
    }
    (checks, garbled)
}

fn check(v: &Value) -> Option<Check> {
    Some(Check {
        name: v.get("check")?.as_str()?.to_owned(),
        mode: v.get("mode")?.as_str()?.to_owned(),
        ok: v.get("ok")?.as_bool()?,
        loaded: v.get("loaded").and_then(Value::as_bool),
        ready_ms: v.get("ready_ms").and_then(Value::as_u64),
        failed_after_ms: v.get("failed_after_ms").and_then(Value::as_u64),
        verified: v.get("verified").and_then(Value::as_u64),
        error: v.get("error").and_then(Value::as_str).map(str::to_owned),
        mechanism: v
            .get("mechanism")
            .and_then(Value::as_str)
            .map(str::to_owned),
        lsm_verified: v.get("lsm_verified").and_then(Value::as_u64),
        reason: v.get("reason").and_then(Value::as_str).map(str::to_owned),
        lsm_ns: v.get("lsm_ns").and_then(Value::as_u64),
        entry_ns: v.get("entry_ns").and_then(Value::as_u64),
    })
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))
}

fn per_mode(f: impl Fn(&str) -> String) -> String {
    MODES.map(f).join(" / ")
}

/// The table and, under it, every failure with its last lines.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "kernel",
        "boot",
        "checks",
        "loaded",
        "verified insns (default / all-execs / prevent / all-execs+prevent)",
        "start-to-ready (same order)",
        "prevent (LSM program's insns; bpf_stats per ordinary exec)",
        "passed",
        "failed",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let tried = MODES.iter().filter(|m| r.ready(m).is_some()).count();
            let loaded = MODES
                .iter()
                .filter(|m| r.ready(m).is_some_and(|c| c.loaded == Some(true)))
                .count();
            let passed = r.checks.iter().filter(|c| c.ok).count();
            [
                format!("{} {}", r.label, r.release),
                secs(r.boot),
                secs(r.checks_time),
                if tried == 0 {
                    "-".to_owned()
                } else if loaded == tried {
                    "yes".to_owned()
                } else if loaded == 0 {
                    "NOT LOADED".to_owned()
                } else {
                    format!("{loaded} of {tried} modes")
                },
                per_mode(|m| r.verified(m).map_or("-".to_owned(), |n| n.to_string())),
                per_mode(|m| {
                    let s = |ms: u64| format!("{:.1}s", Duration::from_millis(ms).as_secs_f64());
                    match r.ready(m) {
                        Some(Check {
                            ready_ms: Some(ms), ..
                        }) => s(*ms),
                        // Not ready: how long the failed attempt took.
                        Some(Check {
                            failed_after_ms: Some(ms),
                            ..
                        }) => format!("NO {}", s(*ms)),
                        _ => "-".to_owned(),
                    }
                }),
                match r.prevent() {
                    Some(Check {
                        mechanism: Some(m),
                        lsm_verified,
                        ..
                    }) if m == "lsm" => {
                        format!(
                            "lsm ({}{})",
                            lsm_verified.map_or("-".to_owned(), |n| n.to_string()),
                            r.prevent_cost()
                        )
                    }
                    Some(Check {
                        mechanism: Some(m), ..
                    }) => format!("{m} (see below)"),
                    _ => "-".to_owned(),
                },
                passed.to_string(),
                (r.checks.len() - passed).to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: &[&str]| -> String {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&header);
    for c in &cells {
        out += &line(&c.each_ref().map(String::as_str));
    }
    // Why `--prevent` falls back to the kill, per kernel, in the sensor's words.
    let fallbacks: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let c = r.prevent()?;
            (c.mechanism.as_deref() == Some("kill")).then(|| {
                format!(
                    "  {}: kill: {}",
                    r.label,
                    c.reason.as_deref().unwrap_or("(no reason given)")
                )
            })
        })
        .collect();
    if !fallbacks.is_empty() {
        out += "\n--prevent without the LSM refusal:\n";
        out += &(fallbacks.join("\n") + "\n");
    }
    for r in rows.iter().filter(|r| r.failed()) {
        let _ = writeln!(out, "\n{} {}:", r.label, r.release);
        for p in &r.problems {
            let _ = writeln!(out, "  {}", p.replace('\n', "\n    "));
        }
        let failed: Vec<&Check> = r.checks.iter().filter(|c| !c.ok).collect();
        // Checks skipped for one reason (the sensor did not load) on one line.
        let mut skipped: Vec<(&str, Vec<String>)> = Vec::new();
        for c in &failed {
            let Some(why) = c.error.as_deref().filter(|e| e.starts_with(NOT_CHECKED)) else {
                continue;
            };
            let what = format!("{} ({})", c.name, c.mode);
            match skipped.iter_mut().find(|(w, _)| *w == why) {
                Some((_, list)) => list.push(what),
                None => skipped.push((why, vec![what])),
            }
        }
        for c in failed.iter().filter(|c| {
            !c.error
                .as_deref()
                .is_some_and(|e| e.starts_with(NOT_CHECKED))
        }) {
            let error = c.error.as_deref().unwrap_or("(no message)");
            let lines: Vec<&str> = error.lines().collect();
            let tail = &lines[lines.len().saturating_sub(ERROR_LINES)..];
            let _ = writeln!(out, "  FAILED {} ({}):", c.name, c.mode);
            for l in tail {
                let cut: String = l.chars().take(ERROR_WIDTH).collect();
                let more = if cut.len() < l.len() { " ..." } else { "" };
                let _ = writeln!(out, "    {cut}{more}");
            }
        }
        for (why, list) in skipped {
            let _ = writeln!(out, "  FAILED, {why}:\n    {}", list.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checks_among_kernel_noise() {
        let lines = [
            "[    1.0] Run /init as init process",
            r#"TINYEXEC-MATRIX {"check":"ready","mode":"default","ok":true,"loaded":true,"ready_ms":9100,"ms":1}"#,
            r#"[   9.9] random: crng init done TINYEXEC-MATRIX {"check":"verified","mode":"default","ok":false,"error":"none"}"#,
            r#"TINYEXEC-MATRIX {"check":"ready","mode":"prev"#,
            r#"TINYEXEC-MATRIX {"check":"ready","mode":"prevent","ok":false,"error":"not checked: no sensor"}"#,
            r#"TINYEXEC-MATRIX {"check":"prevent-kill","mode":"prevent","ok":false,"error":"not checked: no sensor"}"#,
            r#"TINYEXEC-MATRIX {"check":"prevent-mechanism","mode":"prevent","ok":true,"mechanism":"kill","reason":"bpf is not in /sys/kernel/security/lsm"}"#,
        ];
        let (checks, garbled) = parse(lines);
        assert_eq!(checks.len(), 5);
        assert_eq!(checks[0].ready_ms, Some(9100));
        assert!(!checks[1].ok);
        assert_eq!(garbled.len(), 1);
        let row = Row {
            label: "6.12".into(),
            release: "6.12.117+deb12-amd64".into(),
            boot: Some(Duration::from_millis(5100)),
            checks_time: None,
            checks,
            problems: vec![],
        };
        let table = render(&[row]);
        assert!(table.contains("6.12 6.12.117+deb12-amd64  5.1s"), "{table}");
        assert!(table.contains("9.1s / - / - / -"), "{table}");
        assert!(table.contains("kill (see below)"), "{table}");
        assert!(
            table.contains("6.12: kill: bpf is not in /sys/kernel/security/lsm"),
            "{table}"
        );
        assert!(
            table.contains("FAILED verified (default):\n    none"),
            "{table}"
        );
    }
}
