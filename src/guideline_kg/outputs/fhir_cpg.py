"""FHIR R4 out, after the HL7 Clinical Practice Guidelines IG (CPG-on-FHIR 2.0.0).

The pathway is a PlanDefinition (``cpg-pathwaydefinition``, clinical-protocol) whose actions point only at
strategies; each strategy (``cpg-strategydefinition``, workflow-definition) is an algorithm step, or the section
holding recommendations outside any step; each recommendation is an eca-rule PlanDefinition
(``cpg-recommendationdefinition``) whose action points at one ActivityDefinition (``cpg-computableactivity``) per
care action, a separate ``doNotPerform`` one where the advice is against. Ids and canonical URLs are namespaced by
the guideline package id (``plbp-L04``, ``<namespace>fhir/PlanDefinition/plbp-L04``) so two guidelines coexist on one
server. A case's result becomes a CarePlan (``cpg-careplan``) as ``$apply`` would return it. Everything is read
through ``queries/export-*.rq`` and the package's FHIR case mapping; nothing of a guideline is written here.

The applicability condition of each recommendation is made by :func:`applicability_conditions` (population IRI ->
list of ``PlanDefinition.action.condition``); a compiler fills :attr:`Pathway.expressions` (population IRI ->
``Expression``) and the conditions carry it. Until then a condition is the conformant interim
``{"language": "text/fhirpath", "expression": "{}"}``: the empty collection, which a FHIRPath engine reads as
"not known", so no engine claims the recommendation applies (docs/export.md).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from typing import Any

from guideline_kg.cases.fhir_in import R4_ELEMENTS, project_rules
from guideline_kg.cases.fhir_out import ReverseRules, reverse_rules
from guideline_kg.compile.owl2cql import CqlLibrary, compile_library
from guideline_kg.compile.owl2fhirpath import Factored, compile_factored
from guideline_kg.compile.owl2sparql import UnsupportedExpression
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.outputs.export import short_name
from guideline_kg.store.stores import EmbeddedStore

__all__ = [
    "CPG",
    "DIRECTION_EXTENSION",
    "FHIRPATH",
    "INTERIM_EXPRESSION",
    "STRENGTH_EXTENSION",
    "Pathway",
    "applicability_conditions",
    "careplan",
    "careplan_bundle",
    "compile_cql",
    "cql_conditions",
    "data_requirements",
    "fhir_id",
    "fhir_package",
    "input_patient",
    "library_resource",
    "pathway_bundle",
    "pathway_resources",
    "read_pathway",
    "recommendations_from_bundle",
    "validate_resource",
]

CPG = "http://hl7.org/fhir/uv/cpg/StructureDefinition/"
#: The strength extension CPG 2.0.0 uses (defined in core FHIR, not in the CPG IG).
STRENGTH_EXTENSION = "http://hl7.org/fhir/StructureDefinition/cqf-strengthOfRecommendation"
DIRECTION_EXTENSION = CPG + "cpg-directionOfRecommendation"
KNOWLEDGE_CAPABILITY = CPG + "cpg-knowledgeCapability"
KNOWLEDGE_LEVEL = CPG + "cpg-knowledgeRepresentationLevel"
PLAN_TYPE = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
COMMON_PROCESS = "http://hl7.org/fhir/uv/cpg/CodeSystem/cpg-common-process"
REQUEST_KIND = "http://hl7.org/fhir/request-resource-types#"
IRI_SYSTEM = "urn:ietf:rfc:3986"
FHIRPATH = "text/fhirpath"
#: The FHIRPath of a condition not compiled yet: the empty collection ("not known"; never true).
INTERIM_EXPRESSION = "{}"
#: The key of the strategy for recommendations in no section.
OTHER = ""
#: The request resource of an action the guideline package gives none for (ActivityDefinition.kind).
DEFAULT_KIND = "ServiceRequest"
#: Generated, not clinically validated: every resource says so (``experimental``) and is a draft.
STATUS, EXPERIMENTAL = "draft", True
FHIR_VERSION = "4.0.1"
CPG_PACKAGE = ("hl7.fhir.uv.cpg", "2.0.0")

_ID_BAD = re.compile(r"[^A-Za-z0-9\-.]")


def fhir_id(iri: str, prefix: str = "") -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) from an IRI: ``<prefix>-<local name>``, or a hash where that does not fit."""
    local = _ID_BAD.sub("-", short_name(iri)).strip("-.")
    if prefix:
        local = f"{_ID_BAD.sub('-', prefix)}-{local}" if local else _ID_BAD.sub("-", prefix)
    if not local or len(local) > 64:
        local = (local[:55] + "-" if local else "") + hashlib.sha1(iri.encode()).hexdigest()[:8]
    return local


def _name(fid: str) -> str:
    """A computable name (FHIR inv-0: ``[A-Z]([A-Za-z0-9_]){0,254}``) from an id."""
    parts = re.split(r"[^A-Za-z0-9]+", fid)
    name = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return (name if name[:1].isalpha() else "N" + name)[:255]


def _s(term: Any) -> str | None:
    return None if term is None else str(term)


def _coding(code_iri: str) -> dict[str, str]:
    """A Coding from a code IRI written as ``<system>#<code>`` or ``<system>/<code>`` (SNOMED, LOINC style)."""
    system, sep, code = code_iri.rpartition("#")
    if not sep:
        system, _, code = code_iri.rpartition("/")
    return {"system": system, "code": code}


def _short(text: str, limit: int = 120) -> str:
    """``text`` cut at a word to at most ``limit`` characters (an ellipsis marks the cut)."""
    if len(text) <= limit:
        return text
    return text[:limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"


def _lines(lines: list[int]) -> str:
    return ", ".join(str(n) for n in lines)


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
    section: str | None = None
    label: str | None = None
    conditions: list[str] = field(default_factory=list)

    @property
    def against(self) -> bool:
        return (self.direction or "").lower() == "against"

    @property
    def strategy(self) -> str | None:
        """The section whose strategy holds this recommendation: its algorithm step, else its own section."""
        return self.step or self.section


@dataclass
class Pathway:
    """What the FHIR export reads from the graph: guideline, strategies, recommendations, actions, references,
    the inputs each population reads, and (filled by a compiler) each population's Expression."""

    base: str
    prefix: str
    guideline: dict[str, str | None]
    sections: dict[str, dict[str, Any]]
    recommendations: list[Recommendation]
    actions: dict[str, dict[str, Any]]
    references: dict[int, dict[str, str | None]]
    kinds: dict[str, str] = field(default_factory=dict)
    #: population IRI -> the terms its class expression reads
    reads: dict[str, set[str]] = field(default_factory=dict)
    #: the package's FHIR case mapping read in reverse (None when the package has none)
    rules: ReverseRules | None = None
    #: statement or population IRI -> its compiled applicability: a FHIRPath string, or a FHIR Expression
    #: ({"language", "expression", ...}, e.g. CQL naming a Library expression); empty until a compiler fills it
    expressions: dict[str, str | dict[str, Any]] = field(default_factory=dict)
    #: the compiled FHIRPath with its shared parts as variables (compile.owl2fhirpath.compile_factored): each
    #: recommendation's action declares the variables its condition reads (FHIR ``variable`` extensions)
    fhirpath: Factored | None = None
    #: the compiled CQL library (compile.owl2cql, retrieve-based, with its ELM): exported as a Library resource
    #: (cpg-computablelibrary) that the recommendations name, each with a text/cql condition naming its define
    cql: CqlLibrary | None = None

    def fid(self, iri: str, suffix: str = "") -> str:
        return fhir_id(iri + suffix, self.prefix)

    def canonical(self, resource_type: str, iri: str, suffix: str = "") -> str:
        """The canonical URL of the resource made from ``iri``."""
        return f"{self.base}/{resource_type}/{self.fid(iri, suffix)}"

    def activity_canonical(self, action: str, against: bool) -> str:
        return self.canonical("ActivityDefinition", action, "-donotperform" if against else "")

    @property
    def version(self) -> str:
        return self.guideline.get("version") or "0.0.0"

    @property
    def strategies(self) -> list[str]:
        """The sections that become strategies, in pathway order (first source line of their recommendations)."""
        first: dict[str, int] = {}
        for rec in self.recommendations:
            if rec.strategy:
                first[rec.strategy] = min(first.get(rec.strategy, rec.lines[0]), rec.lines[0])
        steps = [s for s, info in self.sections.items() if info.get("isStep")]
        return sorted(set(first) | set(steps), key=lambda s: (first.get(s, 10**9), s))


def read_pathway(store: EmbeddedStore, project: Project) -> Pathway:
    """Read everything the FHIR export needs through the ``export-*`` queries (and the FHIR case mapping)."""
    q = project.queries_dir
    guideline_rows = list(store.select(load_query(q, "export-guideline").text).dicts())
    if not guideline_rows:
        raise InputError("the knowledge graph has no gk:Guideline to export")
    g = {k: _s(v) for k, v in guideline_rows[0].items()}
    gl = g["guideline"] or ""
    base = gl.rsplit("/", 1)[0] + "/fhir" if "/" in gl else gl + "/fhir"
    namespace = project.namespace
    prefix = project.manifest.guideline.get("id") or (namespace[0] if namespace else "") or short_name(gl)
    sections: dict[str, dict[str, Any]] = {}
    for r in store.select(load_query(q, "export-sections").text).dicts():
        s = sections.setdefault(str(r["section"]), {"label": _s(r["label"]), "definition": _s(r["definition"]),
                                                    "isStep": str(r["isStep"]).lower() == "true", "codes": []})
        if r["processCode"] is not None:
            s["codes"].append(str(r["processCode"]))
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
            step=_s(r["step"]), urgent=str(r["urgent"]).lower() == "true",
            section=_s(r["section"]), label=_s(r["label"]), conditions=conditions.get(pop, [])))
    recs.sort(key=lambda x: (x.lines, x.iri))
    actions: dict[str, dict[str, Any]] = {}
    for r in store.select(load_query(q, "export-actions").text).dicts():
        a = actions.setdefault(str(r["action"]), {"label": _s(r["label"]), "definition": _s(r["definition"]),
                                                  "codes": set(), "kind": DEFAULT_KIND})
        a["codes"].update(str(r["codes"] or "").split())
    seen: set[str] = set()
    for r in store.select(load_query(q, "export-action-kinds").text).dicts():  # nearest first
        action = str(r["action"])
        if action in actions and action not in seen:
            actions[action]["kind"] = str(r["kind"]).removeprefix(REQUEST_KIND)
            seen.add(action)
    refs = {int(str(r["number"])): {"iri": _s(r["reference"]), "label": _s(r["label"]),
                                    "citation": _s(r["citation"]), "note": _s(r["note"])}
            for r in store.select(load_query(q, "export-references").text).dicts()}
    kinds = {str(r["statement"]): str(r["kind"]) for r in store.select(load_query(q, "export-cards").text).dicts()}
    reads: dict[str, set[str]] = {}
    for r in store.select(load_query(q, "export-condition-terms").text).dicts():
        reads.setdefault(str(r["population"]), set()).add(str(r["term"]))
    rules = reverse_rules(project) if project.part("fhir_case_mapping") else None
    return Pathway(base, prefix, g, sections, recs, actions, refs, kinds, reads, rules)


def _identifier(iri: str) -> list[dict[str, str]]:
    return [{"system": IRI_SYSTEM, "value": iri}]


def _cc(code_iri: str | None, text: str | None) -> dict[str, Any]:
    cc: dict[str, Any] = {}
    if code_iri:
        cc["coding"] = [_coding(code_iri)]
    if text:
        cc["text"] = text
    return cc


def _knowledge_extensions() -> list[dict[str, str]]:
    """The CPG shareable profiles' knowledge capability (1..*) and representation level: structured and coded;
    the applicability logic is ``executable`` once a compiler fills the conditions."""
    return [{"url": KNOWLEDGE_CAPABILITY, "valueCode": "shareable"},
            {"url": KNOWLEDGE_CAPABILITY, "valueCode": "computable"},
            {"url": KNOWLEDGE_LEVEL, "valueCode": "structured"}]


def _metadata(p: Pathway, resource_type: str, iri: str, profile: str, title: str, description: str | None,
              suffix: str = "") -> dict[str, Any]:
    """What every knowledge resource carries: id, profile, url, identifier, version, name, title, status,
    experimental, date, publisher, description (the shareable profiles' 1..1 elements)."""
    fid = p.fid(iri, suffix)
    res: dict[str, Any] = {
        "resourceType": resource_type, "id": fid, "meta": {"profile": [CPG + profile]},
        "extension": _knowledge_extensions(),
        "url": p.canonical(resource_type, iri, suffix), "identifier": _identifier(iri),
        "version": p.version, "name": _name(fid), "title": title[:250], "status": STATUS,
        "experimental": EXPERIMENTAL,
    }
    if p.guideline.get("modified"):
        res["date"] = p.guideline["modified"]
    res["publisher"] = p.guideline.get("publisher") or "guideline-kg"
    res["description"] = description or title
    if p.guideline.get("license"):
        res["copyright"] = f"Licence: {p.guideline['license']}"
    return res


def _plan(p: Pathway, iri: str, profile: str, plan_type: str, title: str, description: str | None,
          actions: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    res = _metadata(p, "PlanDefinition", iri, profile, title, description)
    res["type"] = {"coding": [{"system": PLAN_TYPE, "code": plan_type}]}
    if extra:
        res.update(extra)
    res["action"] = actions
    return res


def applicability_conditions(p: Pathway, population: str, statement: str | None = None) -> list[dict[str, Any]]:
    """The ``PlanDefinition.action.condition`` list of the recommendation whose population is ``population``.

    One applicability condition: the compiled expression of :attr:`Pathway.expressions` (looked up by the
    statement's IRI, then the population's; a FHIRPath string or a whole ``Expression`` dict) when there is one,
    else the interim FHIRPath ``{}`` (empty: not known). Its ``description`` names the population and its
    conditions."""
    recs = [r for r in p.recommendations if r.population == population]
    label = (recs[0].population_label if recs else None) or short_name(population)
    description = f"Applies to: {label}."
    if recs and recs[0].conditions:
        description += " Conditions (all must hold): " + "; ".join(recs[0].conditions) + "."
    compiled = p.expressions.get(statement or "") or p.expressions.get(population)
    expression: dict[str, Any] = {"description": description, "name": _name(short_name(population))}
    if isinstance(compiled, str):
        expression.update({"language": FHIRPATH, "expression": compiled})
    elif compiled:
        expression.update(compiled)
    else:
        expression.update({"language": FHIRPATH, "expression": INTERIM_EXPRESSION})
    return [{"kind": "applicability", "expression": expression}]


def _paths(spec: dict[str, Any]) -> list[str]:
    return [a for a in str(spec.get("path", "")).split("|") if a]


def data_requirements(p: Pathway, population: str) -> list[dict[str, Any]]:
    """The FHIR inputs the population's conditions read (``PlanDefinition.action.input``, the CPG "pertinent
    positives and negatives"): for each rule of the package's FHIR case mapping that carries a term the class
    expression names, the rule's resource types with the codes of those terms and the elements its values read."""
    rev, terms = p.rules, p.reads.get(population, set())
    if rev is None or not terms:
        return []
    found: dict[tuple[str, str | None], dict[str, Any]] = {}

    def need(rtype: str, code_path: str | None, codes: list[tuple[str, str]], must: list[str]) -> None:
        req = found.setdefault((rtype, code_path), {"codes": set(), "must": set()})
        req["codes"].update(codes)
        req["must"].update(must)

    for spec in rev.rules.patient.get("values", []):
        if str(rev.x(spec["property"])) in terms and spec.get("path"):
            need(rev.rules.patient.get("resourceType", "Patient"), None, [], _paths(spec))
    for rule in rev.rules.rules:
        rule_terms = [str(rev.x(t)) for t in rule.get("terms", [])]
        hit = [t for t in rule_terms if t in terms]
        specs = [s for s in rule.get("values", []) if "property" in s and str(rev.x(s["property"])) in terms]
        if rule.get("values") and any(s.get("propertyFromTerm") for s in rule["values"]):
            specs += [s for s in rule["values"] if s.get("propertyFromTerm") and hit]
        pv = [s for s in rule.get("patientValues", []) if str(rev.x(s["property"])) in terms]
        if not hit and not specs and not pv:
            continue
        codes = [c[:2] for t in (hit or rule_terms) for c in rev.codes.get(t, [])]
        for rtype, code_path in rule["resources"].items():
            must = [m for s in specs if rtype in s.get("resourceTypes", [rtype]) for m in _paths(s)]
            need(rtype, code_path, codes, must)
    out = []
    for (rtype, code_path), req in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        dr: dict[str, Any] = {"type": rtype}
        if req["must"]:
            dr["mustSupport"] = sorted(req["must"])
        if code_path and req["codes"]:
            dr["codeFilter"] = [{"path": code_path, "code": [{"system": s, "code": c}
                                                             for s, c in sorted(req["codes"])]}]
        out.append(dr)
    return out


def _citation(p: Pathway, n: int) -> dict[str, Any]:
    """A ``relatedArtifact`` of type citation: ``label`` the reference's number in the source; ``citation`` the
    bibliographic citation when the graph has one (the source gives none: then ``display`` says what is known)."""
    ref = p.references.get(n, {})
    art: dict[str, Any] = {"type": "citation", "label": str(n),
                           "display": ref.get("label") or f"Reference {n} of the source"}
    if ref.get("citation"):
        art["citation"] = ref["citation"]
    elif ref.get("note"):
        art["display"] = f"{art['display']}: {ref['note']}"
    return art


def _recommendation_plan(p: Pathway, rec: Recommendation) -> dict[str, Any]:
    extensions = []
    if rec.strength:
        extensions.append({"url": STRENGTH_EXTENSION, "valueCodeableConcept": _cc(rec.strength_code, rec.strength)})
    if rec.direction:
        extensions.append({"url": DIRECTION_EXTENSION,
                           "valueCodeableConcept": _cc(rec.direction_code, rec.direction)})
    if p.fhirpath is not None and isinstance(p.expressions.get(rec.iri), str):  # in scope for action.condition
        extensions += [v.extension() for v in p.fhirpath.variables_of(rec.iri)]
    lines = _lines(rec.lines)
    action: dict[str, Any] = {}
    if extensions:
        action["extension"] = extensions
    action.update({"title": f"Line {lines}", "description": rec.text, "textEquivalent": rec.text})
    if rec.urgent:
        action["priority"] = "urgent"
    action["condition"] = applicability_conditions(p, rec.population, rec.iri) + cql_conditions(p, rec.iri)
    inputs = data_requirements(p, rec.population)
    if inputs:
        action["input"] = inputs
    canonicals = [p.activity_canonical(a, rec.against) for a in rec.actions]
    if len(canonicals) == 1:
        action["definitionCanonical"] = canonicals[0]
    else:
        action["groupingBehavior"] = "logical-group"
        action["selectionBehavior"] = "any"
        action["action"] = [{"title": p.actions.get(a, {}).get("label") or short_name(a), "definitionCanonical": c}
                            for a, c in zip(rec.actions, canonicals, strict=True)]
    extra: dict[str, Any] = {"relatedArtifact": [_citation(p, n) for n in rec.citations]} if rec.citations else {}
    title = rec.label or f"Line {lines}: {rec.text}"
    return _executable(p, rec.iri, _plan(p, rec.iri, "cpg-recommendationdefinition", "eca-rule", title, rec.text,
                                         [action], extra))


def _activity(p: Pathway, iri: str, against: bool) -> dict[str, Any]:
    info = p.actions.get(iri, {})
    label = info.get("label") or short_name(iri)
    code: dict[str, Any] = {"text": label}
    codings = [_coding(c) for c in sorted(info.get("codes") or [])]
    if codings:
        code["coding"] = codings
    title = f"Do not perform: {label}" if against else label
    description = info.get("definition") or label
    res = _metadata(p, "ActivityDefinition", iri, "cpg-computableactivity", title,
                    f"Not to be done: {description}" if against else description,
                    "-donotperform" if against else "")
    res.update({"kind": info.get("kind") or DEFAULT_KIND, "code": code})
    if against:
        res["doNotPerform"] = True
    return res


def _process_code(info: dict[str, Any], iri: str) -> dict[str, Any]:
    """``action.code`` (1..1 in the pathway and strategy profiles): the section's CPG common-process code from the
    package data, else its label as text."""
    codes = [c for c in info.get("codes", []) if c.startswith(COMMON_PROCESS)] or info.get("codes", [])
    return _cc(sorted(codes)[0] if codes else None, info.get("label") or short_name(iri))


def pathway_resources(p: Pathway) -> list[dict[str, Any]]:
    """Every resource of the pathway: pathway, strategies, recommendations, activities (in that order).

    The pathway's actions point at strategies only (the pathway profile allows nothing else): a recommendation
    outside every algorithm step is in the strategy of its own section (the overarching statement, the
    considerations), and one in no section at all in a strategy "Other recommendations"."""
    members: dict[str, list[Recommendation]] = {}
    for rec in p.recommendations:
        members.setdefault(rec.strategy or OTHER, []).append(rec)
    order = [s for s in p.strategies if members.get(s)] + ([OTHER] if OTHER in members else [])
    gl = p.guideline
    strategies = []
    for section in order:
        info = p.sections.get(section, {"label": "Other recommendations", "codes": []})
        iri = section if section != OTHER else (gl["guideline"] or "") + "-other-recommendations"
        code = _process_code(info, iri)
        actions = [{"title": f"Line {_lines(r.lines)}", "description": r.text, "code": [code],
                    "definitionCanonical": p.canonical("PlanDefinition", r.iri)} for r in members[section]]
        plan = _plan(p, iri, "cpg-strategydefinition", "workflow-definition", info.get("label") or short_name(iri),
                     info.get("definition"), actions)
        strategies.append((plan, code))
    pathway_actions = [{"title": s["title"], "description": s["description"], "code": [code],
                        "definitionCanonical": s["url"]} for s, code in strategies]
    description = gl.get("definition") or gl.get("title")
    if gl.get("populationLabel"):
        description = f"{description} Population: {gl['populationLabel']} <{gl['population']}>."
    pathway = _plan(p, gl["guideline"] or "", "cpg-pathwaydefinition", "clinical-protocol", gl["title"] or "",
                    description, pathway_actions)
    recommendations = [_recommendation_plan(p, r) for r in p.recommendations]
    wanted = sorted({(a, r.against) for r in p.recommendations for a in r.actions})
    activities = [_activity(p, a, against) for a, against in wanted]
    library = [library_resource(p)] if p.cql is not None else []
    return [pathway, *(s for s, _ in strategies), *recommendations, *activities, *library]


def _entry(p: Pathway, res: dict[str, Any]) -> dict[str, Any]:
    rel = f"{res['resourceType']}/{res['id']}"
    return {"fullUrl": f"{p.base}/{rel}", "resource": res, "request": {"method": "PUT", "url": rel}}


def compile_applicability(pathway: Pathway, knowledge: Any, project: Project) -> str | None:
    """Fill ``pathway.expressions`` with each statement's applicability compiled to FHIRPath from its OWL
    population and the package's FHIR case mapping (:func:`compile.owl2fhirpath.compile_factored`: a short
    expression per statement over named variables, which its action declares), so that the exported files and
    ``$apply`` run the same expressions. Returns why the conditions stay the interim ``{}``
    (no FHIR case mapping, or a construct the compiler refuses), else None."""
    if not project.part("fhir_case_mapping"):
        return "the guideline package has no FHIR case mapping (fhir_case_mapping)"
    try:
        compiled = compile_factored(knowledge, project_rules(project, "the FHIR export"))
    except UnsupportedExpression as exc:
        return f"the FHIRPath compiler refuses this guideline's populations: {exc}"
    pathway.fhirpath = compiled
    pathway.expressions.update({str(k): v for k, v in compiled.statements.items()})
    return None


#: CPG's knowledge representation levels (cpg-knowledge-representation-level): the recommendations whose
#: applicability is compiled (FHIRPath, CQL/ELM) and the library are ``executable``; the rest ``structured``.
EXECUTABLE = "executable"
LIBRARY_TYPE = "http://terminology.hl7.org/CodeSystem/library-type"
#: The suffix of the Library's id (``plbp-guideline-applicability``): one library per guideline package.
LIBRARY_SUFFIX = "-applicability"


def _library_iri(p: Pathway) -> str:
    return p.guideline["guideline"] or ""


def compile_cql(pathway: Pathway, knowledge: Any, project: Project) -> str | None:
    """Fill ``pathway.cql`` with the guideline's applicability as a retrieve-based CQL library and its ELM
    (:func:`compile.owl2cql.compile_library`, FHIR R4 element names from ``cases.fhir_in.R4_ELEMENTS``), named as
    its Library resource. Returns why there is none (no FHIR case mapping, or a construct the compiler refuses),
    else None."""
    if not project.part("fhir_case_mapping"):
        return "the guideline package has no FHIR case mapping (fhir_case_mapping)"
    name = _name(pathway.fid(_library_iri(pathway), LIBRARY_SUFFIX))
    try:
        pathway.cql = compile_library(knowledge, project_rules(project, "the FHIR export"), name, pathway.version,
                                      elements=R4_ELEMENTS)
    except UnsupportedExpression as exc:
        return f"the CQL compiler refuses this guideline's populations: {exc}"
    return None


def _library_canonical(p: Pathway) -> str:
    return p.canonical("Library", _library_iri(p), LIBRARY_SUFFIX)


def cql_conditions(p: Pathway, statement: str) -> list[dict[str, Any]]:
    """The CQL applicability condition of a recommendation: ``text/cql`` whose expression is the name of the
    library's define for the statement (a CQL identifier; ``text/cql-identifier`` is not in the R4 expression
    languages), ``reference`` the Library; none when there is no compiled library."""
    define = p.cql.define_of(statement) if p.cql is not None else None
    if define is None:
        return []
    quoted = '"' + define.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return [{"kind": "applicability", "expression": {
        "description": f"The define {quoted} of the library {p.cql.name if p.cql else ''}: true applicable, false "
                       "not applicable, null undetermined (the same population as the FHIRPath condition).",
        "language": "text/cql", "expression": quoted, "reference": _library_canonical(p)}}]


def _make_executable(res: dict[str, Any]) -> None:
    """Representation level ``executable`` and the capability ``executable`` (CPG: "run-time capability, e.g.
    compiled ELM logic") on a knowledge resource."""
    for ext in res.get("extension", []):
        if ext["url"] == KNOWLEDGE_LEVEL:
            ext["valueCode"] = EXECUTABLE
    level = next((i for i, e in enumerate(res["extension"]) if e["url"] == KNOWLEDGE_LEVEL), len(res["extension"]))
    res["extension"].insert(level, {"url": KNOWLEDGE_CAPABILITY, "valueCode": EXECUTABLE})


def _executable(p: Pathway, statement: str, plan: dict[str, Any]) -> dict[str, Any]:
    """A recommendation whose applicability is compiled (FHIRPath or CQL) is executable; it names the library of
    its CQL condition."""
    if p.expressions.get(statement) or (p.cql is not None and p.cql.define_of(statement) is not None):
        _make_executable(plan)
    if p.cql is not None and p.cql.define_of(statement) is not None:
        plan["library"] = [_library_canonical(p)]
    return plan


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def library_resource(p: Pathway) -> dict[str, Any]:
    """The Library (``cpg-computablelibrary`` and ``cpg-executablelibrary``, logic-library) carrying the CQL
    (``text/cql``) and its ELM (``application/elm+json``) as base64 data, with a data requirement per resource type
    it retrieves. It uses no other library (no FHIRHelpers), so it has no ``depends-on``."""
    if p.cql is None:
        raise ValueError("no compiled CQL library")
    gl = p.guideline
    title = f"Applicability of the recommendations: {gl.get('title') or short_name(_library_iri(p))}"
    res = _metadata(p, "Library", _library_iri(p), "cpg-computablelibrary", title,
                    "Each recommendation's applicability, compiled from its OWL population and the FHIR case mapping: "
                    "one define per statement, true applicable, false not applicable, null undetermined.",
                    LIBRARY_SUFFIX)
    _make_executable(res)
    # CQL and its ELM: both the computable (text/cql) and the executable (ELM) library profiles
    res["meta"]["profile"].append(CPG + "cpg-executablelibrary")
    res["name"] = p.cql.name
    res["type"] = {"coding": [{"system": LIBRARY_TYPE, "code": "logic-library"}]}
    elm = json.dumps(p.cql.elm, separators=(",", ":"))
    res["content"] = [{"contentType": "text/cql", "data": _b64(p.cql.cql)},
                      {"contentType": "application/elm+json", "data": _b64(elm)}]
    res["dataRequirement"] = [{"type": t, "profile": [f"http://hl7.org/fhir/StructureDefinition/{t}"]}
                              for t in p.cql.data_types]
    return res


def pathway_bundle(store: EmbeddedStore, project: Project, pathway: Pathway | None = None) -> dict[str, Any]:
    """The whole pathway as a FHIR R4 transaction Bundle (PUT entries with ids derived from the IRIs)."""
    p = pathway or read_pathway(store, project)
    resources = pathway_resources(p)
    return {"resourceType": "Bundle", "id": p.fid(p.guideline["guideline"] or "", "-pathway"),
            "type": "transaction", "entry": [_entry(p, r) for r in resources]}


def input_patient(bundle: Any) -> dict[str, str] | None:
    """The reference to the Patient of a FHIR input Bundle: its ``fullUrl`` (how the Bundle's own resources name
    it), else ``Patient/<id>``; None when the Bundle has no Patient."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("entry"), list):
        return None
    for entry in bundle["entry"]:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict) and res.get("resourceType") == "Patient":
            if isinstance(entry.get("fullUrl"), str):
                return {"reference": entry["fullUrl"]}
            if isinstance(res.get("id"), str):
                return {"reference": f"Patient/{res['id']}"}
    return None


def _issue(iid: str, patient: dict[str, Any], severity: str, code: str, detail: str,
           implicated: list[str]) -> dict[str, Any]:
    return {"resourceType": "DetectedIssue", "id": iid, "status": "preliminary", "code": {"text": code},
            "severity": severity, "patient": patient, "detail": detail,
            "implicated": [{"reference": c} for c in implicated]}


def careplan(result: Any, p: Pathway, patient: dict[str, str] | None = None) -> dict[str, Any]:
    """A case's result as a CarePlan (``cpg-careplan``; what ``$apply`` on the pathway returns).

    ``subject`` is ``patient`` (the input Patient's reference, for a FHIR case: :func:`input_patient`), else a
    contained Patient whose identifier is the case's patient IRI. One activity per applicable recommendation,
    urgent ones first, each ``detail.instantiatesCanonical`` its PlanDefinition, ``doNotPerform`` for advice
    against, the explanation as ``progress``. Urgent findings and conflicts are contained DetectedIssues listed in
    ``supportingInfo`` (and summed up in the first notes); the other applicable statements and the undetermined
    recommendations with their missing data are notes.
    """
    data = result.to_json()
    by_iri = {r.iri: r for r in p.recommendations}
    contained: list[dict[str, Any]] = []
    if patient is None:
        contained.append({"resourceType": "Patient", "id": "patient",
                          "identifier": [{"system": IRI_SYSTEM, "value": str(result.patient)}]})
        subject: dict[str, Any] = {"reference": "#patient", "display": data["case"]}
    else:
        subject = {**patient, "display": data["case"]}
    issues, notes = [], []
    for n, u in enumerate(data.get("urgent", []), 1):
        urgent = by_iri.get(u["statement"])
        text = f"URGENT (line {_lines(urgent.lines) if urgent else '?'}): {u['finding']} -> {u['action']}."
        issues.append(_issue(f"urgent-{n}", subject, "high", "urgent finding", text,
                             [p.canonical("PlanDefinition", u["statement"])]))
        notes.append({"text": text})
    for n, c in enumerate(data.get("conflicts", []), 1):
        at = {k: _lines(by_iri[c[k]].lines) if c[k] in by_iri else short_name(c[k]) for k in ("for", "against")}
        text = (f"Conflicting recommendations on {c['action']}: line {at['for']} (for) and line "
                f"{at['against']} (against). {c.get('resolution') or ''}").strip()
        issues.append(_issue(f"conflict-{n}", subject, "moderate", "conflicting recommendations", text,
                             [p.canonical("PlanDefinition", c["for"]), p.canonical("PlanDefinition", c["against"])]))
        notes.append({"text": f"CONFLICT: {text}"})
    conflict_of = {}
    for issue, c in zip(issues[len(data.get("urgent", [])):], data.get("conflicts", []), strict=True):
        conflict_of[c["for"]] = conflict_of[c["against"]] = issue["id"]
    activities: list[tuple[bool, dict[str, Any]]] = []
    for rec in data["recommendations"]:
        lines = _lines(rec["source_lines"])
        known = by_iri.get(rec["id"])
        if rec["status"] == "applicable" and known is not None:
            first = p.actions.get(known.actions[0], {}) if known.actions else {}
            activity: dict[str, Any] = {
                "kind": first.get("kind") or DEFAULT_KIND,
                "instantiatesCanonical": [p.canonical("PlanDefinition", rec["id"])],
                "code": {"text": ", ".join(p.actions.get(a, {}).get("label") or short_name(a)
                                           for a in known.actions)},
                "status": "not-started", "doNotPerform": known.against,
                "description": f"Line {lines}: {rec['text']}",
            }
            progress = [{"text": f"Because: {b}"} for b in rec["because"]]
            if rec["id"] in conflict_of:
                progress.append({"text": f"In conflict: see DetectedIssue #{conflict_of[rec['id']]}."})
            activities.append((bool(rec.get("urgent")), {"detail": activity, "progress": progress}))
        elif rec["status"] == "applicable":
            notes.append({"text": f"Applies ({p.kinds.get(rec['id'], 'statement')}, line {lines}): {rec['text']}"})
        elif rec["status"] == "undetermined":
            notes.append({"text": f"Undetermined (line {lines}): {rec['text']} Missing: "
                                  + "; ".join(rec["missing"])})
    contained += issues
    plan: dict[str, Any] = {
        "resourceType": "CarePlan", "id": fhir_id(f"careplan-{data['case']}"),
        "meta": {"profile": [CPG + "cpg-careplan"]},
    }
    if contained:
        plan["contained"] = contained
    plan.update({
        "instantiatesCanonical": [p.canonical("PlanDefinition", p.guideline["guideline"] or "")],
        "status": "draft", "intent": "proposal",
        "category": [{"coding": [{"system": COMMON_PROCESS, "code": "guideline-based-care"}]}],
        "title": f"{p.guideline['title']}: recommendations for case {data['case']}",
        "description": ("In scope of the guideline." if data["in_scope"]
                        else f"Out of scope: {data['scope_reason']}"),
        "subject": subject,
    })
    if issues:
        plan["supportingInfo"] = [{"reference": f"#{i['id']}", "display": _short(i["detail"])} for i in issues]
    ordered = [a for urgent, a in activities if urgent] + [a for urgent, a in activities if not urgent]
    if ordered:
        plan["activity"] = ordered
    if notes:
        plan["note"] = notes
    return plan


def careplan_bundle(plans: list[dict[str, Any]], p: Pathway) -> dict[str, Any]:
    """Several CarePlans as one collection Bundle."""
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"{p.base}/CarePlan/{c['id']}", "resource": c} for c in plans]}


def fhir_package(bundle: dict[str, Any], p: Pathway) -> bytes:
    """The pathway as a FHIR NPM package (``.tgz``): ``package/package.json``, one ``<Type>-<id>.json`` per
    resource and ``package/.index.json``, as FHIR tooling (the IG publisher, HAPI, Firely) loads packages.
    Deterministic: same content, same bytes."""
    resources = [e["resource"] for e in bundle["entry"]]
    gl = p.guideline
    manifest = {
        "name": f"guideline-kg.{p.prefix}".lower(), "version": p.version,
        "canonical": p.base, "url": p.base, "title": gl.get("title") or p.prefix,
        "description": gl.get("definition") or gl.get("title") or p.prefix,
        "fhirVersions": [FHIR_VERSION], "type": "Conformance",
        "dependencies": {"hl7.fhir.r4.core": FHIR_VERSION, CPG_PACKAGE[0]: CPG_PACKAGE[1]},
        "author": gl.get("publisher") or "guideline-kg",
    }
    files: dict[str, bytes] = {"package/package.json": _dump(manifest)}
    index = []
    for res in resources:
        name = f"{res['resourceType']}-{res['id']}.json"
        files[f"package/{name}"] = _dump(res)
        index.append({"filename": name, "resourceType": res["resourceType"], "id": res["id"], "url": res["url"],
                      "version": res.get("version")})
    files["package/.index.json"] = _dump({"index-version": 1, "files": index})
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), 0, 0o644
            tar.addfile(info, io.BytesIO(body))
    return _gzip_stable(out.getvalue())


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _gzip_stable(data: bytes) -> bytes:
    """The gzip header's modification time (bytes 4-7) set to 0, so the archive is the same from run to run."""
    return data[:4] + b"\0\0\0\0" + data[8:] if data[:2] == b"\x1f\x8b" else data


def _ext(action: dict[str, Any], url: str) -> str | None:
    for e in action.get("extension", []):
        if e.get("url") == url:
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
            "direction": _ext(action, DIRECTION_EXTENSION),
            "strength": _ext(action, STRENGTH_EXTENSION),
            "citations": sorted(int(a["label"]) for a in r.get("relatedArtifact", []) if a.get("type") == "citation"),
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
