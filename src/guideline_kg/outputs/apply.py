"""``PlanDefinition/$apply`` (FHIR R4, as the HL7 CPG IG describes it) on the exported pathway.

The PlanDefinitions applied are the ones ``export --format fhir`` writes (:func:`fhir_cpg.pathway_resources`, their
applicability conditions filled by the FHIRPath compiler, :func:`compile.owl2fhirpath.compile_factored`); the
conditions run are those exported FHIRPath texts, executed by ``fhirpathpy`` on the patient's Bundle, with the
FHIR ``variable`` extensions in scope as the extension defines them: the variables on the PlanDefinition and on the
action, in order, each evaluated on the Bundle with the earlier ones as ``%name``. A call evaluates each variable
once (the export declares a name with one expression everywhere) and every FHIRPath text is parsed once per
server. No OWL, no SPARQL, no derivation decides a status here: what another engine would do with the export is
done.

- :func:`read_parameters`: the FHIR ``Parameters`` of a call (``subject``, ``data``; at type level ``url`` or
  ``planDefinition``), every defect an :class:`ApplyError` (HTTP 400, or 404 for an unknown PlanDefinition) whose
  :meth:`~ApplyError.outcome` is the ``OperationOutcome`` the client gets.
- :class:`Applier`: the pathway read and compiled once (the FHIRPath texts parsed on first use, or all at once by
  :meth:`Applier.prepare`), then :meth:`Applier.apply`: the data goes through the one gate (read and case shapes; an
  invalid case gets its violations and nothing else), then each action's applicability condition
  (``kind`` applicability, ``language`` text/fhirpath) is evaluated: ``true`` applicable, ``false`` not applicable,
  empty undetermined (three-valued, as the compiler writes them).

The answer is a ``CarePlan`` (``cpg-careplan``) whose activity references a contained ``RequestGroup`` for the
applied PlanDefinition; each applicable action's definition becomes a contained resource referenced by
``action.resource``: a PlanDefinition its own ``RequestGroup`` (applied recursively, strategies and
recommendations), an ActivityDefinition the request it defines (``kind``: ServiceRequest, MedicationRequest,
CommunicationRequest; ``doNotPerform`` copied, so advice against is a request not to perform). Undetermined
conditions are issues of a contained ``OperationOutcome`` (listed in ``supportingInfo``), each naming the
recommendation and the data its condition reads. docs/export.md, "$apply".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
from rdflib import Graph

from guideline_kg.checks.gate import Gate, GateResult
from guideline_kg.compile.owl2fhirpath import VARIABLE_EXTENSION
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.outputs.fhir_cpg import (
    CPG,
    FHIRPATH,
    IRI_SYSTEM,
    Pathway,
    compile_applicability,
    pathway_resources,
    read_pathway,
)
from guideline_kg.store.stores import EmbeddedStore

__all__ = ["Applier", "ApplyError", "ApplyRequest", "outcome", "read_parameters"]

#: The request resources an ActivityDefinition's ``kind`` becomes here, with the element its ``code`` goes to
#: (FHIR R4: each has ``status``, ``intent``, ``subject``, ``doNotPerform`` and ``instantiatesCanonical``).
REQUESTS: dict[str, str | None] = {"ServiceRequest": "code", "MedicationRequest": "medicationCodeableConcept",
                                   "CommunicationRequest": None}
#: The most ``subject`` parameters and Bundle entries one call may carry (the body limit bounds bytes).
MAX_ENTRIES = 2000

_STATUS = {(True,): "applicable", (False,): "not-applicable", (): "undetermined"}


class ApplyError(InputError):
    """A call that cannot be applied: ``status`` 400 (bad Parameters or data), 404 (no such PlanDefinition),
    422 (the data is invalid by the case shapes); :meth:`outcome` is what the client is told."""

    def __init__(self, message: str, status: int = 400, issues: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.issues = issues or [{"severity": "error", "code": "invalid" if status != 404 else "not-found",
                                  "diagnostics": message}]

    def outcome(self) -> dict[str, Any]:
        return outcome(self.issues)


def outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """An ``OperationOutcome`` of ``issues``."""
    return {"resourceType": "OperationOutcome", "issue": issues}


@dataclass
class ApplyRequest:
    """A call read from its Parameters: the PlanDefinition (id at instance level, canonical at type level), the
    subject reference, the patient's data (a Bundle)."""

    plan_id: str | None
    plan_url: str | None
    version: str | None
    subject: str
    data: dict[str, Any]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _one(params: dict[str, list[dict[str, Any]]], name: str, types: tuple[str, ...]) -> Any:
    """The value of the one parameter ``name`` (``value<Type>`` of ``types``, or ``resource`` when types has
    "resource"), None when absent; ApplyError when repeated or of another type."""
    given = params.get(name, [])
    if not given:
        return None
    if len(given) > 1:
        raise ApplyError(f"parameter {name!r} is given {len(given)} times; at most once")
    p = given[0]
    for t in types:
        key = "resource" if t == "resource" else f"value{t}"
        if key in p:
            return p[key]
    shown = ", ".join("resource" if t == "resource" else f"value{t}" for t in types)
    other = sorted(k for k in p if k != "name")
    raise ApplyError(f"parameter {name!r} must carry {shown}, got {', '.join(other) or 'no value'}")


def read_parameters(body: Any, instance: str | None) -> ApplyRequest:
    """The call's ``Parameters`` (FHIR R4 PlanDefinition/$apply, with the CPG IG's ``data`` and ``url``) as an
    :class:`ApplyRequest`; :class:`ApplyError` (400) naming each defect."""
    if not isinstance(body, dict):
        raise ApplyError(f"the request body must be a FHIR Parameters resource (a JSON object), got {_kind(body)}")
    if body.get("resourceType") != "Parameters":
        raise ApplyError("the request body must be a FHIR Parameters resource, got resourceType "
                         f"{str(body.get('resourceType'))[:40]!r}")
    items = body.get("parameter", [])
    if not isinstance(items, list) or not all(isinstance(p, dict) for p in items):
        raise ApplyError("Parameters.parameter must be an array of objects")
    params: dict[str, list[dict[str, Any]]] = {}
    for i, p in enumerate(items):
        if not isinstance(p.get("name"), str):
            raise ApplyError(f"Parameters.parameter[{i}] has no name")
        params.setdefault(p["name"], []).append(p)
    subjects = params.get("subject", [])
    if len(subjects) != 1:
        raise ApplyError("parameter 'subject' (the Patient reference, e.g. valueString \"Patient/p\") is required "
                         f"once; got it {len(subjects)} times")
    subject = _one(params, "subject", ("String", "Reference"))
    if isinstance(subject, dict):
        subject = subject.get("reference")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 512:
        raise ApplyError("parameter 'subject' must be a reference to the Patient (e.g. \"Patient/p\" or the Bundle "
                         "entry's fullUrl)")
    data = _one(params, "data", ("resource",))
    if data is None:
        raise ApplyError("parameter 'data' (a Bundle of the patient's data, as resource) is required: this server "
                         "reads no patient data of its own")
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        got = data.get("resourceType") if isinstance(data, dict) else _kind(data)
        raise ApplyError(f"parameter 'data' must be a FHIR Bundle, got {str(got)[:40]!r}")
    entries = data.get("entry", [])
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        raise ApplyError(f"parameter 'data': Bundle.entry must be an array of at most {MAX_ENTRIES} entries")
    url = _one(params, "url", ("Canonical", "Uri", "String"))
    plan = _one(params, "planDefinition", ("Canonical", "Uri", "String", "resource"))
    version = _one(params, "version", ("String",))
    if isinstance(plan, dict):  # R4: the PlanDefinition itself; this server applies its own, named by url
        plan = plan.get("url")
        if not isinstance(plan, str):
            raise ApplyError("parameter 'planDefinition' as a resource must carry the url of one of this server's "
                             "PlanDefinitions (it applies only its own)")
    for name, value in (("url", url), ("planDefinition", plan), ("version", version)):
        if value is not None and (not isinstance(value, str) or len(value) > 2048):
            raise ApplyError(f"parameter {name!r} must be a string (canonical URL) of at most 2048 characters")
    if instance is not None:
        if url is not None or plan is not None:
            raise ApplyError("parameters 'url' and 'planDefinition' are not allowed at instance level "
                             f"(PlanDefinition/{instance[:64]}/$apply names the PlanDefinition)")
    elif url is None and plan is None:
        raise ApplyError("at type level (PlanDefinition/$apply) parameter 'url' (or 'planDefinition') must give "
                         "the canonical URL of the PlanDefinition to apply")
    canonical = url if url is not None else plan
    if canonical is not None and "|" in canonical:
        canonical, version = canonical.split("|", 1)
    return ApplyRequest(instance, canonical, version, subject.strip(), data)


def _patient_refs(bundle: dict[str, Any]) -> set[str]:
    """The references that name the Bundle's Patient: its ``fullUrl`` and ``Patient/<id>``."""
    out: set[str] = set()
    for e in bundle.get("entry", []):
        res = e.get("resource") if isinstance(e, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Patient":
            if isinstance(e.get("fullUrl"), str):
                out.add(e["fullUrl"])
            if isinstance(res.get("id"), str):
                out.add(f"Patient/{res['id']}")
    return out


@dataclass
class _Run:
    """One application: the subject, the data, what is contained so far, the issues."""

    subject: str
    data: dict[str, Any]
    contained: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    #: (name, FHIRPath) of a variable -> its value on this call's data (evaluated once)
    values: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def new_id(self, stem: str) -> str:
        base = stem[:60]
        fid, n = base, 1
        while fid in self.ids:
            n += 1
            fid = f"{base[:56]}-{n}"
        self.ids.add(fid)
        return fid


class Applier:
    """The exported pathway of one knowledge graph, ready to apply (made once per server)."""

    def __init__(self, knowledge: Graph, project: Project, gate: Gate | None = None) -> None:
        self.knowledge, self.project = knowledge, project
        self.gate = gate or Gate(knowledge, project)
        self.pathway: Pathway = read_pathway(EmbeddedStore.from_graph(knowledge), project)
        #: why the conditions are the interim ``{}`` (every recommendation undetermined), if they are
        self.uncompiled: str | None = None
        #: statement IRI -> [(condition label, FHIRPath "met", FHIRPath "failed")]
        self.conditions: dict[str, list[tuple[str, str, str]]] = {}
        # the same compiled conditions as `export --format fhir` writes (one helper); a refusal is said in every answer
        self.uncompiled = compile_applicability(self.pathway, knowledge, project)
        if self.pathway.fhirpath is not None:
            # each condition on its own ("met" and "failed", over the same variables), to name the conditions the
            # data leaves open; the status itself comes from the exported expression
            self.conditions = {str(iri): [(c.label, c.met, c.failed) for c in conds]
                               for iri, conds in self.pathway.fhirpath.conditions.items()}
        self.resources = pathway_resources(self.pathway)
        self.by_id = {f"{r['resourceType']}/{r['id']}": r for r in self.resources}
        self.by_url = {r["url"]: r for r in self.resources}
        self._compiled: dict[tuple[str, bool], Callable[..., list[Any]]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the PlanDefinitions

    def plan(self, request: ApplyRequest) -> dict[str, Any]:
        """The PlanDefinition a call names (ApplyError 404 when this server has none such)."""
        if request.plan_id is not None:
            found = self.by_id.get(f"PlanDefinition/{request.plan_id}")
            what = f"PlanDefinition/{request.plan_id[:64]}"
        else:
            found = self.by_url.get(request.plan_url or "")
            found = found if found is not None and found["resourceType"] == "PlanDefinition" else None
            what = f"a PlanDefinition with url {str(request.plan_url)[:200]!r}"
        if found is None:
            raise ApplyError(f"this server has no {what}; GET /fhir/PlanDefinition lists them", 404)
        if request.version is not None and request.version != found.get("version"):
            raise ApplyError(f"{what} has version {found.get('version')!r}, not {request.version[:40]!r}", 404)
        return found

    def plans(self) -> list[dict[str, Any]]:
        """The PlanDefinitions this server applies (pathway, strategies, recommendations)."""
        return [r for r in self.resources if r["resourceType"] == "PlanDefinition"]

    def compiled(self, expression: str, raw: bool = False) -> Callable[..., list[Any]]:
        """The FHIRPath text compiled by fhirpathpy (once per text). ``raw``: the engine's own nodes are returned
        (a variable's value, handed back to the engine as it is, without a copy to plain JSON)."""
        with self._lock:
            fn = self._compiled.get((expression, raw))
            if fn is None:
                fn = fhirpathpy.compile(expression, options={"returnRawData": True} if raw else None)
                self._compiled[(expression, raw)] = fn
            return fn

    def prepare(self) -> None:
        """Compile every condition and variable now (a server does it on the first call otherwise)."""
        for plan in self.plans():
            for action in _walk(plan.get("action", [])):
                for _name, expression in _variables(plan, action):
                    self.compiled(expression, raw=True)
                for cond in action.get("condition", []):
                    expr = cond.get("expression", {})
                    if cond.get("kind") == "applicability" and expr.get("language") == FHIRPATH:
                        self.compiled(expr.get("expression", ""))
        for conditions in self.conditions.values():
            for _label, met, failed in conditions:
                self.compiled(met)
                self.compiled(failed)

    def environment(self, plan: dict[str, Any], action: dict[str, Any], run: _Run) -> dict[str, list[Any]]:
        """The FHIRPath variables in scope for ``action``'s condition, evaluated on the call's data: those of the
        PlanDefinition, then of the action, in order, each with the earlier ones in its environment."""
        env: dict[str, list[Any]] = {}
        for name, expression in _variables(plan, action):
            key = (name, expression)
            if key not in run.values:
                run.values[key] = self.compiled(expression, raw=True)(run.data, env)
            env[name] = run.values[key]
        return env

    # ------------------------------------------------------------------ applying

    def apply(self, request: ApplyRequest) -> dict[str, Any]:
        """The CarePlan of applying the named PlanDefinition to the subject's data (ApplyError: 400, 404, 422)."""
        plan = self.plan(request)
        patients = _patient_refs(request.data)
        if not patients:
            raise ApplyError("parameter 'data': the Bundle has no Patient resource")
        if request.subject not in patients:
            raise ApplyError(f"parameter 'subject' {request.subject[:120]!r} is not the data's Patient (that is "
                             f"{' or '.join(sorted(patients))})")
        try:
            gated = self.gate.bundle(request.data, str(request.data.get("id") or "apply")[:64], derive=False)
        except InputError as exc:  # the one reader's defects, each with its place in the Bundle
            notes = getattr(exc, "defects", None) or []
            issues = [{"severity": "error", "code": "invalid", "diagnostics": f"parameter 'data': {n}"}
                      for n in notes]
            raise ApplyError(f"parameter 'data' cannot be read: {exc}", 400, issues or None) from None
        except Exception as exc:  # the FHIR model rejects a resource: a client error, not a crash
            raise ApplyError(f"parameter 'data' cannot be read: {' '.join(str(exc).split())[:500]}") from None
        _refuse_invalid(gated)
        run = _Run(request.subject, request.data)
        if self.uncompiled:
            run.issues.append({"severity": "warning", "code": "not-supported",
                               "diagnostics": f"{self.uncompiled}; the exported conditions are the interim "
                                              "FHIRPath {} (not known), so no recommendation is determined"})
        top = self._apply_plan(plan, run)
        careplan: dict[str, Any] = {
            "resourceType": "CarePlan", "id": "apply", "meta": {"profile": [CPG + "cpg-careplan"]},
            "contained": run.contained,
            "instantiatesCanonical": [plan["url"]], "status": "draft", "intent": "proposal",
            "title": f"{plan.get('title')}: applied to {request.subject}",
            "subject": {"reference": request.subject},
            "activity": [{"reference": {"reference": f"#{top['id']}"}}],
        }
        if isinstance(request.data.get("timestamp"), str):
            careplan["created"] = request.data["timestamp"]
        if run.issues:
            oo = {"id": run.new_id("outcome"), **outcome(run.issues)}
            run.contained.append(oo)
            careplan["supportingInfo"] = [{"reference": f"#{oo['id']}",
                                           "display": "conditions not determined by the data given"}]
        return careplan

    def _condition(self, plan: dict[str, Any], action: dict[str, Any], run: _Run) -> str:
        """The status of an action by its applicability conditions (all must be true; one false: not
        applicable; else undetermined). Only FHIRPath conditions are run; an action without one applies."""
        results = []
        for cond in action.get("condition", []):
            expr = cond.get("expression", {})
            if cond.get("kind") != "applicability" or expr.get("language") != FHIRPATH:
                continue
            try:
                value = self.compiled(expr.get("expression", ""))(run.data, self.environment(plan, action, run))
            except Exception as exc:  # an engine error on this data: reported, the action not applied
                run.issues.append({"severity": "error", "code": "processing", "details": _about(plan),
                                   "diagnostics": f"{plan.get('title')}: the applicability condition failed on "
                                                  f"this data: {str(exc)[:300]}"})
                return "undetermined"
            status = _STATUS.get(tuple(value))
            if status is None:
                run.issues.append({"severity": "error", "code": "processing", "details": _about(plan),
                                   "diagnostics": f"{plan.get('title')}: the applicability condition gave "
                                                  f"{str(value)[:100]}, not a boolean or empty"})
                return "undetermined"
            results.append(status)
        if "not-applicable" in results:
            return "not-applicable"
        return "undetermined" if "undetermined" in results else "applicable"

    def _open_conditions(self, plan: dict[str, Any], action: dict[str, Any], run: _Run) -> list[str]:
        """The labels of the recommendation's conditions the data neither meets nor fails (its missing data)."""
        out = []
        for label, met, failed in self.conditions.get(plan["identifier"][0]["value"], []):
            try:
                env = self.environment(plan, action, run)
                known = self.compiled(met)(run.data, env) == [True] or self.compiled(failed)(run.data, env) == [True]
            except Exception:  # an engine error here only loses the detail; the issue is still reported
                known = False
            if not known:
                out.append(label)
        return out

    def _apply_plan(self, plan: dict[str, Any], run: _Run) -> dict[str, Any]:
        """The RequestGroup of ``plan`` (contained in ``run``): its applicable actions, each with its definition
        applied."""
        group: dict[str, Any] = {"resourceType": "RequestGroup", "id": run.new_id(f"rg-{plan['id']}"),
                                 "instantiatesCanonical": [plan["url"]], "status": "draft", "intent": "proposal",
                                 "subject": {"reference": run.subject}}
        run.contained.append(group)
        actions = [a for a in (self._apply_action(plan, x, run) for x in plan.get("action", [])) if a]
        if actions:
            group["action"] = actions
        return group

    def _apply_action(self, plan: dict[str, Any], action: dict[str, Any], run: _Run) -> dict[str, Any] | None:
        recommendation = plan["meta"]["profile"][0].endswith("cpg-recommendationdefinition")
        status = self._condition(plan, action, run)
        if status == "undetermined" and recommendation:
            run.issues.append(_undetermined(plan, action, self._open_conditions(plan, action, run)))
        if status != "applicable":
            return None
        out: dict[str, Any] = {k: action[k] for k in ("title", "description", "textEquivalent", "priority", "code")
                               if k in action}
        target = self.by_url.get(action.get("definitionCanonical", ""))
        if target is not None and target["resourceType"] == "PlanDefinition":
            nested = self._apply_plan(target, run)
            if "action" not in nested:  # nothing in it applies: the action is left out with its empty group
                run.contained.remove(nested)
                return None
            out["resource"] = {"reference": f"#{nested['id']}"}
        elif target is not None:
            request = _request(target, run)
            if request is None:
                run.issues.append({"severity": "warning", "code": "not-supported", "details": _about(plan),
                                   "diagnostics": f"ActivityDefinition {target['id']}: kind {target.get('kind')!r} "
                                                  "is not made into a request here (ServiceRequest, "
                                                  "MedicationRequest, CommunicationRequest are)"})
            else:
                out["resource"] = {"reference": f"#{request['id']}"}
        subs = [a for a in (self._apply_action(plan, x, run) for x in action.get("action", [])) if a]
        if subs:
            out["action"] = subs
            for k in ("groupingBehavior", "selectionBehavior"):
                if k in action:
                    out[k] = action[k]
        return out


def _variables(plan: dict[str, Any], action: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, FHIRPath) of the ``variable`` extensions in scope for an action's condition: the PlanDefinition's,
    then the action's, in order."""
    out = []
    for holder in (plan, action):
        for ext in holder.get("extension", []):
            value = ext.get("valueExpression") if ext.get("url") == VARIABLE_EXTENSION else None
            if isinstance(value, dict) and value.get("language") == FHIRPATH and isinstance(value.get("name"), str):
                out.append((value["name"], str(value.get("expression", ""))))
    return out


def _walk(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for a in actions:
        out.append(a)
        out += _walk(a.get("action", []))
    return out


def _about(plan: dict[str, Any]) -> dict[str, Any]:
    """An issue's ``details``: the PlanDefinition by canonical URL (a Coding of system RFC 3986) and title."""
    return {"coding": [{"system": IRI_SYSTEM, "code": plan["url"]}], "text": str(plan.get("title"))}


def _undetermined(plan: dict[str, Any], action: dict[str, Any], missing: list[str]) -> dict[str, Any]:
    """The issue of a recommendation whose condition the data does not decide: the conditions left open
    (``missing``), what the condition asks and the data it reads (the action's ``input``, the export's data
    requirements)."""
    asks = " ".join(c.get("expression", {}).get("description", "") for c in action.get("condition", [])).strip()
    reads = []
    for dr in action.get("input", []):
        codes = [f"{c.get('system')}|{c.get('code')}" for f in dr.get("codeFilter", []) for c in f.get("code", [])]
        text = dr.get("type", "?")
        if codes:
            text += " coded " + ", ".join(codes[:6]) + (f" (+{len(codes) - 6} more)" if len(codes) > 6 else "")
        if dr.get("mustSupport"):
            text += " with " + ", ".join(dr["mustSupport"])
        reads.append(text)
    diagnostics = f"{plan.get('title')}: not determined by the data given."
    if missing:
        diagnostics += " Missing: " + "; ".join(missing) + "."
    diagnostics += f" {asks}"
    if reads:
        diagnostics += " Data it reads: " + "; ".join(reads) + "."
    return {"severity": "warning", "code": "incomplete", "details": _about(plan), "diagnostics": diagnostics.strip()}


def _request(activity: dict[str, Any], run: _Run) -> dict[str, Any] | None:
    """The request an ActivityDefinition defines, for the subject (None for a kind not made here)."""
    kind = activity.get("kind")
    if kind not in REQUESTS:
        return None
    req: dict[str, Any] = {"resourceType": kind, "id": run.new_id(f"req-{activity['id']}"),
                           "instantiatesCanonical": [activity["url"]], "status": "draft", "intent": "proposal"}
    if activity.get("doNotPerform"):
        req["doNotPerform"] = True
    element = REQUESTS[kind]
    if element is not None and "code" in activity:
        req[element] = activity["code"]
    elif "code" in activity:  # CommunicationRequest: what to communicate
        req["payload"] = [{"contentString": activity["code"].get("text") or activity.get("title", "")}]
    req["subject"] = {"reference": run.subject}
    run.contained.append(req)
    return req


def _refuse_invalid(gated: GateResult) -> None:
    """The one gate's refusal: an unreadable or invalid case gets its defects (422) and nothing applied."""
    if gated.error is not None:
        raise ApplyError(f"parameter 'data' cannot be read: {gated.error}")
    if not gated.valid:
        raise ApplyError(f"parameter 'data' is invalid by the case shapes ({len(gated.violations)} violations)", 422,
                         [{"severity": "error", "code": "business-rule", "diagnostics": v.text()}
                          for v in gated.violations])
