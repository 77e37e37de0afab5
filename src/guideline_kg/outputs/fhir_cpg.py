"""FHIR R4 out, after the HL7 Clinical Practice Guidelines IG (CPG-on-FHIR STU2).

The pathway is a PlanDefinition (clinical-protocol), each algorithm step a strategy PlanDefinition
(workflow-definition), each recommendation an eca-rule PlanDefinition whose action points to one
ActivityDefinition per care action; all in one transaction Bundle. A case's applicable recommendations become a
CarePlan as ``$apply`` would return it. Everything is read through ``queries/export-*.rq``; ids and canonical URLs
are derived from the graph's IRIs, so they are stable from run to run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.outputs.export import short_name
from guideline_kg.store.stores import EmbeddedStore

__all__ = [
    "CPG",
    "OWL_CLASS_LANGUAGE",
    "Pathway",
    "careplan",
    "careplan_bundle",
    "fhir_id",
    "pathway_bundle",
    "read_pathway",
    "recommendations_from_bundle",
    "validate_resource",
]

CPG = "http://hl7.org/fhir/uv/cpg/StructureDefinition/"
PLAN_TYPE = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
IRI_SYSTEM = "urn:ietf:rfc:3986"
#: Expression.language of an applicability condition whose expression is the IRI of an OWL class.
OWL_CLASS_LANGUAGE = "text/x-owl-class"

_ID_BAD = re.compile(r"[^A-Za-z0-9\-.]")


def fhir_id(iri: str) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) from an IRI: its local name, or a hash where that does not fit."""
    local = _ID_BAD.sub("-", short_name(iri)).strip("-.")
    if not local or len(local) > 64:
        local = (local[:55] + "-" if local else "") + hashlib.sha1(iri.encode()).hexdigest()[:8]
    return local


def _name(fid: str) -> str:
    """A computable name (pdf-0: starts upper-case, letters, digits, underscore) from an id."""
    parts = re.split(r"[^A-Za-z0-9]+", fid)
    name = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return name if name[:1].isalpha() else "N" + name


def _s(term: Any) -> str | None:
    return None if term is None else str(term)


def _coding(code_iri: str) -> dict[str, str]:
    """A Coding from a code IRI written as ``<system>#<code>`` or ``<system>/<code>`` (SNOMED, LOINC style)."""
    system, sep, code = code_iri.rpartition("#")
    if not sep:
        system, _, code = code_iri.rpartition("/")
    return {"system": system, "code": code}


@dataclass
class Recommendation:
    """One recommendation as read from the graph."""

    iri: str
    text: str
    lines: list[int]
    actions: list[str]
    citations: list[int]
    direction: str | None
    direction_code: str | None
    strength: str | None
    strength_code: str | None
    population: str
    population_label: str | None
    step: str | None
    urgent: bool
    conditions: list[str] = field(default_factory=list)


@dataclass
class Pathway:
    """What the FHIR export reads from the graph: guideline, steps, recommendations, actions, references."""

    base: str
    guideline: dict[str, str | None]
    steps: list[dict[str, str | None]]
    recommendations: list[Recommendation]
    actions: dict[str, dict[str, Any]]
    references: dict[int, dict[str, str | None]]
    kinds: dict[str, str] = field(default_factory=dict)

    def canonical(self, resource_type: str, iri: str) -> str:
        """The canonical URL of the resource made from ``iri``."""
        return f"{self.base}/{resource_type}/{fhir_id(iri)}"


def read_pathway(store: EmbeddedStore, project: Project) -> Pathway:
    """Read everything the FHIR export needs through the ``export-*`` queries."""
    q = project.queries_dir
    guideline_rows = list(store.select(load_query(q, "export-guideline").text).dicts())
    if not guideline_rows:
        raise InputError("the knowledge graph has no gk:Guideline to export")
    g = {k: _s(v) for k, v in guideline_rows[0].items()}
    gl = g["guideline"] or ""
    base = gl.rsplit("/", 1)[0] + "/fhir" if "/" in gl else gl + "/fhir"
    steps = [{k: _s(v) for k, v in r.items()} for r in store.select(load_query(q, "export-steps").text).dicts()]
    conditions: dict[str, list[str]] = {}
    for r in store.select(load_query(q, "export-conditions").text).dicts():
        conditions.setdefault(str(r["population"]), []).append(_s(r["label"]) or short_name(str(r["condition"])))
    recs = []
    for r in store.select(load_query(q, "export-recommendations").text).dicts():
        pop = str(r["population"])
        recs.append(Recommendation(
            iri=str(r["statement"]), text=str(r["text"]),
            lines=sorted(int(x) for x in str(r["lines"]).split()),
            actions=sorted(str(r["actions"]).split()),
            citations=sorted(int(x) for x in str(r["citations"] or "").split()),
            direction=_s(r["direction"]), direction_code=_s(r["directionCode"]),
            strength=_s(r["strength"]), strength_code=_s(r["strengthCode"]),
            population=pop, population_label=_s(r["populationLabel"]),
            step=_s(r["step"]), urgent=str(r["urgent"]).lower() == "true", conditions=conditions.get(pop, [])))
    recs.sort(key=lambda x: (x.lines, x.iri))
    actions: dict[str, dict[str, Any]] = {}
    for r in store.select(load_query(q, "export-actions").text).dicts():
        a = actions.setdefault(str(r["action"]), {"label": _s(r["label"]), "definition": _s(r["definition"]),
                                                  "codes": set()})
        a["codes"].update(str(r["codes"] or "").split())
    refs = {int(str(r["number"])): {"iri": _s(r["reference"]), "label": _s(r["label"]), "note": _s(r["note"])}
            for r in store.select(load_query(q, "export-references").text).dicts()}
    kinds = {str(r["statement"]): str(r["kind"]) for r in store.select(load_query(q, "export-cards").text).dicts()}
    return Pathway(base, g, steps, recs, actions, refs, kinds)


def _identifier(iri: str) -> list[dict[str, str]]:
    return [{"system": IRI_SYSTEM, "value": iri}]


def _plan(p: Pathway, iri: str, profile: str, plan_type: str, title: str, description: str | None,
          actions: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    fid = fhir_id(iri)
    res: dict[str, Any] = {
        "resourceType": "PlanDefinition", "id": fid,
        "meta": {"profile": [CPG + profile]},
        "url": p.canonical("PlanDefinition", iri), "identifier": _identifier(iri),
        "version": p.guideline.get("version") or "0.0.0", "name": _name(fid), "title": title,
        "type": {"coding": [{"system": PLAN_TYPE, "code": plan_type}]},
        "status": "draft",
    }
    if description:
        res["description"] = description
    if extra:
        res.update(extra)
    if actions:
        res["action"] = actions
    return res


def _cc(code_iri: str | None, text: str | None) -> dict[str, Any]:
    cc: dict[str, Any] = {}
    if code_iri:
        cc["coding"] = [_coding(code_iri)]
    if text:
        cc["text"] = text
    return cc


def _applicability(rec: Recommendation) -> dict[str, Any]:
    label = rec.population_label or short_name(rec.population)
    description = f"Applies to: {label}."
    if rec.conditions:
        description += " Conditions (all must hold): " + "; ".join(rec.conditions) + "."
    return {"kind": "applicability",
            "expression": {"description": description, "language": OWL_CLASS_LANGUAGE,
                           "expression": rec.population, "reference": rec.population}}


def _recommendation_plan(p: Pathway, rec: Recommendation) -> dict[str, Any]:
    extensions = []
    if rec.strength:
        extensions.append({"url": CPG + "cpg-strengthOfRecommendation",
                           "valueCodeableConcept": _cc(rec.strength_code, rec.strength)})
    if rec.direction:
        extensions.append({"url": CPG + "cpg-directionOfRecommendation",
                           "valueCodeableConcept": _cc(rec.direction_code, rec.direction)})
    lines = ", ".join(str(n) for n in rec.lines)
    action: dict[str, Any] = {
        "id": "recommendation", "title": f"Line {lines}", "description": rec.text, "textEquivalent": rec.text,
        "condition": [_applicability(rec)],
    }
    if rec.urgent:
        action["priority"] = "urgent"
    if extensions:
        action["extension"] = extensions
    canonicals = [p.canonical("ActivityDefinition", a) for a in rec.actions]
    if len(canonicals) == 1:
        action["definitionCanonical"] = canonicals[0]
    else:
        action["groupingBehavior"] = "logical-group"
        action["selectionBehavior"] = "any"
        action["action"] = [{"title": p.actions.get(a, {}).get("label") or short_name(a), "definitionCanonical": c}
                            for a, c in zip(rec.actions, canonicals, strict=True)]
    artifacts = []
    for n in rec.citations:
        ref = p.references.get(n, {})
        art: dict[str, Any] = {"type": "citation", "label": f"Reference {n}",
                               "display": ref.get("label") or f"reference {n}"}
        if ref.get("note"):
            art["citation"] = ref["note"]
        artifacts.append(art)
    extra: dict[str, Any] = {"relatedArtifact": artifacts} if artifacts else {}
    title = f"Line {lines}: {rec.text}"
    return _plan(p, rec.iri, "cpg-recommendationdefinition", "eca-rule", title[:250], rec.text, [action], extra)


def _activity(p: Pathway, iri: str, info: dict[str, Any]) -> dict[str, Any]:
    fid = fhir_id(iri)
    code: dict[str, Any] = {"text": info.get("label") or fid}
    codings = [_coding(c) for c in sorted(info.get("codes") or [])]
    if codings:
        code["coding"] = codings
    res: dict[str, Any] = {
        "resourceType": "ActivityDefinition", "id": fid,
        "meta": {"profile": [CPG + "cpg-computableactivity"]},
        "url": p.canonical("ActivityDefinition", iri), "identifier": _identifier(iri),
        "version": p.guideline.get("version") or "0.0.0", "name": _name(fid),
        "title": info.get("label") or fid, "status": "draft", "code": code,
    }
    if info.get("definition"):
        res["description"] = info["definition"]
    return res


def pathway_resources(p: Pathway) -> list[dict[str, Any]]:
    """Every resource of the pathway: pathway, strategies, recommendations, activities (in that order)."""
    recs_by_step: dict[str | None, list[Recommendation]] = {}
    for rec in p.recommendations:
        recs_by_step.setdefault(rec.step, []).append(rec)
    strategies = []
    for step in p.steps:
        iri = step["step"] or ""
        members = recs_by_step.get(iri, [])
        actions = [{"title": f"Line {', '.join(map(str, r.lines))}", "description": r.text,
                    "definitionCanonical": p.canonical("PlanDefinition", r.iri)} for r in members]
        strategies.append(_plan(p, iri, "cpg-strategydefinition", "workflow-definition",
                                step["label"] or fhir_id(iri), step["definition"], actions))
    gl = p.guideline
    first_line = {s["step"]: min((r.lines[0] for r in recs_by_step.get(s["step"], [])), default=0) for s in p.steps}
    ordered = [(first_line[step["step"]], {"title": s["title"], "definitionCanonical": s["url"]})
               for step, s in zip(p.steps, strategies, strict=True)]
    ordered += [(r.lines[0], {"title": f"Line {', '.join(map(str, r.lines))}", "description": r.text,
                              "definitionCanonical": p.canonical("PlanDefinition", r.iri)})
                for r in recs_by_step.get(None, [])]
    pathway_actions = [a for _, a in sorted(ordered, key=lambda x: x[0])]
    description = gl.get("definition") or gl.get("title")
    if gl.get("populationLabel"):
        description = f"{description} Population: {gl['populationLabel']} <{gl['population']}>."
    extra = {"copyright": f"Licence: {gl['license']}"} if gl.get("license") else {}
    pathway = _plan(p, gl["guideline"] or "", "cpg-pathwaydefinition", "clinical-protocol", gl["title"] or "",
                    description, pathway_actions, extra)
    recommendations = [_recommendation_plan(p, r) for r in p.recommendations]
    activities = [_activity(p, a, p.actions.get(a, {})) for a in sorted({a for r in p.recommendations
                                                                          for a in r.actions})]
    return [pathway, *strategies, *recommendations, *activities]


def _entry(p: Pathway, res: dict[str, Any]) -> dict[str, Any]:
    rel = f"{res['resourceType']}/{res['id']}"
    return {"fullUrl": f"{p.base}/{rel}", "resource": res, "request": {"method": "PUT", "url": rel}}


def pathway_bundle(store: EmbeddedStore, project: Project) -> dict[str, Any]:
    """The whole pathway as a FHIR R4 transaction Bundle (PUT entries with ids derived from the IRIs)."""
    p = read_pathway(store, project)
    resources = pathway_resources(p)
    return {"resourceType": "Bundle", "id": fhir_id(p.guideline["guideline"] or "") + "-pathway",
            "type": "transaction", "entry": [_entry(p, r) for r in resources]}


def careplan(result: Any, p: Pathway) -> dict[str, Any]:
    """A case's applicable recommendations as a CarePlan (what ``$apply`` on the pathway returns).

    One activity per applicable recommendation, pointing at its PlanDefinition, with the explanation (the case
    facts that met each condition) as progress notes; other applicable statements (cautions, evidence) and the
    undetermined ones with their missing data are notes of the plan.
    """
    data = result.to_json()
    by_iri = {r.iri: r for r in p.recommendations}
    activities, notes = [], []
    for rec in data["recommendations"]:
        lines = ", ".join(str(n) for n in rec["source_lines"])
        known = by_iri.get(rec["id"])
        if rec["status"] == "applicable" and known is not None:
            detail: dict[str, Any] = {
                "instantiatesCanonical": [p.canonical("PlanDefinition", rec["id"])],
                "code": {"text": ", ".join(p.actions.get(a, {}).get("label") or short_name(a)
                                           for a in known.actions)},
                "status": "not-started", "doNotPerform": rec["direction"] == "against",
                "description": f"Line {lines}: {rec['text']}",
            }
            activities.append({"detail": detail,
                               "progress": [{"text": f"Because: {b}"} for b in rec["because"]]})
        elif rec["status"] == "applicable":
            notes.append({"text": f"Applies ({p.kinds.get(rec['id'], 'statement')}, line {lines}): {rec['text']}"})
        elif rec["status"] == "undetermined":
            notes.append({"text": f"Undetermined (line {lines}): {rec['text']} Missing: "
                                  + "; ".join(rec["missing"])})
    patient = str(result.patient)
    case_id = fhir_id(f"careplan-{data['case']}")
    plan: dict[str, Any] = {
        "resourceType": "CarePlan", "id": case_id,
        "instantiatesCanonical": [p.canonical("PlanDefinition", p.guideline["guideline"] or "")],
        "status": "draft", "intent": "proposal",
        "title": f"{p.guideline['title']}: recommendations for case {data['case']}",
        "subject": {"identifier": {"system": IRI_SYSTEM, "value": patient}, "display": data["case"]},
        "description": ("In scope of the guideline." if data["in_scope"]
                        else f"Out of scope: {data['scope_reason']}"),
    }
    if activities:
        plan["activity"] = activities
    if notes:
        plan["note"] = notes
    return plan


def careplan_bundle(plans: list[dict[str, Any]], p: Pathway) -> dict[str, Any]:
    """Several CarePlans as one collection Bundle."""
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"{p.base}/CarePlan/{c['id']}", "resource": c} for c in plans]}


def _ext(action: dict[str, Any], name: str) -> str | None:
    for e in action.get("extension", []):
        if e.get("url") == CPG + name:
            return e.get("valueCodeableConcept", {}).get("text")
    return None


def recommendations_from_bundle(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Read the recommendations back out of a pathway Bundle: id, action, direction, strength, citations."""
    resources = [e["resource"] for e in bundle.get("entry", [])]
    activity_iri = {r["url"]: r["identifier"][0]["value"] for r in resources
                    if r["resourceType"] == "ActivityDefinition"}
    out = []
    for r in resources:
        if r["resourceType"] != "PlanDefinition" or not r.get("meta", {}).get("profile", [""])[0].endswith(
                "cpg-recommendationdefinition"):
            continue
        action = r["action"][0]
        canonicals = [action["definitionCanonical"]] if "definitionCanonical" in action else [
            a["definitionCanonical"] for a in action.get("action", [])]
        out.append({
            "id": r["identifier"][0]["value"],
            "action": sorted(activity_iri[c] for c in canonicals),
            "direction": _ext(action, "cpg-directionOfRecommendation"),
            "strength": _ext(action, "cpg-strengthOfRecommendation"),
            "citations": sorted(int(a["label"].split()[-1]) for a in r.get("relatedArtifact", [])
                                if a.get("type") == "citation"),
        })
    return sorted(out, key=lambda x: x["id"])


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate one resource (or Bundle) against the FHIR R4B models of fhir.resources; InputError if invalid.

    fhir.resources 8 ships R5 as its default models and R4B (4.3, wire-compatible with R4 for these resources)
    in ``fhir.resources.R4B``; the R4B models are the R4-family check available.
    """
    # fhir.resources' R4B models take ~0.9 s to import; only validation needs them.
    from fhir.resources.R4B import get_fhir_model_class  # noqa: PLC0415 - heavy dependency, see above

    kind = resource.get("resourceType")
    try:
        get_fhir_model_class(kind).model_validate(resource)
    except KeyError:
        raise InputError(f"unknown FHIR resource type {kind!r}") from None
    except Exception as exc:  # pydantic.ValidationError; message lists each defect with its path
        raise InputError(f"{kind}/{resource.get('id')}: not valid FHIR R4B: {exc}") from None
