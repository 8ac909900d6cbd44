// Parses and semantically analyses KQL texts with Microsoft's Kusto.Language
// (npm @kusto/language-service-next), for tests/kusto.rs.
//
// Input (argv[2]): a JSON manifest
//   { "databases": { NAME: { "tables": [{ "name", "columns": [[col, type], ...] }],
//                            "functions": [{ "name", "parameters", "body" }] } },
//     "texts": [{ "id", "database", "text" }] }
// Output (stdout): a JSON array, one entry per text:
//   { "id", "diagnostics": [{ "severity", "code", "message", "start", "length" }],
//     "columns": [[name, type], ...] (the result schema, when tabular),
//     "functions": [names called], "operators": [tabular operator keywords] }
"use strict";
const fs = require("fs");
const path = require("path");

const lib = process.env.KUSTO_LANGUAGE_DIR;
if (!lib) {
  console.error("KUSTO_LANGUAGE_DIR must name the @kusto/language-service-next directory");
  process.exit(2);
}
require(path.join(lib, "bridge.js"));
require(path.join(lib, "Kusto.Language.Bridge.js"));
const K = Kusto.Language;
const S = K.Symbols;

const manifest = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

function database(name, spec) {
  const members = [];
  for (const t of spec.tables || []) {
    const schema = "(" + t.columns.map(([c, ty]) => `['${c}']:${ty}`).join(", ") + ")";
    members.push(new S.TableSymbol.$ctor7(t.name, schema, ""));
  }
  for (const f of spec.functions || []) {
    members.push(new S.FunctionSymbol.$ctor16(f.name, f.parameters, f.body, ""));
  }
  return new S.DatabaseSymbol.ctor(name, members);
}

const globals = {};
for (const [name, spec] of Object.entries(manifest.databases)) {
  globals[name] = K.GlobalState.Default.WithDatabase(database(name, spec));
}

const out = [];
for (const t of manifest.texts) {
  const g = globals[t.database];
  if (!g) throw new Error(`${t.id}: no database ${t.database}`);
  const code = K.KustoCode.ParseAndAnalyze(t.text, g);
  const diagnostics = Bridge.toArray(code.GetDiagnostics()).map((d) => ({
    severity: d.Severity,
    code: d.Code,
    message: d.Message,
    start: d.Start,
    length: d.Length,
  }));
  const rt = code.ResultType;
  const columns = rt && rt.Columns ? Bridge.toArray(rt.Columns).map((c) => [c.Name, c.Type.Name]) : [];
  const functions = [];
  const operators = [];
  K.Syntax.SyntaxElement.WalkNodes(code.Syntax, (n) => {
    if (n instanceof K.Syntax.FunctionCallExpression) functions.push(n.Name.SimpleName);
    if (n instanceof K.Syntax.QueryOperator) operators.push(n.GetFirstToken().Text);
  });
  out.push({ id: t.id, diagnostics, columns, functions, operators });
}
process.stdout.write(JSON.stringify(out));
