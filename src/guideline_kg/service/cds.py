"""The CDS Hooks 2.0 service of the server: discovery, ``patient-view``, ``order-select`` and feedback.

``register_cds(app, config)`` adds the routes to the FastAPI application of :mod:`service.app`:

- ``GET /cds-services``: the services, with prefetch templates that are FHIR reads and searches only, derived
  from the resource types the package's FHIR case mapping reads (``Patient/{{context.patientId}}``,
  ``Condition?patient={{context.patientId}}``, ...); ``order-select`` is offered when the mapping names the
  codes of draft orders (``"cds"."orders"``).
- ``POST /cds-services/{id}``: the patient's data is assembled from the prefetch (the search Bundles and the
  Patient, or one collection Bundle under ``bundle``); what is missing is fetched from ``fhirServer`` with
  ``fhirAuthorization.access_token`` (GET only, that server's origin only, short timeouts, size-bounded; the one
  place the server fetches anything, on the EHR's instruction, docs/security.md); 412 when neither yields it.
  The data goes through the one gate (``checks.gate``): an invalid case gets one card saying why and no
  recommendation; a valid one gets the cards of :func:`outputs.cds_cards.cards_for`.
- ``POST /cds-services/{id}/feedback``: CDS Hooks 2.0 feedback, validated (400 with the reasons), logged as one
  structured line, answered 200.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from guideline_kg.cases.fhir_in import project_rules
from guideline_kg.checks.gate import Gate, GateResult
from guideline_kg.core.errors import InputError
from guideline_kg.core.files import load_json
from guideline_kg.outputs.cds_cards import cards_for, cds_knowledge, order_actions, refusal_cards
from guideline_kg.service.guard import Busy, Pool, nested_deeper_than

__all__ = ["CDS_SERVICE_ID", "FETCH_MAX_BYTES", "FETCH_TIMEOUT", "LEGACY_BUNDLE_KEY", "MAX_DEPTH",
           "ORDER_SERVICE_ID", "Precondition", "prefetch_templates", "register_cds"]

log = logging.getLogger("guideline_kg.server")

#: The id of the patient-view service (generic: the guideline's title is read from the graph).
CDS_SERVICE_ID = "guideline-kg-patient-view"
#: The id of the order-select service (offered when the package maps the codes of draft orders).
ORDER_SERVICE_ID = "guideline-kg-order-select"
#: Deepest nesting of arrays and objects accepted in a CDS Hooks request (a FHIR Bundle needs about a dozen).
MAX_DEPTH = 64
#: A prefetch key accepted beside the templates' keys: one collection Bundle of all the patient's data (the
#: project's example bundles as they are); it satisfies every template.
LEGACY_BUNDLE_KEY = "bundle"
#: Fetching from ``fhirServer``: seconds per request (connect, read), for all requests of one call, the most
#: bytes of all answers together, and pages followed per search.
FETCH_TIMEOUT = 5.0
FETCH_BUDGET = 15.0
FETCH_MAX_BYTES = 8 * 1024 * 1024
FETCH_MAX_PAGES = 10
#: A FHIR id (FHIR R4 datatype ``id``): what ``context.patientId`` may be, since it names the case and the reads.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: ``hookInstance``: a UUID in CDS Hooks 2.0; any short token of these characters is taken.
_HOOK_INSTANCE = re.compile(r"[A-Za-z0-9\-._:]{1,128}")
#: A bearer token as RFC 6750 writes it (b64token), at most 8 KiB.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: RFC 3339 date-time (CDS Hooks 2.0 Feedback ``outcomeTimestamp``).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


class Precondition(Exception):
    """The service cannot get the patient's data: HTTP 412 (CDS Hooks 2.0, CDS Service Response)."""


# ------------------------------------------------------------------------------------------- request checks


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _shown(value: Any) -> str:
    return repr(value[:80]) if isinstance(value, str) else _type_name(value)


def _request_defects(body: Any, hook: str) -> list[str]:
    """What is wrong with a CDS Hooks 2.0 request for ``hook`` (patient-view or order-select), each a reason for
    the client; empty when it is well formed. The prefetch values are checked when they are read."""
    if not isinstance(body, dict):
        return [f"the request must be a JSON object, got {_type_name(body)}"]
    if nested_deeper_than(body, MAX_DEPTH):
        return [f"nested too deeply (arrays or objects more than {MAX_DEPTH} levels deep)"]
    defects = []
    given = body.get("hook")
    if given is None:
        defects.append(f"missing hook (\"{hook}\")")
    elif given != hook:
        defects.append(f"this service answers the {hook} hook, not {str(given)[:80]!r}")
    instance = body.get("hookInstance")
    if instance is None:
        defects.append("missing hookInstance (a UUID for this call)")
    elif not isinstance(instance, str) or not _HOOK_INSTANCE.fullmatch(instance):
        defects.append("hookInstance must be a UUID (letters, digits, '-', '.', '_', ':'; at most 128), got "
                       + _shown(instance))
    context = body.get("context")
    if context is None:
        defects.append("missing context (with the patientId)")
    elif not isinstance(context, dict):
        defects.append(f"context must be a JSON object, got {_type_name(context)}")
    else:
        patient = context.get("patientId")
        if patient is None:
            defects.append("missing context.patientId")
        elif not isinstance(patient, str) or not _FHIR_ID.fullmatch(patient):
            defects.append("context.patientId must be a FHIR id (letters, digits, '-' and '.'; at most 64), got "
                           + _shown(patient))
        for key in ("userId", "encounterId"):
            if key in context and not isinstance(context[key], str):
                defects.append(f"context.{key} must be a string, got {_type_name(context[key])}")
        if hook == "order-select":
            defects += _order_defects(context)
    defects += _server_defects(body)
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        defects.append(f"prefetch must be a JSON object, got {_type_name(prefetch)}")
    return defects


def _order_defects(context: dict[str, Any]) -> list[str]:
    """order-select: ``selections`` (ids ``Type/id`` of the draft orders) and ``draftOrders`` (a Bundle)."""
    defects = []
    selections, orders = context.get("selections"), context.get("draftOrders")
    if not isinstance(selections, list) or not selections or not all(isinstance(s, str) for s in selections):
        defects.append("context.selections must be a non-empty array of order ids such as "
                       f"\"MedicationRequest/123\", got {_type_name(selections)}")
    if not isinstance(orders, dict) or orders.get("resourceType") != "Bundle":
        defects.append("context.draftOrders must be a FHIR Bundle of the draft orders, got "
                       + (repr(str(orders.get("resourceType"))[:40]) if isinstance(orders, dict)
                          else _type_name(orders)))
    elif not isinstance(orders.get("entry", []), list):
        defects.append("context.draftOrders.entry must be a list of entries")
    elif isinstance(selections, list) and all(isinstance(s, str) for s in selections):
        ids = {f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}" for e in orders.get("entry", [])
               if isinstance(e, dict) and isinstance(e.get("resource"), dict)}
        defects += [f"context.selections names {s[:80]!r}, which is not in context.draftOrders"
                    for s in selections if s not in ids]
    return defects


def _server_defects(body: dict[str, Any]) -> list[str]:
    """``fhirServer`` (an http(s) base URL) and ``fhirAuthorization`` (an object with a bearer token)."""
    defects = []
    server, auth = body.get("fhirServer"), body.get("fhirAuthorization")
    if server is not None:
        if not isinstance(server, str):
            defects.append(f"fhirServer must be a string, got {_type_name(server)}")
        else:
            parts = urlsplit(server) if len(server) <= 2048 else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc \
                    or parts.query or parts.fragment:
                defects.append("fhirServer must be the http(s) base URL of a FHIR server (no user, query or "
                               f"fragment), got {_shown(server)}")
    if auth is not None:
        if not isinstance(auth, dict):
            defects.append(f"fhirAuthorization must be an object, got {_type_name(auth)}")
        else:
            token = auth.get("access_token")
            if not isinstance(token, str) or len(token) > 8192 or not _TOKEN.fullmatch(token):
                defects.append("fhirAuthorization.access_token must be an OAuth 2.0 bearer token (RFC 6750 "
                               "characters), got " + ("a malformed string" if isinstance(token, str)
                                                      else _type_name(token)))
            kind = auth.get("token_type", "Bearer")
            if not isinstance(kind, str) or kind.lower() != "bearer":
                defects.append(f"fhirAuthorization.token_type must be \"Bearer\", got {_shown(kind)}")
            if server is None:
                defects.append("fhirAuthorization needs fhirServer (CDS Hooks 2.0: fhirServer is REQUIRED when "
                               "fhirAuthorization is given)")
    return defects


def _feedback_defects(body: Any) -> list[str]:
    """What is wrong with a CDS Hooks 2.0 feedback request (``{"feedback": [...]}``)."""
    if not isinstance(body, dict):
        return [f"the feedback must be a JSON object, got {_type_name(body)}"]
    if nested_deeper_than(body, MAX_DEPTH):
        return [f"nested too deeply (arrays or objects more than {MAX_DEPTH} levels deep)"]
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        return [f"feedback must be a non-empty array of Feedback objects, got {_type_name(items)}"]
    defects = []
    for i, item in enumerate(items[:100]):
        at = f"feedback[{i}]"
        if not isinstance(item, dict):
            defects.append(f"{at} must be an object, got {_type_name(item)}")
            continue
        if not isinstance(item.get("card"), str) or not item["card"]:
            defects.append(f"{at}.card must be the card's uuid (a string)")
        outcome = item.get("outcome")
        if outcome not in ("accepted", "overridden"):
            defects.append(f"{at}.outcome must be \"accepted\" or \"overridden\", got {_shown(outcome)}")
        accepted = item.get("acceptedSuggestions")
        if outcome == "accepted" and (not isinstance(accepted, list) or not accepted):
            defects.append(f"{at}.acceptedSuggestions is required for an accepted outcome (an array of {{\"id\"}})")
        if accepted is not None and (not isinstance(accepted, list) or not all(
                isinstance(a, dict) and isinstance(a.get("id"), str) for a in accepted)):
            defects.append(f"{at}.acceptedSuggestions must be an array of objects with the suggestion's uuid as id")
        reason = item.get("overrideReason")
        if reason is not None:
            if not isinstance(reason, dict) or not ("reason" in reason or "userComment" in reason):
                defects.append(f"{at}.overrideReason must be an object with reason (a Coding) or userComment")
            else:
                coding = reason.get("reason")
                if coding is not None and not (isinstance(coding, dict) and isinstance(coding.get("code"), str)
                                               and isinstance(coding.get("system"), str)):
                    defects.append(f"{at}.overrideReason.reason must be a Coding with code and system")
                if "userComment" in reason and not isinstance(reason["userComment"], str):
                    defects.append(f"{at}.overrideReason.userComment must be a string")
        stamp = item.get("outcomeTimestamp")
        if not isinstance(stamp, str) or not _RFC3339.fullmatch(stamp):
            defects.append(f"{at}.outcomeTimestamp must be an RFC 3339 date-time such as 2026-03-10T09:30:00Z, "
                           f"got {_shown(stamp)}")
    if len(items) > 100:
        defects.append("at most 100 feedback objects in one request")
    return defects


# ------------------------------------------------------------------------------------------- the patient's data

def prefetch_templates(config: Any) -> dict[str, str]:
    """The prefetch templates: a read of the Patient and a search by patient of each resource type the package's
    FHIR case mapping reads (keys: the resource type in lower case)."""
    rules = project_rules(config.project, "the CDS Hooks service")
    patient_type = str(rules.patient.get("resourceType", "Patient"))
    out = {patient_type.lower(): f"{patient_type}/{{{{context.patientId}}}}"}
    for rule in rules.rules:
        for rtype in rule["resources"]:
            out.setdefault(rtype.lower(), f"{rtype}?patient={{{{context.patientId}}}}")
    return out


def _bundle_resources(value: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], bool]:
    """The entries (``fullUrl`` and ``resource``) of a prefetched or fetched Bundle, OperationOutcomes left out,
    and whether it has a next page (CDS Hooks 2.0 lets a client paginate prefetch)."""
    entries = value.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"{where}.entry must be a list of entries")
    resources = []
    for e in entries:
        res = e.get("resource")
        if isinstance(res, dict) and res.get("resourceType") not in (None, "OperationOutcome") and \
                (e.get("search") or {}).get("mode") != "outcome":
            resources.append({"fullUrl": e["fullUrl"], "resource": res} if isinstance(e.get("fullUrl"), str)
                             else {"resource": res})
    links = value.get("link") or []
    more = isinstance(links, list) and any(isinstance(x, dict) and x.get("relation") == "next" for x in links)
    return resources, more


class _Fetcher:
    """GETs of FHIR reads and searches from one ``fhirServer``, with its bearer token: that origin only, no
    redirects, no proxies from the environment, short timeouts, a byte and a time budget for the whole call."""

    def __init__(self, server: str, token: str) -> None:
        self.base = server.rstrip("/")
        parts = urlsplit(server)
        self.origin = (parts.scheme, parts.netloc.lower())
        self.token = token
        self.spent = 0
        self.deadline = time.monotonic() + FETCH_BUDGET

    def get(self, url: str, what: str) -> Any:
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc.lower()) != self.origin:
            raise Precondition(f"{what}: the FHIR server's link {url[:120]!r} leaves its origin; not followed")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Precondition(f"{what}: the FHIR server took longer than {FETCH_BUDGET:g} s in all")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/fhir+json"}
        try:
            with httpx.Client(timeout=httpx.Timeout(min(FETCH_TIMEOUT, left)), follow_redirects=False,
                              trust_env=False) as client, client.stream("GET", url, headers=headers) as resp:
                if resp.status_code != 200:
                    raise Precondition(f"{what}: the FHIR server answered HTTP {resp.status_code}")
                data = bytearray()
                for chunk in resp.iter_bytes():
                    data += chunk
                    if self.spent + len(data) > FETCH_MAX_BYTES:
                        raise Precondition(f"{what}: the FHIR server's answers exceed {FETCH_MAX_BYTES} bytes")
                    if time.monotonic() > self.deadline:
                        raise Precondition(f"{what}: the FHIR server took longer than {FETCH_BUDGET:g} s in all")
        except httpx.HTTPError as exc:
            raise Precondition(f"{what}: cannot reach the FHIR server ({type(exc).__name__})") from None
        self.spent += len(data)
        try:
            value = load_json(bytes(data))
        except InputError as exc:
            raise Precondition(f"{what}: the FHIR server's answer is not JSON ({exc})") from None
        if not isinstance(value, dict) or nested_deeper_than(value, MAX_DEPTH):
            raise Precondition(f"{what}: the FHIR server's answer is not a FHIR resource")
        return value

    def search(self, query: str, key: str) -> tuple[list[dict[str, Any]], Any]:
        """Every resource a read or a search gives (following ``next`` links), and the Bundle's timestamp."""
        value = self.get(f"{self.base}/{query}", f"prefetch {key} ({query})")
        if value.get("resourceType") != "Bundle":
            return [{"resource": value}], None
        out, stamp = [], value.get("timestamp")
        for _ in range(FETCH_MAX_PAGES):
            resources, more = _bundle_resources(value, f"the FHIR server's answer to {query}")
            out += resources
            if not more:
                return out, stamp
            url = next(x["url"] for x in value["link"] if isinstance(x, dict) and x.get("relation") == "next")
            value = self.get(str(url), f"prefetch {key} (next page)")
        raise Precondition(f"prefetch {key} ({query}): more than {FETCH_MAX_PAGES} pages")


def assemble(body: dict[str, Any], templates: dict[str, str]) -> dict[str, Any]:
    """The patient's data as one FHIR collection Bundle: the prefetch values (each a resource, a search Bundle,
    or null for "no data"), and what they lack fetched from ``fhirServer``; :class:`Precondition` when neither
    gives it. The Bundle's timestamp (the assessment date of the case) is the prefetch or search Bundles' latest
    timestamp, else now."""
    patient_id = body["context"]["patientId"]
    prefetch = body.get("prefetch") or {}
    resources: list[dict[str, Any]] = []
    stamps: list[str] = []
    missing: dict[str, str] = {}
    legacy = prefetch.get(LEGACY_BUNDLE_KEY)
    if legacy is not None:
        if not isinstance(legacy, dict) or legacy.get("resourceType") != "Bundle":
            got = legacy.get("resourceType") if isinstance(legacy, dict) else _type_name(legacy)
            raise InputError(f"prefetch.{LEGACY_BUNDLE_KEY} must be a FHIR Bundle (resourceType \"Bundle\"), "
                             f"got {got!r}")
        found, _ = _bundle_resources(legacy, f"prefetch.{LEGACY_BUNDLE_KEY}")
        if not any(e["resource"].get("resourceType") == "Patient" for e in found):
            raise Precondition(f"prefetch.{LEGACY_BUNDLE_KEY} has no Patient resource")
        if isinstance(legacy.get("timestamp"), str):
            return legacy  # the whole record, read as the reader reads a *.fhir.json file
        return {**legacy, "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    for key, template in templates.items():
        if key not in prefetch:
            missing[key] = template
            continue
        value = prefetch[key]
        if value is None:  # the client has no data for this template
            continue
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise InputError(f"prefetch.{key} must be a FHIR resource or Bundle (an object with resourceType), "
                             f"got {_type_name(value)}")
        if value["resourceType"] == "Bundle":
            found, more = _bundle_resources(value, f"prefetch.{key}")
            resources += found
            stamps += [value["timestamp"]] if isinstance(value.get("timestamp"), str) else []
            if more:
                missing[key] = template  # a paginated prefetch: the rest comes from the server
                del resources[len(resources) - len(found):]
        elif value["resourceType"] != "OperationOutcome":
            resources.append({"resource": value})
        else:
            missing[key] = template  # the client could not prefetch it
    if missing:
        server, auth = body.get("fhirServer"), body.get("fhirAuthorization")
        if not server or not isinstance(auth, dict):
            raise Precondition("the patient's data is incomplete: prefetch lacks " + ", ".join(sorted(missing))
                               + " and the request gives no fhirServer with fhirAuthorization to fetch it")
        fetcher = _Fetcher(server, auth["access_token"])
        for key, template in missing.items():
            found, stamp = fetcher.search(template.replace("{{context.patientId}}", patient_id), key)
            resources += found
            stamps += [stamp] if isinstance(stamp, str) else []
    unique: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(resources):
        res = entry["resource"]
        unique.setdefault(f"{res.get('resourceType')}/{res.get('id') or f'#{i}'}", entry)
    if not any(e["resource"].get("resourceType") == "Patient" for e in unique.values()):
        raise Precondition("the patient's data has no Patient resource (neither prefetch nor fhirServer gave "
                           f"Patient/{patient_id})")
    stamp = max(stamps) if stamps else dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"resourceType": "Bundle", "type": "collection", "timestamp": stamp, "entry": list(unique.values())}


# ------------------------------------------------------------------------------------------- the routes

def _problem(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


def _busy(exc: Busy) -> PlainTextResponse:
    return PlainTextResponse(f"{exc}\n", status_code=503, headers={"Retry-After": str(exc.retry_after)})


def register_cds(app: FastAPI, config: Any) -> None:
    """Add the CDS Hooks 2.0 routes for ``config`` (a :class:`service.app.ServerConfig`) to ``app``."""
    pool = Pool("CDS requests", config.cds_workers, config.cds_queue, config.timeout)
    gates: dict[str, Gate] = {}

    def title() -> str:
        return cds_knowledge(config.knowledge, config.project).title

    def services() -> list[dict[str, Any]]:
        templates = prefetch_templates(config)
        out = [{"hook": "patient-view", "id": CDS_SERVICE_ID, "title": title(),
                "description": "Which statements of the guideline apply to the patient and why: urgent findings, "
                               "conflicts, the recommendations that apply, and the data that would decide the rest.",
                "prefetch": templates}]
        if cds_knowledge(config.knowledge, config.project).orders is not None:
            out.append({"hook": "order-select", "id": ORDER_SERVICE_ID, "title": title(),
                        "description": "When a selected draft order's code names a care action of the guideline "
                                       "(the package's order-code mapping): the statements about that action that "
                                       "apply to the patient, advice against and conflicts first.",
                        "prefetch": templates})
        return out

    @app.get("/cds-services")
    def discovery() -> dict[str, Any]:
        return {"services": services()}

    def evaluate(body: dict[str, Any], hook: str, base: str) -> dict[str, Any]:
        """In the pool's thread: the data, the gate, the cards (Precondition, InputError pass through)."""
        kn = cds_knowledge(config.knowledge, config.project)
        actions = None
        if hook == "order-select":
            actions = order_actions(body["context"]["draftOrders"], body["context"]["selections"], kn)
            if not actions:  # no selected order is about the guideline's care actions: no guidance
                return {"cards": []}
        bundle = assemble(body, prefetch_templates(config))
        gated = _through_gate(config, gates, bundle, body["context"]["patientId"])
        if not gated.valid or gated.result is None:
            return refusal_cards(gated.name, [v.to_json() for v in gated.violations], kn.title)
        return cards_for(gated.result, config.knowledge, config.project, base_url=base,
                         patient_ref=f"Patient/{body['context']['patientId']}", actions=actions)

    @app.post("/cds-services/{service_id}")
    async def cds(service_id: str, request: Request) -> Response:
        hooks = {s["id"]: s["hook"] for s in services()}
        if service_id not in hooks:
            return _problem(404, f"no CDS service {service_id!r}; see /cds-services")
        try:
            body = load_json(await request.body())
        except InputError as exc:  # malformed, not UTF-8, or nested too deeply
            return _problem(400, f"the request body is not JSON: {exc}")
        defects = _request_defects(body, hooks[service_id])
        if defects:
            return _problem(400, "malformed CDS Hooks request: " + "; ".join(defects))
        try:
            answer = await pool.run(evaluate, body, hooks[service_id], str(request.base_url).rstrip("/"))
        except Busy as exc:
            return _busy(exc)
        except Precondition as exc:
            return _problem(412, f"cannot get the patient's data: {exc}")
        except InputError as exc:
            return _problem(400, f"the patient's data cannot be read: {exc}")
        return JSONResponse(answer)

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str, request: Request) -> Response:
        if service_id not in {s["id"] for s in services()}:
            return _problem(404, f"no CDS service {service_id!r}; see /cds-services")
        try:
            body = load_json(await request.body())
        except InputError as exc:
            return _problem(400, f"the feedback is not JSON: {exc}")
        defects = _feedback_defects(body)
        if defects:
            return _problem(400, "malformed CDS Hooks feedback: " + "; ".join(defects))
        for item in body["feedback"]:
            reason = item.get("overrideReason") or {}
            log.info("cds feedback %s", json.dumps({
                "service": service_id, "card": item["card"][:128], "outcome": item["outcome"],
                "acceptedSuggestions": [a["id"][:128] for a in item.get("acceptedSuggestions") or []],
                "overrideReason": (reason.get("reason") or {}).get("code"),
                "userComment": len(reason["userComment"]) if "userComment" in reason else None,
                "outcomeTimestamp": item["outcomeTimestamp"]}, sort_keys=True))
        return JSONResponse({"recorded": len(body["feedback"])})


def _through_gate(config: Any, gates: dict[str, Gate], bundle: dict[str, Any], name: str) -> GateResult:
    """Map the bundle to a case, validate it against the case shapes and, if valid, derive on the fast path."""
    if "gate" not in gates:
        gates["gate"] = Gate(config.knowledge, config.project)
    try:
        return gates["gate"].bundle(bundle, name)
    except InputError:
        raise
    except Exception as exc:  # the FHIR model rejects the resource: a client error, not a crash
        raise InputError(re.sub(r"\s+", " ", str(exc))[:500]) from None
