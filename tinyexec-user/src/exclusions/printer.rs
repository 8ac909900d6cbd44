//! The printer: an expression back to canonical text, what `check` shows and
//! a reload compares.

use super::{expr::Expr, matching::Op};

impl Expr {
    /// Canonical text: keywords upper-case, straight quotes, `field:"value"` /
    /// `field=="value"`, only the parentheses precedence needs. Parses back to
    /// the same expression, so it is what to show and compare.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        write_expr(self, &mut out);
        out
    }
}

/// Binding strength: a child weaker than its parent needs parentheses.
fn strength(e: &Expr) -> u8 {
    match e {
        Expr::Or(_) => 1,
        Expr::And(_) => 2,
        Expr::Not(_) | Expr::Pred(_) => 3,
    }
}

fn write_child(e: &Expr, parent: u8, out: &mut String) {
    if strength(e) < parent {
        out.push('(');
        write_expr(e, out);
        out.push(')');
    } else {
        write_expr(e, out);
    }
}

fn write_expr(e: &Expr, out: &mut String) {
    match e {
        Expr::Pred(p) => {
            out.push_str(&p.field);
            out.push_str(if p.op == Op::Equals { "==" } else { ":" });
            out.push('"');
            for c in p.value.chars() {
                if matches!(c, '"' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Expr::Not(inner) => {
            out.push_str("NOT ");
            write_child(inner, 3, out);
        }
        Expr::And(items) | Expr::Or(items) => {
            let (parent, sep) = match e {
                Expr::And(_) => (2, " AND "),
                _ => (1, " OR "),
            };
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                write_child(item, parent, out);
            }
        }
    }
}
