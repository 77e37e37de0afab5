"""The pages of the server and what their scripts call: the patient page (``/``), the query page (``/query``),
the algorithm page (``/algorithm``, ``/algorithm.svg?case=``), resource pages (``/resource?iri=``), and the JSON
endpoints behind them (``POST /evaluate``, ``POST /explain``, ``/case-form``, ``/cases``).

A pasted or uploaded case is written to a private temporary folder and read by the one reader
(:mod:`guideline_kg.cases.reader`, by its suffix: Turtle, JSON-LD or FHIR JSON), then let through the one gate
(:class:`guideline_kg.checks.gate.Gate`): an invalid case gets its violations and nothing else. The result drawn is
:meth:`CaseResult.to_json`, with the statements' sections (for grouping), the pathway overlay of
:func:`guideline_kg.outputs.render.render` and nothing computed here. Evaluations run in a bounded pool of their
own (503 + ``Retry-After`` when full), and the request body limit of :mod:`guard` applies as to every route.

Every page is plain HTML whose script and style are files of ``service/static``; each answer carries a
``Content-Security-Policy`` of ``default-src 'self'``, so nothing is loaded from outside and no inline script runs.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.term import Node

from guideline_kg.cases.model import Case
from guideline_kg.checks.gate import Gate, GateResult, case_shapes
from guideline_kg.core.errors import InputError
from guideline_kg.core.files import load_json
from guideline_kg.core.namespaces import DCTERMS, GK, PREFIXES, RDF, RDFS, SKOS, qname
from guideline_kg.core.queries import NamedQuery
from guideline_kg.knowledge.algorithm import build_graph
from guideline_kg.knowledge.graph import guideline_iri
from guideline_kg.knowledge.statements import list_statements
from guideline_kg.outputs.render import RENDITIONS, case_view, render
from guideline_kg.service import page
from guideline_kg.service.caseform import form_spec
from guideline_kg.service.guard import Busy, Pool
from guideline_kg.store.stores import EmbeddedStore

__all__ = ["CSP", "STATIC", "register_pages", "security_headers"]

#: Where the pages' scripts and style sheets are (served at /static/NAME).
STATIC = Path(__file__).with_name("static")
#: Every page and static file says: nothing from elsewhere, no inline script, no framing.
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png",
          ".svg": "image/svg+xml"}
#: Suffix the one reader reads a pasted case by, for each format the page offers.
_SUFFIX = {"turtle": ".ttl", "jsonld": ".jsonld", "fhir": ".fhir.json", "ntriples": ".nt"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Results kept for `explain` after an evaluation (by the case text's digest).
_KEPT = 32


def security_headers() -> dict[str, str]:
    """The headers of every page and static file."""
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=security_headers())


def _problem(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


def _busy(exc: Busy) -> PlainTextResponse:
    return PlainTextResponse(f"{exc}\n", status_code=503, headers={"Retry-After": str(exc.retry_after)})


def _data_block(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` block (never executed; ``</`` escaped)."""
    return json.dumps(value).replace("</", "<\\/").replace("<!--", "<\\!--")


def guess_format(text: str, hint: str | None = None) -> str:
    """The format of a pasted case: the one named, else FHIR JSON (an object with ``resourceType``), JSON-LD (any
    other JSON), or Turtle."""
    if hint in _SUFFIX:
        return hint
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "fhir" if re.search(r'"resourceType"\s*:', stripped[:4096]) else "jsonld"
    return "turtle"


class _Pages:
    """What the page routes share: the config, one gate, the statements' sections, results kept for explain."""

    def __init__(self, config: Any, examples: list[NamedQuery]) -> None:
        self.config = config
        self.examples = examples
        self.lock = threading.Lock()
        self._gate: Gate | None = None
        self.kept: OrderedDict[str, GateResult] = OrderedDict()
        self.pool = Pool("case evaluations", config.cds_workers, config.cds_queue, config.timeout)

    @property
    def gate(self) -> Gate:
        with self.lock:
            if self._gate is None:
                self._gate = Gate(self.config.knowledge, self.config.project)
            return self._gate

    def title(self) -> str:
        g = guideline_iri(self.config.knowledge)
        k = self.config.knowledge
        return str(k.value(g, DCTERMS.title) or k.value(g, RDFS.label) or g)

    @functools.cached_property
    def sections(self) -> dict[str, dict[str, Any]]:
        """Statement IRI to its section (IRI, label, order of first appearance in the source)."""
        statements = list_statements(EmbeddedStore.from_graph(self.config.knowledge), self.config.project)
        out: dict[str, dict[str, Any]] = {}
        order: dict[str, int] = {}
        for s in statements:
            section = s["section"]
            order.setdefault(section, len(order))
            trail = self._trail(section)
            out[s["id"]] = {"section": section, "label": trail[-1] if trail else "", "trail": trail,
                            "order": order[section]}
        return out

    def _trail(self, section: str) -> list[str]:
        """The labels of a section and of the sections it sits in (``gk:inSection``), outermost first: [Treatment
        Algorithm, First-Line Approaches, Pharmacologic Management]."""
        if not section:
            return []
        k = self.config.knowledge
        node: URIRef | None = URIRef(section)
        labels: list[str] = []
        seen: set[URIRef] = set()
        while node is not None and node not in seen:
            seen.add(node)
            label = k.value(node, RDFS.label)
            labels.append(str(label) if label is not None else qname(str(node)))
            parent = k.value(node, GK.inSection)
            node = parent if isinstance(parent, URIRef) else None
        return labels[::-1]

    @functools.cached_property
    def form(self) -> dict[str, Any]:
        return form_spec(case_shapes(self.config.project), self.config.knowledge)

    @functools.cached_property
    def algorithm(self) -> Any:
        if not self.config.project.part("algorithm"):
            return None
        return build_graph(self.config.knowledge, self.config.project) or None

    # ---------------------------------------------------------------- evaluation

    def served(self) -> list[dict[str, Any]]:
        """The example cases of ``serve``: valid ones and refused ones, each with its file."""
        out = [{"name": c.name, "file": c.source.name if c.source else None, "valid": True}
               for c in self.config.cases]
        out += [{"name": g.name, "file": g.source.name if g.source else None, "valid": False}
                for g in self.config.invalid]
        return sorted(out, key=lambda c: c["name"])

    def served_source(self, name: str) -> Path | None:
        for c in self.config.cases:
            if c.name == name and c.source is not None:
                return Path(c.source)
        for g in self.config.invalid:
            if g.name == name and g.source is not None:
                return Path(g.source)
        return None

    def evaluate(self, text: str, fmt: str, name: str) -> GateResult:
        """Read the text as a case file (the one reader) and let it through the gate; kept for `explain`."""
        key = hashlib.sha256(f"{fmt}\0{name}\0{text}".encode()).hexdigest()
        with self.lock:
            if key in self.kept:
                self.kept.move_to_end(key)
                return self.kept[key]
        with tempfile.TemporaryDirectory(prefix="gkg-page-") as folder:
            path = Path(folder) / f"{name}{_SUFFIX[fmt]}"
            path.write_text(text, encoding="utf-8")
            try:
                results = self.gate.read([path])
            except InputError as exc:
                raise InputError(str(exc).replace(folder + "/", "")) from None
            except Exception as exc:  # a FHIR resource the model refuses: the client's defect, not a crash
                raise InputError(re.sub(r"\s+", " ", str(exc)).replace(folder + "/", "")[:500]) from None
        if len(results) != 1:
            raise InputError(f"{path.name}: the text holds {len(results)} patients; paste one case at a time")
        gated = results[0]
        if gated.error is not None:
            raise InputError(str(gated.error).replace(folder + "/", ""))
        with self.lock:
            self.kept[key] = gated
            while len(self.kept) > _KEPT:
                self.kept.popitem(last=False)
        return gated

    def svg(self, case: Case, gated: GateResult, rendition: str = "overview") -> str | None:
        """The pathway with the case laid over it, in ``rendition`` (the overview is legible at a column's width;
        None when the package has no algorithm or Graphviz fails)."""
        if self.algorithm is None or gated.result is None:
            return None
        try:
            view = case_view(self.algorithm, self.config.knowledge, self.config.project, case,
                             evaluator=self.gate.evaluator, result=gated.result)
            return render(self.algorithm, "svg", view=view, title=f"{self.title()}\ncase {case.name}",
                          rendition=rendition).decode()
        except Exception:  # Graphviz missing or failing: the page shows the rest
            return None

    def answer(self, gated: GateResult, with_svg: bool = True) -> tuple[int, dict[str, Any]]:
        """The JSON of an evaluation: the result (or the violations) and what the page groups it by."""
        if not gated.valid or gated.result is None:
            return 422, {"valid": False, "case": gated.name, "notes": gated.input_notes(),
                         "violations": [v.to_json() for v in gated.violations],
                         "warnings": [v.to_json() for v in gated.warnings]}
        result = gated.result.to_json()
        counts: dict[str, int] = {}
        for r in result["recommendations"]:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        sections = {r["id"]: self.sections.get(r["id"], {"section": "", "label": "", "trail": [], "order": 9999})
                    for r in result["recommendations"]}
        out = {"valid": True, "case": gated.name, "result": result, "sections": sections, "counts": counts,
               "notes": gated.input_notes(), "warnings": [v.to_json() for v in gated.warnings],
               "labels": {iri: _label(self.config.knowledge, URIRef(iri))
                          for r in result["recommendations"] for iri in r["action"] or []}}
        if with_svg and gated.case is not None:
            out["svg"] = self.svg(gated.case, gated)
        return 200, out


def _label(graph: Graph, node: Node) -> str:
    value = graph.value(node, SKOS.prefLabel) or graph.value(node, RDFS.label)
    return str(value) if value is not None else qname(str(node))


async def _case_body(request: Request) -> tuple[str, str, str, dict[str, Any]]:
    """The case of an /evaluate or /explain request: ``{"text", "format"?, "name"?}`` as JSON."""
    try:
        body = load_json(await request.body())
    except InputError as exc:
        raise InputError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
        raise InputError('send {"text": "<the case: Turtle, JSON-LD or a FHIR Bundle>", "format": "turtle|jsonld|'
                         'fhir" (optional), "name": "<case name>" (optional)}')
    hint = body.get("format")
    if hint not in (None, "", "auto", *_SUFFIX):
        raise InputError(f"format must be one of auto, {', '.join(_SUFFIX)}; got {str(hint)[:40]!r}")
    name = body.get("name") or "pasted"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError("name must be letters, digits, '.', '_' or '-' (at most 64, starting with a letter or "
                         "digit)")
    return body["text"], guess_format(body["text"], hint), name, body


def register_pages(app: FastAPI, config: Any, examples: list[NamedQuery]) -> None:
    """Add the pages and their endpoints to ``app`` (a :class:`guideline_kg.service.app.ServerConfig` as
    ``config``; ``examples``: the named queries the query page offers)."""
    pages = _Pages(config, examples)
    static = {p.name: p for p in STATIC.iterdir() if p.suffix in _MEDIA} if STATIC.is_dir() else {}

    @app.get("/", response_class=HTMLResponse)
    def patient_page(request: Request) -> Response:
        if "example" in request.query_params or "query" in request.query_params:  # the query page's old links
            return RedirectResponse("/query?" + urlencode(list(request.query_params.multi_items())), 307)
        return _html(page.patient_page(pages.title(), _info(config), _prefix_data()))

    @app.get("/patient", response_class=HTMLResponse)
    def patient_alias() -> Response:
        return _html(page.patient_page(pages.title(), _info(config), _prefix_data()))

    @app.get("/query", response_class=HTMLResponse)
    def query_page() -> Response:
        cq = {str(f.resolve()) for f in config.project.parts("competency_questions")}
        groups: dict[str, list[dict[str, str]]] = {}
        for q in examples:
            folder = {str(p.resolve()) for p in q.path.parents}
            group = ("Competency questions" if folder & cq else "Checks" if q.path.parent.name == "checks"
                     else "Exports" if q.name.startswith("export-") else "Queries the tool runs")
            groups.setdefault(group, []).append({"name": q.name, "purpose": q.purpose, "text": q.text})
        order = ["Competency questions", "Checks", "Exports", "Queries the tool runs"]
        data = {"groups": [{"label": g, "queries": groups[g]} for g in order if g in groups],
                "prefixes": {p: str(ns) for p, ns in PREFIXES.items()}}
        return _html(page.query_page(pages.title(), _info(config), _data_block(data)))

    @app.get("/favicon.ico")
    def favicon() -> Response:  # no icon: say so without a 404 in every browser console
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        path = static.get(name)
        if path is None:
            return _problem(404, f"no static file {name[:80]!r}")
        return Response(path.read_bytes(), media_type=_MEDIA[path.suffix],
                        headers={**security_headers(), "Cache-Control": "no-cache"})

    @app.get("/cases")
    def cases() -> list[dict[str, Any]]:
        return pages.served()

    @app.get("/cases/{name}")
    def case_source(name: str) -> Response:
        path = pages.served_source(name)
        if path is None:
            return _problem(404, f"no served case {name[:80]!r}; see /cases")
        fmt = "fhir" if path.name.endswith(".json") and not path.name.endswith(".jsonld") else \
            "jsonld" if path.suffix == ".jsonld" else "ntriples" if path.suffix == ".nt" else "turtle"
        return JSONResponse({"name": name, "file": path.name, "format": fmt,
                             "text": path.read_text(encoding="utf-8", errors="replace")})

    @app.get("/case-form")
    def case_form() -> dict[str, Any]:
        return pages.form

    @app.post("/evaluate")
    async def evaluate(request: Request) -> Response:
        try:
            text, fmt, name, _ = await _case_body(request)
            gated = await pages.pool.run(pages.evaluate, text, fmt, name)
            status, out = await pages.pool.run(pages.answer, gated)
        except Busy as exc:
            return _busy(exc)
        except InputError as exc:
            return JSONResponse({"valid": False, "error": str(exc)}, status_code=400)
        return JSONResponse(out, status_code=status)

    @app.post("/explain")
    async def explain(request: Request) -> Response:
        try:
            text, fmt, name, body = await _case_body(request)
            statement = body.get("statement")
            if not isinstance(statement, str) or not statement:
                raise InputError('add "statement": the IRI of a statement of the result')
            gated = await pages.pool.run(pages.evaluate, text, fmt, name)
            if not gated.valid or gated.result is None:
                status, out = pages.answer(gated, with_svg=False)
                return JSONResponse(out, status_code=status)
            result = gated.result
            out = await pages.pool.run(result.explain, statement)
        except Busy as exc:
            return _busy(exc)
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(out)

    @functools.lru_cache(maxsize=2)
    def plain_svg(rendition: str) -> bytes:
        if pages.algorithm is None:
            raise LookupError(f"the guideline package at {config.project.kg_dir} has no treatment algorithm "
                              "(guideline.toml [parts] algorithm, with gk:Transition edges)")
        return render(pages.algorithm, "svg", title=f"{pages.title()}\ntreatment algorithm", rendition=rendition)

    case_svgs: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def served_svg(name: str, rendition: str) -> bytes:
        with pages.lock:
            if (name, rendition) in case_svgs:
                return case_svgs[(name, rendition)]
        case = next((c for c in config.cases if c.name == name), None)
        if case is None:
            known = ", ".join(c.name for c in config.cases) or "none"
            raise InputError(f"no served case {name[:80]!r} (served: {known})")
        if pages.algorithm is None:
            raise LookupError("the guideline package has no treatment algorithm")
        gated = pages.gate.admit([case])[0]
        svg = pages.svg(case, gated, rendition)
        if svg is None:
            raise RuntimeError("Graphviz could not draw the case overlay")
        with pages.lock:
            case_svgs[(name, rendition)] = svg.encode()
            while len(case_svgs) > 8:
                case_svgs.popitem(last=False)
        return svg.encode()

    @app.get("/algorithm.svg")
    async def algorithm_svg_route(case: str | None = None, view: str = "detailed") -> Response:
        if view not in RENDITIONS:
            return _problem(400, f"view must be one of {', '.join(RENDITIONS)}, not {view[:40]!r}")
        try:
            svg = await pages.pool.run(served_svg, case, view) if case else plain_svg(view)
        except Busy as exc:
            return _busy(exc)
        except (InputError, LookupError) as exc:  # an unknown served case
            return _problem(404, str(exc))
        except Exception as exc:  # Graphviz missing or failing: say so, do not crash the server
            return _problem(500, f"cannot render the algorithm: {exc}")
        return Response(svg, media_type="image/svg+xml", headers=security_headers())

    @app.get("/algorithm", response_class=HTMLResponse)
    def algorithm_page(case: str | None = None, view: str = "detailed") -> Response:
        names = [c.name for c in config.cases]
        chosen = case if case in names else None
        return _html(page.algorithm_page(pages.title(), names, chosen, view if view in RENDITIONS else "detailed",
                                         list(RENDITIONS)))

    @app.get("/resource", response_class=HTMLResponse)
    def resource(iri: str = "") -> Response:
        if not iri:
            return _html(page.message_page(pages.title(), "No resource", "Give ?iri=<full IRI>."), 400)
        return _html(_resource_page(config, pages.title(), iri))


def _prefix_data() -> str:
    return _data_block({"prefixes": {p: str(ns) for p, ns in PREFIXES.items()}})


def _info(config: Any) -> str:
    return (f"store: {config.store_label}; {config.triples} triples; {len(config.cases)} cases"
            + (f" ({len(config.invalid)} invalid cases left out: " + ", ".join(g.where for g in config.invalid)
               + "; see /health)" if config.invalid else "")
            + f"; time limit {config.timeout:g} s; at most {config.max_results} results")


def resource_link(term: Node) -> str:
    """An HTML link to the resource page of an IRI, shown as its prefixed name; a literal or blank node as
    text (everything escaped)."""
    if isinstance(term, URIRef):
        return (f'<a href="/resource?iri={quote(str(term), safe="")}" title="{html.escape(str(term))}">'
                f'{html.escape(qname(str(term)))}</a>')
    if isinstance(term, BNode):
        return f"<span class=bnode>_:{html.escape(str(term))}</span>"
    if isinstance(term, Literal):
        marker = f"@{term.language}" if term.language else qname(str(term.datatype)) if term.datatype else ""
        tail = f" <small>{html.escape(marker)}</small>" if marker else ""
        return f"<span class=literal>{html.escape(str(term))}</span>{tail}"
    return html.escape(str(term))


def _resource_page(config: Any, title: str, iri: str) -> str:
    """The triples about one IRI in the knowledge graph and the served cases, its label, and for a statement its
    source lines and verbatim text."""
    node = URIRef(iri)
    graphs = [config.knowledge, *[c.graph for c in config.cases]]
    outgoing = sorted({(p, o) for g in graphs for p, o in g.predicate_objects(node)}, key=lambda t: (str(t[0]),
                                                                                                   str(t[1])))
    incoming = sorted({(s, p) for g in graphs for s, p in g.subject_predicates(node)},
                      key=lambda t: (str(t[1]), str(t[0])))
    k = config.knowledge
    label = _label(k, node) if (node, None, None) in k or outgoing else qname(iri)
    lines = sorted({int(str(v)) for v in k.objects(node, GK.sourceLine) if str(v).isdigit()})
    texts = [str(v) for v in k.objects(node, GK.verbatimText)]
    types = sorted(str(t) for t in k.objects(node, RDF.type))
    parts = [f"<h2>{html.escape(label)}</h2>", f"<p class=iri><code>{html.escape(iri)}</code></p>"]
    if types:
        parts.append("<p>a " + ", ".join(resource_link(URIRef(t)) for t in types) + "</p>")
    if lines or texts:
        where = ", ".join(str(n) for n in lines)
        parts.append(f'<blockquote class=source><p class=line>source line {html.escape(where)}</p>'
                     + "".join(f"<p>{html.escape(t)}</p>" for t in texts) + "</blockquote>")
    if not outgoing and not incoming:
        parts.append("<p>Nothing in the served graph is about this IRI.</p>")
    limit = 300
    if outgoing:
        parts.append("<h3>Properties</h3><table class=triples><tr><th>property</th><th>value</th></tr>"
                     + "".join(f"<tr><td>{resource_link(p)}</td><td>{resource_link(o)}</td></tr>"
                               for p, o in outgoing[:limit]) + "</table>")
    if incoming:
        parts.append("<h3>Used by</h3><table class=triples><tr><th>subject</th><th>property</th></tr>"
                     + "".join(f"<tr><td>{resource_link(s)}</td><td>{resource_link(p)}</td></tr>"
                               for s, p in incoming[:limit]) + "</table>"
                     + (f"<p>({len(incoming) - limit} more not shown)</p>" if len(incoming) > limit else ""))
    return page.resource_page(title, label, "\n".join(parts))
