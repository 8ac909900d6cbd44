//! Lexer and recursive-descent parser for one exclusion line (the printer
//! back to canonical text is `printer.rs`).
//!
//! Grammar (keywords case-insensitive; NOT binds tighter than AND, AND than OR):
//! ```text
//! or        = and { "OR" and }
//! and       = unary { "AND" unary }
//! unary     = "NOT" unary | "(" or ")" | predicate
//! predicate = FIELD ( ":" | "==" ) VALUE
//! ```
//! A value follows its operator directly: `"..."` (`\"` and `\\` escaped),
//! `“...”` (also closed by `“`, and opened by `”` or `„`; no escapes), or an
//! unquoted word. Columns are 1-based and count characters, not bytes, so a
//! caret lines up under text with typographic quotes before it.

use super::{
    expr::{Expr, MAX_NESTING},
    fields,
    matching::{Predicate, excerpt},
};

/// A problem on one line; the caller adds file, line and the text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub column: usize,
    pub message: String,
}

fn error<T>(column: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        column,
        message: message.into(),
    })
}

/// Parses one non-blank, non-comment line into an expression.
#[cfg(test)]
pub(crate) fn parse_line(line: &str) -> Result<Expr, SyntaxError> {
    parse_line_hinted(line, true)
}

/// As [`parse_line`]; `hints` says whether an unknown field's error suggests
/// the nearest known one (an edit-distance search over every field).
pub(crate) fn parse_line_hinted(line: &str, hints: bool) -> Result<Expr, SyntaxError> {
    let chars: Vec<char> = line.chars().collect();
    let mut parser = Parser {
        tokens: lex(&chars),
        pos: 0,
        depth: 0,
        hints,
    };
    let expr = parser.or(Context::Start)?;
    let next = parser.peek()?;
    match &next.tok {
        Tok::End => Ok(expr),
        Tok::RParen => error(next.col, "stray `)`: there is no `(` for it to close"),
        _ => error(next.col, expected_operator(&next.tok)),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    /// A field name (or a misplaced bare word).
    Word(String),
    Colon,
    EqEq,
    /// Unquoted and unescaped.
    Value(String),
    End,
    /// The lexer stops at its first problem; the parser reports it when it
    /// gets there, so an earlier grammar error is still the one shown.
    Error(String),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    col: usize,
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '“' | '”' | '„')
}

fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '@')
}

/// The first index from `from` on whose character satisfies `pred`.
fn find_from(chars: &[char], from: usize, pred: impl Fn(char) -> bool) -> Option<usize> {
    chars
        .get(from..)?
        .iter()
        .position(|&c| pred(c))
        .map(|k| from + k)
}

/// The characters in `range` as a string (empty if it is out of bounds).
fn text(chars: &[char], range: std::ops::Range<usize>) -> String {
    chars.get(range).unwrap_or_default().iter().collect()
}

fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')') || is_quote(c)
}

/// Tokens of the whole line, ending with `End` or `Error`.
fn lex(chars: &[char]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // Right after `:`/`==` comes a value, lexed by value rules (`:` and `=`
        // are ordinary text there).
        if let Some(op) = out.last().and_then(|t: &Token| match t.tok {
            Tok::Colon => Some(":"),
            Tok::EqEq => Some("=="),
            _ => None,
        }) {
            let field = match out.len().checked_sub(2).and_then(|k| out.get(k)) {
                Some(Token {
                    tok: Tok::Word(w), ..
                }) => w.as_str(),
                _ => "",
            };
            let after = format!("{}{op}", excerpt(field));
            match lex_value(chars, i, &after) {
                Ok((text, next)) => {
                    out.push(Token {
                        tok: Tok::Value(text),
                        col: i + 1,
                    });
                    i = next;
                    continue;
                }
                Err((col, message)) => {
                    out.push(Token {
                        tok: Tok::Error(message),
                        col,
                    });
                    return out;
                }
            }
        }
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        let col = i + 1;
        let Some(&c) = chars.get(i) else {
            out.push(Token { tok: Tok::End, col });
            return out;
        };
        let (tok, next) = match c {
            '(' => (Tok::LParen, i + 1),
            ')' => (Tok::RParen, i + 1),
            ':' => (Tok::Colon, i + 1),
            '=' if chars.get(i + 1) == Some(&'=') => (Tok::EqEq, i + 2),
            '=' => (
                Tok::Error(
                    "a single `=` is not an operator: use `:` to match terms or `==` for the exact text"
                        .into(),
                ),
                i + 1,
            ),
            c if is_quote(c) => match lex_value(chars, i, "") {
                Ok((text, next)) => (Tok::Value(text), next),
                Err((col, message)) => {
                    out.push(Token {
                        tok: Tok::Error(message),
                        col,
                    });
                    return out;
                }
            },
            c if is_field_char(c) => {
                let end = find_from(chars, i, |c| !is_field_char(c)).unwrap_or(chars.len());
                let word = text(chars, i..end);
                (keyword(&word).unwrap_or(Tok::Word(word)), end)
            }
            c => (Tok::Error(unexpected(c)), i + 1),
        };
        let stop = matches!(tok, Tok::Error(_));
        out.push(Token { tok, col });
        if stop {
            return out;
        }
        i = next;
    }
}

/// AND, OR and NOT, in any case.
fn keyword(word: &str) -> Option<Tok> {
    [("and", Tok::And), ("or", Tok::Or), ("not", Tok::Not)]
        .into_iter()
        .find(|(k, _)| word.eq_ignore_ascii_case(k))
        .map(|(_, tok)| tok)
}

fn unexpected(c: char) -> String {
    let hint = match c {
        '!' | '-' => " (negate with NOT)",
        '&' => " (use AND)",
        '|' => " (use OR)",
        '#' => " (a comment must be on a line of its own)",
        _ => "",
    };
    format!("unexpected character `{c}`{hint}")
}

/// The value starting at `chars[i]` and the index after it, or the column and
/// message of the problem. `after` is the `field:` it belongs to, for messages.
fn lex_value(chars: &[char], i: usize, after: &str) -> Result<(String, usize), (usize, String)> {
    let col = i + 1;
    let Some(&open) = chars.get(i) else {
        return Err((col, format!("missing value after `{after}`")));
    };
    match open {
        c if c.is_whitespace() || c == '(' || c == ')' => {
            // `field: "x"`: say why, unless what follows is no value anyway.
            let next = find_from(chars, i, |c| !c.is_whitespace());
            let spaced_value = c.is_whitespace()
                && next.is_some_and(|k| {
                    let end = find_from(chars, k + 1, ends_word).unwrap_or(chars.len());
                    let word = text(chars, k..end);
                    !matches!(chars.get(k), Some('(' | ')')) && keyword(&word).is_none()
                });
            let hint = if spaced_value {
                " (the value must follow it directly, without a space)"
            } else {
                ""
            };
            Err((col, format!("missing value after `{after}`{hint}")))
        }
        '"' => {
            let mut text = String::new();
            let mut k = i + 1;
            while let Some(&c) = chars.get(k) {
                match c {
                    '\\' if matches!(chars.get(k + 1), Some('"' | '\\')) => {
                        text.extend(chars.get(k + 1));
                        k += 2;
                    }
                    '"' => return Ok((text, k + 1)),
                    c => {
                        text.push(c);
                        k += 1;
                    }
                }
            }
            Err((col, unterminated(open)))
        }
        '“' | '”' | '„' => {
            let start = i + 1;
            match find_from(chars, start, |c| matches!(c, '”' | '“')) {
                Some(end) => Ok((text(chars, start..end), end + 1)),
                None => Err((col, unterminated(open))),
            }
        }
        '\'' | '‘' => Err((
            col,
            format!(
                "single quotes do not quote a value here: write `\"...\"` instead of `{open}...`"
            ),
        )),
        _ => {
            let end = find_from(chars, i, ends_word).unwrap_or(chars.len());
            match chars.get(end) {
                Some(&q) if is_quote(q) => Err((
                    end + 1,
                    format!("quote `{q}` inside an unquoted value: quote the whole value"),
                )),
                _ => Ok((text(chars, i..end), end)),
            }
        }
    }
}

fn unterminated(open: char) -> String {
    format!("unterminated value: the quote {open} opened here is never closed")
}

/// Where a sub-expression starts, for messages about what is missing there.
#[derive(Clone, Copy)]
enum Context {
    Start,
    /// After this keyword, at this column.
    After(&'static str, usize),
    /// Inside the `(` at this column.
    Paren(usize),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// `(`s and `NOT`s open around the current token, at most [`MAX_NESTING`].
    depth: usize,
    /// Suggest a known field for an unknown one.
    hints: bool,
}

static END: Token = Token {
    tok: Tok::End,
    col: 1,
};

impl Parser {
    /// The next token; a lexer error surfaces here, at its own column.
    fn peek(&self) -> Result<&Token, SyntaxError> {
        let token = self.tokens.get(self.pos).unwrap_or(&END);
        match &token.tok {
            Tok::Error(message) => error(token.col, message.clone()),
            _ => Ok(token),
        }
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn or(&mut self, ctx: Context) -> Result<Expr, SyntaxError> {
        let mut items = vec![self.and(ctx)?];
        while let Token { tok: Tok::Or, col } = *self.peek()? {
            self.bump();
            items.push(self.and(Context::After("OR", col))?);
        }
        Ok(Expr::any(items))
    }

    fn and(&mut self, ctx: Context) -> Result<Expr, SyntaxError> {
        let mut items = vec![self.unary(ctx)?];
        while let Token { tok: Tok::And, col } = *self.peek()? {
            self.bump();
            items.push(self.unary(Context::After("AND", col))?);
        }
        Ok(Expr::all(items))
    }

    /// Enters one more `(` or `NOT` at `col`, refusing past [`MAX_NESTING`].
    fn nest(&mut self, col: usize) -> Result<(), SyntaxError> {
        if self.depth >= MAX_NESTING {
            return error(
                col,
                format!(
                    "nested too deeply: more than {MAX_NESTING} parentheses and NOTs around \
                     one predicate; simplify the expression"
                ),
            );
        }
        self.depth += 1;
        Ok(())
    }

    fn unary(&mut self, ctx: Context) -> Result<Expr, SyntaxError> {
        let Token { tok, col } = self.peek()?.clone();
        match tok {
            Tok::Not => {
                self.bump();
                self.nest(col)?;
                let inner = self.unary(Context::After("NOT", col))?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Tok::LParen => {
                self.bump();
                if self.peek()?.tok == Tok::RParen {
                    return error(
                        col,
                        "empty parentheses: put a predicate inside or remove them",
                    );
                }
                self.nest(col)?;
                let inner = self.or(Context::Paren(col))?;
                self.depth -= 1;
                let next = self.peek()?;
                match &next.tok {
                    Tok::RParen => {
                        self.bump();
                        Ok(inner)
                    }
                    Tok::End => error(col, "missing `)`: the `(` opened here is never closed"),
                    other => error(next.col, expected_operator(other)),
                }
            }
            Tok::Word(word) => self.predicate(&word, col),
            Tok::Value(value) => error(
                col,
                format!(
                    "missing field: write `field:\"{}\"` (or `field==`)",
                    excerpt(&value)
                ),
            ),
            Tok::Colon => error(col, "missing field name before `:`"),
            Tok::EqEq => error(col, "missing field name before `==`"),
            Tok::And | Tok::Or | Tok::RParen | Tok::End => {
                let found = describe(&tok);
                match (ctx, &tok) {
                    (Context::After(keyword, at), Tok::End) => error(
                        at,
                        format!("dangling {keyword}: expected a predicate after it"),
                    ),
                    (Context::After(keyword, _), _) => error(
                        col,
                        format!("expected a predicate after {keyword}, found {found}"),
                    ),
                    (Context::Paren(at), Tok::End) => {
                        error(at, "missing `)`: the `(` opened here is never closed")
                    }
                    (_, Tok::RParen) => error(col, "stray `)`: there is no `(` for it to close"),
                    (_, Tok::End) => error(col, "expected a predicate (`field:value`)"),
                    _ => error(col, format!("{found} needs a predicate before it")),
                }
            }
            // `peek` turns these into errors.
            Tok::Error(message) => error(col, message),
        }
    }

    fn predicate(&mut self, field: &str, col: usize) -> Result<Expr, SyntaxError> {
        self.bump();
        let next = self.peek()?;
        let exact = match next.tok {
            Tok::Colon => false,
            Tok::EqEq => true,
            _ if fields::is_known(field) => {
                return error(
                    next.col,
                    format!("expected `:` or `==` after the field `{}`", excerpt(field)),
                );
            }
            _ => {
                return error(
                    col,
                    format!(
                        "expected a predicate (`field:value`), found `{}`",
                        excerpt(field)
                    ),
                );
            }
        };
        if !fields::is_known(field) {
            let message = match self.hints.then(|| fields::suggest(field)).flatten() {
                Some(known) => format!(
                    "unknown field `{}`; did you mean `{known}`?",
                    excerpt(field)
                ),
                None => {
                    format!(
                        "unknown field `{}` (the fields are listed in docs/events.md)",
                        excerpt(field)
                    )
                }
            };
            return error(col, message);
        }
        self.bump();
        let Token { tok, col: at } = self.peek()?.clone();
        let Tok::Value(value) = tok else {
            // The lexer always puts a value or an error after an operator.
            return error(at, format!("missing value after `{}`", excerpt(field)));
        };
        self.bump();
        match Predicate::new(field, exact, &value) {
            Ok(p) => Ok(Expr::Pred(p)),
            Err(message) => error(at, message),
        }
    }
}

/// A token, for "found ..." in messages.
fn describe(tok: &Tok) -> String {
    match tok {
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::And => "AND".into(),
        Tok::Or => "OR".into(),
        Tok::Not => "NOT".into(),
        Tok::Word(w) => format!("`{}`", excerpt(w)),
        Tok::Colon => "`:`".into(),
        Tok::EqEq => "`==`".into(),
        Tok::Value(v) => format!("the value \"{}\"", excerpt(v)),
        Tok::End => "the end of the line".into(),
        Tok::Error(m) => m.clone(),
    }
}

/// Two operands side by side: Lucene would guess an operator; we do not.
fn expected_operator(tok: &Tok) -> String {
    match tok {
        Tok::Not => "expected AND or OR before NOT (write `AND NOT` or `OR NOT`)".into(),
        other => format!("expected AND or OR, found {}", describe(other)),
    }
}

impl Expr {
    /// AND of `items`, flattened: `(a AND b) AND c` is `a AND b AND c`.
    pub(crate) fn all(items: Vec<Expr>) -> Expr {
        Self::flatten(items, true)
    }

    /// OR of `items`, flattened.
    pub(crate) fn any(items: Vec<Expr>) -> Expr {
        Self::flatten(items, false)
    }

    fn flatten(items: Vec<Expr>, and: bool) -> Expr {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Expr::And(inner) if and => out.extend(inner),
                Expr::Or(inner) if !and => out.extend(inner),
                other => out.push(other),
            }
        }
        match out.len() {
            1 => out.remove(0),
            _ if and => Expr::And(out),
            _ => Expr::Or(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(line: &str) -> String {
        match parse_line(line) {
            Ok(e) => e.normalized(),
            Err(e) => panic!("{line:?}: column {}: {}", e.column, e.message),
        }
    }

    fn err(line: &str) -> (usize, String) {
        match parse_line(line) {
            Ok(e) => panic!("{line:?} parsed as {}", e.normalized()),
            Err(e) => (e.column, e.message),
        }
    }

    /// Asserts the error column and that the message contains `part`.
    fn assert_err(line: &str, column: usize, part: &str) {
        let (col, message) = err(line);
        assert!(
            message.contains(part),
            "{line:?}: message {message:?} lacks {part:?}"
        );
        assert_eq!(col, column, "{line:?}: {message}");
    }

    const A: &str = "process.name:a";
    const B: &str = "process.user:b";

    #[test]
    fn precedence() {
        let e = parse_line("process.name:a OR process.user:b AND file.name:c").unwrap();
        assert!(matches!(&e, Expr::Or(v) if matches!(v[1], Expr::And(_))));
        assert_eq!(
            e.normalized(),
            r#"process.name:"a" OR process.user:"b" AND file.name:"c""#
        );
        let e = parse_line("NOT process.name:a AND process.user:b").unwrap();
        assert!(matches!(&e, Expr::And(v) if matches!(v[0], Expr::Not(_))));
        assert_eq!(
            norm("(process.name:a OR process.user:b) AND file.name:c"),
            r#"(process.name:"a" OR process.user:"b") AND file.name:"c""#
        );
        assert_eq!(
            norm("NOT (process.name:a AND process.user:b)"),
            r#"NOT (process.name:"a" AND process.user:"b")"#
        );
        assert_eq!(
            norm("NOT NOT process.name:a"),
            r#"NOT NOT process.name:"a""#
        );
        // Parentheses precedence does not need are dropped; same-operator
        // groups flatten (AND and OR are associative).
        assert_eq!(
            norm("((process.name:a)) OR (process.user:b OR (file.name:c))"),
            r#"process.name:"a" OR process.user:"b" OR file.name:"c""#
        );
        assert_eq!(
            norm("process.name:a AND (process.user:b AND file.name:c)"),
            r#"process.name:"a" AND process.user:"b" AND file.name:"c""#
        );
        assert_eq!(
            norm("process.name:a AND NOT (process.user:b OR file.name:c)"),
            r#"process.name:"a" AND NOT (process.user:"b" OR file.name:"c")"#
        );
    }

    #[test]
    fn precedence_decides_matching() {
        let e = parse_line("process.name:a OR process.user:b AND file.name:c").unwrap();
        // a OR (b AND c): true on `a` alone.
        assert!(e.matches(&json!({"process": {"name": "a"}})));
        assert!(!e.matches(&json!({"process": {"user": "b"}})));
        let e = parse_line("NOT process.name:a AND process.user:b").unwrap();
        // (NOT a) AND b.
        assert!(e.matches(&json!({"process": {"user": "b"}})));
        assert!(!e.matches(&json!({"process": {"name": "a", "user": "b"}})));
        assert!(!e.matches(&json!({})));
    }

    #[test]
    fn keywords_in_any_case() {
        let want = r#"process.name:"a" AND NOT process.user:"b" OR file.name:"c""#;
        assert_eq!(
            norm("process.name:a and not process.user:b or file.name:c"),
            want
        );
        assert_eq!(
            norm("process.name:a AnD NoT process.user:b oR file.name:c"),
            want
        );
    }

    #[test]
    fn quotes_and_words() {
        let want = r#"process.user:"admin""#;
        assert_eq!(norm(r#"process.user:"admin""#), want);
        assert_eq!(norm("process.user:“admin”"), want);
        assert_eq!(norm("process.user:”admin”"), want);
        assert_eq!(norm("process.user:„admin“"), want);
        assert_eq!(norm("process.user:“admin“"), want);
        assert_eq!(norm("process.user:admin"), want);
        // Quoted values keep spaces, parentheses and keywords as text.
        assert_eq!(
            norm(r#"process.command_line:"a (b) AND c""#),
            r#"process.command_line:"a (b) AND c""#
        );
        assert_eq!(
            norm(r#"process.command_line:“say "hi"”"#),
            r#"process.command_line:"say \"hi\"""#
        );
        // Unquoted words may hold `:` and `=`, and stop at a parenthesis.
        assert_eq!(norm("(file.path:/a:b=c)"), r#"file.path:"/a:b=c""#);
        assert_eq!(norm("process.uid==0"), r#"process.uid=="0""#);
        assert_eq!(norm("  process.user:root  "), r#"process.user:"root""#);
    }

    #[test]
    fn escapes() {
        let e = parse_line(r#"process.command_line=="a \"b\" c\\d \x""#).unwrap();
        let Expr::Pred(p) = &e else { panic!() };
        assert_eq!(p.value, r#"a "b" c\d \x"#);
        assert_eq!(
            e.normalized(),
            r#"process.command_line=="a \"b\" c\\d \\x""#
        );
    }

    #[test]
    fn normalized_parses_back_to_itself() {
        for line in [
            r#"process.command_line=="a \"b\" c\\d \x""#,
            "NOT (process.name:a OR process.user:“b c*”) AND file.path:*x*",
            "process.uid:0 or not not file.name==“é”",
        ] {
            let once = norm(line);
            assert_eq!(norm(&once), once);
            assert_eq!(parse_line(&once).unwrap(), parse_line(line).unwrap());
        }
    }

    #[test]
    fn unknown_field() {
        assert_err(
            "process.parent_name:cron",
            1,
            "unknown field `process.parent_name`; did you mean `process.parent.name`?",
        );
        assert_err(
            &format!("{A} AND parent_process_name:cron"),
            20,
            "did you mean `process.parent_process_name`?",
        );
        let (_, m) = err("frobnicate:x");
        assert!(m.contains("unknown field `frobnicate`") && !m.contains("did you mean"));
    }

    #[test]
    fn unterminated_quotes() {
        assert_err(
            r#"process.user:"admin"#,
            14,
            r#"unterminated value: the quote " opened here is never closed"#,
        );
        assert_err(r#"process.user:"admin\""#, 14, "unterminated");
        assert_err(
            "process.user:“admin” AND file.name:“firewall",
            36,
            "unterminated value: the quote “ opened here is never closed",
        );
        assert_err("process.user:„admin", 14, "quote „ opened here");
    }

    #[test]
    fn missing_value() {
        assert_err("process.user:", 14, "missing value after `process.user:`");
        assert_err("process.user: root", 14, "without a space");
        assert_err(
            &format!("process.user== AND {A}"),
            15,
            "missing value after `process.user==`",
        );
        assert_err("(process.user:)", 15, "missing value");
    }

    #[test]
    fn missing_field() {
        assert_err(":root", 1, "missing field name before `:`");
        assert_err(
            &format!("{A} AND ==root"),
            20,
            "missing field name before `==`",
        );
        assert_err(r#""root""#, 1, "missing field");
        assert_err(&format!("{A} OR “root”"), 19, "missing field");
        assert_err(
            "process.user",
            13,
            "expected `:` or `==` after the field `process.user`",
        );
        assert_err(&format!("{A} AND snort"), 20, "found `snort`");
    }

    #[test]
    fn parentheses() {
        assert_err(&format!("({A} OR {B}"), 1, "missing `)`");
        assert_err(&format!("{A} AND ({B}"), 20, "missing `)`");
        assert_err(&format!("{A} AND ("), 20, "missing `)`");
        assert_err(&format!("{A})"), 15, "stray `)`");
        assert_err(&format!(") {A}"), 1, "stray `)`");
        assert_err(&format!("({A}))"), 17, "stray `)`");
        assert_err("()", 1, "empty parentheses");
        assert_err(&format!("{A} AND ( )"), 20, "empty parentheses");
        assert_err(&format!("({A} {B})"), 17, "expected AND or OR");
    }

    #[test]
    fn dangling_keywords() {
        assert_err(&format!("{A} AND"), 16, "dangling AND");
        assert_err(&format!("{A} or "), 16, "dangling OR");
        assert_err(&format!("{A} AND NOT"), 20, "dangling NOT");
        assert_err("NOT", 1, "dangling NOT");
        assert_err(&format!("AND {A}"), 1, "AND needs a predicate before it");
        assert_err(&format!("OR {A}"), 1, "OR needs a predicate before it");
        assert_err(
            &format!("{A} AND OR {B}"),
            20,
            "expected a predicate after AND, found OR",
        );
        assert_err(
            &format!("{A} AND )"),
            20,
            "expected a predicate after AND, found `)`",
        );
        assert_err(&format!("(AND {A})"), 2, "AND needs a predicate before it");
    }

    #[test]
    fn juxtaposition() {
        assert_err(
            &format!("{A} {B}"),
            16,
            "expected AND or OR, found `process.user`",
        );
        assert_err(&format!("{A} NOT {B}"), 16, "expected AND or OR before NOT");
        assert_err(&format!("{A} ({B})"), 16, "expected AND or OR, found `(`");
        assert_err(r#"process.user:"a""b""#, 17, "expected AND or OR");
        assert_err(
            &format!("{A} ADN {B}"),
            16,
            "expected AND or OR, found `ADN`",
        );
    }

    #[test]
    fn values_without_terms() {
        assert_err(
            r#"file.path:"/""#,
            11,
            "has no letters or digits, so `:` (term match) can never match it; use `==`",
        );
        assert_err("file.path:--", 11, "no letters or digits");
        assert_err(r#"file.path:"""#, 11, "no letters or digits");
        assert_err(r#"file.path:"**""#, 11, "nothing between");
        assert_eq!(norm(r#"file.path=="/""#), r#"file.path=="/""#);
    }

    #[test]
    fn other_bad_characters() {
        assert_err("process.name=snort", 13, "single `=`");
        assert_err("process.name!=snort", 13, "`!` (negate with NOT)");
        assert_err(&format!("-{A}"), 1, "negate with NOT");
        assert_err(&format!("{A} && {B}"), 16, "use AND");
        assert_err(&format!("{A} # note"), 16, "comment");
        assert_err("process.name:'snort'", 14, "single quotes");
        assert_err(
            r#"process.name:sn"ort""#,
            16,
            "quote `\"` inside an unquoted value",
        );
    }

    #[test]
    fn first_problem_on_the_line_is_reported() {
        // A grammar error before an unterminated quote wins.
        assert_err(r#"process.nmae:a AND file.name:"x"#, 1, "unknown field");
        assert_err(r#"process.name:a b:"x"#, 16, "expected AND or OR");
    }

    #[test]
    fn nesting_is_bounded_with_the_column_of_the_first_level_too_many() {
        let deepest = format!("{}{A}{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(norm(&deepest), r#"process.name:"a""#);
        let nots = format!("{}{A}", "NOT ".repeat(MAX_NESTING));
        assert!(parse_line(&nots).is_ok());
        let too_deep = format!(
            "{}{A}{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_err(
            &too_deep,
            MAX_NESTING + 1,
            "nested too deeply: more than 64",
        );
        let too_many_nots = format!("{}{A}", "NOT ".repeat(MAX_NESTING + 1));
        assert_err(&too_many_nots, 4 * MAX_NESTING + 1, "nested too deeply");
        // Mixed, and the issue's inputs: an error, not a stack overflow.
        let mixed = format!("{}{A}{}", "NOT (".repeat(40), ")".repeat(40));
        assert_err(&mixed, 5 * 32 + 1, "nested too deeply");
        assert_err(&"(".repeat(10_000), MAX_NESTING + 1, "nested too deeply");
        assert_err(
            &format!("{}{A}", "NOT ".repeat(100_000)),
            4 * MAX_NESTING + 1,
            "nested too deeply",
        );
        // Side by side, groups do not add up: only nesting counts.
        let wide = vec![format!("(({A}))"); 1000].join(" OR ");
        assert!(parse_line(&wide).is_ok());
    }

    #[test]
    fn the_deepest_accepted_expression_is_safe_on_a_small_stack() {
        // Every level as deep as it may go, alternating so nothing flattens.
        let (mut line, mut depth) = (String::from(A), 0);
        while depth < MAX_NESTING {
            (line, depth) = if depth % 3 == 0 && depth + 2 <= MAX_NESTING {
                (format!("NOT ({line} OR {B})"), depth + 2)
            } else {
                (format!("({line} AND {B})"), depth + 1)
            };
        }
        let line = format!("{line} OR {A}");
        // A thread stack far below the 8 MiB of the main thread and 2 MiB of
        // tokio's: parsing, printing, matching and dropping must all fit.
        std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || {
                let e = parse_line(&line).expect("at the limit");
                let once = e.normalized();
                assert_eq!(parse_line(&once).expect("normalized parses"), e);
                assert!(e.matches(&json!({"process": {"name": "a"}})));
                let _ = e.clone();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn messages_quote_long_words_cut_short() {
        let long = "x".repeat(100_000);
        let (_, m) = err(&format!("{long}:a"));
        assert!(m.len() < 200 && m.contains("xxx..."), "{m}");
        let (_, m) = err(&format!("{A} {long}"));
        assert!(m.len() < 200, "{m}");
        let (_, m) = err(&format!("file.path:\"{}\"", "/".repeat(100_000)));
        assert!(m.len() < 300, "{m}");
    }

    #[test]
    fn columns_count_characters() {
        // `“é”` is 3 characters but 7 bytes.
        assert_err("process.name:“é” AND file.name:\"x", 32, "unterminated");
        assert_err("process.name:“日本” AND nope:x", 23, "unknown field `nope`");
        assert_err("\tprocess.name:x )", 17, "stray `)`");
    }
}
