//! One set of field names, four places that spell them: the records the
//! sensor serialises (`record/`), the fields exclusions accept
//! (`exclusions/fields.rs`, whose tests check them against [`schema`]), the
//! published JSON schema (`docs/schema/`), the field tables of
//! `docs/events.md`, and the Sentinel column table of `docs/schema.md`. These
//! tests fail on any difference, naming it.

use std::{collections::BTreeSet, fs, path::PathBuf};

use serde_json::Value;

use super::{SCHEMA_VERSION, heartbeat::Output, samples::samples};

/// Record fields without a column of their own in the Sentinel custom table.
const NO_COLUMN: &[(&str, &str)] = &[
    (
        "process.parent_process_name",
        "the same as process.parent.name: ParentProcessName",
    ),
    ("user.id", "the same as process.uid: ProcessUid"),
    ("user.name", "the same as process.user: ProcessUser"),
];

fn repo(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Dotted names of a JSON schema's leaves (arrays are leaves).
fn schema_leaves(node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match node.get("properties").and_then(Value::as_object) {
        Some(props) if node.get("type") != Some(&Value::from("array")) => {
            for (k, v) in props {
                schema_leaves(v, &format!("{prefix}{k}."), out);
            }
        }
        _ => {
            out.insert(prefix.trim_end_matches('.').to_owned());
        }
    }
}

/// Dotted names of a record's leaves (arrays are leaves).
fn value_leaves(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                value_leaves(v, &format!("{prefix}{k}."), out);
            }
        }
        _ => {
            out.insert(prefix.trim_end_matches('.').to_owned());
        }
    }
}

/// The backquoted names in the first cell of every table row of a Markdown
/// text, or of its section under the heading `section` (to the next heading
/// of that level).
fn table_names(text: &str, section: Option<&str>) -> BTreeSet<String> {
    let mut lines: Box<dyn Iterator<Item = &str>> = Box::new(text.lines());
    if let Some(heading) = section {
        let level = heading.split(' ').next().unwrap_or("##").to_owned();
        lines = Box::new(
            text.lines()
                .skip_while(move |l| !l.starts_with(heading))
                .enumerate()
                .take_while(move |(i, l)| *i == 0 || !l.starts_with(&format!("{level} ")))
                .map(|(_, l)| l),
        );
    }
    let mut names = BTreeSet::new();
    for line in lines.filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        for name in cell.split('`').skip(1).step_by(2) {
            // `heartbeat.outputs.NAME.x` stands for each output's.
            if name.contains(".NAME.") {
                names.extend(
                    Output::ALL
                        .iter()
                        .map(|o| name.replace(".NAME.", &format!(".{}.", o.key()))),
                );
            } else {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

pub fn same(what: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what} differs from the schema: missing {missing:?}, not in the schema {extra:?}"
    );
}

/// The dotted names of every field the published JSON schema describes.
pub fn schema() -> BTreeSet<String> {
    let text = repo(&format!(
        "docs/schema/tinyexec-record-{SCHEMA_VERSION}.schema.json"
    ));
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    let mut leaves = BTreeSet::new();
    schema_leaves(&schema, "", &mut leaves);
    leaves
}

#[test]
fn the_schema_describes_exactly_what_records_hold() {
    let mut seen = BTreeSet::new();
    for rec in samples() {
        let v = serde_json::to_value(&rec).expect("a record serialises");
        value_leaves(&v, "", &mut seen);
    }
    same("the fields the sensor's records hold", &seen, &schema());
}

#[test]
fn docs_events_md_names_every_field() {
    same(
        "docs/events.md's tables",
        &table_names(&repo("docs/events.md"), None),
        &schema(),
    );
}

#[test]
fn docs_schema_md_gives_every_field_its_column() {
    let mut names = table_names(
        &repo("docs/schema.md"),
        Some("## Sentinel: the DCR stream and the custom table"),
    );
    names.extend(NO_COLUMN.iter().map(|(f, _)| (*f).to_owned()));
    same("docs/schema.md's column table", &names, &schema());
}
