#!/usr/bin/env node
// Runs the compiled applicability (docs/compilers.md) with the engines of the field, not with guideline-kg's code:
// HL7's fhirpath (npm "fhirpath") for FHIRPath, cql-execution + cql-exec-fhir for ELM.
// JSON in on stdin: {"engine": "fhirpath", "expressions": {name: fhirpath}, "files": [paths]}
//                or {"engine": "cql", "elm": {library JSON}, "expressions": [names], "files": [paths]}
// A file is one FHIR Bundle (.json) or one Bundle a line (.ndjson). JSON out on stdout:
// {"cases": [{"file", "line", "id", "results": {name: true | false | null}}], "evaluate_ms"}
// Exit 0 done, 2 bad input (the message on stderr).
'use strict';
const fs = require('fs');

function bundles(files) {
  const out = [];
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    if (file.endsWith('.ndjson')) {
      text.split('\n').forEach((line, i) => {
        if (line.trim()) out.push({ file, line: i + 1, bundle: JSON.parse(line) });
      });
    } else {
      out.push({ file, line: null, bundle: JSON.parse(text) });
    }
  }
  return out;
}

function one(values) {
  // FHIRPath: [] undetermined, [true] / [false]; anything else is reported as it is
  if (values.length === 0) return null;
  if (values.length === 1 && typeof values[0] === 'boolean') return values[0];
  return { unexpected: values };
}

function runFhirpath(request, cases) {
  const fhirpath = require('fhirpath');
  // statements that share a population share one expression: compiled and evaluated once per case
  const byText = new Map();
  for (const expr of Object.values(request.expressions)) {
    if (!byText.has(expr)) byText.set(expr, fhirpath.compile(expr));
  }
  const start = process.hrtime.bigint();
  for (const c of cases) {
    const values = new Map();
    for (const [expr, fn] of byText) values.set(expr, one(fn(c.bundle)));
    c.results = {};
    for (const [name, expr] of Object.entries(request.expressions)) c.results[name] = values.get(expr);
  }
  return Number(process.hrtime.bigint() - start) / 1e6;
}

async function runCql(request, cases) {
  const cql = require('cql-execution');
  const cqlfhir = require('cql-exec-fhir');
  const library = new cql.Library(request.elm);
  const start = process.hrtime.bigint();
  for (const c of cases) {
    // the evaluation date of the library (Today()) is the bundle's assessment date, as for the FHIR mapping
    const when = cql.DateTime.parse(String(c.bundle.timestamp || new Date().toISOString()).substring(0, 10));
    // the conditions read the Bundle itself (entries, fullUrl references): it is the library's parameter "Bundle"
    const executor = new cql.Executor(library, undefined, { Bundle: c.bundle });
    const source = cqlfhir.PatientSource.FHIRv401();
    source.loadBundles([c.bundle]);
    const results = await executor.exec(source, when);
    const byPatient = Object.values(results.patientResults)[0] || {};
    c.results = {};
    for (const name of request.expressions) {
      const v = byPatient[name];
      c.results[name] = v === null || v === undefined ? null : (typeof v === 'boolean' ? v : { unexpected: v });
    }
  }
  return Number(process.hrtime.bigint() - start) / 1e6;
}

async function main() {
  let request;
  try {
    request = JSON.parse(fs.readFileSync(0, 'utf8'));
  } catch (e) {
    process.stderr.write(`run_engines: stdin is not JSON: ${e.message}\n`);
    process.exit(2);
  }
  let cases;
  try {
    cases = bundles(request.files || []);
  } catch (e) {
    process.stderr.write(`run_engines: ${e.message}\n`);
    process.exit(2);
  }
  const ms = request.engine === 'cql' ? await runCql(request, cases) : runFhirpath(request, cases);
  const out = cases.map((c) => ({ file: c.file, line: c.line, id: c.bundle.id || null, results: c.results }));
  process.stdout.write(JSON.stringify({ cases: out, evaluate_ms: ms }));
}

main().catch((e) => {
  process.stderr.write(`run_engines: ${e.message}\n`);
  process.exit(2);
});
