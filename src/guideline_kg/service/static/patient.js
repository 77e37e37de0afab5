// The patient page: a case pasted, uploaded, picked from the served examples or built with the form generated
// from the case shapes goes to POST /evaluate (the one reader and the gate); the result is drawn here and nothing
// is decided here. Every text from the case or the result enters the page as a text node.
"use strict";
(function () {
  const {$, el} = GK;
  GK.prefixes = JSON.parse($("page-data").textContent).prefixes;
  const STATUS = {"applicable": "applies", "not-applicable": "does not apply", "undetermined": "undetermined"};
  const COUNTED = {"applicable": "apply", "not-applicable": "do not apply", "undetermined": "undetermined"};
  let current = null;  // the case last evaluated: {text, format, name}
  let form = null;     // the form spec from /case-form

  const status = (text, cls) => { $("status").textContent = text; $("status").className = cls || ""; };
  const lines = (r) => (r.source_lines || []).join(", ");
  const short = (iri) => GK.local(iri);

  // ------------------------------------------------------------------ input
  async function loadExamples() {
    const {data} = await GK.json("/cases");
    for (const c of data || []) {
      $("example").appendChild(el("option", {value: c.name}, c.name + (c.valid ? "" : " (invalid)")));
    }
  }
  async function pickExample(name) {
    if (!name) return;
    const {status: code, data} = await GK.json("/cases/" + encodeURIComponent(name));
    if (code !== 200) { status(data.error || "cannot load " + name, "error"); return; }
    $("case").value = data.text; $("format").value = data.format === "ntriples" ? "auto" : data.format;
    $("case").dataset.name = data.name;
    await evaluate();
  }
  function upload(file) {
    const reader = new FileReader();
    reader.onload = () => {
      $("case").value = reader.result;
      const name = file.name.replace(/(\.fhir\.json|\.jsonld|\.json|\.ttl|\.nt)$/i, "").replace(/[^A-Za-z0-9._-]/g, "-");
      $("case").dataset.name = /^[A-Za-z0-9]/.test(name) ? name.slice(0, 64) : "uploaded";
      $("format").value = /\.fhir\.json$|\.json$/i.test(file.name) && !/\.jsonld$/i.test(file.name) ? "auto"
        : /\.jsonld$/i.test(file.name) ? "jsonld" : /\.ttl$/i.test(file.name) ? "turtle" : "auto";
      status("read " + file.name + " (" + file.size + " bytes); press Evaluate");
    };
    reader.readAsText(file);
  }

  async function evaluate() {
    const text = $("case").value;
    if (!text.trim()) { status("paste a case, upload a file or choose an example first", "error"); return; }
    current = {text: text, format: $("format").value, name: $("case").dataset.name || "pasted"};
    status("evaluating...");
    $("evaluate").disabled = true;
    try {
      const {status: code, data} = await GK.json("/evaluate", current);
      status(code === 200 ? "evaluated " + data.case : code === 422 ? "the case is invalid" : "HTTP " + code,
             code === 200 ? "" : "error");
      show(code, data);
    } catch (e) { status("failed: " + e, "error"); }
    finally { $("evaluate").disabled = false; }
  }

  // ------------------------------------------------------------------ result
  function show(code, data) {
    const out = $("result"); out.textContent = ""; out.hidden = false;
    if (code === 503) { out.appendChild(el("p", {class: "error"}, "The server is busy: " + (data.error || ""))); return; }
    if (data.error && !data.violations) {
      out.appendChild(el("div", {class: "refused", id: "refused"}, el("h2", {}, "The case cannot be read"),
        el("pre", {class: "error"}, data.error)));
      return;
    }
    if (!data.valid) { out.appendChild(violations(data)); return; }
    const r = data.result;
    const byId = {};
    for (const s of r.recommendations) byId[s.id] = s;
    out.appendChild(el("h2", {}, "Result for case " + data.case));
    for (const u of r.urgent) out.appendChild(urgent(u, byId[u.statement], data));
    out.appendChild(scope(r));
    out.appendChild(counts(data.counts));
    if (r.conflicts.length) out.appendChild(conflicts(r.conflicts, byId));
    const missing = checklist(r);
    if (missing) out.appendChild(missing);
    const grid = el("div", {class: "result-grid"});
    grid.appendChild(statements(r, data));
    grid.appendChild(pathway(data));
    out.appendChild(grid);
    if (r.unspecified_options.length) {
      out.appendChild(el("section", {class: "unspecified"}, el("h3", {}, "Named by the guideline without content"),
        el("ul", {}, r.unspecified_options.map((u) => el("li", {}, u.text || u.label || JSON.stringify(u))))));
    }
    if (data.warnings && data.warnings.length) out.appendChild(notes("Warnings of the case shapes", data.warnings.map((w) => w.message)));
    if (data.notes && data.notes.length) out.appendChild(notes("Notes from reading the case", data.notes.map((n) => (n.place ? n.place + ": " : "") + n.message)));
  }

  function notes(title, items) {
    return el("section", {class: "notes"}, el("h3", {}, title), el("ul", {}, items.map((t) => el("li", {}, t))));
  }

  function violations(data) {
    const box = el("div", {class: "refused", id: "refused"});
    box.appendChild(el("h2", {}, "The case is invalid: no recommendations"));
    box.appendChild(el("p", {}, "The case " + data.case + " fails the case shapes with " + data.violations.length +
      " violation" + (data.violations.length === 1 ? "" : "s") + "; it is not evaluated. Correct it and evaluate again."));
    const t = el("table", {class: "violations", id: "violations"});
    t.appendChild(el("tr", {}, ["focus", "property", "value", "message"].map((h) => el("th", {}, h))));
    for (const v of data.violations) {
      t.appendChild(el("tr", {}, el("td", {}, GK.qname(v.focus)), el("td", {}, v.path ? GK.qname(v.path) : ""),
        el("td", {}, v.value || ""), el("td", {}, v.message)));
    }
    box.appendChild(t);
    return box;
  }

  function urgent(u, rec, data) {
    const action = u.action || (rec && rec.action ? rec.action.map((a) => data.labels[a] || GK.qname(a)).join(", ") : "");
    return el("div", {class: "urgent", id: "urgent", role: "alert"},
      el("strong", {class: "flag"}, "URGENT"),
      el("span", {class: "action"}, action ? "Action: " + action : ""),
      el("span", {class: "finding"}, "Finding: " + u.finding),
      el("span", {class: "where"}, "source line " + (rec ? lines(rec) : "?") + " (", GK.link(u.statement, short(u.statement)), ")"));
  }

  function scope(r) {
    const s = r.scope;
    const words = {in: "in the guideline's population", out: "outside the guideline's population", undetermined: "not known to be in the guideline's population"};
    const box = el("section", {class: "scope scope-" + s.status, id: "scope"},
      el("h3", {}, "Scope: ", el("span", {class: "scope-status"}, s.status), " — " + (words[s.status] || "")));
    if (s.reasons.length) box.appendChild(el("ul", {}, s.reasons.map((x) => el("li", {}, x))));
    if (s.missing.length) box.appendChild(el("p", {}, "Needed to decide: " + s.missing.join("; ")));
    return box;
  }

  function counts(c) {
    const p = el("p", {class: "counts", id: "counts"});
    for (const k of ["applicable", "not-applicable", "undetermined"]) {
      p.appendChild(el("span", {class: "badge status-" + k, "data-status": k, "data-count": c[k] || 0}, (c[k] || 0) + " " + (c[k] === 1 ? STATUS[k] : COUNTED[k])));
    }
    return p;
  }

  function conflicts(list, byId) {
    const box = el("section", {class: "conflicts", id: "conflicts"}, el("h3", {}, "Conflicts: both statements apply"));
    for (const c of list) {
      const f = byId[c.for], a = byId[c.against];
      box.appendChild(el("div", {class: "conflict"},
        el("p", {class: "conflict-head"}, "On ", el("strong", {}, c.action), ": line " + (f ? lines(f) : "?") +
           " advises for it, line " + (a ? lines(a) : "?") + " against it."),
        el("p", {class: "for"}, el("span", {class: "tag"}, "for · line " + (f ? lines(f) : "?")), " ", c.for_text),
        el("p", {class: "against"}, el("span", {class: "tag"}, "against · line " + (a ? lines(a) : "?")), " ", c.against_text),
        c.resolution ? el("p", {class: "resolution"}, el("em", {}, "Reading: "), c.resolution) : null));
    }
    return box;
  }

  function checklist(r) {
    const asked = new Map();
    const add = (q, who) => { if (!asked.has(q)) asked.set(q, new Set()); asked.get(q).add(who); };
    for (const q of r.scope.missing) add(q, "scope");
    for (const s of r.recommendations) for (const q of s.missing) add(q, "line " + lines(s));
    if (!asked.size) return null;
    const list = el("ul", {class: "checklist"});
    let i = 0;
    for (const [q, who] of asked) {
      const id = "missing-" + (i++);
      list.appendChild(el("li", {}, el("input", {type: "checkbox", id: id}),
        el("label", {for: id}, q, " ", el("small", {}, "(" + [...who].join(", ") + ")"))));
    }
    return el("section", {class: "missing", id: "missing"},
      el("h3", {}, "Missing data: " + asked.size + " question" + (asked.size === 1 ? "" : "s") + " would decide more"), list);
  }

  function statements(r, data) {
    const groups = new Map();
    const recs = [...r.recommendations].sort((x, y) => (x.source_lines[0] - y.source_lines[0]) || (x.id < y.id ? -1 : 1));
    for (const s of recs) {
      const sec = data.sections[s.id] || {section: "", label: "", order: 9999};
      if (!groups.has(sec.section)) groups.set(sec.section, {label: sec.label, trail: sec.trail || [], order: sec.order, items: []});
      groups.get(sec.section).items.push(s);
    }
    const col = el("div", {class: "statements", id: "statements"});
    for (const [iri, g] of [...groups].sort((a, b) => a[1].order - b[1].order)) {
      const outer = g.trail.slice(0, -1);
      const sec = el("section", {class: "group"}, el("h3", {},
        outer.length ? el("span", {class: "trail"}, outer.join(" \u203a ") + " \u203a ") : null,
        iri ? GK.link(iri, g.label) : "Other statements"));
      for (const s of g.items) sec.appendChild(statement(s, data));
      col.appendChild(sec);
    }
    return col;
  }

  function statement(s, data) {
    const id = short(s.id);
    const card = el("article", {class: "stmt status-" + s.status + (s.urgent ? " is-urgent" : "") + (s.conflicts_with.length ? " has-conflict" : ""),
      id: "stmt-" + id, "data-id": s.id, "data-status": s.status});
    const actions = (s.action || []).map((a) => data.labels[a] || GK.qname(a)).join(", ");
    card.appendChild(el("header", {},
      el("span", {class: "badge status-" + s.status}, STATUS[s.status] || s.status),
      s.urgent ? el("span", {class: "badge urgent-badge"}, "urgent") : null,
      " ", GK.link(s.id, "line " + lines(s)),
      s.direction ? el("span", {class: "direction dir-" + s.direction}, s.direction === "against" ? "advises against" : "advises for") : null,
      s.strength ? el("span", {class: "strength"}, s.strength) : null));
    card.appendChild(el("p", {class: "text"}, s.text));
    if (actions) card.appendChild(el("p", {class: "meta"}, "Action: " + actions + (s.citations.length ? " · cites " + s.citations.join(", ") : "")));
    if (s.because.length) card.appendChild(el("div", {class: "because"}, el("strong", {}, s.status === "not-applicable" ? "Why not: " : "Because: "),
      el("ul", {}, s.because.map((b) => el("li", {}, b)))));
    if (s.missing.length) card.appendChild(el("div", {class: "needs"}, el("strong", {}, "Needs: "), el("ul", {}, s.missing.map((b) => el("li", {}, b)))));
    if (s.conflicts_with.length) card.appendChild(el("p", {class: "conflict-note"}, "Conflicts with ",
      ...s.conflicts_with.map((c) => el("a", {href: "#stmt-" + short(c)}, short(c)))));
    if (s.note) card.appendChild(el("p", {class: "note"}, s.note));
    const button = el("button", {type: "button", class: "explain", "data-statement": s.id}, "Explain");
    const panel = el("div", {class: "explanation", hidden: true});
    button.addEventListener("click", () => explain(s.id, panel, button));
    card.appendChild(el("footer", {}, button));
    card.appendChild(panel);
    return card;
  }

  function pathway(data) {
    const fig = el("figure", {class: "pathway", id: "pathway"});
    fig.appendChild(el("figcaption", {}, "The pathway with this case laid over it (overview; scroll inside)",
      data.case && $("example").value === data.case ? el("span", {}, " · ", el("a", {href: "/algorithm?case=" + encodeURIComponent(data.case)}, "detailed chart")) : null));
    if (!data.svg) { fig.appendChild(el("p", {}, "(no pathway drawing: the guideline package has no algorithm, or Graphviz failed)")); return fig; }
    const doc = new DOMParser().parseFromString(data.svg, "image/svg+xml");
    const svg = doc.documentElement;
    if (!svg || svg.nodeName.toLowerCase() !== "svg") return fig;
    for (const bad of svg.querySelectorAll("script, foreignObject, iframe")) bad.remove();
    for (const node of [svg, ...svg.querySelectorAll("*")]) {
      for (const a of [...node.attributes]) {
        if (/^on/i.test(a.name) || (/href$/i.test(a.name) && !/^(#|\/[^/])/.test(a.value))) node.removeAttribute(a.name);
      }
    }
    const natural = svg.getAttribute("width");
    svg.removeAttribute("width"); svg.removeAttribute("height");
    svg.setAttribute("preserveAspectRatio", "xMidYMin meet");
    const holder = el("div", {class: "svg-holder"});
    holder.appendChild(document.importNode(svg, true));
    const zoom = el("button", {type: "button", class: "zoom"}, "Actual size");
    zoom.addEventListener("click", () => {
      const big = fig.classList.toggle("zoomed");
      const shown = holder.querySelector("svg");
      if (big && natural) shown.style.width = natural; else shown.style.width = "";
      zoom.textContent = big ? "Fit to column" : "Actual size";
    });
    fig.querySelector("figcaption").appendChild(zoom);
    fig.appendChild(holder);
    return fig;
  }

  async function explain(iri, panel, button) {
    if (!panel.hidden && panel.childNodes.length) { panel.hidden = true; button.textContent = "Explain"; return; }
    panel.hidden = false; panel.textContent = "explaining...";
    const {status: code, data} = await GK.json("/explain", Object.assign({statement: iri}, current));
    panel.textContent = "";
    button.textContent = "Hide explanation";
    if (code !== 200) { panel.appendChild(el("p", {class: "error"}, data.error || "HTTP " + code)); return; }
    panel.appendChild(el("p", {}, el("strong", {}, "Status: " + (STATUS[data.status] || data.status))));
    const t = el("table", {class: "conditions"});
    t.appendChild(el("tr", {}, ["condition", "", "facts / questions"].map((h) => el("th", {}, h))));
    for (const c of data.conditions) {
      t.appendChild(el("tr", {class: "cond-" + c.state},
        el("td", {}, GK.link(c.condition, c.label), c.scope ? el("small", {}, " (scope)") : null),
        el("td", {class: "state"}, c.state),
        el("td", {}, el("ul", {}, [...c.facts, ...c.questions].map((f) => el("li", {}, f))))));
    }
    panel.appendChild(t);
    if (data.status === "not-applicable" && data.because.length) {
      panel.appendChild(el("div", {class: "why-not"}, el("strong", {}, "Why not: "), el("ul", {}, data.because.map((b) => el("li", {}, b)))));
    }
    for (const w of data.would_change) {
      if (!w.any_of.length) continue;
      panel.appendChild(el("div", {class: "would-change"}, el("strong", {}, "Would become " + (STATUS[w.to] || w.to) + " if any one of these held:"),
        el("ol", {}, w.any_of.map((set) => el("li", {}, set.map((g) => g.question).join("; and "))))));
    }
  }

  // ------------------------------------------------------------------ the form from the case shapes
  const XSD = GK.prefixes.xsd;  // the predeclared prefixes of the server (core.namespaces)
  function input(f, prefix) {
    const id = prefix + "-" + GK.local(f.path);
    const dts = f.datatypes.map((d) => d.replace(XSD, ""));
    let control;
    if (f.kind === "choice") {
      control = el("select", {id: id, multiple: f.many, size: f.many ? Math.min(6, f.options.length) : null},
        f.many ? null : el("option", {value: ""}, "(not recorded)"), f.options.map((o) => el("option", {value: o.iri}, o.label)));
    } else if (dts.includes("boolean")) {
      control = el("select", {id: id}, el("option", {value: ""}, "(not recorded)"), el("option", {value: "true"}, "yes"), el("option", {value: "false"}, "no"));
    } else if (dts.includes("date")) {
      control = el("input", {id: id, type: "date"});
    } else if (dts.some((d) => ["integer", "decimal", "double", "float", "nonNegativeInteger"].includes(d))) {
      control = el("input", {id: id, type: "number", step: dts.every((d) => d.endsWith("nteger")) ? "1" : "any",
        min: f.min === null ? null : f.min, max: f.max === null ? null : f.max});
    } else {
      control = el("input", {id: id, type: "text"});
    }
    control.dataset.path = f.path;
    control.dataset.datatypes = JSON.stringify(f.datatypes);
    control.classList.add("field");
    return el("div", {class: "form-field" + (f.required ? " required" : "")},
      el("label", {for: id, title: f.description || f.path}, f.name + (f.required ? " *" : "")), control,
      f.description ? el("small", {class: "help"}, f.description) : null);
  }
  let counter = 0;
  function nodeGroup(f) {
    const box = el("fieldset", {class: "node-field", "data-path": f.path, "data-many": f.many ? "1" : ""},
      el("legend", {}, f.name));
    const add = el("button", {type: "button", class: "add"}, "Add " + f.name.replace(/^(has|had) /, ""));
    add.addEventListener("click", () => {
      const shape = form.nodes[f.node] || {fields: []};
      const prefix = "n" + (++counter);
      const typeSelect = el("select", {id: prefix + "-type", class: "node-type"}, f.types.map((t) => el("option", {value: t.iri}, t.label)));
      if (f.types.length > 1) typeSelect.value = f.types[f.types.length > 1 ? 1 : 0].iri;
      const item = el("div", {class: "node-item"},
        el("div", {class: "form-field"}, el("label", {for: prefix + "-type"}, "kind"), typeSelect),
        shape.fields.map((g) => input(g, prefix)));
      const remove = el("button", {type: "button", class: "remove"}, "Remove");
      remove.addEventListener("click", () => { item.remove(); add.hidden = false; });
      item.appendChild(remove);
      box.insertBefore(item, add);
      if (!f.many) add.hidden = true;
    });
    box.appendChild(add);
    return box;
  }
  async function buildForm() {
    const {data} = await GK.json("/case-form");
    form = data;
    const target = $("case-form");
    if (!form.root) { target.appendChild(el("p", {}, "The guideline package has no case shapes for a patient.")); return; }
    const name = el("div", {class: "form-field required"}, el("label", {for: "form-name"}, "case name *"),
      el("input", {id: "form-name", type: "text", value: "form-case", pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"}));
    const simple = el("fieldset", {class: "patient-fields"}, el("legend", {}, form.root.label), name);
    const linked = [];
    for (const f of form.root.fields) {
      if (f.kind === "node") linked.push(nodeGroup(f)); else simple.appendChild(input(f, "p"));
    }
    target.appendChild(simple);
    for (const box of linked) target.appendChild(box);
  }
  const iri = (v) => "<" + String(v).replace(/[<>"{}|^`\\\s]/g, encodeURIComponent) + ">";
  function literal(value, datatypes) {
    const s = String(value).replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n").replace(/\r/g, "\\r");
    const dts = datatypes.map((d) => d.replace(XSD, ""));
    let dt = null;
    if (dts.includes("integer") && /^-?\d+$/.test(value)) dt = "integer";
    else if (dts.includes("decimal")) dt = "decimal";
    else if (dts.length) dt = dts[0];
    return dt && dt !== "string" ? "\"" + s + "\"^^" + iri(XSD + dt) : "\"" + s + "\"";
  }
  function values(container, subject, out) {
    for (const c of container.querySelectorAll(":scope > .form-field > .field")) {
      const dts = JSON.parse(c.dataset.datatypes);
      const chosen = c.multiple ? [...c.selectedOptions].map((o) => o.value) : [c.value];
      for (const v of chosen) {
        if (v === "" || v === undefined) continue;
        if (c.tagName === "SELECT" && !dts.length) out.push(subject + " " + iri(c.dataset.path) + " " + iri(v) + " .");
        else out.push(subject + " " + iri(c.dataset.path) + " " + literal(v, dts) + " .");
      }
    }
  }
  function buildTurtle() {
    const name = ($("form-name").value || "form-case").trim();
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new Error("the case name must be letters, digits, '.', '_' or '-'");
    const patient = iri(form.base + name);
    const out = ["# built with the case form of the patient page", patient + " " + iri(GK.prefixes.rdf + "type") + " " + iri(form.root.class) + " ."];
    values(document.querySelector("#case-form > .patient-fields"), patient, out);
    let k = 0;
    for (const box of document.querySelectorAll("#case-form > .node-field")) {
      for (const item of box.querySelectorAll(":scope > .node-item")) {
        const node = iri(form.base + name + "-" + GK.local(box.dataset.path) + "-" + (++k));
        out.push(patient + " " + iri(box.dataset.path) + " " + node + " .");
        out.push(node + " " + iri(GK.prefixes.rdf + "type") + " " + iri(item.querySelector(".node-type").value) + " .");
        values(item, node, out);
      }
    }
    return {name: name, text: out.join("\n") + "\n"};
  }

  $("form-evaluate").addEventListener("click", async () => {
    try {
      const built = buildTurtle();
      $("case").value = built.text; $("case").dataset.name = built.name; $("format").value = "turtle";
      $("example").value = "";
      await evaluate();
    } catch (e) { status(String(e.message || e), "error"); }
  });
  $("evaluate").addEventListener("click", evaluate);
  $("example").addEventListener("change", (e) => pickExample(e.target.value));
  $("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
  $("case").addEventListener("input", () => { $("case").dataset.name = "pasted"; $("example").value = ""; });
  loadExamples().then(() => {
    const params = new URLSearchParams(location.search);
    if (params.get("case")) { $("example").value = params.get("case"); pickExample(params.get("case")); }
  });
  buildForm();
})();
