//! The dotted field names an exclusion may use (docs/events.md).
//!
//! A fixed list rather than "whatever the record happens to hold": a misspelled
//! field would otherwise never match, and an exclusion that silently never
//! matches is a bug nobody notices.

/// Every field of docs/events.md, including `process.parent.executable`, the
/// sturdy way to name a parent, and `process.args`.
pub const FIELDS: &[&str] = &[
    // Every record.
    "@timestamp",
    "event.action",
    "event.kind",
    "event.sequence",
    "host.hostname",
    "host.boot_id",
    // Exec records.
    "process.pid",
    "process.exec_tid",
    "process.name",
    "process.executable",
    "process.command_line",
    "process.args",
    "process.args_count",
    "process.args_truncated",
    "process.uid",
    "process.gid",
    "process.euid",
    "process.egid",
    "process.user",
    "process.group",
    "process.effective_user",
    "process.login_uid",
    "process.login_user",
    "process.exec_path",
    "process.parent.pid",
    "process.parent.name",
    "process.parent.executable",
    "process.parent_process_name",
    "process.vpid",
    "process.parent.vpid",
    "process.cgroup.id",
    "process.cgroup.path",
    "process.cgroup.path_truncated",
    "process.namespaces.mnt",
    "process.namespaces.pid",
    "process.namespaces.net",
    "process.namespaces.user",
    "process.namespaces.uts",
    "process.namespaces.cgroup",
    "process.namespaces.host",
    "container.id",
    "container.runtime",
    "container.name",
    "container.image.name",
    "container.image.tag",
    "container.image.hash.all",
    "orchestrator.type",
    "kubernetes.namespace",
    "kubernetes.pod.uid",
    "kubernetes.pod.name",
    "kubernetes.container.name",
    "user.id",
    "user.name",
    "file.path",
    "file.name",
    "file.directory",
    "file.size",
    "file.inode",
    "file.device",
    "file.nlink",
    "file.mode",
    "file.deleted",
    "file.memfd",
    "file.writable",
    "file.ctime",
    "file.path_truncated",
    "file.path_disconnected",
    "file.hash.sha256",
    "file.target.path",
    "file.target.size",
    "file.target.inode",
    "file.target.device",
    "file.target.hash.sha256",
    "tinyexec.ktime_ns",
    "tinyexec.schema_version",
    "tinyexec.lost_since_previous",
    "agent.name",
    "agent.version",
    "agent.ephemeral_id",
    "tinyexec.read_error",
    "tinyexec.content_source",
    "tinyexec.kill_failed",
    "tinyexec.container_lookup_error",
    // Alerts.
    "rule.name",
    "rule.verdict",
    "rule.reason",
    "rule.strings",
    // Lost records.
    "lost.count",
    "lost.total",
];

/// Field names are case-sensitive, as Kusto column names are.
pub fn is_known(name: &str) -> bool {
    FIELDS.contains(&name)
}

/// The position of a known field in [`FIELDS`]: matching keeps a record's
/// prepared fields by it.
pub fn index(name: &str) -> Option<usize> {
    FIELDS.iter().position(|f| *f == name)
}

/// The known field `name` was most likely meant to be, if any is close enough
/// to be a useful hint rather than noise.
pub fn suggest(name: &str) -> Option<&'static str> {
    // A dropped prefix (`parent_process_name`, `sha256`) is a common slip that
    // edit distance ranks far away; take it when it is unambiguous.
    // Several may end so (`file.hash.sha256`, `file.target.hash.sha256`): the
    // shortest, when it is the only one that short.
    let tail = format!(".{name}");
    let mut by_tail: Vec<&str> = FIELDS
        .iter()
        .copied()
        .filter(|f| f.ends_with(&tail))
        .collect();
    by_tail.sort_by_key(|f| f.len());
    match by_tail.as_slice() {
        [only] => return Some(only),
        [a, b, ..] if a.len() < b.len() => return Some(a),
        _ => {}
    }
    let wanted = name.to_lowercase();
    // The distance is at least the difference in length, so a name more than
    // half again as long as every field is past the limit below: skip the
    // quadratic work (a line may hold a megabyte-long word).
    let n = wanted.chars().count();
    if 2 * n > 3 * FIELDS.iter().map(|f| f.len()).max().unwrap_or(0) + 6 {
        return None;
    }
    // A third of the name (at least 2 edits) keeps `process.nmae` -> `process.name`
    // while not offering `file.size` for `foo`.
    let limit = (n / 3).max(2);
    FIELDS
        .iter()
        .filter_map(|f| Some((*f, levenshtein_within(&wanted, f, limit)?)))
        .min_by_key(|&(_, d)| d)
        .map(|(f, _)| f)
}

/// Edit distance in characters (insert, delete, substitute).
pub fn levenshtein(a: &str, b: &str) -> usize {
    levenshtein_within(a, b, usize::MAX).unwrap_or(usize::MAX)
}

/// The edit distance when it is at most `limit`. Stops at the first row whose
/// every entry is past the limit (entries never decrease down a column's
/// best path): a file of unknown fields costs a few rows per field, not the
/// whole table.
pub fn levenshtein_within(a: &str, b: &str, limit: usize) -> Option<usize> {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = Vec::with_capacity(b.len() + 1);
    for (i, ca) in a.chars().enumerate() {
        // Row i + 1 from row i: each entry from the one left of it (`left`),
        // above it (`up`) and diagonally above (`diagonal`).
        cur.clear();
        let mut left = i + 1;
        cur.push(left);
        for ((cb, &diagonal), &up) in b.iter().zip(&prev).zip(prev.iter().skip(1)) {
            left = (diagonal + usize::from(ca != *cb))
                .min(up + 1)
                .min(left + 1);
            cur.push(left);
        }
        std::mem::swap(&mut prev, &mut cur);
        if prev.iter().all(|&d| d > limit) {
            return None;
        }
    }
    prev.last().copied().filter(|&d| d <= limit)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::record::field_names::{same, schema};

    /// Fields exclusions do not offer, and why (a name ending in `.`: every
    /// field under it).
    const NOT_FOR_EXCLUSIONS: &[(&str, &str)] = &[
        ("exclusion.name", "set by the exclusion that matched"),
        ("exclusion.line", "set by the exclusion that matched"),
        (
            "heartbeat.",
            "heartbeats are not execs: exclusions judge alerts",
        ),
        (
            "repeats.",
            "set on the aggregate after exclusions judged each of its execs",
        ),
        (
            "tinyexec.repeat_of",
            "set after exclusions judged the exec (an alert again otherwise)",
        ),
    ];

    #[test]
    fn exclusions_accept_every_field() {
        let mut fields: BTreeSet<String> = FIELDS.iter().map(|f| (*f).to_owned()).collect();
        let schema = schema();
        for (name, _) in NOT_FOR_EXCLUSIONS {
            fields.extend(
                schema
                    .iter()
                    .filter(|f| *f == name || (name.ends_with('.') && f.starts_with(name)))
                    .cloned(),
            );
        }
        same("exclusions/fields.rs FIELDS", &fields, &schema);
    }

    #[test]
    fn fields_are_unique_and_include_the_additions() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert!(!FIELDS[..i].contains(f), "{f} listed twice");
        }
        assert!(is_known("process.parent.executable"));
        assert!(is_known("process.args"));
        assert!(is_known("container.id"));
        assert!(is_known("process.namespaces.host"));
        assert!(!is_known("Process.Name"));
    }

    #[test]
    fn levenshtein_counts_characters() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("“a”", "\"a\""), 2);
        assert_eq!(levenshtein_within("kitten", "sitting", 3), Some(3));
        assert_eq!(levenshtein_within("kitten", "sitting", 2), None);
        assert_eq!(levenshtein_within("", "ab", 2), Some(2));
        assert_eq!(levenshtein_within("abcdef", "", 2), None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("process.nmae"), Some("process.name"));
        assert_eq!(suggest("process.parent_name"), Some("process.parent.name"));
        assert_eq!(suggest("Process.Name"), Some("process.name"));
        assert_eq!(
            suggest("parent_process_name"),
            Some("process.parent_process_name")
        );
        assert_eq!(suggest("sha256"), Some("file.hash.sha256"));
        assert_eq!(suggest("foo"), None);
        assert_eq!(suggest("completely.unrelated.thing"), None);
        // A megabyte-long name gets no suggestion, at once (once 4 s).
        let t = std::time::Instant::now();
        assert_eq!(suggest(&"a".repeat(1 << 20)), None);
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
        // The longest name that could still be within reach is still compared.
        let near = format!("{}xx", FIELDS.iter().max_by_key(|f| f.len()).unwrap());
        assert!(suggest(&near).is_some(), "{near}");
    }
}
