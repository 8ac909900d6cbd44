//! CEF as the Azure Monitor Agent reads it: the header fields and the extension's
//! key-value pairs, unescaped, in order.

use std::collections::BTreeMap;

/// Splits a CEF record: the 7 header fields (unescaped) and the extension pairs (unescaped).
pub fn parse(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let (header, pairs) = parse_ordered(line);
    (header, pairs.into_iter().collect())
}

/// The same, the extension pairs in the order the record has them.
pub fn parse_ordered(line: &str) -> (Vec<String>, Vec<(String, String)>) {
    let start = line.find("CEF:0|").expect("a CEF record");
    let mut rest = line[start..].chars().peekable();
    let mut header = Vec::new();
    let mut cur = String::new();
    while header.len() < 7 {
        match rest.next().expect("7 header fields") {
            '\\' => cur.push(rest.next().expect("escaped char")),
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let ext: String = rest.collect();
    // A key starts a token; `=` inside values is escaped, so an unescaped
    // `=` after a space-separated word is the next key.
    let mut pairs = Vec::new();
    let (mut key, mut val, mut esc) = (String::new(), String::new(), false);
    let mut in_key = true;
    let mut word = String::new();
    for c in ext.chars() {
        if in_key {
            if c == '=' {
                key = std::mem::take(&mut word);
                in_key = false;
            } else {
                word.push(c);
            }
            continue;
        }
        if esc {
            val.push(match c {
                'n' => '\n',
                'r' => '\r',
                c => c,
            });
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '=' => {
                // The last space-separated word of `val` was the next key.
                let split = val.rfind(' ').expect("a space before the next key");
                let next_key = val[split + 1..].to_owned();
                val.truncate(split);
                pairs.push((std::mem::take(&mut key), std::mem::take(&mut val)));
                key = next_key;
            }
            c => val.push(c),
        }
    }
    pairs.push((key, val));
    (header, pairs)
}
