//! What one `field:value` / `field==value` predicate means, following Kusto's
//! `search` operators so an exclusion behaves here as it did in Sentinel.
//!
//! Terms are maximal runs of alphanumeric characters (`char::is_alphanumeric`),
//! compared case-insensitively:
//! - `field:"a b"` (`has`): the value's terms appear as consecutive whole terms
//!   of the field. Punctuation only separates terms, so `"/etc/cron.d/"` is the
//!   terms `etc cron d` and matches `/etc/cron.d/backup` (and, like Kusto,
//!   `/tmp/etc/cron.d/x`: it is not anchored).
//! - `"a b*"` (`hasprefix`): as `has`, but the last value term need only be a
//!   prefix of its field term.
//! - `"*a b"` (`hassuffix`): the first value term need only be a suffix.
//! - `"*a b*"` (`contains`): substring of the whole field text.
//! - `field=="a b"`: the whole field text, case-sensitive.
//!
//! A `*` anywhere else is ordinary text (a separator, for term matching).

/// Which comparison a predicate makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Has,
    HasPrefix,
    HasSuffix,
    Contains,
    /// `==`: exact and case-sensitive.
    Equals,
}

/// One `field:value` or `field==value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predicate {
    pub field: String,
    pub op: Op,
    /// The value as written, unquoted and unescaped, `*`s included.
    pub value: String,
    /// Precomputed from `value` so matching a record does not re-split it.
    pattern: Pattern,
    /// The field's index in [`super::fields::FIELDS`].
    slot: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// Lower-cased terms, never empty.
    Terms(Vec<String>),
    /// Lower-cased substring, never empty.
    Needle(String),
    /// Compare with `value` itself.
    Exact,
}

impl Predicate {
    /// `exact` is `==`; otherwise the `*`s at the ends of `value` choose the
    /// operator. Fails (with the reason) on a value that could never match.
    pub fn new(field: &str, exact: bool, value: &str) -> Result<Self, String> {
        let slot = super::fields::index(field).ok_or_else(|| format!("unknown field `{field}`"))?;
        let (op, pattern) = if exact {
            (Op::Equals, Pattern::Exact)
        } else {
            let (leading, rest) = match value.strip_prefix('*') {
                Some(rest) => (true, rest),
                None => (false, value),
            };
            let (trailing, inner) = match rest.strip_suffix('*') {
                Some(inner) => (true, inner),
                None => (false, rest),
            };
            if leading && trailing {
                if inner.is_empty() {
                    return Err(format!(
                        "value \"{}\" has nothing between its `*`s, so it would match every value; \
                         drop the predicate instead",
                        excerpt(value)
                    ));
                }
                (Op::Contains, Pattern::Needle(inner.to_lowercase()))
            } else {
                let found: Vec<String> = terms(inner).map(str::to_lowercase).collect();
                if found.is_empty() {
                    return Err(format!(
                        "value \"{}\" has no letters or digits, so `:` (term match) can never match it; \
                         use `==` to compare the exact text",
                        excerpt(value)
                    ));
                }
                let op = match (leading, trailing) {
                    (true, _) => Op::HasSuffix,
                    (_, true) => Op::HasPrefix,
                    _ => Op::Has,
                };
                (op, Pattern::Terms(found))
            }
        };
        Ok(Predicate {
            field: field.to_owned(),
            op,
            value: value.to_owned(),
            pattern,
            slot,
        })
    }

    /// Where matching keeps this predicate's field of a record.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Whether the field's texts, taken from a record, match. A field the
    /// record lacks (or holds null) has none, and never matches (so `NOT` of
    /// it is true); an array matches when any element does; numbers and bools
    /// compare through their JSON text.
    pub fn matches_texts(&self, texts: &FieldTexts) -> bool {
        texts.0.iter().any(|t| match &self.pattern {
            Pattern::Exact => t.exact == self.value,
            Pattern::Needle(needle) => t.lower.contains(needle.as_str()),
            Pattern::Terms(wanted) => has_terms(&t.terms, wanted, self.op),
        })
    }
}

/// One field of one record as predicates compare it: every text it holds
/// (array elements flattened, numbers and bools as their JSON text, objects
/// and null left out, as no analyst means them), lower-cased and split into
/// terms once. A large exclusions file has thousands of predicates on the same
/// few fields; each then costs a comparison, not a split and allocations.
#[derive(Debug)]
pub struct FieldTexts(Vec<Text>);

#[derive(Debug)]
struct Text {
    exact: String,
    lower: String,
    /// Lower-cased terms.
    terms: Vec<String>,
}

impl FieldTexts {
    /// A field's texts (an array's elements, or its one value).
    pub fn new(texts: Vec<String>) -> Self {
        Self(
            texts
                .into_iter()
                .map(|exact| Text {
                    lower: exact.to_lowercase(),
                    terms: terms(&exact).map(str::to_lowercase).collect(),
                    exact,
                })
                .collect(),
        )
    }
}

/// Maximal runs of alphanumeric characters. Split before lower-casing: case
/// mapping can add non-alphanumeric marks (`İ` -> `i̇`) that would split a term.
fn terms(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// Whether `wanted` occurs as consecutive terms of `have`, with the first
/// (`HasSuffix`) or last (`HasPrefix`) term allowed to be partial.
fn has_terms(have: &[String], wanted: &[String], op: Op) -> bool {
    if wanted.is_empty() || have.len() < wanted.len() {
        return false;
    }
    let last = wanted.len() - 1;
    have.windows(wanted.len()).any(|window| {
        window
            .iter()
            .zip(wanted)
            .enumerate()
            .all(|(i, (h, w))| match op {
                Op::HasPrefix if i == last => h.starts_with(w.as_str()),
                Op::HasSuffix if i == 0 => h.ends_with(w.as_str()),
                _ => h == w,
            })
    })
}

/// Text from the line for a message, cut to a readable length: a message
/// quotes the line's words, and a word may be a megabyte long.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A predicate on a whole record, its field taken as exclusions take it.
    trait OnRecord {
        fn matches(&self, record: &Value) -> bool;
    }

    impl OnRecord for Predicate {
        fn matches(&self, record: &Value) -> bool {
            let wanted: Vec<bool> = (0..super::super::fields::FIELDS.len())
                .map(|i| i == self.slot())
                .collect();
            let texts = super::super::walk::texts_of(record, &wanted)
                .into_iter()
                .nth(self.slot())
                .flatten();
            texts.is_some_and(|t| self.matches_texts(&FieldTexts::new(t)))
        }
    }

    fn pred(field: &str, exact: bool, value: &str) -> Predicate {
        Predicate::new(field, exact, value).expect("valid predicate")
    }

    /// `field:value` against a string field.
    fn has(value: &str, text: &str) -> bool {
        pred("file.path", false, value).matches(&json!({"file": {"path": text}}))
    }

    #[test]
    fn operator_from_stars() {
        assert_eq!(pred("file.name", false, "snort").op, Op::Has);
        assert_eq!(pred("file.name", false, "snort*").op, Op::HasPrefix);
        assert_eq!(pred("file.name", false, "*snort").op, Op::HasSuffix);
        assert_eq!(pred("file.name", false, "*snort*").op, Op::Contains);
        assert_eq!(pred("file.name", false, "sn*rt").op, Op::Has);
        assert_eq!(pred("file.name", true, "*snort*").op, Op::Equals);
    }

    #[test]
    fn has_whole_consecutive_terms() {
        assert!(has("/etc/cron.d/", "/etc/cron.d/backup"));
        assert!(has("cron", "cron"));
        assert!(!has("cron", "anacron"));
        assert!(has(
            "update-firewall-rules.sh",
            "sudo /opt/update-firewall-rules.sh --apply"
        ));
        assert!(!has(
            "update-firewall-rules.sh",
            "update-firewall-rules-v2.sh"
        ));
        assert!(has("CRON", "Cron"), "case-insensitive");
        assert!(!has("etc cron", "cron etc"), "order matters");
        assert!(!has("etc cron", "etc x cron"), "terms must be consecutive");
        assert!(has("etc cron", "/etc/cron"));
        assert!(has("snort", "/usr/sbin/snort"));
        assert!(!has("snort", "/usr/sbin/snort2"));
        assert!(has("a*b", "a b"), "a `*` inside is a separator");
        assert!(has("ÉTÉ", "/srv/été/x"), "unicode terms and case");
        assert!(!has("cron", ""));
    }

    #[test]
    fn hasprefix() {
        assert!(has("snor*", "/usr/sbin/snort"));
        assert!(has("sbin/sn*", "/usr/sbin/snort"));
        assert!(!has("sbi/sn*", "/usr/sbin/snort"), "earlier terms whole");
        assert!(!has("nort*", "/usr/sbin/snort"));
        assert!(has("SNOR*", "snort"));
    }

    #[test]
    fn hassuffix() {
        assert!(has("*nort", "/usr/sbin/snort"));
        assert!(has("*bin/snort", "/usr/sbin/snort"));
        assert!(!has("*bin/snor", "/usr/sbin/snort"), "later terms whole");
        assert!(!has("*snor", "/usr/sbin/snort"));
    }

    #[test]
    fn contains() {
        assert!(has("*bin/sn*", "/usr/sbin/snort"));
        assert!(has("*RON.D/BA*", "/etc/cron.d/backup"));
        assert!(!has("*cron.d/x*", "/etc/cron.d/backup"));
        assert!(has("*-*", "a-b"), "contains needs no letters");
    }

    #[test]
    fn exact() {
        let p = pred("process.user", true, "root");
        assert!(p.matches(&json!({"process": {"user": "root"}})));
        assert!(!p.matches(&json!({"process": {"user": "Root"}})));
        assert!(!p.matches(&json!({"process": {"user": "root "}})));
        let star = pred("process.user", true, "*");
        assert!(star.matches(&json!({"process": {"user": "*"}})));
        assert!(!star.matches(&json!({"process": {"user": "root"}})));
    }

    #[test]
    fn numbers_bools_arrays_null_missing() {
        let rec = json!({
            "process": {"uid": 0, "args": ["sudo", "/opt/x.sh", "--apply"], "login_uid": null},
            "file": {"deleted": true, "size": 1234},
            "rule": {"strings": [{"identifier": "$s1"}]},
        });
        assert!(pred("process.uid", false, "0").matches(&rec));
        assert!(pred("process.uid", true, "0").matches(&rec));
        assert!(!pred("process.uid", false, "00").matches(&rec));
        assert!(pred("file.deleted", false, "TRUE").matches(&rec));
        assert!(!pred("file.deleted", true, "TRUE").matches(&rec));
        assert!(pred("file.size", false, "12*").matches(&rec));
        assert!(pred("process.args", false, "apply").matches(&rec));
        assert!(pred("process.args", true, "--apply").matches(&rec));
        assert!(!pred("process.args", true, "apply").matches(&rec));
        assert!(
            !pred("process.args", false, "sudo x").matches(&rec),
            "per element"
        );
        assert!(!pred("process.login_uid", false, "null").matches(&rec));
        assert!(!pred("process.name", false, "x").matches(&rec));
        assert!(!pred("rule.strings", false, "identifier").matches(&rec));
        assert!(!pred("process.parent.name", false, "x").matches(&json!({"process": 1})));
    }

    #[test]
    fn values_that_cannot_match_are_rejected() {
        let e = Predicate::new("file.path", false, "/").unwrap_err();
        assert!(
            e.contains("no letters or digits") && e.contains("=="),
            "{e}"
        );
        assert!(Predicate::new("file.path", false, "").is_err());
        assert!(Predicate::new("file.path", false, "*").is_err());
        assert!(Predicate::new("file.path", false, "*/*").is_ok());
        let e = Predicate::new("file.path", false, "**").unwrap_err();
        assert!(e.contains("nothing between"), "{e}");
        assert!(Predicate::new("file.path", true, "/").is_ok());
        assert!(Predicate::new("file.path", true, "").is_ok());
    }
}
