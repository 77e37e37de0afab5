"""The query page of the server: plain HTML and JavaScript, nothing loaded from outside.

``?example=NAME`` preselects a named query, ``?query=TEXT`` fills the editor, ``&run=1`` runs it on load.
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>guideline-kg: {{TITLE}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:80em}
textarea{width:100%;height:14em;font-family:monospace;font-size:13px}
table{border-collapse:collapse;margin-top:1em;font-size:13px}
td,th{border:1px solid #bbb;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#eee} #status{color:#444} .error{color:#a00;white-space:pre-wrap}
</style></head><body>
<h1>{{TITLE}}</h1>
<p>SPARQL 1.1 endpoint: <code>/sparql</code> (read-only) &middot; <a href="/algorithm.svg">treatment algorithm (SVG)</a>
&middot; <a href="/cds-services">CDS Hooks discovery</a> &middot; <a href="/health">health</a></p>
<p><small>{{INFO}}. Prefixes gk:, case:, result:, owl:, rdf:, rdfs:, skos:, prov:, dcterms:
and the guideline's own (its manifest's) are predeclared.</small></p>
<label>Example: <select id="examples"><option value="">(choose a named query)</option>
{{OPTIONS}}
</select></label>
<p id="purpose"></p>
<textarea id="query" spellcheck="false">SELECT ?statement ?line ?text WHERE {
  ?statement gk:sourceLine ?line ; gk:verbatimText ?text .
} ORDER BY ?line LIMIT 10</textarea>
<p><button id="run">Run query</button> <span id="status"></span></p>
<div id="out"></div>
<script>
const EXAMPLES = {{EXAMPLES}};
const $ = (id) => document.getElementById(id);
function pick(name) {
  const ex = EXAMPLES[name]; if (!ex) return;
  $("query").value = ex.text; $("purpose").textContent = ex.purpose; $("examples").value = name;
}
function cell(term) {
  if (!term) return "";
  if (term.type === "uri") return term.value;
  if (term.type === "bnode") return "_:" + term.value;
  return term.value + (term["xml:lang"] ? "@" + term["xml:lang"] : "");
}
function show(data) {
  const out = $("out"); out.textContent = "";
  if (typeof data === "string") {
    const pre = document.createElement("pre"); pre.textContent = data; out.appendChild(pre); return;
  }
  if ("boolean" in data) {
    out.textContent = String(data.boolean); $("status").textContent = "answer: " + data.boolean; return;
  }
  const table = document.createElement("table"); table.id = "results";
  const head = table.insertRow();
  for (const v of data.head.vars) {
    const th = document.createElement("th"); th.textContent = v; head.appendChild(th);
  }
  for (const b of data.results.bindings) {
    const row = table.insertRow();
    for (const v of data.head.vars) row.insertCell().textContent = cell(b[v]);
  }
  out.appendChild(table);
  $("status").textContent = data.results.bindings.length + " results";
}
async function run() {
  $("status").textContent = "running..."; $("out").textContent = "";
  try {
    const resp = await fetch("/sparql", {method: "POST",
      headers: {"Content-Type": "application/sparql-query",
                "Accept": "application/sparql-results+json, text/turtle;q=0.9"},
      body: $("query").value});
    const text = await resp.text();
    if (!resp.ok) { $("status").textContent = "HTTP " + resp.status;
      const p = document.createElement("p"); p.className = "error"; p.id = "error"; p.textContent = text;
      $("out").appendChild(p); return; }
    const ctype = resp.headers.get("content-type") || "";
    if (ctype.includes("json")) show(JSON.parse(text)); else { show(text); $("status").textContent = "graph result"; }
  } catch (e) { $("status").textContent = "failed: " + e; }
}
$("examples").addEventListener("change", (e) => pick(e.target.value));
$("run").addEventListener("click", run);
const params = new URLSearchParams(location.search);
if (params.get("example")) pick(params.get("example"));
if (params.get("query")) $("query").value = params.get("query");
if (params.get("run")) run();
</script>
</body></html>
"""
