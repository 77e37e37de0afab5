"""FHIR operations of the server: ``PlanDefinition/$apply`` on the exported pathway (:mod:`outputs.apply`).

``register_fhir(app, config)`` adds to the FastAPI application of :mod:`service.app`:

- ``POST /fhir/PlanDefinition/{id}/$apply`` and ``POST /fhir/PlanDefinition/$apply`` (with ``url``): FHIR R4
  ``Parameters`` in (``subject``, ``data``), a ``CarePlan`` out; every refusal an ``OperationOutcome`` with its
  status (400 bad Parameters or data, 404 no such PlanDefinition, 415 not JSON, 422 invalid by the case shapes,
  503 busy). The body limit (413) and the token are the guard's (:mod:`service.guard`), as for every route.
- ``GET /fhir/PlanDefinition``: a searchset Bundle of the PlanDefinitions that can be applied (id, url, title);
  ``GET /fhir/PlanDefinition/{id}``: one of them.

The work runs in a pool of its own (``apply`` workers and queue, like CDS Hooks), so a slow application never
delays ``/health``, the pages or CDS Hooks. The exported pathway and its compiled FHIRPath are made on the first
call (compiling is seconds per condition) and kept for the life of the server.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from guideline_kg.core.errors import InputError
from guideline_kg.core.files import load_json
from guideline_kg.outputs.apply import Applier, ApplyError, outcome, read_parameters
from guideline_kg.service.guard import Busy, Pool, nested_deeper_than

__all__ = ["FHIR_JSON", "register_fhir"]

FHIR_JSON = "application/fhir+json"
#: Deepest nesting of arrays and objects accepted in Parameters (a Bundle in Parameters needs about 15).
MAX_DEPTH = 64


def _answer(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def _refusal(status: int, message: str, code: str = "invalid", headers: dict[str, str] | None = None) -> Response:
    return _answer(outcome([{"severity": "error", "code": code, "diagnostics": message}]), status, headers)


def _prepare(applier: Applier) -> None:
    """Parse the FHIRPath texts ahead of the first call; a failure here is left for that call to report."""
    with contextlib.suppress(Exception):  # reported by the call that needs the text, as an OperationOutcome
        applier.prepare()


def register_fhir(app: FastAPI, config: Any, workers: int = 1, queue: int = 8) -> None:
    """Add the FHIR routes for ``config`` (a :class:`service.app.ServerConfig`) to ``app``."""
    pool = Pool("$apply requests", workers, queue, config.timeout)
    made: dict[str, Applier] = {}
    lock = threading.Lock()

    def applier() -> Applier:
        """The pathway read and compiled, once (in a pool thread: it takes seconds); its FHIRPath texts are then
        parsed in the background (``Applier.prepare``), so the first ``$apply`` finds most of them ready."""
        with lock:
            if "applier" not in made:
                made["applier"] = Applier(config.knowledge, config.project)
                threading.Thread(target=_prepare, args=(made["applier"],), name="fhirpath-prepare",
                                 daemon=True).start()
            return made["applier"]

    def run(body: Any, instance: str | None) -> dict[str, Any]:
        request = read_parameters(body, instance)
        return applier().apply(request)

    async def apply(request: Request, instance: str | None) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in (FHIR_JSON, "application/json", "application/json+fhir"):
            return _refusal(415, f"unsupported Content-Type {ctype[:80] or '(none)'}: send FHIR Parameters as "
                                 f"{FHIR_JSON}", "not-supported")
        try:
            body = load_json(await request.body())
        except InputError as exc:  # malformed, not UTF-8, or nested too deeply
            return _refusal(400, f"the request body is not JSON: {exc}", "structure")
        if nested_deeper_than(body, MAX_DEPTH):
            return _refusal(400, f"the request body nests more than {MAX_DEPTH} levels deep", "structure")
        try:
            plan = await pool.run(run, body, instance)
        except Busy as exc:
            return _refusal(503, str(exc), "transient", {"Retry-After": str(exc.retry_after)})
        except ApplyError as exc:
            return _answer(exc.outcome(), exc.status)
        except InputError as exc:
            return _refusal(400, str(exc))
        return _answer(plan)

    @app.post("/fhir/PlanDefinition/$apply")
    async def apply_type(request: Request) -> Response:
        return await apply(request, None)

    @app.post("/fhir/PlanDefinition/{plan_id}/$apply")
    async def apply_instance(plan_id: str, request: Request) -> Response:
        return await apply(request, plan_id)

    @app.get("/fhir/PlanDefinition")
    async def plans() -> Response:
        try:
            found = await pool.run(lambda: applier().plans())
        except Busy as exc:
            return _refusal(503, str(exc), "transient", {"Retry-After": str(exc.retry_after)})
        return _answer({"resourceType": "Bundle", "type": "searchset", "total": len(found),
                        "entry": [{"resource": {k: p[k] for k in ("resourceType", "id", "url", "version", "title")
                                                if k in p}} for p in found]})

    @app.get("/fhir/PlanDefinition/{plan_id}")
    async def plan(plan_id: str) -> Response:
        try:
            found = await pool.run(lambda: applier().by_id.get(f"PlanDefinition/{plan_id}"))
        except Busy as exc:
            return _refusal(503, str(exc), "transient", {"Retry-After": str(exc.retry_after)})
        if found is None:
            return _refusal(404, f"no PlanDefinition/{plan_id[:64]} here; GET /fhir/PlanDefinition lists them",
                            "not-found")
        return _answer(found)
