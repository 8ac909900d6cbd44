//! Every record a test sees is checked against the published JSON schema
//! (docs/schema/), so the document and the sensor cannot drift apart.
//!
//! A validator for the subset of JSON Schema that file uses (type, enum, const,
//! properties, required, additionalProperties: false, items, minimum, pattern
//! as a character-class check); a full validator crate is far heavier than this.

use std::sync::OnceLock;

use serde_json::Value;

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    // Built in, not read at run time: the kernel matrix runs the tests in VMs
    // without the source tree.
    const PATH: &str = "docs/schema/tinyexec-record-1.2.schema.json";
    const TEXT: &str = include_str!("../../docs/schema/tinyexec-record-1.2.schema.json");
    SCHEMA.get_or_init(|| serde_json::from_str(TEXT).unwrap_or_else(|e| panic!("{PATH}: {e}")))
}

/// What a minor version may do to the schema before it: add optional fields
/// and enum values, nothing else (docs/schema.md). Returns every breach.
pub fn only_adds(old: &Value, new: &Value) -> Vec<String> {
    fn walk(old: &Value, new: &Value, at: &str, out: &mut Vec<String>) {
        let here = if at.is_empty() { "record" } else { at };
        if old.get("type") != new.get("type") {
            out.push(format!(
                "{here}: type {} became {}",
                old["type"], new["type"]
            ));
        }
        if let (Some(Value::Array(o)), n) = (old.get("enum"), new.get("enum")) {
            let n = n.and_then(Value::as_array);
            for v in o {
                if !n.is_some_and(|n| n.contains(v)) {
                    out.push(format!("{here}: enum value {v} removed"));
                }
            }
        }
        let names = |v: &Value, k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        };
        let (old_req, new_req) = (names(old, "required"), names(new, "required"));
        for r in &new_req {
            if !old_req.contains(r) && old["properties"].get(r).is_some() {
                out.push(format!("{here}: `{r}` became required"));
            }
            if old["properties"].get(r).is_none() && old.get("properties").is_some() {
                out.push(format!("{here}: new field `{r}` is required"));
            }
        }
        let Some(props) = old.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, o) in props {
            let sub = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            match new["properties"].get(k) {
                None => out.push(format!("{sub}: removed")),
                // The version itself is the one field that must change.
                Some(_) if sub == "tinyexec.schema_version" => {}
                Some(n) => walk(o, n, &sub, out),
            }
        }
    }
    let mut out = Vec::new();
    walk(old, new, "", &mut out);
    out
}

/// Checks one record; the error names the field path.
pub fn check(record: &Value) -> Result<(), String> {
    check_at(schema(), record, "")
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn check_at(s: &Value, v: &Value, at: &str) -> Result<(), String> {
    let fail = |why: String| {
        Err(format!(
            "{}: {why} (value {v})",
            if at.is_empty() { "record" } else { at }
        ))
    };
    match &s["type"] {
        Value::String(t) if !type_ok(t, v) => return fail(format!("not {t}")),
        Value::Array(ts) if !ts.iter().any(|t| t.as_str().is_some_and(|t| type_ok(t, v))) => {
            return fail(format!("not any of {ts:?}"));
        }
        _ => {}
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return fail(format!("not {c}"));
    }
    if let Some(Value::Array(e)) = s.get("enum")
        && !e.contains(v)
    {
        return fail(format!("not one of {e:?}"));
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_i64), v.as_i64())
        && n < min
    {
        return fail(format!("below {min}"));
    }
    if let (Some(Value::String(p)), Some(text)) = (s.get("pattern"), v.as_str()) {
        // The schema's patterns are ^[class]+$ or ^[class]{n}$.
        let ok = match p.as_str() {
            "^[0-7]+$" => !text.is_empty() && text.chars().all(|c| ('0'..='7').contains(&c)),
            "^[0-9a-f]{64}$" => {
                text.len() == 64
                    && text
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            }
            other => return fail(format!("pattern {other} unknown to this checker")),
        };
        if !ok {
            return fail(format!("does not match {p}"));
        }
    }
    if let Value::Object(obj) = v {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let k = req.as_str().unwrap_or_default();
            if !obj.contains_key(k) {
                return fail(format!("missing `{k}`"));
            }
        }
        for (k, child) in obj {
            let sub = format!(
                "{}{k}",
                if at.is_empty() {
                    String::new()
                } else {
                    format!("{at}.")
                }
            );
            match props.and_then(|p| p.get(k)) {
                Some(cs) => check_at(cs, child, &sub)?,
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{sub}: not in the schema"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(is)) = (v, s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check_at(is, item, &format!("{at}.{i}"))?;
        }
    }
    Ok(())
}
