"""The HTTP service: a read-only SPARQL 1.1 Protocol endpoint, a query page, and a CDS Hooks service.

Queries on the embedded store run in a child process (:class:`worker.QueryWorker`) that is killed at the
time limit; on a remote store (``--store``) the HTTP client's timeout applies. Results are serialised by
pyoxigraph (:mod:`sparql_results`), chosen by the request's Accept header.

Every request first passes :mod:`guideline_kg.service.guard` (Host check, CORS when allowed, bearer token,
body limit); queries and CDS derivations run in pools of their own with bounded queues, so a flood of slow
queries gets 503 + ``Retry-After`` and never delays ``/health``, the pages or CDS Hooks (docs/security.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from rdflib import Graph
from starlette.middleware.cors import CORSMiddleware

from guideline_kg.cases.reader import Case
from guideline_kg.checks.gate import GateResult
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import DCTERMS, RDFS
from guideline_kg.core.project import Project
from guideline_kg.core.queries import list_queries
from guideline_kg.knowledge.graph import guideline_iri
from guideline_kg.service.cds import CDS_SERVICE_ID, MAX_DEPTH, register_cds
from guideline_kg.service.fhir_ops import register_fhir
from guideline_kg.service.guard import LOOPBACK_HOSTS, AccessLog, Busy, HostCheck, Limits, Pool
from guideline_kg.service.pages import register_pages
from guideline_kg.store.results import MEDIA_TYPES, QueryResult, QueryTimeout, ResultTooLarge, serialise
from guideline_kg.store.stores import SparqlSyntaxError

__all__ = ["CDS_SERVICE_ID", "LOOPBACK_HOSTS", "MAX_BODY", "MAX_DEPTH", "ServerConfig",
           "create_app", "is_update", "negotiate"]

log = logging.getLogger("guideline_kg.server")

#: Formats offered for each kind of result; the first is the default for */*.
OFFERS = {"solutions": ["json", "xml", "csv", "tsv"], "boolean": ["json", "xml", "csv", "tsv"],
          "graph": ["turtle", "nt", "jsonld", "rdfxml"]}
#: Extra media types accepted as aliases of a format.
ALIASES = {"application/json": "json", "application/xml": "xml", "text/xml": "xml",
           "text/plain": "nt", "application/x-turtle": "turtle", "application/json+ld": "jsonld"}
#: Default request-body limit in bytes (``serve --max-body``).
MAX_BODY = 1024 * 1024
_UPDATE = re.compile(r"^(INSERT|DELETE|LOAD|CLEAR|CREATE|DROP|COPY|MOVE|ADD|WITH)\b", re.IGNORECASE)
_PROLOGUE = re.compile(r"^\s*(?:(?:#[^\n]*\n)|(?:PREFIX\s+[^\s:]*:\s*<[^>]*>)|(?:BASE\s*<[^>]*>)|\s+)*",
                       re.IGNORECASE)


@dataclass
class ServerConfig:
    """What the server serves: the project, its knowledge graph, how queries run, and the limits."""

    project: Project
    knowledge: Graph
    run_query: Callable[[str, float, int | None], QueryResult]
    timeout: float = 10.0
    max_results: int = 10000
    store_label: str = "embedded"
    cases: list[Case] = field(default_factory=list)
    triples: int = 0
    invalid: list[GateResult] = field(default_factory=list)  #: cases the gate refused: listed, never served
    #: the request-body limit in bytes (413 above it) and the time a body may take to arrive (408 after it)
    max_body: int = MAX_BODY
    body_timeout: float = 30.0
    #: names accepted in the ``Host`` header (with LOOPBACK_HOSTS); None: no check (an application embedded in
    #: another server or a test client); ``serve`` always sets it
    allowed_hosts: tuple[str, ...] | None = None
    #: the bearer token every route but /health needs; None: no token
    token: str | None = None
    #: origins allowed by CORS; empty: no CORS headers at all (browsers keep other sites' pages out)
    cors_origins: tuple[str, ...] = ()
    #: queries running at once (1 for the embedded store's single worker process) and queries waiting
    query_workers: int = 1
    query_queue: int = 8
    #: CDS derivations running at once and waiting
    cds_workers: int = 2
    cds_queue: int = 16


def is_update(text: str) -> bool:
    """Whether a request's text is a SPARQL Update (after its prologue and comments)."""
    prologue = _PROLOGUE.match(text)  # matches at least the empty string
    return bool(_UPDATE.match(text[prologue.end() if prologue else 0:]))


def _accepted(header: str) -> list[tuple[str, float]]:
    out = []
    for i, part in enumerate(header.split(",")):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        out.append((fields[0].lower(), q - i * 1e-6))
    return sorted(out, key=lambda x: -x[1])


def negotiate(accept: str | None, kind: str) -> str | None:
    """The format name for an Accept header and a result kind; None when nothing offered is acceptable."""
    offers = OFFERS[kind]
    if not accept:
        return offers[0]
    by_type = {MEDIA_TYPES[f]: f for f in offers}
    by_type.update({m: f for m, f in ALIASES.items() if f in offers})
    for media, q in _accepted(accept):
        if q <= 0:
            continue
        if media in by_type:
            return by_type[media]
        if media in ("*/*", "application/*", "text/*"):
            top = media.split("/")[0]
            for f in offers:
                if top == "*" or MEDIA_TYPES[f].startswith(top + "/"):
                    return f
    return None


def _guideline_title(config: ServerConfig) -> str:
    g = guideline_iri(config.knowledge)
    return str(config.knowledge.value(g, DCTERMS.title) or config.knowledge.value(g, RDFS.label) or g)


def create_app(config: ServerConfig) -> Any:
    """The ASGI application for ``config``: the FastAPI routes behind the guards of :mod:`service.guard`."""
    app = _routes(config)
    guarded: Any = Limits(app, config.max_body, config.token, config.body_timeout)
    if config.cors_origins:
        guarded = CORSMiddleware(guarded, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                                 allow_headers=["Authorization", "Content-Type", "Accept"],
                                 expose_headers=["Retry-After"], max_age=600)
    if config.allowed_hosts is not None:
        guarded = HostCheck(guarded, (*LOOPBACK_HOSTS, *config.allowed_hosts))
    return AccessLog(guarded)


def _busy(exc: Busy) -> PlainTextResponse:
    return PlainTextResponse(f"{exc}\n", status_code=503, headers={"Retry-After": str(exc.retry_after)})


def _routes(config: ServerConfig) -> FastAPI:
    app = FastAPI(title="guideline-kg", docs_url=None, redoc_url=None, openapi_url=None)
    examples = list_queries(config.project.query_folders())
    queries_pool = Pool("queries", config.query_workers, config.query_queue, config.timeout)

    def problem(status: int, message: str) -> PlainTextResponse:
        return PlainTextResponse(message + "\n", status_code=status)

    register_pages(app, config, examples)  # /, /query, /algorithm, /resource, /evaluate... (service.pages)

    @app.get("/health")
    async def health() -> dict[str, Any]:  # async: answered on the event loop, never waits for a thread
        return {"status": "ok", "store": config.store_label, "triples": config.triples,
                "cases": [c.name for c in config.cases], "invalid_cases": [g.to_json() for g in config.invalid],
                "timeout_s": config.timeout,
                "max_results": config.max_results, "max_body": config.max_body,
                "queries": {"running_or_waiting": queries_pool.admitted,
                            "most": config.query_workers + config.query_queue},
                "token": config.token is not None}

    @app.get("/queries")
    def queries() -> list[dict[str, str]]:
        return [{"name": q.name, "purpose": q.purpose, "text": q.text} for q in examples]

    async def sparql(request: Request) -> Response:
        params = dict(request.query_params)
        query = params.get("query")
        if request.method == "POST":
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            body = (await request.body()).decode("utf-8", "replace")
            if ctype == "application/sparql-update":
                return problem(403, "this endpoint is read-only: SPARQL Update is refused")
            if ctype == "application/sparql-query":
                query = body
            elif ctype == "application/x-www-form-urlencoded":
                form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
                if "update" in form:
                    return problem(403, "this endpoint is read-only: SPARQL Update is refused")
                query = form.get("query", query)
            else:
                return problem(415, f"unsupported Content-Type {ctype or '(none)'}: use "
                                    "application/sparql-query or application/x-www-form-urlencoded")
        if "update" in params:
            return problem(403, "this endpoint is read-only: SPARQL Update is refused")
        if not query or not query.strip():
            return problem(400, "missing the query parameter (SPARQL 1.1 Protocol: query=...)")
        if is_update(query):
            return problem(403, "this endpoint is read-only: SPARQL Update is refused")
        try:
            result = await queries_pool.run(config.run_query, query, config.timeout, config.max_results)
        except Busy as exc:
            return _busy(exc)
        except SparqlSyntaxError as exc:
            return problem(400, str(exc))
        except QueryTimeout as exc:
            return problem(503, str(exc))
        except ResultTooLarge as exc:
            return problem(413, str(exc))
        except InputError as exc:
            return problem(400, str(exc))
        fmt = negotiate(request.headers.get("accept"), result.kind)
        if fmt is None:
            offered = ", ".join(MEDIA_TYPES[f] for f in OFFERS[result.kind])
            return problem(406, f"none of the accepted media types can carry this result; offered: {offered}")
        media = MEDIA_TYPES[fmt]
        media += "; charset=utf-8" if media.startswith("text/") or "json" in media else ""
        return Response(serialise(result, fmt), media_type=media, headers={"Vary": "Accept"})

    app.add_api_route("/sparql", sparql, methods=["GET", "POST"], include_in_schema=False)

    register_cds(app, config)  # CDS Hooks 2.0: discovery, patient-view, order-select, feedback (service.cds)
    register_fhir(app, config)  # FHIR: PlanDefinition/$apply on the exported pathway (service.fhir_ops)

    return app

