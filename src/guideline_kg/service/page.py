"""The HTML of the server's pages: plain HTML whose scripts and style sheets are files of ``service/static``
(nothing loaded from outside, no inline script: the pages are served with ``Content-Security-Policy:
default-src 'self'``). Every value put into a page here is escaped; data for a script goes in a
``<script type="application/json">`` block, which is never executed.

- the patient page (``/``): paste, upload or pick a case, or fill the form built from the case shapes; the result
  of the one gate drawn (``static/patient.js``);
- the query page (``/query``): ``?example=NAME`` preselects a named query, ``?query=TEXT`` fills the editor,
  ``&run=1`` runs it on load (``static/query.js``);
- the algorithm page (``/algorithm``, ``?case=NAME``): the pathway scaled to the window;
- a resource page (``/resource?iri=``): what the graph says about one IRI.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

__all__ = ["algorithm_page", "message_page", "patient_page", "query_page", "resource_page"]


def _head(title: str, heading: str, current: str) -> str:
    nav = [("/", "Patient"), ("/query", "Query"), ("/algorithm", "Algorithm"), ("/cds-services", "CDS Hooks"),
           ("/health", "Health")]
    links = " ".join(f'<a href="{href}"' + (' aria-current="page"' if href == current else "") + f">{name}</a>"
                     for href, name in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(heading)} · guideline-kg</title>"
            f'<link rel="stylesheet" href="/static/page.css"></head><body>\n'
            f'<header><nav>{links}</nav><p class="guideline">{html.escape(title)}</p></header>\n')


PATIENT = """<main class="patient">
<h1>Evaluate a patient</h1>
<section id="input" aria-label="the case">
  <div class="row">
    <label>Example case <select id="example"><option value="">(choose a served case)</option></select></label>
    <label>or a file <input type="file" id="upload" accept=".ttl,.nt,.jsonld,.json"></label>
    <label>Format <select id="format"><option value="auto">detect</option><option value="turtle">Turtle</option>
      <option value="jsonld">JSON-LD</option><option value="fhir">FHIR R4 Bundle (JSON)</option></select></label>
  </div>
  <textarea id="case" spellcheck="false"
    placeholder="Paste a case here: Turtle, JSON-LD or a FHIR R4 Bundle"></textarea>
  <p><button id="evaluate" class="primary">Evaluate</button> <span id="status" role="status"></span></p>
  <details id="form-box"><summary>Build a case with the form (from the case shapes)</summary>
    <form id="case-form" novalidate></form>
    <p><button id="form-evaluate" type="button" class="primary">Build and evaluate</button>
       <small>The form writes the case as Turtle into the box above, then evaluates it.</small></p>
  </details>
</section>
<section id="result" aria-live="polite" hidden></section>
<p class="info"><small>{{INFO}}</small></p>
</main>
<script type="application/json" id="page-data">{{DATA}}</script>
<script src="/static/common.js"></script><script src="/static/patient.js"></script>
</body></html>
"""

QUERY = """<main class="query">
<h1>Query the graph</h1>
<p>SPARQL 1.1 endpoint: <code>/sparql</code> (read-only). <small>{{INFO}}.</small></p>
<div class="query-grid">
<nav id="examples" aria-label="named queries"></nav>
<div>
<p id="purpose"></p>
<textarea id="query" spellcheck="false">SELECT ?statement ?line ?text WHERE {
  ?statement gk:sourceLine ?line ; gk:verbatimText ?text .
} ORDER BY ?line LIMIT 10</textarea>
<p><button id="run" class="primary">Run query</button> <span id="status" role="status"></span></p>
<details id="prefix-box"><summary>Predeclared prefixes</summary><table id="prefixes"></table></details>
<div id="out"></div>
</div></div>
</main>
<script type="application/json" id="query-data">{{DATA}}</script>
<script src="/static/common.js"></script><script src="/static/query.js"></script>
</body></html>
"""


def patient_page(title: str, info: str, data: str) -> str:
    """The patient page (``/``); ``data``: the JSON of the prefixes, already made safe for a script block."""
    return _head(title, "Evaluate a patient", "/") + PATIENT.replace("{{INFO}}", html.escape(info)).replace(
        "{{DATA}}", data)


def query_page(title: str, info: str, data: str) -> str:
    """The query page (``/query``); ``data``: the JSON of the named queries by group and the prefixes, already
    made safe for a script block."""
    return _head(title, "Query", "/query") + QUERY.replace("{{INFO}}", html.escape(info)).replace("{{DATA}}", data)


def algorithm_page(title: str, cases: list[str], chosen: str | None, view: str, views: list[str]) -> str:
    """The treatment algorithm scaled to the window, optionally with a served case laid over it; ``view``: the
    rendition (the detailed chart or the overview)."""
    options = "".join(f'<option value="{html.escape(c)}"' + (" selected" if c == chosen else "")
                      + f">{html.escape(c)}</option>" for c in cases)
    renditions = "".join(f'<option value="{html.escape(v)}"' + (" selected" if v == view else "")
                         + f">{html.escape(v)}</option>" for v in views)
    src = "/algorithm.svg?" + urlencode({**({"case": chosen} if chosen else {}), "view": view})
    return (_head(title, "Treatment algorithm", "/algorithm")
            + '<main class="algorithm"><h1>Treatment algorithm</h1>'
            + '<form method="get" action="/algorithm" class="row"><label>Case overlay <select name="case" '
            + f'id="overlay-case"><option value="">(none)</option>{options}</select></label> '
            + f'<label>View <select name="view" id="overlay-view">{renditions}</select></label> '
            + '<button>Show</button> <button type="button" id="zoom">Actual size</button> '
            + f'<a href="{html.escape(src)}">SVG file</a></form>'
            + f'<figure class="chart fit" id="chart"><img id="chart-img" src="{html.escape(src)}" '
            + 'alt="the treatment algorithm"></figure></main>'
            + '<script src="/static/algorithm.js"></script></body></html>')


def resource_page(title: str, label: str, body: str) -> str:
    """A resource page; ``body`` is HTML already escaped by its maker (:func:`pages.resource_link`)."""
    return _head(title, label, "") + f'<main class="resource">{body}</main></body></html>'


def message_page(title: str, heading: str, message: str) -> str:
    return (_head(title, heading, "") + f"<main><h1>{html.escape(heading)}</h1><p>{html.escape(message)}</p>"
            "</main></body></html>")

