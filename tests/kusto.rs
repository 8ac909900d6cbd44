//! Every KQL text the project ships — the analytics rule in both formats, the hunting
//! queries, the workbook, the parser, the DCR transforms and the `kusto` examples of
//! every Markdown file — parsed and semantically analysed by Microsoft's own
//! `Kusto.Language` (npm `@kusto/language-service-next`, installed into `.tools/kusto` by
//! `cargo xtask test`) against the workspace's tables: the custom table from
//! `deploy/sentinel/custom-table.json`, `CommonSecurityLog` and `ASimProcessEventLogs`
//! from `tests/kusto/workspace.json`. Any diagnostic fails. On top of it, what Sentinel
//! and Azure Monitor check when the content is imported: entity mappings and alert
//! overrides name columns the query outputs, transforms use only the KQL
//! transformations allow and produce their destination table's columns and types.
#![expect(
    clippy::expect_used,
    reason = "a test's helpers panic with a message: that is the failure report"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_file(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_file(rel: &str) -> Value {
    let mut docs = tinyexec_harness::yaml::documents(&read(rel), rel);
    assert_eq!(docs.len(), 1, "{rel}: one YAML document");
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, key: &str, what: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: `{key}` must be a string, is {}", v[key]))
}

const CUSTOM_TABLE: &str = "deploy/sentinel/custom-table.json";
const DCR: &str = "deploy/sentinel/dcr.json";
const PARSER: &str = "deploy/sentinel/parser.json";
const RULE_YAML: &str = "deploy/sentinel/analytics-rule.yaml";
const RULE_ARM: &str = "deploy/sentinel/analytics-rule.json";
const HEARTBEAT_YAML: &str = "deploy/sentinel/heartbeat-rule.yaml";
const HEARTBEAT_ARM: &str = "deploy/sentinel/heartbeat-rule.json";
const WORKBOOK: &str = "deploy/sentinel/workbook.json";
const HUNTING: &str = "deploy/sentinel/hunting";
const WORKSPACE: &str = "tests/kusto/workspace.json";

/// A table's columns as Kusto types (the Tables API spells `dateTime` and `boolean`).
type Columns = Vec<(String, String)>;

fn kusto_type(t: &str) -> String {
    match t {
        "dateTime" => "datetime".into(),
        "boolean" => "bool".into(),
        t => t.into(),
    }
}

fn custom_table() -> (String, Columns) {
    let t = json_file(CUSTOM_TABLE);
    let schema = &t["properties"]["schema"];
    let cols = schema["columns"]
        .as_array()
        .expect("custom table columns")
        .iter()
        .map(|c| {
            (
                str_of(c, "name", CUSTOM_TABLE).to_owned(),
                kusto_type(str_of(c, "type", CUSTOM_TABLE)),
            )
        })
        .collect();
    (str_of(schema, "name", CUSTOM_TABLE).to_owned(), cols)
}

fn declared_table(name: &str) -> Columns {
    json_file(WORKSPACE)["tables"][name]["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("{WORKSPACE}: no table {name}"))
        .iter()
        .map(|c| {
            let (n, t) = c
                .as_str()
                .and_then(|s| s.split_once(':'))
                .unwrap_or_else(|| panic!("{WORKSPACE}: {name}: `{c}` is not NAME:TYPE"));
            (n.to_owned(), t.to_owned())
        })
        .collect()
}

fn parser_query() -> String {
    str_of(
        &json_file(PARSER)["resources"][0]["properties"],
        "query",
        PARSER,
    )
    .to_owned()
}

fn dcr_properties() -> Value {
    json_file(DCR)["resources"][0]["properties"].clone()
}

/// One KQL text, where it comes from, and what it runs against.
struct Text {
    /// File and place, for messages.
    id: String,
    /// `workspace`, or `dcr` (a transform sees only its input stream, as `source`).
    database: &'static str,
    text: String,
}

fn hunting_files() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root().join(HUNTING))
        .expect("hunting queries")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("{HUNTING}/{n}"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no hunting queries in {HUNTING}");
    v
}

fn workbook_queries() -> Vec<(String, String)> {
    fn walk(items: &[Value], out: &mut Vec<(String, String)>) {
        for it in items {
            let name = it["name"].as_str().unwrap_or("?").to_owned();
            match it["type"].as_i64() {
                Some(3) => out.push((name, str_of(&it["content"], "query", WORKBOOK).to_owned())),
                Some(12) => walk(it["content"]["items"].as_array().unwrap_or(&vec![]), out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(
        json_file(WORKBOOK)["items"]
            .as_array()
            .expect("workbook items"),
        &mut out,
    );
    assert!(!out.is_empty(), "{WORKBOOK}: no queries");
    out
}

/// ```kusto / ```kql blocks of every Markdown file of the repository.
fn markdown_examples() -> Vec<Text> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if name.ends_with(".md") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root(), &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).expect("markdown");
        let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
        let mut block: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            let fence = line.trim_start();
            match &mut block {
                None if fence == "```kusto" || fence == "```kql" => {
                    block = Some((i + 2, String::new()));
                }
                Some((start, body)) if fence.starts_with("```") => {
                    out.push(Text {
                        id: format!("{rel}:{start}"),
                        database: "workspace",
                        text: std::mem::take(body),
                    });
                    block = None;
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
    }
    out
}

fn shipped_texts() -> Vec<Text> {
    let mut texts = Vec::new();
    for (i, flow) in dcr_properties()["dataFlows"]
        .as_array()
        .expect("dataFlows")
        .iter()
        .enumerate()
    {
        texts.push(Text {
            id: format!("{DCR}: dataFlows[{i}].transformKql"),
            database: "dcr",
            text: str_of(flow, "transformKql", DCR).to_owned(),
        });
    }
    texts.push(Text {
        id: format!("{RULE_YAML}: query"),
        database: "workspace",
        text: str_of(&yaml_file(RULE_YAML), "query", RULE_YAML).to_owned(),
    });
    for (yaml, arm) in [(RULE_YAML, RULE_ARM), (HEARTBEAT_YAML, HEARTBEAT_ARM)] {
        if yaml != RULE_YAML {
            texts.push(Text {
                id: format!("{yaml}: query"),
                database: "workspace",
                text: str_of(&yaml_file(yaml), "query", yaml).to_owned(),
            });
        }
        texts.push(Text {
            id: format!("{arm}: properties.query"),
            database: "workspace",
            text: str_of(&arm_rule(arm), "query", arm).to_owned(),
        });
    }
    for h in hunting_files() {
        texts.push(Text {
            id: format!("{h}: query"),
            database: "workspace",
            text: str_of(&yaml_file(&h), "query", &h).to_owned(),
        });
    }
    for (name, q) in workbook_queries() {
        texts.push(Text {
            id: format!("{WORKBOOK}: item {name}"),
            database: "workspace",
            text: q,
        });
    }
    texts.push(Text {
        id: format!("{PARSER}: query"),
        database: "workspace",
        text: parser_query(),
    });
    texts.extend(markdown_examples());
    texts
}

#[derive(Debug)]
struct Analysis {
    diagnostics: Vec<Value>,
    columns: Columns,
    functions: Vec<String>,
    operators: Vec<String>,
}

fn kusto_language_dir() -> PathBuf {
    let dir = std::env::var_os("KUSTO_LANGUAGE_DIR").map_or_else(
        || root().join(".tools/kusto/node_modules/@kusto/language-service-next"),
        PathBuf::from,
    );
    assert!(
        dir.join("Kusto.Language.Bridge.js").is_file(),
        "Microsoft's Kusto.Language is not at {}: run the tests with `cargo xtask test`, \
         whose set-up installs @kusto/language-service-next there",
        dir.display()
    );
    dir
}

/// Runs tests/kusto/check.js once for every text the project ships.
fn analyses() -> &'static BTreeMap<String, (Text, Analysis)> {
    static CELL: OnceLock<BTreeMap<String, (Text, Analysis)>> = OnceLock::new();
    CELL.get_or_init(|| {
        let (custom_name, custom_cols) = custom_table();
        let ws = json_file(WORKSPACE);
        let table = |name: &str, cols: &Columns| json!({"name": name, "columns": cols});
        let mut tables = vec![table(&custom_name, &custom_cols)];
        for name in ws["tables"].as_object().expect("tables").keys() {
            tables.push(table(name, &declared_table(name)));
        }
        let mut functions: Vec<Value> = ws["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .map(|f| json!({"name": f["name"], "parameters": f["parameters"], "body": f["body"]}))
            .collect();
        let parser = &json_file(PARSER)["resources"][0]["properties"];
        functions.push(json!({
            "name": str_of(parser, "functionAlias", PARSER),
            "parameters": "()",
            "body": format!("{{\n{}\n}}", parser_query()),
        }));
        let stream = dcr_properties()["streamDeclarations"]["Custom-TinyexecAlerts"]["columns"]
            .as_array()
            .expect("stream columns")
            .iter()
            .map(|c| (str_of(c, "name", DCR).to_owned(), str_of(c, "type", DCR).to_owned()))
            .collect::<Columns>();
        let texts = shipped_texts();
        let manifest = json!({
            "databases": {
                "workspace": {"tables": tables, "functions": functions},
                "dcr": {"tables": [table("source", &stream)]},
            },
            "texts": texts.iter().map(|t| json!({"id": t.id, "database": t.database, "text": t.text})).collect::<Vec<_>>(),
        });
        let path = std::env::temp_dir().join(format!("tinyexec-kusto-{}.json", std::process::id()));
        fs::write(&path, manifest.to_string()).expect("manifest");
        let out = Command::new("node")
            .arg(root().join("tests/kusto/check.js"))
            .arg(&path)
            .env("KUSTO_LANGUAGE_DIR", kusto_language_dir())
            .output()
            .expect("node (installed by `cargo xtask test`)");
        let _ = fs::remove_file(&path);
        assert!(
            out.status.success(),
            "tests/kusto/check.js failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("check.js output");
        assert_eq!(results.len(), texts.len());
        texts
            .into_iter()
            .zip(results)
            .map(|(t, r)| {
                let strings = |k: &str| -> Vec<String> {
                    r[k].as_array()
                        .unwrap_or(&vec![])
                        .iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                };
                let a = Analysis {
                    diagnostics: r["diagnostics"].as_array().cloned().unwrap_or_default(),
                    columns: r["columns"]
                        .as_array()
                        .unwrap_or(&vec![])
                        .iter()
                        .map(|c| (c[0].as_str().unwrap_or("").to_owned(), c[1].as_str().unwrap_or("").to_owned()))
                        .collect(),
                    functions: strings("functions"),
                    operators: strings("operators"),
                };
                (t.id.clone(), (t, a))
            })
            .collect()
    })
}

fn analysis(id: &str) -> &'static Analysis {
    &analyses()
        .get(id)
        .unwrap_or_else(|| panic!("no KQL text {id}"))
        .1
}

/// Line and column (from 1) of a character offset in a text.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before: String = text.chars().take(offset).collect();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[test]
fn every_shipped_query_analyses_without_a_diagnostic() {
    let all = analyses();
    let mut problems = Vec::new();
    for (t, a) in all.values() {
        for d in &a.diagnostics {
            let start = usize::try_from(d["start"].as_u64().unwrap_or(0)).unwrap_or(0);
            let (line, col) = line_col(&t.text, start);
            let line_text = t.text.lines().nth(line - 1).unwrap_or("");
            problems.push(format!(
                "{}, query line {line}, column {col}: {} {}: {}\n    {line_text}\n    {}^",
                t.id,
                d["severity"].as_str().unwrap_or("?"),
                d["code"].as_str().unwrap_or("?"),
                d["message"].as_str().unwrap_or("?"),
                " ".repeat(col.saturating_sub(1)),
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "Kusto.Language reports:\n{}",
        problems.join("\n")
    );
    // Everything the project ships was seen, README examples included.
    assert!(
        all.keys().any(|k| k.ends_with(".md") || k.contains(".md:")),
        "no Markdown example found"
    );
    assert!(all.len() >= 12, "only {} KQL texts found", all.len());
}

/// Entity types the rules use: (identifiers allowed, sets of identifiers one of which is required),
/// as Sentinel's template validation has them.
fn entity_identifiers(
    entity: &str,
) -> (&'static [&'static str], &'static [&'static [&'static str]]) {
    match entity {
        "Host" => (
            &[
                "DnsDomain",
                "NTDomain",
                "HostName",
                "FullName",
                "NetBiosName",
                "AzureID",
                "OMSAgentID",
                "OSFamily",
                "OSVersion",
                "IsDomainJoined",
            ],
            &[
                &["FullName"],
                &["HostName"],
                &["NetBiosName"],
                &["AzureID"],
                &["OMSAgentID"],
            ],
        ),
        "File" => (&["Directory", "Name"], &[&["Name"]]),
        "FileHash" => (&["Algorithm", "Value"], &[&["Algorithm", "Value"]]),
        "Process" => (
            &[
                "ProcessId",
                "CommandLine",
                "ElevationToken",
                "CreationTimeUtc",
            ],
            &[&["CommandLine"], &["ProcessId"]],
        ),
        "Account" => (
            &[
                "Name",
                "FullName",
                "NTDomain",
                "DnsDomain",
                "UPNSuffix",
                "Sid",
                "AadTenantId",
                "AadUserId",
                "PUID",
                "IsDomainJoined",
                "DisplayName",
                "ObjectGuid",
            ],
            &[
                &["FullName"],
                &["Sid"],
                &["Name"],
                &["AadUserId"],
                &["PUID"],
                &["ObjectGuid"],
            ],
        ),
        other => panic!("entity type {other}: add its identifiers to this test"),
    }
}

/// The MITRE ATT&CK tactic each technique the content names belongs to.
fn tactics_of(technique: &str) -> &'static [&'static str] {
    match technique.split('.').next().unwrap_or("") {
        "T1106" => &["Execution"],
        "T1562" => &["DefenseEvasion"],
        other => panic!("technique {other}: add its tactics to this test"),
    }
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Checks entity mappings against the query's result columns, as Sentinel does on import.
fn check_entity_mappings(what: &str, mappings: &Value, columns: &Columns) -> BTreeSet<String> {
    let names: BTreeSet<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let list = mappings
        .as_array()
        .unwrap_or_else(|| panic!("{what}: entityMappings"));
    assert!(
        (1..=5).contains(&list.len()),
        "{what}: 1 to 5 entity mappings"
    );
    let mut types = BTreeSet::new();
    for m in list {
        let entity = str_of(m, "entityType", what);
        let (allowed, required) = entity_identifiers(entity);
        let fields = m["fieldMappings"].as_array().expect("fieldMappings");
        assert!(
            (1..=3).contains(&fields.len()),
            "{what}: {entity}: 1 to 3 field mappings"
        );
        let mut used = BTreeSet::new();
        for f in fields {
            let id = str_of(f, "identifier", what);
            let col = str_of(f, "columnName", what);
            assert!(
                allowed.contains(&id),
                "{what}: {entity} has no identifier {id}"
            );
            assert!(used.insert(id), "{what}: {entity}: {id} mapped twice");
            assert!(
                names.contains(col),
                "{what}: {entity}.{id} maps column `{col}`, which the query does not output; it outputs {names:?}"
            );
        }
        assert!(
            required
                .iter()
                .any(|set| set.iter().all(|r| used.contains(r))),
            "{what}: {entity} lacks its required identifiers {required:?}"
        );
        types.insert(entity.to_owned());
    }
    types
}

fn check_mitre(what: &str, tactics: &Value, techniques: &Value) {
    let tactics: BTreeSet<&str> = tactics
        .as_array()
        .unwrap_or_else(|| panic!("{what}: tactics"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let techniques = techniques
        .as_array()
        .unwrap_or_else(|| panic!("{what}: techniques"));
    assert!(
        !tactics.is_empty() && !techniques.is_empty(),
        "{what}: tactics and techniques"
    );
    for t in techniques {
        let t = t.as_str().expect("technique");
        assert!(
            tactics_of(t).iter().any(|tac| tactics.contains(tac)),
            "{what}: technique {t} belongs to none of the tactics {tactics:?}"
        );
    }
}

/// KQL timespan literal as in the YAML templates (`5m`, `1d`) to seconds.
fn timespan_secs(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("timespan `{s}`"));
    n * match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => panic!("timespan `{s}`: unit m, h or d"),
    }
}

fn iso_duration(s: &str) -> String {
    let secs = timespan_secs(s);
    if secs.is_multiple_of(86400) {
        format!("P{}D", secs / 86400)
    } else if secs.is_multiple_of(3600) {
        format!("PT{}H", secs / 3600)
    } else {
        format!("PT{}M", secs / 60)
    }
}

/// `{{Column}}` placeholders of an alert-details format.
fn placeholders(format: &str) -> Vec<String> {
    format
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(c, _)| c.to_owned()))
        .collect()
}

/// What Sentinel checks when it imports a scheduled rule, and what every rule of
/// ours keeps to: its windows are its frequency and period, and both routes are read.
/// Returns the rule and its result columns.
#[expect(
    clippy::many_single_char_names,
    reason = "w the rule's file, y its YAML, the rest its parts as Sentinel names them"
)]
fn imports_as_a_scheduled_rule(w: &str) -> (Value, BTreeMap<String, String>) {
    let y = yaml_file(w);
    assert!(is_guid(str_of(&y, "id", w)), "{w}: id must be a GUID");
    assert_eq!(str_of(&y, "kind", w), "Scheduled");
    for key in ["name", "description", "version", "query", "status"] {
        assert!(!str_of(&y, key, w).is_empty(), "{w}: {key}");
    }
    assert!(str_of(&y, "name", w).len() <= 256 && str_of(&y, "description", w).len() <= 5000);
    assert!(["Informational", "Low", "Medium", "High"].contains(&str_of(&y, "severity", w)));
    assert!(
        y["requiredDataConnectors"].is_array(),
        "{w}: requiredDataConnectors"
    );
    assert!(["gt", "lt", "eq", "ne"].contains(&str_of(&y, "triggerOperator", w)));
    assert!((0..=10000).contains(&y["triggerThreshold"].as_i64().expect("triggerThreshold")));
    assert!(
        str_of(&y, "query", w).len() <= 10000,
        "{w}: query over 10000 characters"
    );
    check_mitre(w, &y["tactics"], &y["relevantTechniques"]);

    // Frequency and period within Sentinel's bounds, and the query's own windows are them:
    // `ingestion_time() > ago(window)` with window = frequency, so each record is judged by
    // exactly one run; TimeGenerated bounded by the period the engine applies anyway.
    let freq = timespan_secs(str_of(&y, "queryFrequency", w));
    let period = timespan_secs(str_of(&y, "queryPeriod", w));
    assert!(
        freq >= 300 && freq <= period && period <= 14 * 86400,
        "{w}: frequency/period"
    );
    assert!(
        period < 2 * 86400 || freq >= 3600,
        "{w}: a period of 2 days or more needs a frequency of 1 hour or more"
    );
    let query = str_of(&y, "query", w);
    let let_value = |name: &str| {
        query
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("let {name} = ")))
            .and_then(|v| v.strip_suffix(';'))
            .unwrap_or_else(|| panic!("{w}: the query must say `let {name} = ...;`"))
            .to_owned()
    };
    assert_eq!(
        timespan_secs(&let_value("window")),
        freq,
        "{w}: window must equal queryFrequency"
    );
    assert_eq!(
        timespan_secs(&let_value("maxDelay")),
        period,
        "{w}: maxDelay must equal queryPeriod"
    );
    assert!(
        query.contains("union isfuzzy=true"),
        "{w}: either route may be absent"
    );

    let a = analysis(&format!("{w}: query"));
    let cols: BTreeMap<&str, &str> = a
        .columns
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let mapped = check_entity_mappings(w, &y["entityMappings"], &a.columns);
    assert_eq!(
        y["eventGroupingSettings"]["aggregationKind"],
        "AlertPerResult"
    );
    let grouping = &y["incidentConfiguration"]["groupingConfiguration"];
    assert_eq!(grouping["matchingMethod"], "Selected");
    for e in grouping["groupByEntities"]
        .as_array()
        .expect("groupByEntities")
    {
        let e = e.as_str().expect("entity");
        assert!(
            mapped.contains(e),
            "{w}: incidents grouped by {e}, which no entity mapping provides"
        );
    }

    let o = &y["alertDetailsOverride"];
    for key in ["alertDisplayNameFormat", "alertDescriptionFormat"] {
        let f = str_of(o, key, w);
        let ph = placeholders(f);
        assert!(ph.len() <= 3, "{w}: {key}: at most 3 placeholders");
        for p in ph {
            assert!(
                cols.contains_key(p.as_str()),
                "{w}: {key} names `{p}`, not an output column"
            );
        }
    }
    let sev = str_of(o, "alertSeverityColumnName", w);
    assert_eq!(cols.get(sev), Some(&"string"), "{w}: severity column {sev}");
    let details = y["customDetails"].as_object().expect("customDetails");
    assert!(details.len() <= 20);
    for (k, v) in details {
        assert!(k.len() <= 20 && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic()));
        let v = v.as_str().expect("custom detail column");
        assert!(
            cols.contains_key(v),
            "{w}: custom detail {k} names `{v}`, not an output column"
        );
    }
    let cols = cols
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (y, cols)
}

#[test]
fn the_analytics_rule_imports_and_alerts_once_per_record() {
    let w = RULE_YAML;
    let (y, cols) = imports_as_a_scheduled_rule(w);
    let query = str_of(&y, "query", w);
    assert_eq!(
        query.matches("ingestion_time() > ago(window)").count(),
        2,
        "{w}: both routes are windowed on ingestion_time()"
    );
    // One result per host and file: the grouping keys are what the results are unique on.
    for key in ["Hostname", "FilePath"] {
        assert!(cols.contains_key(key), "{w}: no {key} column");
    }
    assert!(
        query.contains("by Hostname, FilePath"),
        "{w}: one result per host and file"
    );
    // An aggregate of repeats counts as the executions it stands for.
    assert!(
        query.contains("coalesce(RepeatsCount, 1)"),
        "{w}: Executions must count the repeats of aggregate records"
    );
}

/// `spool_dropped` -> `SpoolDropped`, as the custom table names columns.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn the_heartbeat_rule_imports_and_judges_each_heartbeat_once() {
    let w = HEARTBEAT_YAML;
    let (y, cols) = imports_as_a_scheduled_rule(w);
    let query = str_of(&y, "query", w);
    // Both routes' heartbeats, each judged by the run that ingested it.
    for route in [
        "EventAction == \"heartbeat\"",
        "DeviceAction == \"heartbeat\"",
        "Ingested = ingestion_time()",
        "where Ingested > ago(window)",
    ] {
        assert!(query.contains(route), "{w}: `{route}`");
    }
    assert!(
        query.contains("let silence = "),
        "{w}: `let silence = ...;`"
    );
    for key in ["Hostname", "Problem", "KernelLost", "Dropped", "Failed"] {
        assert!(cols.contains_key(key), "{w}: no {key} column");
    }
    assert!(
        query.contains("by Hostname, Problem"),
        "{w}: one result per host and problem"
    );
    // Every output's loss counters are read, on both routes.
    let schema = json_file("docs/schema/tinyexec-record-1.2.schema.json");
    let outputs = schema["properties"]["heartbeat"]["properties"]["outputs"]["properties"]
        .as_object()
        .expect("heartbeat.outputs");
    for (name, o) in outputs {
        for counter in ["dropped", "failed", "rejected", "spool_dropped"] {
            if o["properties"].get(counter).is_none() {
                continue;
            }
            let column = format!("Output{}{}", camel(name), camel(counter));
            assert!(query.contains(&column), "{w}: {column} not read");
            let cef = format!("hb.outputs.{name}.{counter}");
            assert!(query.contains(&cef), "{w}: {cef} not read on the CEF route");
        }
    }
}

fn arm_rule(path: &str) -> Value {
    json_file(path)["resources"][0]["properties"].clone()
}

#[test]
fn the_arm_templates_are_the_yaml_rules() {
    the_arm_template_is_the_yaml_rule(RULE_YAML, RULE_ARM);
    the_arm_template_is_the_yaml_rule(HEARTBEAT_YAML, HEARTBEAT_ARM);
}

fn the_arm_template_is_the_yaml_rule(yaml_path: &str, arm_path: &str) {
    let arm = json_file(arm_path);
    let y = yaml_file(yaml_path);
    let id = str_of(&y, "id", yaml_path);
    assert!(
        arm["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("deploymentTemplate.json"))
    );
    assert!(arm["parameters"]["workspace"].is_object());
    let res = &arm["resources"][0];
    assert_eq!(arm["resources"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        res["type"],
        "Microsoft.OperationalInsights/workspaces/providers/alertRules"
    );
    assert_eq!(res["kind"], "Scheduled");
    assert!(str_of(res, "name", arm_path).contains(id) && str_of(res, "id", arm_path).contains(id));
    let p = &res["properties"];
    let op = match str_of(&y, "triggerOperator", yaml_path) {
        "gt" => "GreaterThan",
        "lt" => "LessThan",
        "eq" => "Equal",
        _ => "NotEqual",
    };
    let mut incident = y["incidentConfiguration"].clone();
    let lookback = iso_duration(str_of(
        &incident["groupingConfiguration"],
        "lookbackDuration",
        yaml_path,
    ));
    incident["groupingConfiguration"]["lookbackDuration"] = json!(lookback);
    let want = json!({
        "displayName": y["name"],
        "description": y["description"],
        "severity": y["severity"],
        "enabled": true,
        "query": y["query"],
        "queryFrequency": iso_duration(str_of(&y, "queryFrequency", yaml_path)),
        "queryPeriod": iso_duration(str_of(&y, "queryPeriod", yaml_path)),
        "triggerOperator": op,
        "triggerThreshold": y["triggerThreshold"],
        "suppressionDuration": iso_duration(str_of(&y, "suppressionDuration", yaml_path)),
        "suppressionEnabled": y["suppressionEnabled"],
        "tactics": y["tactics"],
        "techniques": y["relevantTechniques"],
        "incidentConfiguration": incident,
        "eventGroupingSettings": y["eventGroupingSettings"],
        "alertDetailsOverride": y["alertDetailsOverride"],
        "customDetails": y["customDetails"],
        "entityMappings": y["entityMappings"],
    });
    for (k, v) in want.as_object().expect("object") {
        assert_eq!(
            &p[k], v,
            "{arm_path}: properties.{k} differs from {yaml_path}"
        );
    }
    let extra: Vec<&String> = p
        .as_object()
        .expect("properties")
        .keys()
        .filter(|k| want.get(k.as_str()).is_none())
        .collect();
    assert!(
        extra.is_empty(),
        "{arm_path}: properties not in {yaml_path}: {extra:?}"
    );
    // ARM evaluates a string that starts with `[` as an expression.
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(p, &mut all);
    assert!(
        all.iter().all(|s| !s.starts_with('[')),
        "{arm_path}: a property starts with `[`"
    );
}

#[test]
fn hunting_queries_are_in_the_repository_format() {
    let mut ids = BTreeSet::new();
    for h in hunting_files() {
        let y = yaml_file(&h);
        let id = str_of(&y, "id", &h);
        assert!(
            is_guid(id) && ids.insert(id.to_owned()),
            "{h}: id must be a unique GUID"
        );
        for key in ["name", "description", "query", "version"] {
            assert!(!str_of(&y, key, &h).is_empty(), "{h}: {key}");
        }
        assert!(
            y["requiredDataConnectors"].is_array(),
            "{h}: requiredDataConnectors"
        );
        check_mitre(&h, &y["tactics"], &y["relevantTechniques"]);
        if !y["entityMappings"].is_null() {
            check_entity_mappings(
                &h,
                &y["entityMappings"],
                &analysis(&format!("{h}: query")).columns,
            );
        }
    }
}

#[test]
fn transforms_use_only_allowed_kql_and_fill_their_tables() {
    let ws = json_file(WORKSPACE);
    let allowed = |k: &str| -> BTreeSet<String> {
        ws["transforms"][k]
            .as_array()
            .expect("allowed list")
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let (functions, operators) = (allowed("functions"), allowed("operators"));
    let (custom_name, custom_cols) = custom_table();
    for (i, flow) in dcr_properties()["dataFlows"]
        .as_array()
        .expect("flows")
        .iter()
        .enumerate()
    {
        let what = format!("{DCR}: dataFlows[{i}]");
        let a = analysis(&format!("{what}.transformKql"));
        for f in &a.functions {
            assert!(
                functions.contains(f),
                "{what}: `{f}` is not allowed in transformations"
            );
        }
        for o in &a.operators {
            assert!(
                operators.contains(o),
                "{what}: `{o}` is not allowed in transformations"
            );
        }
        let out = str_of(flow, "outputStream", &what);
        let (table, cols) = if let Some(t) = out.strip_prefix("Custom-") {
            assert_eq!(t, custom_name, "{what}: output stream");
            (t.to_owned(), custom_cols.clone())
        } else {
            let t = out.strip_prefix("Microsoft-").unwrap_or(out);
            (t.to_owned(), declared_table(t))
        };
        let types: BTreeMap<&str, &str> =
            cols.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        for (c, t) in &a.columns {
            match types.get(c.as_str()) {
                None => panic!("{what}: outputs `{c}`, which is not a column of {table}"),
                Some(want) => assert_eq!(want, t, "{what}: `{c}` is {t}, {table} has {want}"),
            }
        }
        if table == custom_name {
            let produced: BTreeSet<&str> = a.columns.iter().map(|(c, _)| c.as_str()).collect();
            for (c, _) in &custom_cols {
                assert!(
                    produced.contains(c.as_str()),
                    "{what}: {table}.{c} is never filled"
                );
            }
        }
    }
}

/// Every field of the record schema reaches a column of the custom table; the ones
/// docs/events.md calls "Same as" another field share that field's column.
#[test]
fn every_record_field_reaches_the_custom_table() {
    const ALIASES: &[&str] = &[
        "process.parent_process_name",
        "user.id",
        "user.name",
        "@timestamp",
    ];
    fn leaves(prefix: &str, schema: &Value, out: &mut Vec<String>) {
        for (k, v) in schema["properties"].as_object().into_iter().flatten() {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v["properties"].is_object() {
                leaves(&path, v, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut fields = Vec::new();
    leaves(
        "",
        &json_file("docs/schema/tinyexec-record-1.2.schema.json"),
        &mut fields,
    );
    let transform = str_of(&dcr_properties()["dataFlows"][0], "transformKql", DCR).to_owned();
    let referenced = |f: &str| {
        transform.match_indices(f).any(|(i, _)| {
            let after = transform[i + f.len()..].chars().next();
            let before = transform[..i].chars().last();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        })
    };
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !ALIASES.contains(&f.as_str()) && !referenced(f))
        .collect();
    assert!(missing.is_empty(), "{DCR}: no column for {missing:?}");
}

#[test]
fn the_parser_keeps_the_custom_tables_columns_and_types() {
    let (_, custom) = custom_table();
    let mut want: BTreeMap<String, String> = custom.into_iter().collect();
    want.insert("Route".into(), "string".into());
    want.insert("IngestedAt".into(), "datetime".into());
    let a = analysis(&format!("{PARSER}: query"));
    for (c, t) in &a.columns {
        assert_eq!(
            want.get(c),
            Some(t),
            "{PARSER}: the CEF route gives `{c}` type {t}; the custom table has {:?} (a type \
             mismatch splits a column in two in a union)",
            want.get(c)
        );
    }
}
