// Type-checks Grafana dashboards against Grafana's own published types (npm `@grafana/schema`, pinned
// in package.json): each dashboard is written out as a TypeScript object literal,
//     const dashboard: Json<Dashboard> & { schemaVersion: 39 } = { ...the dashboard... };
// and `tsc --noEmit --strict` checks it. Being a literal (not an imported .json, whose types TypeScript
// widens and whose assignments skip excess-property checks), wrong types, missing required fields and
// unknown fields are all errors; each panel, variable and annotation is its own literal, so one error
// does not hide another. Prints `FILE: json.path: message` per problem and exits 1 if any.
// Usage: node dashboard-schema.cjs DASHBOARD.json...   (HWSCHED_JS_MODULES: the node_modules to use)
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { spawnSync } = require("child_process");

const MODULES = path.resolve(process.env.HWSCHED_JS_MODULES || "node_modules");

// The schemaVersion the pinned @grafana/schema (11.2) describes: a dashboard exported by a newer
// Grafana carries a newer version and fields these types do not know -- bump both together.
const SCHEMA_VERSION = 39;

// What Grafana itself writes into dashboards but its published types lack, each with why: exactly
// these keys are removed before the check, nothing else is relaxed. `*` matches any array index.
const ALLOWED = [
  { path: "templating.list.*.definition",
    why: "a query variable's query as text, written by Grafana's variable editor; VariableModel lacks it" },
];

// TypeScript string enums (ThresholdsMode, MappingType, FieldColorModeId, ...) accept only their
// enum members, never the string literal JSON holds; `${E}` turns such an enum into the union of its
// string values, which is what the schema means. Everything else maps through unchanged.
const PREAMBLE = `import type { Dashboard } from "@grafana/schema";
type Json<T> = T extends string ? \`\${T}\`
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
`;

function matches(pattern, at) {
  return pattern.length === at.length && pattern.every((p, i) => p === "*" ? typeof at[i] === "number" : p === at[i]);
}

function strip(value, at = []) {
  if (Array.isArray(value)) return value.map((v, i) => strip(v, [...at, i]));
  if (value === null || typeof value !== "object") return value;
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    if (ALLOWED.some((a) => matches(a.path.split("."), [...at, k]))) continue;
    out[k] = strip(v, [...at, k]);
  }
  return out;
}

// Panels, variables and annotations are checked one by one, each as its own literal, so that an error
// in one does not hide those in the others (tsc reports only the first error it meets in a literal).
const ELEMENTS = [
  ["panels", `NonNullable<Dashboard["panels"]>[number]`],
  ["templating.list", `NonNullable<NonNullable<Dashboard["templating"]>["list"]>[number]`],
  ["annotations.list", `NonNullable<NonNullable<Dashboard["annotations"]>["list"]>[number]`],
];

class Ref {
  constructor(name) { this.name = name; }
}

// The TypeScript file for one dashboard, one property or element per line, and the JSON path of
// each line, so that tsc's line numbers can be told back as paths.
function render(dashboard) {
  const lines = PREAMBLE.trimEnd().split("\n");
  const paths = lines.map(() => null);
  function emit(value, at, indent) {
    const isArray = Array.isArray(value);
    if (value instanceof Ref || (!isArray && (value === null || typeof value !== "object"))) {
      lines[lines.length - 1] += value instanceof Ref ? value.name : JSON.stringify(value);
      return;
    }
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [open, close] = isArray ? "[]" : "{}";
    lines[lines.length - 1] += open;
    for (const [k, v] of entries) {
      lines.push("  ".repeat(indent + 1) + (isArray ? "" : `${JSON.stringify(k)}: `));
      paths.push([...at, k]);
      emit(v, [...at, k], indent + 1);
      lines[lines.length - 1] += ",";
    }
    if (entries.length) {
      lines.push("  ".repeat(indent) + close);
      paths.push(at);
    } else {
      lines[lines.length - 1] += close;
    }
  }
  function declare(name, type, value, at) {
    lines.push(`const ${name}: ${type} = `);
    paths.push(at);
    emit(value, at, 0);
    lines[lines.length - 1] += ";";
  }
  const top = { ...dashboard };
  ELEMENTS.forEach(([where, type], e) => {
    const keys = where.split(".");
    const isObject = (o) => o !== null && typeof o === "object" && !Array.isArray(o);
    const parent = keys.slice(0, -1).reduce((o, k) => (o && isObject(o[k]) ? (o[k] = { ...o[k] }) : undefined), top);
    const list = parent && parent[keys.at(-1)];
    if (!Array.isArray(list)) return;  // absent or not a list: the dashboard's own check says so
    parent[keys.at(-1)] = list.map((value, i) => {
      declare(`element${e}_${i}`, `Json<${type}>`, value, [...keys, i]);
      return new Ref(`element${e}_${i}`);
    });
  });
  declare("dashboard", `Json<Dashboard> & { schemaVersion: ${SCHEMA_VERSION} }`, top, []);
  lines.push("export { dashboard };", "");
  return { text: lines.join("\n"), paths };
}

function jsonPath(at) {
  if (!at || at.length === 0) return "(top level)";
  return at.map((k, i) => typeof k === "number" ? `[${k}]` : (i ? "." : "") + k).join("");
}

// tsc spells out the whole expected type of a panel or a dashboard: keep its start.
function shorten(message) {
  return message.replace(/'(\{[^']{100,})'/g, (_, type) => `'${type.slice(0, 80)} ...'`);
}

function main(files) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dashboard-schema-"));
  try {
    const rendered = new Map();
    files.forEach((file, i) => {
      const ts = path.join(tmp, `dashboard${i}.ts`);
      const r = render(strip(JSON.parse(fs.readFileSync(file, "utf8"))));
      fs.writeFileSync(ts, r.text);
      rendered.set(ts, { file, paths: r.paths });
    });
    fs.writeFileSync(path.join(tmp, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "es2022", module: "commonjs", moduleResolution: "node10", types: [],
        paths: { "@grafana/schema": [path.join(MODULES, "@grafana", "schema")] },
      },
      files: [...rendered.keys()],
    }));
    const tsc = spawnSync(process.execPath, [path.join(MODULES, "typescript", "bin", "tsc"),
      "-p", path.join(tmp, "tsconfig.json"), "--noEmit", "--strict", "--pretty", "false"], { encoding: "utf8" });
    if (tsc.error) throw tsc.error;
    // tsc: `FILE(LINE,COL): error TSxxxx: message`, the message going on over indented lines.
    let problems = 0;
    let other = false;  // tsc said something not about a dashboard line: no pass either
    for (const line of (tsc.stdout + tsc.stderr).split("\n")) {
      const m = /^(.*)\((\d+),(\d+)\): (error .*)$/.exec(line);
      const r = m && rendered.get(path.resolve(m[1]));
      if (r) {
        console.log(`${r.file}: ${jsonPath(r.paths[Number(m[2]) - 1])}: ${shorten(m[4])}`);
        problems++;
      } else if (line.trim()) {
        console.log(`  ${shorten(line.trim())}`);
        other = other || !problems;
      }
    }
    return problems || other || tsc.status !== 0 ? 1 : 0;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (require.main === module) process.exit(main(process.argv.slice(2)));
