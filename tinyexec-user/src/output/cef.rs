//! Records as ArcSight CEF, the format the Azure Monitor Agent forwards into
//! Sentinel's `CommonSecurityLog`. Every value is escaped per the CEF
//! specification, so a crafted path can neither add a field nor end the record.

use std::fmt::Write as _;

use crate::record::Record;

/// Header fields escape `\` and `|`; a header never holds a line break.
fn header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Extension values escape `\`, `=` and line breaks (`\n`, `\r`); other
/// control characters, which CEF does not define, become `\xNN` so that
/// nothing a file name holds can reach the transport unescaped.
pub fn value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// CEF severity (0-10) and the syslog severity that carries it.
pub fn severities(rec: &Record) -> (u8, u8) {
    match (rec.event.kind, rec.event.action) {
        (_, "killed") => (10, 2),
        ("alert", _) => match rec.rule.as_ref().map(|r| r.verdict) {
            Some("undetermined") => (7, 4),
            _ => (10, 2),
        },
        ("suppressed", _) => (3, 5),
        ("metric", _) => (5, 4),
        _ => (1, 6),
    }
}

/// `CEF:0|Vendor|Product|Version|ClassId|Name|Severity|key=value ...`.
pub fn format(rec: &Record) -> String {
    let rule = rec.rule.as_ref().map(|r| r.name);
    let (class, name) = match (rec.event.kind, rule) {
        ("alert" | "suppressed", Some(rule)) => (
            rule.to_owned(),
            format!("{rule} {} ({})", rec.event.kind, rec.event.action),
        ),
        _ => (rec.event.action.to_owned(), rec.event.action.to_owned()),
    };
    let (severity, _) = severities(rec);
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", rfc3339_to_millis(&rec.timestamp).to_string()),
        ("dvchost", rec.host.hostname.clone()),
        ("act", rec.event.action.to_owned()),
        ("cat", rec.event.kind.to_owned()),
        ("externalId", rec.event.sequence.to_string()),
        ("cs6Label", "agentEphemeralId".into()),
        ("cs6", rec.agent.ephemeral_id.clone()),
        ("cn2Label", "lostSincePrevious".into()),
        ("cn2", rec.tinyexec.lost_since_previous.to_string()),
    ];
    if let Some(p) = &rec.process {
        ext.extend([
            ("spid", p.pid.to_string()),
            ("sproc", p.name.clone()),
            ("suser", p.user.clone()),
            ("suid", p.uid.to_string()),
            ("cs1Label", "commandLine".into()),
            ("cs1", p.command_line.clone()),
            ("cn1Label", "parentPid".into()),
            ("cn1", p.parent.pid.to_string()),
        ]);
        if let Some(exe) = &p.parent.executable {
            ext.extend([
                ("cs2Label", "parentExecutable".into()),
                ("cs2", exe.clone()),
            ]);
        }
    }
    if let Some(f) = &rec.file {
        ext.extend([
            ("filePath", f.path.clone()),
            ("fname", f.name.clone()),
            ("fsize", f.size.to_string()),
            ("cn3Label", "inode".into()),
            ("cn3", f.inode.to_string()),
        ]);
        if let Some(h) = &f.hash {
            ext.push(("fileHash", h.sha256.clone()));
        }
    }
    if let Some(r) = &rec.rule {
        ext.extend([
            ("cs3Label", "ruleVerdict".into()),
            ("cs3", r.verdict.to_owned()),
        ]);
        if let Some(reason) = &r.reason {
            ext.push(("reason", reason.clone()));
        }
    }
    if let Some(e) = &rec.exclusion {
        ext.extend([("cs4Label", "exclusion".into()), ("cs4", e.name.clone())]);
    }
    if let Some(src) = rec.tinyexec.content_source {
        ext.extend([
            ("cs5Label", "contentSource".into()),
            ("cs5", src.to_owned()),
        ]);
    }
    if let Some(l) = &rec.lost {
        ext.push((
            "msg",
            format!("{} records lost ({} since start)", l.count, l.total),
        ));
    }
    let mut out = format!(
        "CEF:0|tinyexec|tinyexec-sensor|{}|{}|{}|{severity}|",
        header(env!("CARGO_PKG_VERSION")),
        header(&class),
        header(&name),
    );
    let body: Vec<String> = ext
        .iter()
        .map(|(k, v)| format!("{k}={}", value(v)))
        .collect();
    out.push_str(&body.join(" "));
    out
}

/// `@timestamp` back to milliseconds since the epoch (CEF `rt`).
fn rfc3339_to_millis(ts: &str) -> u128 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_cannot_forge_fields_or_records() {
        assert_eq!(value("a=b"), "a\\=b");
        assert_eq!(value("a\\b"), "a\\\\b");
        assert_eq!(value("a\nCEF:0|x"), "a\\nCEF:0|x");
        assert_eq!(value("a\r\u{1b}"), "a\\r\\x1b");
        assert_eq!(header("a|b\\c\nd"), "a\\|b\\\\c d");
        // A value ending in a backslash cannot escape the separator that follows.
        assert_eq!(value("x\\"), "x\\\\");
    }
}
