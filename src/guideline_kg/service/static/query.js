// The query page: named queries (competency questions first), the predeclared prefixes, and results whose IRIs
// are shortened to prefixed names and linked to their resource page.
"use strict";
(function () {
  const {$, el} = GK;
  const DATA = JSON.parse($("query-data").textContent);
  GK.prefixes = DATA.prefixes;
  const byName = {};
  const nav = $("examples");
  for (const group of DATA.groups) {
    const list = el("ul");
    for (const q of group.queries) {
      byName[q.name] = q;
      list.appendChild(el("li", {}, el("button", {type: "button", class: "example", "data-name": q.name},
        el("strong", {}, q.name), el("span", {class: "purpose"}, q.purpose))));
    }
    nav.appendChild(el("section", {"data-group": group.label}, el("h2", {}, group.label + " (" + group.queries.length + ")"), list));
  }
  const table = $("prefixes");
  for (const [p, ns] of Object.entries(DATA.prefixes)) table.appendChild(el("tr", {}, el("td", {}, p + ":"), el("td", {}, el("code", {}, ns))));

  function pick(name) {
    const q = byName[name]; if (!q) return;
    $("query").value = q.text; $("purpose").textContent = q.name + ": " + q.purpose;
    for (const b of document.querySelectorAll("button.example")) b.classList.toggle("chosen", b.dataset.name === name);
  }
  function cell(term) {
    if (!term) return "";
    if (term.type === "uri") return GK.link(term.value);
    if (term.type === "bnode") return "_:" + term.value;
    const lit = el("span", {class: "literal"}, term.value);
    if (term["xml:lang"]) return el("span", {}, lit, "@" + term["xml:lang"]);
    return lit;
  }
  function show(data) {
    const out = $("out"); out.textContent = "";
    if (typeof data === "string") { out.appendChild(el("pre", {}, data)); return; }
    if ("boolean" in data) { out.textContent = String(data.boolean); $("status").textContent = "answer: " + data.boolean; return; }
    const t = el("table", {id: "results"});
    t.appendChild(el("tr", {}, data.head.vars.map((v) => el("th", {}, v))));
    for (const b of data.results.bindings) t.appendChild(el("tr", {}, data.head.vars.map((v) => el("td", {}, cell(b[v])))));
    out.appendChild(t);
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
      if (!resp.ok) {
        $("status").textContent = "HTTP " + resp.status;
        $("out").appendChild(el("p", {class: "error", id: "error"}, text)); return;
      }
      const ctype = resp.headers.get("content-type") || "";
      if (ctype.includes("json")) show(JSON.parse(text)); else { show(text); $("status").textContent = "graph result"; }
    } catch (e) { $("status").textContent = "failed: " + e; }
  }
  nav.addEventListener("click", (e) => { const b = e.target.closest("button.example"); if (b) pick(b.dataset.name); });
  $("run").addEventListener("click", run);
  const params = new URLSearchParams(location.search);
  if (params.get("example")) pick(params.get("example"));
  if (params.get("query")) $("query").value = params.get("query");
  if (params.get("run")) run();
})();
