//! False-positive exclusions for alerts, in the KQL/Lucene-like syntax analysts
//! write in Microsoft Sentinel, so their exclusions can be used as written.
//!
//! File format: one exclusion per line; a line whose first non-blank character
//! is `#` is a comment; blank lines are ignored. An exclusion is named by the
//! comment line directly above it (the last one if there are several, `#` and
//! surrounding whitespace stripped), or `line N` when there is none (or it is
//! empty). Parsing keeps every good line and reports every bad one, so one typo
//! neither drops the whole file nor gets guessed into something else.
//!
//! Syntax is in [`syntax`] (and back to canonical text in [`printer`]), the
//! parsed form and how it matches a record in [`expr`], match semantics (Kusto
//! `has`, `hasprefix`, `hassuffix`, `contains`, `==`) in [`matching`], fields
//! in [`fields`], the warnings about fields an attacker controls in [`lint`],
//! and the exclusions in force (loaded, reloaded, counted) in [`policy`].
//! Records reach them as JSON: this folder uses no other of the daemon's.
// Outside input: an index out of bounds here is a crash an attacker chooses.
#![warn(clippy::indexing_slicing)]

mod expr;
pub mod fields;
mod lint;
pub mod matching;
pub(crate) mod policy;
mod printer;
mod syntax;
mod walk;

use std::fmt;

pub use expr::{Exclusion, Expr, MAX_NESTING, fields_used, first_match};
pub use lint::Warning;

/// Largest exclusions file read (docs/exclusions.md): far above any real list
/// (the analysts' is 1 KiB), and small enough that parsing it and checking
/// every alert against all of it stay cheap.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Errors per file that suggest the nearest known field for an unknown one.
const HINTED_ERRORS: usize = 100;

/// A bad line: where, why, and the line itself to show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters (not bytes).
    pub column: usize,
    pub message: String,
    /// The source line.
    pub text: String,
}

impl fmt::Display for ParseError {
    /// `file:line:column: message`, then the line indented by two spaces and a
    /// caret under the column (tabs before it kept, so the caret lines up). A
    /// long line is shown only around the column, so one bad line cannot flood
    /// the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const AROUND: usize = 60;
        let chars: Vec<char> = self.text.chars().collect();
        let at = self.column.saturating_sub(1).min(chars.len());
        let (start, end) = if chars.len() <= 2 * AROUND {
            (0, chars.len())
        } else {
            let start = at.saturating_sub(AROUND);
            (start, (start + 2 * AROUND).min(chars.len()))
        };
        let lead = if start > 0 { "..." } else { "" };
        let tail = if end < chars.len() { "..." } else { "" };
        let shown: String = chars.get(start..end).unwrap_or_default().iter().collect();
        let pad: String = lead
            .chars()
            .chain(chars.get(start..at).unwrap_or_default().iter().copied())
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "{}:{}:{}: {}\n  {lead}{shown}{tail}\n  {pad}^",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Everything in a file: the good lines and an error for each bad one.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub exclusions: Vec<Exclusion>,
    pub errors: Vec<ParseError>,
}

/// Parses a whole exclusions file. `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = Parsed::default();
    // The comment on the line directly above, if the previous line was one.
    let mut comment: Option<&str> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            comment = None;
            continue;
        }
        if trimmed.starts_with('#') {
            comment = Some(trimmed.trim_start_matches('#').trim());
            continue;
        }
        let name = match comment.take() {
            Some(c) if !c.is_empty() => c.to_owned(),
            _ => format!("line {number}"),
        };
        // Suggestions cost an edit-distance search each: the first errors
        // get them, a file of thousands of bad lines does not pay for them all.
        match syntax::parse_line_hinted(line, parsed.errors.len() < HINTED_ERRORS) {
            Ok(expr) => parsed.exclusions.push(Exclusion {
                name,
                line: number,
                source: line.to_owned(),
                expr,
            }),
            Err(e) => parsed.errors.push(ParseError {
                file: file.to_owned(),
                line: number,
                column: e.column,
                message: e.message,
                text: line.to_owned(),
            }),
        }
    }
    parsed
}

/// Warns about fields whose value the person who runs a binary controls:
/// `process.name` and `file.name` (rename the file), `process.command_line`
/// and `process.args` (any argument), `process.parent.name` and
/// `process.parent_process_name` (a process sets its own comm); and about
/// term or substring matches on paths, which are not anchored (any user can
/// create `/tmp/etc/cron.d/x`). Each warning names a sturdier field.
///
/// Only predicates used positively (under an even number of NOTs) warn: one
/// only under NOT can only narrow the exclusion, so dodging it leaves an
/// attacker no better off than if it were not there. At most one warning per
/// field and problem.
pub fn lint(exclusion: &Exclusion) -> Vec<Warning> {
    lint::warnings(exclusion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The exclusions as the analysts shipped them (`spec/` in the repository).
    const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/exclusions.txt");

    fn spec() -> Parsed {
        let path = std::env::var("TINYEXEC_EXCLUSIONS_SPEC").unwrap_or_else(|_| SPEC.into());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse("exclusions.txt", &text)
    }

    #[test]
    fn shipped_file() {
        let parsed = spec();
        let names: Vec<&str> = parsed.exclusions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Scheduled system maintenance task using tinyexec (systemd or cron job runs a routine firewall update)",
                "Administrator deploys firewall rules via tinyexec as part of a security policy change",
                "A security tool (Snort, Suricata, OSSEC) runs a custom script through tinyexec",
                "An automated patching tool (Ansible, Chef, Puppet) applies firewall changes during an update",
            ]
        );
        let lines: Vec<usize> = parsed.exclusions.iter().map(|e| e.line).collect();
        assert_eq!(lines, [6, 9, 12, 15]);
        for e in &parsed.exclusions {
            eprintln!("{} (line {}): {}", e.name, e.line, e.expr.normalized());
            for w in lint(e) {
                eprintln!("  warning: {}: {}", w.field, w.message);
            }
        }
        let normalized: Vec<String> = parsed
            .exclusions
            .iter()
            .map(|e| e.expr.normalized())
            .collect();
        assert_eq!(
            normalized,
            [
                r#"process.parent_process_name:"systemd" OR process.parent_process_name:"cron" OR file.path:"/etc/cron.d/""#,
                r#"process.user:"root" AND process.command_line:"update-firewall-rules.sh""#,
                r#"process.name:"snort" OR process.name:"suricata" OR process.name:"ossec""#,
                r#"process.name:"ansible" OR process.name:"chef" OR process.name:"puppet""#,
            ]
        );

        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        let e = &parsed.errors[0];
        eprintln!("{e}");
        // The file's 18th line (the brief said 17; the comment is on 17).
        assert_eq!((e.line, e.column), (18, 36));
        assert_eq!(
            e.to_string(),
            format!(
                "exclusions.txt:18:36: unterminated value: the quote “ opened here is never closed\n  \
                 process.user:“admin” AND file.name:“firewall\n  {}^",
                " ".repeat(35)
            )
        );
    }

    fn exec(parent: &str, path: &str, user: &str, args: &[&str]) -> Value {
        let name = path.rsplit('/').next().unwrap_or(path);
        json!({
            "event": {"action": "exec", "kind": "alert"},
            "process": {
                "name": name,
                "executable": path,
                "command_line": args.join(" "),
                "args": args,
                "user": user,
                "uid": if user == "root" { 0 } else { 1000 },
                "parent": {"name": parent, "pid": 1},
                "parent_process_name": parent,
            },
            "file": {"path": path, "name": name},
        })
    }

    #[test]
    fn shipped_exclusions_match_their_scenarios() {
        let parsed = spec();
        let [maintenance, deploy, security, patching] = parsed.exclusions.as_slice() else {
            panic!("expected 4 exclusions, got {}", parsed.exclusions.len());
        };
        let m = |e: &Exclusion, r: &Value| e.expr.matches(r);

        let t = "/usr/local/bin/t";
        assert!(m(maintenance, &exec("cron", t, "root", &[t])));
        assert!(m(maintenance, &exec("systemd", t, "root", &[t])));
        assert!(m(
            maintenance,
            &exec("bash", "/etc/cron.d/backup", "root", &[t])
        ));
        assert!(!m(maintenance, &exec("anacron", t, "root", &[t])));
        assert!(!m(
            maintenance,
            &exec("bash", "/etc/cron.daily/x", "root", &[t])
        ));
        // `has` is a term match: any parent whose name has the term `systemd`.
        assert!(m(maintenance, &exec("systemd-udevd", t, "root", &[t])));

        let apply = ["sudo", "/opt/update-firewall-rules.sh", "--apply"];
        assert!(m(deploy, &exec("bash", t, "root", &apply)));
        assert!(!m(deploy, &exec("bash", t, "admin", &apply)));
        assert!(!m(
            deploy,
            &exec("bash", t, "root", &["/opt/update-firewall-rules-v2.sh"])
        ));

        assert!(m(security, &exec("init", "/usr/sbin/snort", "root", &[t])));
        assert!(m(
            security,
            &exec("init", "/var/ossec/bin/ossec", "root", &[t])
        ));
        assert!(!m(
            security,
            &exec("init", "/usr/sbin/snort2", "root", &[t])
        ));
        assert!(
            !m(security, &exec("snort", t, "root", &[t])),
            "the parent is not the process"
        );

        assert!(m(patching, &exec("sshd", "/usr/bin/puppet", "root", &[t])));
        assert!(m(
            patching,
            &exec("sshd", "/opt/chef/bin/chef", "root", &[t])
        ));
        assert!(!m(
            patching,
            &exec("sshd", "/usr/bin/puppetd", "root", &[t])
        ));

        let records = [
            exec("anacron", t, "root", &[t]),
            exec("cron", "/usr/sbin/snort", "root", &[t]),
        ];
        let used = fields_used(&parsed.exclusions);
        assert_eq!(
            first_match(&parsed.exclusions, &records[0], &used).map(|e| e.line),
            None
        );
        assert_eq!(
            first_match(&parsed.exclusions, &records[1], &used).map(|e| e.line),
            Some(6)
        );
    }

    #[test]
    fn names_from_comments() {
        let text = "\
process.name:a
# only
process.name:b

# first
##  second  \x20
process.name:c
# detached

process.name:d
#
process.name:e
  # indented
process.name:f
process.name:g
";
        let parsed = parse("x", text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let got: Vec<(&str, usize)> = parsed
            .exclusions
            .iter()
            .map(|e| (e.name.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("line 1", 1),
                ("only", 3),
                ("second", 7),
                ("line 10", 10),
                ("line 12", 12),
                ("indented", 14),
                ("line 15", 15),
            ]
        );
    }

    #[test]
    fn every_bad_line_is_reported_and_good_ones_kept() {
        let text = "process.name:a\r\nprocess.name:\r\n\r\n# b\r\nprocess.name:b\r\nfoo:x AND\r\n";
        let parsed = parse("f.txt", text);
        assert_eq!(parsed.exclusions.len(), 2);
        assert_eq!(parsed.exclusions[1].name, "b");
        assert_eq!(parsed.exclusions[1].source, "process.name:b");
        let at: Vec<(usize, usize)> = parsed.errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, [(2, 14), (6, 1)]);
        assert_eq!(
            parsed.errors[0].to_string(),
            "f.txt:2:14: missing value after `process.name:`\n  process.name:\n               ^"
        );
    }

    #[test]
    fn caret_keeps_tabs_and_counts_characters() {
        let parsed = parse("t", "\tprocess.user:“é” x");
        let e = &parsed.errors[0];
        assert_eq!(e.column, 19);
        assert_eq!(
            e.to_string(),
            "t:1:19: expected AND or OR, found `x`\n  \tprocess.user:“é” x\n  \t                 ^"
        );
    }

    #[test]
    fn a_long_line_is_shown_around_the_column() {
        let line = format!(
            "{}process.name:a{}",
            "(".repeat(20),
            " OR process.name:b".repeat(5000)
        );
        let e = &parse("l", &line).errors[0];
        let shown = e.to_string();
        assert!(shown.len() < 400, "{shown}");
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[0].starts_with("l:1:20: missing `)`"), "{shown}");
        assert!(
            lines[1].starts_with("  (((") && lines[1].ends_with("..."),
            "{shown}"
        );
        assert_eq!(lines[2], format!("  {}^", " ".repeat(19)));
        let deep = format!("{}process.name:a", "NOT ".repeat(1000));
        let e = &parse("d", &deep).errors[0];
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert!(
            lines[1].starts_with("  ...") && lines[1].ends_with("..."),
            "{shown}"
        );
        // The caret is under the first NOT too many.
        let caret = lines[2].len() - 1;
        assert_eq!(&lines[1][caret..caret + 3], "NOT", "{shown}");
        assert_eq!(e.column, 4 * MAX_NESTING + 1);
    }

    #[test]
    fn only_the_first_errors_suggest_a_field() {
        let text = "process.nmae:a\n".repeat(HINTED_ERRORS + 1);
        let parsed = parse("h", &text);
        let hinted = |e: &ParseError| e.message.contains("did you mean `process.name`");
        assert!(parsed.errors[..HINTED_ERRORS].iter().all(hinted));
        assert!(!hinted(&parsed.errors[HINTED_ERRORS]));
        assert!(
            parsed.errors[HINTED_ERRORS]
                .message
                .contains("unknown field")
        );
    }

    #[test]
    fn byte_order_mark_is_not_text() {
        let parsed = parse("b", "\u{feff}process.name:a\n");
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    }

    #[test]
    fn fields_in_order_of_first_use() {
        let parsed = parse(
            "f",
            "process.name:a OR (NOT file.path:b AND process.name:c) OR process.args:d",
        );
        assert_eq!(
            parsed.exclusions[0].expr.fields(),
            ["process.name", "file.path", "process.args"]
        );
    }

    #[test]
    fn missing_fields_and_not() {
        let parsed = parse("m", "NOT process.login_user:root\nprocess.login_user:root");
        let rec = json!({"process": {"login_user": null}});
        assert!(parsed.exclusions[0].expr.matches(&rec));
        assert!(!parsed.exclusions[1].expr.matches(&rec));
        assert!(parsed.exclusions[0].expr.matches(&json!({})));
    }
}
