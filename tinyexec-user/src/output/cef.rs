//! Records as ArcSight CEF, the format the Azure Monitor Agent forwards into
//! Sentinel's `CommonSecurityLog`. Every value is escaped per the CEF
//! specification, so a crafted path can neither add a field nor end the record.

use std::fmt::Write as _;

use crate::record::{Action, Kind, Record};

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
        (_, Action::Killed | Action::Denied) => (10, 2),
        (Kind::Alert, _) => match rec.rule.as_ref().map(|r| r.verdict) {
            Some("undetermined") => (7, 4),
            _ => (10, 2),
        },
        (Kind::Suppressed, _) => (3, 5),
        // Notice: the CEF connector's collection (Notice and above) takes it.
        (_, Action::Heartbeat) => (1, 5),
        (Kind::Metric, _) => (5, 4),
        (Kind::Event, _) => (1, 6),
    }
}

/// `CEF:0|Vendor|Product|Version|ClassId|Name|Severity|key=value ...`.
///
/// Keys are only those of Microsoft's CEF-to-`CommonSecurityLog` mapping, each value
/// in a column whose type holds it: the u64 counters and the inode go to string
/// columns (`flexString1/2`, `fileId`), never to the int32 `cn*`/`fsize` columns.
/// What an analyst filters on comes first and the long paths and the command line
/// last, so a syslog size limit cuts those, not the verdict. docs/outputs.md names
/// the column of every key.
pub fn format(rec: &Record) -> String {
    let rule = rec.rule.as_ref().map(|r| r.name);
    let (kind, action) = (rec.event.kind.as_str(), rec.event.action.as_str());
    let (class, name) = match (rec.event.kind, rule) {
        (Kind::Alert | Kind::Suppressed, Some(rule)) => {
            (rule.to_owned(), format!("{rule} {kind} ({action})"))
        }
        _ => (action.to_owned(), action.to_owned()),
    };
    let (severity, _) = severities(rec);
    let mut ext: Vec<(&str, String)> = vec![("act", action.to_owned()), ("cat", kind.to_owned())];
    if let Some(r) = &rec.rule {
        ext.extend([
            ("cs3Label", "ruleVerdict".into()),
            ("cs3", r.verdict.to_owned()),
        ]);
    }
    if let Some(h) = rec.file.as_ref().and_then(|f| f.hash.as_ref()) {
        ext.push(("fileHash", h.sha256.clone()));
    }
    if let Some(src) = rec.tinyexec.content_source {
        ext.extend([
            ("cs5Label", "contentSource".into()),
            ("cs5", src.to_owned()),
        ]);
    }
    if let Some(e) = &rec.exclusion {
        ext.extend([("cs4Label", "exclusion".into()), ("cs4", e.name.clone())]);
    }
    ext.extend([
        ("dvchost", rec.host.hostname.clone()),
        ("rt", rfc3339_to_millis(&rec.timestamp).to_string()),
        ("cs6Label", "agentEphemeralId".into()),
        ("cs6", rec.agent.ephemeral_id.clone()),
        ("flexString1Label", "eventSequence".into()),
        ("flexString1", rec.event.sequence.to_string()),
        ("flexString2Label", "lostSincePrevious".into()),
        ("flexString2", rec.tinyexec.lost_since_previous.to_string()),
    ]);
    if let Some(p) = &rec.process {
        // Pids fit an int32 column: the kernel caps them at 2^22 (PID_MAX_LIMIT).
        ext.extend([
            ("spid", p.pid.to_string()),
            ("sproc", p.name.clone()),
            ("suser", p.user.clone()),
            ("suid", p.uid.to_string()),
            ("cn1Label", "parentPid".into()),
            ("cn1", p.parent.pid.to_string()),
        ]);
        // The six custom strings are taken: the container goes to the
        // standard string columns nearest in meaning (docs/outputs.md): its
        // id to what identifies the event's source, its name to the source's
        // service, its image to the request's context.
        if let Some(c) = &rec.container {
            ext.push(("deviceExternalId", c.id.clone()));
            if let Some(name) = &c.name {
                ext.push(("sourceServiceName", name.clone()));
            }
            if let Some(image) = &c.image {
                let tagged = match &image.tag {
                    Some(tag) => format!("{}:{tag}", image.name),
                    None => image.name.clone(),
                };
                ext.push(("requestContext", tagged));
            }
        }
        // A pod's hostname is its name; its namespace is its DNS domain.
        if let Some(k) = &rec.kubernetes {
            if let Some(pod) = &k.pod.name {
                ext.push(("shost", pod.clone()));
            }
            if let Some(ns) = &k.namespace {
                ext.push(("sntdom", ns.clone()));
            }
        }
        if let Some(vpid) = p.vpid {
            ext.extend([
                ("cn2Label", "processVpid".into()),
                ("cn2", vpid.to_string()),
            ]);
        }
        if let Some(host) = p.namespaces.as_ref().and_then(|n| n.host) {
            ext.extend([
                ("cn3Label", "hostNamespaces".into()),
                ("cn3", u8::from(host).to_string()),
            ]);
        }
    }
    if let Some(f) = &rec.file {
        ext.push(("fname", f.name.clone()));
        // FileSize is int32: a larger file (only `--all-execs` reports one) has no fsize.
        if i32::try_from(f.size).is_ok() {
            ext.push(("fsize", f.size.to_string()));
        }
        ext.push(("fileId", f.inode.to_string()));
    }
    if let Some(reason) = rec.rule.as_ref().and_then(|r| r.reason.as_ref()) {
        ext.push(("msg", reason.clone()));
    }
    if let Some(l) = &rec.lost {
        ext.push((
            "msg",
            format!("{} records lost ({} since start)", l.count, l.total),
        ));
    }
    if let Some(h) = &rec.heartbeat {
        // The counters as the JSON object records carry (`heartbeat`): the
        // parser and the heartbeat rule read them back with parse_json.
        ext.push(("msg", serde_json::to_string(h).unwrap_or_default()));
    }
    if let Some(r) = &rec.repeats {
        // An aggregate: CEF's own count, and flexNumber1 labelled so the parser
        // knows it from a plain record (whose EventCount the agent may fill
        // with 1); cn2 is the vpid.
        // Both int32: capped there (a window never holds that many).
        let n = r.count.min(i32::MAX as u64).to_string();
        ext.extend([
            ("cnt", n.clone()),
            ("flexNumber1Label", "repeatsCount".into()),
            ("flexNumber1", n),
        ]);
    }
    if let Some(f) = &rec.file {
        ext.push(("filePath", f.path.clone()));
    }
    if let Some(p) = &rec.process {
        if let Some(exe) = &p.parent.executable {
            ext.extend([
                ("cs2Label", "parentExecutable".into()),
                ("cs2", exe.clone()),
            ]);
        }
        ext.extend([
            ("cs1Label", "commandLine".into()),
            ("cs1", p.command_line.clone()),
        ]);
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
