#!/usr/bin/env node
// Runs the compiled applicability (docs/compilers.md) with the engines of the field, not with guideline-kg's code:
// HL7's fhirpath (npm "fhirpath") for FHIRPath, cql-execution + cql-exec-fhir for ELM.
// JSON in on stdin: {"engine": "fhirpath", "expressions": {name: fhirpath}, "files": [paths],
//                   "variables": [[name, fhirpath], ...] (optional), "resolveInternalTypes": true | false}
//                or {"engine": "cql", "elm": {ELM JSON} | "library": path, "expressions": [names], "files": [paths]}
//                   ("library": a FHIR Library resource, or a Bundle holding one, whose ELM content is run;
//                    "expressions" defaults to every define but "Patient")
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
  // The FHIR "variable" extension's semantics (SDC, CPG): the variables in order, each evaluated on the Bundle with
  // the earlier ones in the environment (%name), then every condition with all of them. A variable's value is
  // handed back as the engine returned it: with resolveInternalTypes false its ResourceNodes (type and path kept),
  // with true plain JSON objects, which fhirpath.js turns back into nodes through their hidden __path__.
  const options = { resolveInternalTypes: request.resolveInternalTypes !== false };
  const variables = (request.variables || []).map(([name, expr]) => [name, fhirpath.compile(expr, null, options)]);
  // statements that share a population share one expression: compiled and evaluated once per case
  const byText = new Map();
  for (const expr of Object.values(request.expressions)) {
    if (!byText.has(expr)) byText.set(expr, fhirpath.compile(expr));
  }
  const start = process.hrtime.bigint();
  for (const c of cases) {
    const env = {};
    for (const [name, fn] of variables) env[name] = fn(c.bundle, env);
    const values = new Map();
    for (const [expr, fn] of byText) values.set(expr, one(fn(c.bundle, env)));
    c.results = {};
    for (const [name, expr] of Object.entries(request.expressions)) c.results[name] = values.get(expr);
  }
  return Number(process.hrtime.bigint() - start) / 1e6;
}

// The ELM to run: request.elm, or the Library resource of an export (request.library: a Library JSON file, or a
// Bundle / FHIR package folder file holding it), its application/elm+json content decoded from base64, so that what
// is tested is what ships.
function elmOf(request) {
  if (request.elm) return request.elm;
  const doc = JSON.parse(fs.readFileSync(request.library, 'utf8'));
  const found = doc.resourceType === 'Library' ? [doc]
    : (doc.entry || []).map((e) => e.resource).filter((r) => r && r.resourceType === 'Library');
  for (const lib of found) {
    const elm = (lib.content || []).find((c) => c.contentType === 'application/elm+json');
    if (elm) return JSON.parse(Buffer.from(elm.data, 'base64').toString('utf8'));
  }
  throw new Error(`${request.library}: no Library with application/elm+json content`);
}

// A Bundle as a FHIR server stores it when it is posted as a transaction: a reference to an entry's fullUrl
// (urn:uuid:...) becomes that entry's Type/id (FHIR R4, Bundle: resolving references in bundles). The library reads
// references as Type/id; the Bundle file itself is not changed (a copy is rewritten).
function asStored(bundle) {
  const byUrl = new Map();
  for (const e of bundle.entry || []) {
    if (e && e.fullUrl && e.resource && e.resource.resourceType && e.resource.id) {
      byUrl.set(e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`);
    }
  }
  const copy = JSON.parse(JSON.stringify(bundle));
  const walk = (node) => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === 'reference' && typeof v === 'string' && byUrl.has(v)) node[k] = byUrl.get(v);
        else walk(v);
      }
    }
  };
  (copy.entry || []).forEach((e) => walk(e && e.resource));
  return copy;
}

async function runCql(request, cases) {
  const cql = require('cql-execution');
  const cqlfhir = require('cql-exec-fhir');
  const library = new cql.Library(elmOf(request));
  const names = request.expressions
    || library.source.library.statements.def.map((d) => d.name).filter((n) => n !== 'Patient');
  const executor = new cql.Executor(library);
  // one patient source (building it reads the FHIR 4.0.1 model info: ~0.5 s), emptied and loaded for each case
  const source = cqlfhir.PatientSource.FHIRv401();
  const start = process.hrtime.bigint();
  for (const c of cases) {
    c.results = {};
    const stamp = c.bundle.timestamp;
    const hasPatient = (c.bundle.entry || []).some((e) => e && e.resource && e.resource.resourceType === 'Patient');
    if (typeof stamp !== 'string' || !hasPatient) {
      // no assessment date (Today() would be the day of the run) or no patient (context Patient): not evaluated
      c.error = typeof stamp !== 'string' ? 'no Bundle.timestamp' : 'no Patient';
      continue;
    }
    // Today() is the bundle's assessment date (the mapping's assessmentDate, Bundle.timestamp): the execution date
    const when = cql.DateTime.parse(stamp.substring(0, 10));
    // cql-exec-fhir's patient source, loaded with the case Bundle as a server would store it: the retrieves read it
    source.reset();
    source.loadBundles([asStored(c.bundle)]);
    const results = await executor.exec(source, when);
    const byPatient = Object.values(results.patientResults)[0] || {};
    for (const name of names) {
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
  const out = cases.map((c) => ({ file: c.file, line: c.line, id: c.bundle.id || null, results: c.results,
    ...(c.error ? { error: c.error } : {}) }));
  process.stdout.write(JSON.stringify({ cases: out, evaluate_ms: ms }));
}

main().catch((e) => {
  process.stderr.write(`run_engines: ${e.message}\n`);
  process.exit(2);
});
