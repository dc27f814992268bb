// Parses and binds KQL queries with Microsoft's Kusto language service (@kusto/language-service-next,
// offline), against the table schemas given: tests/infra/test_kql.py runs it.
//
// stdin:  {"tables": {"<table>": {"columns": {"<column>": "<kusto type>", ...}}, ...},
//          "queries": {"<id>": "<query text>", ...}}
// stdout: {"<id>": {"diagnostics": [{"severity", "code", "message", "start", "length"}, ...],
//                   "tables": ["<table the query reads>", ...],
//                   "columns": ["<table>.<column the query reads>", ...],
//                   "result": [["<column of the result>", "<kusto type>"], ...]}, ...}
"use strict";

const path = require("path");
const root = path.dirname(require.resolve("@kusto/language-service-next/package.json"));
require(path.join(root, "bridge.min.js"));
require(path.join(root, "Kusto.Language.Bridge.min.js"));

const K = globalThis.Kusto.Language;
const S = K.Symbols;

function list(items) {
  const out = [];
  for (let i = 0; i < items.Count; i++) out.push(items.getItem(i));
  return out;
}

function check(input) {
  const tables = Object.entries(input.tables).map(([name, table]) => {
    const schema = Object.entries(table.columns).map(([column, type]) => `['${column}']:${type}`);
    return new S.TableSymbol.$ctor7(name, `(${schema.join(", ")})`, null);
  });
  const database = new S.DatabaseSymbol.ctor("workspace", tables);
  const globals = K.GlobalState.Default.WithCluster(new S.ClusterSymbol.ctor("cluster", [database])).WithDatabase(database);
  const owner = new Map();
  for (const table of tables) for (const column of list(table.Columns)) owner.set(column, table.Name);

  const results = {};
  for (const [id, text] of Object.entries(input.queries)) {
    const code = K.KustoCode.ParseAndAnalyze(text, globals);
    const read = new Set();
    const columns = new Set();
    code.Syntax.WalkNodes((node) => {
      const symbol = node.ReferencedSymbol;
      if (symbol && Bridge.is(symbol, S.TableSymbol) && tables.includes(symbol)) read.add(symbol.Name);
      if (symbol && owner.has(symbol)) columns.add(`${owner.get(symbol)}.${symbol.Name}`);
    });
    const type = code.ResultType;
    results[id] = {
      diagnostics: list(code.GetDiagnostics()).map((d) => ({
        severity: d.Severity, code: d.Code, message: d.Message, start: d.Start, length: d.Length,
      })),
      tables: [...read].sort(),
      columns: [...columns].sort(),
      result: type && Bridge.is(type, S.TableSymbol)
        ? list(type.Columns).map((c) => [c.Name, c.Type.Name])
        : [],
    };
  }
  return results;
}

let text = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { text += chunk; });
process.stdin.on("end", () => { process.stdout.write(JSON.stringify(check(JSON.parse(text)))); });
