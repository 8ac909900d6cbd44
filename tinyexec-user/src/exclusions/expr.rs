//! An exclusion as parsed: its expression, and how it matches a record.

use serde::Serialize;

use super::{
    fields,
    matching::{FieldTexts, Predicate},
    walk,
};

/// Deepest nesting of parentheses and `NOT`s in one exclusion. The parser, the
/// printer, the linter and matching all recurse along it: bounding it here
/// bounds their stack use, whatever the file holds.
pub const MAX_NESTING: usize = 64;

/// One exclusion line.
#[derive(Clone, Debug, PartialEq)]
pub struct Exclusion {
    pub name: String,
    /// 1-based line number in the file.
    pub line: usize,
    /// The line as written.
    pub source: String,
    pub expr: Expr,
}

/// A parsed exclusion expression. The parser builds `And`/`Or` with at least
/// two items and never nests an `And` directly in an `And` (nor `Or` in `Or`).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Pred(Predicate),
    Not(Box<Expr>),
    /// All items match (an empty list matches everything).
    And(Vec<Expr>),
    /// Some item matches (an empty list matches nothing).
    Or(Vec<Expr>),
}

impl Expr {
    /// Whether `record` (anything serde walks: a record, a JSON value) matches.
    pub fn matches(&self, record: &impl Serialize) -> bool {
        let mut used = vec![false; fields::FIELDS.len()];
        self.mark_used(&mut used);
        self.matches_in(&prepared(record, &used))
    }

    fn matches_in(&self, fields: &[Option<FieldTexts>]) -> bool {
        match self {
            Expr::Pred(p) => fields
                .get(p.slot())
                .and_then(Option::as_ref)
                .is_some_and(|texts| p.matches_texts(texts)),
            Expr::Not(inner) => !inner.matches_in(fields),
            Expr::And(items) => items.iter().all(|e| e.matches_in(fields)),
            Expr::Or(items) => items.iter().any(|e| e.matches_in(fields)),
        }
    }

    /// The fields used, each once, in order of first use.
    #[cfg(test)]
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |p| {
            if !out.contains(&p.field.as_str()) {
                out.push(p.field.as_str());
            }
        });
        out
    }

    fn mark_used(&self, used: &mut [bool]) {
        self.visit(&mut |p| {
            if let Some(u) = used.get_mut(p.slot()) {
                *u = true;
            }
        });
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Predicate)) {
        match self {
            Expr::Pred(p) => f(p),
            Expr::Not(inner) => inner.visit(f),
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| e.visit(f)),
        }
    }
}

/// Which fields of [`fields::FIELDS`] (by index) any of `exclusions` uses:
/// the only ones a record's walk keeps.
pub fn fields_used<'a>(exclusions: impl IntoIterator<Item = &'a Exclusion>) -> Vec<bool> {
    let mut used = vec![false; fields::FIELDS.len()];
    for e in exclusions {
        e.expr.mark_used(&mut used);
    }
    used
}

/// The first exclusion that matches, if any. `used` is [`fields_used`] of
/// them: the record is walked once, for those fields only, and each field
/// prepared once for all exclusions (a large file has thousands of
/// predicates on the same few fields).
pub fn first_match<'a>(
    exclusions: &'a [Exclusion],
    record: &impl Serialize,
    used: &[bool],
) -> Option<&'a Exclusion> {
    let fields = prepared(record, used);
    exclusions.iter().find(|e| e.expr.matches_in(&fields))
}

/// The `used` fields of `record`, prepared for matching.
fn prepared(record: &impl Serialize, used: &[bool]) -> Vec<Option<FieldTexts>> {
    walk::texts_of(record, used)
        .into_iter()
        .map(|texts| texts.map(FieldTexts::new))
        .collect()
}
