//! An exclusion as parsed: its expression, and how it matches a record.

use serde_json::Value;

use super::{
    fields,
    matching::{FieldTexts, Predicate},
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
    pub fn matches(&self, record: &Value) -> bool {
        self.matches_in(&mut Fields::new(record))
    }

    fn matches_in(&self, fields: &mut Fields<'_>) -> bool {
        match self {
            Expr::Pred(p) => p.matches_texts(fields.get(p)),
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

    #[cfg(test)]
    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Predicate)) {
        match self {
            Expr::Pred(p) => f(p),
            Expr::Not(inner) => inner.visit(f),
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| e.visit(f)),
        }
    }
}

/// The first exclusion that matches, if any. Each field of the record is
/// prepared once for all of them.
pub fn first_match<'a>(exclusions: &'a [Exclusion], record: &Value) -> Option<&'a Exclusion> {
    let mut fields = Fields::new(record);
    exclusions.iter().find(|e| e.expr.matches_in(&mut fields))
}

/// A record's fields, each prepared for matching when first asked for.
struct Fields<'r> {
    record: &'r Value,
    /// By [`Predicate::slot`].
    prepared: Vec<Option<FieldTexts>>,
}

impl<'r> Fields<'r> {
    fn new(record: &'r Value) -> Self {
        Self {
            record,
            prepared: std::iter::repeat_with(|| None)
                .take(fields::FIELDS.len())
                .collect(),
        }
    }

    fn get(&mut self, p: &Predicate) -> &FieldTexts {
        let record = self.record;
        #[expect(
            clippy::indexing_slicing,
            reason = "a slot is an index into fields::FIELDS, and `prepared` has one entry for each"
        )]
        self.prepared[p.slot()].get_or_insert_with(|| FieldTexts::of(record, &p.field))
    }
}
