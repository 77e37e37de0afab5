"""FHIR R4 Bundles in: generic machinery that applies the guideline package's FHIR case mapping rules to make a
patient case.

Which resource types, codes and ontology terms make which case facts is data: ``fhir-case-mapping.json`` (the
rules) and the SSSOM mapping set it names (codes to terms). Nothing clinical is written here.

Nothing is dropped silently (docs/cases-fhir.md): every resource, element, code or value that does not become a
fact of the case is an :class:`~guideline_kg.cases.model.InputNote` of the case, with its place (``Procedure/p3
.code``); every defect of a bundle (a value of the wrong type, an entry without a resource, ...) is collected, and
the bundle is refused with all of them in one :class:`BundleDefects` (an InputError, exit 2).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, NoReturn

from rdflib import Graph, Literal, URIRef

from guideline_kg.cases.model import Case, InputNote
from guideline_kg.core.dates import months_between
from guideline_kg.core.errors import InputError, printable
from guideline_kg.core.namespaces import CASE, GK, RDF, RDFS, XSD, bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import iri_segment

__all__ = ["R4_ELEMENTS", "RULES_PART", "SUBJECT_ELEMENTS", "BundleDefects", "MappingRules", "bundle_to_case",
           "is_fhir_bundle", "load_rules", "project_rules", "read_sssom"]

#: The manifest part naming the package's rules file (``[parts] fhir_case_mapping``).
RULES_PART = "fhir_case_mapping"

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?$")
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2})?$")
_UUID = re.compile(r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: Elements every FHIR R4 resource may have (Resource and DomainResource).
_COMMON = {"resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
           "modifierExtension"}
#: Elements that say nothing about the patient (identity and bookkeeping of the resource): never reported.
_BOOKKEEPING = {"resourceType", "id", "meta", "implicitRules", "language", "text", "contained"}

#: The top-level elements of the FHIR R4 (4.0.1) resources a mapping reads, from the R4 structure definitions
#: (Resource and DomainResource elements in ``_COMMON``). An element not listed is reported as not an element of
#: the resource (a misspelling, or another FHIR version); a listed one that no rule reads, as not mapped.
R4_ELEMENTS: dict[str, frozenset[str]] = {rtype: frozenset(names.split()) for rtype, names in {
    "Bundle": "identifier type timestamp total link entry signature",
    "Patient": "identifier active name telecom gender birthDate deceasedBoolean deceasedDateTime address "
               "maritalStatus multipleBirthBoolean multipleBirthInteger photo contact communication "
               "generalPractitioner managingOrganization link",
    "Procedure": "identifier instantiatesCanonical instantiatesUri basedOn partOf status statusReason category code "
                 "subject encounter performedDateTime performedPeriod performedString performedAge performedRange "
                 "recorder asserter performer location reasonCode reasonReference bodySite outcome report "
                 "complication complicationDetail followUp note focalDevice usedReference usedCode",
    "Condition": "identifier clinicalStatus verificationStatus category severity code bodySite subject encounter "
                 "onsetDateTime onsetAge onsetPeriod onsetRange onsetString abatementDateTime abatementAge "
                 "abatementPeriod abatementRange abatementString recordedDate recorder asserter stage evidence note",
    "Observation": "identifier basedOn partOf status category code subject focus encounter effectiveDateTime "
                   "effectivePeriod effectiveTiming effectiveInstant issued performer valueQuantity "
                   "valueCodeableConcept valueString valueBoolean valueInteger valueRange valueRatio "
                   "valueSampledData valueTime valueDateTime valuePeriod dataAbsentReason interpretation note "
                   "bodySite method specimen device referenceRange hasMember derivedFrom component",
    "MedicationStatement": "identifier basedOn partOf status statusReason category medicationCodeableConcept "
                           "medicationReference subject context effectiveDateTime effectivePeriod dateAsserted "
                           "informationSource derivedFrom reasonCode reasonReference note dosage",
    "MedicationRequest": "identifier status statusReason intent category priority doNotPerform reportedBoolean "
                         "reportedReference medicationCodeableConcept medicationReference subject encounter "
                         "supportingInformation authoredOn requester performer performerType recorder reasonCode "
                         "reasonReference instantiatesCanonical instantiatesUri basedOn groupIdentifier "
                         "courseOfTherapyType insurance note dosageInstruction dispenseRequest substitution "
                         "priorPrescription detectedIssue eventHistory",
    "DiagnosticReport": "identifier basedOn status category code subject encounter effectiveDateTime effectivePeriod "
                        "issued performer resultsInterpreter specimen result imagingStudy media conclusion "
                        "conclusionCode presentedForm",
    "ImagingStudy": "identifier status modality subject encounter started basedOn referrer interpreter endpoint "
                    "numberOfSeries numberOfInstances procedureReference procedureCode location reasonCode "
                    "reasonReference note description series",
}.items()}
#: The elements by which an R4 resource names the patient it is about (Observation.subject,
#: AllergyIntolerance.patient, ...): each must refer to the bundle's Patient, or the resource is not recorded.
SUBJECT_ELEMENTS = ("subject", "patient")
_HISTORY = re.compile(r"/_history/[^/]+$")
#: The elements of Bundle.entry (R4).
_ENTRY_ELEMENTS = {"link", "fullUrl", "resource", "search", "request", "response", "id", "extension",
                   "modifierExtension"}


class BundleDefects(InputError):
    """A bundle that cannot be read, with every defect found in it (each an :class:`InputNote`: place, defect)."""

    def __init__(self, defects: list[InputNote], path: str | None) -> None:
        self.defects = defects
        if len(defects) == 1:
            text = str(defects[0])
        else:
            text = f"{len(defects)} defects in the bundle:" + "".join(f"\n  - {d}" for d in defects)
        super().__init__(text, path=path)


class _Defect(Exception):
    """Raised inside the mapper to abandon the resource at hand (the defect is already recorded)."""


@dataclass
class MappingRules:
    """The parsed rules file: rules, CURIE prefixes, and the code index built from the SSSOM set."""

    path: Path
    rules: list[dict[str, Any]]
    patient: dict[str, Any]
    prefixes: dict[str, str]
    code_systems: dict[str, str]
    assessment_date: str | None
    skip_status: set[str]
    #: (system, code) -> [(term IRI, predicate IRI)] for every row of the SSSOM set
    codes: dict[tuple[str, str], list[tuple[URIRef, URIRef]]]
    recognise: set[URIRef]
    #: resource type (or "*") -> elements that hold no fact the guideline uses; not reported when unmapped
    quiet: dict[str, set[str]] = field(default_factory=dict)

    def is_quiet(self, rtype: str, element: str) -> bool:
        """Whether an element that no rule reads is left unreported (``"notCaseFacts"`` of the rules file)."""
        return element in _BOOKKEEPING or element in self.quiet.get("*", set()) \
            or element in self.quiet.get(rtype, set())

    def expand(self, curie: str) -> URIRef:
        """The IRI of a CURIE of the rules or the SSSOM set; an unknown prefix is an error in the rules file."""
        prefix, sep, local = curie.partition(":")
        if not sep or prefix not in self.prefixes:
            raise InputError(f"unknown prefix in {curie!r} (declare it in the SSSOM curie_map)", path=str(self.path))
        return URIRef(self.prefixes[prefix] + local)


def project_rules(project: Project, purpose: str) -> MappingRules:
    """The mapping rules the guideline package names (``[parts] fhir_case_mapping``); an InputError (exit 2)
    saying that ``purpose`` needs them when the package has none."""
    return load_rules(project.require(RULES_PART, purpose))


def read_sssom(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The curie_map and the rows of an SSSOM/TSV file (its YAML header is read only for the curie_map)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the SSSOM mapping set ({exc.strerror})", path=str(path)) from None
    curie_map: dict[str, str] = {}
    in_map, body = False, []
    for line in lines:
        if not line.startswith("#"):
            body.append(line)
            continue
        text = line[1:]
        if text.strip() == "curie_map:":
            in_map = True
        elif in_map and text.startswith("  ") and ":" in text:
            key, _, value = text.strip().partition(":")
            curie_map[key.strip()] = value.strip().strip('"')
        else:
            in_map = False
    rows = list(csv.DictReader(body, delimiter="\t"))
    for n, row in enumerate(rows, start=len(lines) - len(body) + 2):
        if not row.get("subject_id") or not row.get("object_id") or not row.get("predicate_id"):
            raise InputError("row lacks subject_id, predicate_id or object_id", path=str(path), line=n)
    return curie_map, rows


#: How many versions of mapping-rule files stay loaded (a few packages per process; the oldest is dropped).
RULES_CACHE_SIZE = 8


def load_rules(path: Path) -> MappingRules:
    """The mapping rules at ``path`` with their SSSOM code index (cached until the file changes)."""
    path = Path(path).resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise InputError(f"cannot read the FHIR mapping rules ({exc.strerror})", path=str(path)) from None
    return _load_rules(path, mtime)


@functools.lru_cache(maxsize=RULES_CACHE_SIZE)
def _load_rules(path: Path, mtime: int) -> MappingRules:
    """The rules file at ``path`` as it is at ``mtime`` (nanoseconds), parsed and indexed once."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the FHIR mapping rules ({exc.strerror})", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=exc.lineno, column=exc.colno) from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or "sssom" not in data:
        raise InputError('the rules file needs an object with "sssom" and a "rules" list', path=str(path))
    sssom_path = path.parent / data["sssom"]
    curie_map, rows = read_sssom(sssom_path)
    rules = MappingRules(path=path, rules=data["rules"], patient=data.get("patient", {}), prefixes=curie_map,
                         code_systems=data.get("codeSystems", {}), assessment_date=data.get("assessmentDate"),
                         skip_status=set(data.get("skipStatus", [])), codes={}, recognise=set(),
                         quiet={k: set(v) for k, v in data.get("notCaseFacts", {}).items() if k != "about"})
    rules.recognise = {rules.expand(p) for p in data.get("recognise", [])}
    by_prefix = {prefix: system for system, prefix in rules.code_systems.items()}
    for row in rows:
        prefix, _, code = row["subject_id"].partition(":")
        if prefix in by_prefix:
            rules.codes.setdefault((by_prefix[prefix], code), []).append(
                (rules.expand(row["object_id"]), rules.expand(row["predicate_id"])))
    for i, rule in enumerate(rules.rules):
        if not isinstance(rule, dict) or not isinstance(rule.get("resources"), dict) or "node" not in rule:
            raise InputError(f'rule {i + 1} needs "resources" (type -> code path) and "node"', path=str(path))
    return rules


def is_fhir_bundle(data: Any) -> bool:
    """True if ``data`` (parsed JSON) is a FHIR Bundle resource."""
    return isinstance(data, dict) and data.get("resourceType") == "Bundle"


@dataclass
class _Resource:
    """One entry of the bundle: its index, resource, readable reference and node IRI."""

    index: int
    data: dict[str, Any]
    type: str
    ref: str
    local: str
    #: the top-level elements a rule looked at (the rest is reported when the resource is recorded)
    read: set[str] = field(default_factory=set)


@dataclass
class _Mapper:
    """The state of one bundle's mapping: graph, notes, created nodes and pending references."""

    rules: MappingRules
    name: str
    source: str | None
    graph: Graph
    patient: URIRef
    assessment: date | None = None
    notes: list[str] = field(default_factory=list)
    defects: list[InputNote] = field(default_factory=list)
    #: resource ref -> (rule id, why the rule did not record it) for rules whose terms matched
    refused: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    nodes: dict[str, URIRef] = field(default_factory=dict)
    by_ref: dict[str, _Resource] = field(default_factory=dict)
    pending: list[tuple[URIRef, URIRef, str, _Resource]] = field(default_factory=list)
    origins: dict[tuple[URIRef, URIRef], list[str]] = field(default_factory=dict)
    via: dict[tuple[str, URIRef], set[URIRef]] = field(default_factory=dict)

    # --- errors and notes -------------------------------------------------------------------------------------
    def fail(self, res: _Resource | None, where: str, defect: str) -> NoReturn:
        """Record a defect (entry, place, defect) and abandon the resource at hand; the bundle is refused with
        every defect once all resources have been read."""
        entry = f"entry {res.index} ({res.ref})" if res else "Bundle"
        self.defects.append(InputNote(f"{entry}: {where}", defect))
        raise _Defect

    def note(self, place: str, message: str) -> None:
        """A note of something not recorded, at ``place`` (``Procedure/p3 .code``, or a resource, or Bundle)."""
        self.notes.append(InputNote(place, message))

    # --- paths --------------------------------------------------------------------------------------------------
    def values(self, res: _Resource, obj: Any, path: str) -> tuple[str, list[Any]]:
        """The values at the first alternative of ``a.b|c`` that has any, with the alternative taken."""
        if obj is res.data:
            res.read.update(alt.split(".", 1)[0] for alt in path.split("|"))
        for alt in path.split("|"):
            current = [obj]
            for step in alt.split("."):
                nxt: list[Any] = []
                for value in current:
                    if not isinstance(value, dict):
                        self.fail(res, alt, f"expected an object before {step!r}, got {json.dumps(value)[:40]}")
                    if step in value:
                        item = value[step]
                        nxt += item if isinstance(item, list) else [item]
                current = nxt
            if current:
                return alt, current
        return path, []

    # --- codes --------------------------------------------------------------------------------------------------
    def codings(self, res: _Resource, concept: Any, where: str) -> list[tuple[str, str]]:
        """The (system, code) pairs of a CodeableConcept, checking its shape."""
        if not isinstance(concept, dict):
            self.fail(res, where, f"expected a CodeableConcept object, got {json.dumps(concept)[:40]}")
        codings = concept.get("coding", [])
        if not isinstance(codings, list):
            self.fail(res, f"{where}.coding", "expected a list of codings")
        out = []
        for coding in codings:
            if not isinstance(coding, dict) or not isinstance(coding.get("code"), str) \
                    or not isinstance(coding.get("system", ""), str):
                self.fail(res, f"{where}.coding",
                          f"expected codings with string system and code, got {json.dumps(coding)[:60]}")
            out.append((coding.get("system", ""), coding["code"]))
        return out

    def terms_of(self, res: _Resource, concept: Any, where: str, report: bool = True) -> list[URIRef]:
        """The ontology terms the codings of a CodeableConcept are recognised as; unmapped codes, and a text
        without a coding the mapping knows, become notes."""
        terms: list[URIRef] = []
        codings = self.codings(res, concept, where)
        known = [c for c in codings if c in self.rules.codes]
        text = concept.get("text")
        if report and not known and isinstance(text, str) and text.strip():
            self.note(f"{res.ref} .{where}", f"text {text.strip()[:60]!r} has no coding the mapping knows"
                      + (" (text is not matched to codes)" if not codings else "") + "; not recorded")
        elif report and not codings:
            self.note(f"{res.ref} .{where}", "no coding and no text; not recorded")
        for system, code in codings:
            mapped = self.rules.codes.get((system, code), [])
            used = [t for t, p in mapped if p in self.rules.recognise]
            if used:
                terms += [t for t in used if t not in terms]
                for t, p in mapped:
                    self.via.setdefault((res.ref, t), set()).add(p)
            elif report and mapped:
                self.note(f"{res.ref} .{where}", f"code {system}|{code} maps to "
                          f"{', '.join(self.curie(t) for t, _ in mapped)} only by "
                          f"{', '.join(sorted({self.curie(p) for _, p in mapped}))}; not used")
            elif report:
                self.note(f"{res.ref} .{where}", f"code {system}|{code} is not in the mapping; not recorded")
        return terms

    def curie(self, iri: URIRef) -> str:
        """A CURIE of ``iri`` for messages."""
        for prefix, ns in self.rules.prefixes.items():
            if str(iri).startswith(ns):
                return f"{prefix}:{str(iri)[len(ns):]}"
        return f"<{iri}>"

    # --- literals -----------------------------------------------------------------------------------------------
    def as_date(self, res: _Resource | None, where: str, value: Any) -> date | None:
        """A FHIR date or dateTime as a date; a partial date is noted and skipped, anything else is an error."""
        if isinstance(value, str):
            m = _DATE.match(value)
            if m:
                try:
                    return date(int(m[1]), int(m[2]), int(m[3]))
                except ValueError:
                    pass
            elif _PARTIAL_DATE.match(value):
                self.note(f"{res.ref if res else 'Bundle'} .{where}",
                          f"partial date {value!r} not recorded (a day is needed)")
                return None
        self.fail(res, where, f"expected a date (YYYY-MM-DD), got {json.dumps(value)[:40]}")
        return None

    def convert(self, res: _Resource, spec: dict[str, Any], where: str, value: Any,
                term: URIRef | None) -> URIRef | Literal | None:
        """One value converted as the rule's ``as`` says; None (with a note) when it cannot be recorded."""
        kind = spec.get("as", "string")
        if kind == "date":
            d = self.as_date(res, where, value)
            return Literal(d.isoformat(), datatype=XSD.date) if d else None
        if kind in ("decimal", "integer"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind == "integer":
                ok = ok and float(value).is_integer()
            if not ok:
                self.fail(res, where, f"expected {'an integer' if kind == 'integer' else 'a number'}, got "
                                      f"{json.dumps(value)[:40]}")
            return Literal(int(value)) if kind == "integer" else self.decimal(value, spec)
        if kind == "boolean":
            if not isinstance(value, bool):
                self.fail(res, where, f"expected true or false, got {json.dumps(value)[:40]}")
            return Literal(value)
        if kind == "string":
            if not isinstance(value, str):
                self.fail(res, where, f"expected a string, got {json.dumps(value)[:40]}")
            return Literal(value)
        if kind == "map":
            if not isinstance(value, (str, bool)):
                self.fail(res, where, f"expected a code or a boolean, got {json.dumps(value)[:40]}")
            key = str(value).lower() if isinstance(value, bool) else value
            if key not in spec["map"]:
                self.note(f"{res.ref} .{where}", f"value {key!r} is not mapped (known: {', '.join(spec['map'])}); "
                          f"{spec['property']} not recorded")
                return None
            return self.rules.expand(spec["map"][key])
        if kind == "term":
            allowed = {self.rules.expand(t) for t in spec.get("terms", [])}
            found = [t for t in self.terms_of(res, value, where) if not allowed or t in allowed]
            return found[0] if found else None
        if kind in ("monthsToAssessment", "yearsToAssessment"):
            d = self.as_date(res, where, value)
            if d is None or self.assessment is None:
                if d is not None:
                    self.note(f"{res.ref} .{where}", f"no assessment date (Bundle.{self.rules.assessment_date}): "
                              f"{spec['property']} not computed")
                return None
            months = months_between(d, self.assessment)
            if kind == "yearsToAssessment":
                return Literal(int(months // 12))
            return self.decimal(months, spec)
        if kind == "weeksOfPeriod":
            if not isinstance(value, dict):
                self.fail(res, where, "expected a Period object with start (and end)")
            start = self.as_date(res, f"{where}.start", value.get("start"))
            end = self.as_date(res, f"{where}.end", value["end"]) if "end" in value else self.assessment
            if start is None or end is None:
                return None
            if end < start:
                self.fail(res, where, f"end {end} is before start {start}")
            return self.decimal((end - start).days / 7, spec)
        if kind == "codeOfSystem":
            if isinstance(value, dict) and value.get("system") == spec["system"] and isinstance(value.get("code"), str):
                return Literal(value["code"])
            return None
        raise InputError(f"unknown value kind {kind!r} in rule for {spec.get('property')}", path=str(self.rules.path))

    @staticmethod
    def decimal(value: float, spec: dict[str, Any]) -> Literal:
        """An xsd:decimal literal, rounded to the spec's ``round`` places if given."""
        number = Decimal(str(value))
        if "round" in spec:
            number = number.quantize(Decimal(1).scaleb(-int(spec["round"])), rounding=ROUND_HALF_UP)
        return Literal(str(number), datatype=XSD.decimal)

    # --- rules --------------------------------------------------------------------------------------------------
    def node_of(self, res: _Resource, spec: dict[str, Any]) -> URIRef | None:
        """The node a rule writes to (patient, shared, the resource's own, or a referenced resource's)."""
        kind = spec.get("kind")
        if kind == "patient":
            return self.patient
        if kind == "shared":
            return URIRef(f"{CASE}{self.name}-{spec['key']}")
        if kind == "resource":
            return URIRef(f"{CASE}{self.name}-{res.local}")
        if kind == "referenced":
            where, refs = self.values(res, res.data, spec["path"])
            for ref in refs:
                target = self.by_ref.get(ref) if isinstance(ref, str) else None
                if target is not None and target.ref in self.nodes:
                    return self.nodes[target.ref]
                self.note(f"{res.ref} .{where}", f"refers to {ref!r}, which is not a mapped resource of the bundle; "
                          "not recorded")
                return None
            self.note(res.ref, f"has no {spec['path']}; not recorded")
            return None
        raise InputError(f"unknown node kind {kind!r}", path=str(self.rules.path))

    def apply(self, rule: dict[str, Any], res: _Resource, terms: list[URIRef]) -> bool:
        """Apply one rule to one resource whose codes gave ``terms``; True if it recorded anything."""
        wanted = [self.rules.expand(t) for t in rule.get("terms", [])]
        matched = [t for t in wanted if t in terms]
        if not matched:
            return False
        if rule.get("pick") == "first":
            matched = matched[:1]
        status = res.data.get("status")
        if rule.get("status") and status is not None and status not in rule["status"]:
            self.refused.setdefault(res.ref, []).append(
                (str(rule.get("id")), f"status {status!r} is not one of {', '.join(rule['status'])}"))
            return False
        for cond in rule.get("when", []):
            why = self.unmet(res, cond)
            if why:
                self.refused.setdefault(res.ref, []).append((str(rule.get("id")), why))
                return False
        if "after" in rule and not self.is_after(res, rule["after"]):
            return True
        spec = rule["node"]
        node = self.node_of(res, spec)
        if node is None:
            return True
        triples: list[tuple[URIRef, URIRef, Any]] = []
        pending: list[tuple[URIRef, URIRef, str, _Resource]] = []
        for term in matched:
            if spec.get("typeFromTerm"):
                triples.append((node, RDF.type, term))
            if spec.get("type"):
                triples.append((node, RDF.type, self.rules.expand(spec["type"])))
            if spec.get("termAsValueOf"):
                triples.append((node, self.rules.expand(spec["termAsValueOf"]), term))
        for value_spec in rule.get("values", []):
            self.apply_value(res, value_spec, node, matched, triples, pending)
        for required in rule.get("require", []):
            prop = self.rules.expand(required)
            if not any(p == prop for _, p, _ in triples):
                self.note(res.ref, f"no value for {required} (rule {rule.get('id')}); not recorded")
                return True
        if "absentOnlyBy" in rule and not self.may_deny(rule["absentOnlyBy"], res, matched, triples):
            return True
        for value_spec in rule.get("patientValues", []):
            if value_spec.get("status") and status not in value_spec["status"]:
                continue
            if value_spec.get("terms") and not {self.rules.expand(t) for t in value_spec["terms"]} & set(matched):
                continue
            triples.append((self.patient, self.rules.expand(value_spec["property"]), Literal(value_spec["const"])))
        if spec.get("link"):
            triples.insert(0, (self.patient, self.rules.expand(spec["link"]), node))
        for s, p, o in triples:
            self.graph.add((s, p, o))
            if isinstance(o, Literal) and (s == self.patient or spec.get("kind") == "shared"):
                self.origins.setdefault((s, p), []).append(res.ref)
        self.pending += pending
        self.nodes.setdefault(res.ref, node)
        return True

    def apply_value(self, res: _Resource, spec: dict[str, Any], node: URIRef, matched: list[URIRef],
                    triples: list, pending: list) -> None:
        """Add the triples of one value spec of a rule to ``triples`` (references to ``pending``)."""
        if spec.get("resourceTypes") and res.type not in spec["resourceTypes"]:
            return
        if spec.get("forTerms") and not {self.rules.expand(t) for t in spec["forTerms"]} & set(matched):
            return
        if spec.get("propertyFromTerm"):
            allowed = {self.rules.expand(t) for t in spec.get("forTerms", [])}
            props = [t for t in matched if not allowed or t in allowed]
        else:
            props = [self.rules.expand(spec["property"])]
        if "const" in spec:
            triples += [(node, p, Literal(spec["const"])) for p in props]
            return
        if "from" in spec:
            return
        where, found = self.values(res, res.data, spec["path"])
        if spec.get("as") == "ref":
            pending += [(node, p, ref, res) for p in props for ref in found]
            return
        converted = [c for c in (self.convert(res, dict(spec, property=self.curie(props[0])), where, v, None)
                                 for v in found) if c is not None]
        if not found and "default" in spec:
            converted = [self.rules.expand(spec["default"])]
        for p in props:
            triples += [(node, p, c) for c in converted[:1]]

    def unmet(self, res: _Resource, cond: dict[str, Any]) -> str | None:
        """Why a rule's ``when`` condition (``path`` with ``in`` or ``notIn`` values) does not hold, or None."""
        where, found = self.values(res, res.data, cond["path"])
        values = [str(v).lower() if isinstance(v, bool) else v for v in found]
        if "in" in cond and not set(values) & set(cond["in"]):
            return f"{where} is {', '.join(map(repr, values)) or 'absent'}, not one of {', '.join(cond['in'])}"
        if "notIn" in cond and set(values) & set(cond["notIn"]):
            return f"{where} is {', '.join(map(repr, values))}"
        return None

    def may_deny(self, spec: dict[str, Any], res: _Resource, matched: list[URIRef], triples: list) -> bool:
        """False (with a note) if a negative value rests only on a code broader or narrower than the term. Without
        ``values``, every fact the rule records is negative (the absence of a treatment)."""
        negatives = {self.rules.expand(v) for v in spec.get("values", [])}
        if negatives and not any(o in negatives for _, _, o in triples):
            return True
        allowed = {self.rules.expand(p) for p in spec["predicates"]}
        if any(self.via.get((res.ref, t), set()) & allowed for t in matched):
            return True
        by = ', '.join(sorted(self.curie(p) for t in matched for p in self.via.get((res.ref, t), ())))
        self.note(res.ref, f"the absence of a code mapped by {by} does not show the absence of "
                  f"{', '.join(self.curie(t) for t in matched)}; not recorded")
        return False

    def is_after(self, res: _Resource, spec: dict[str, Any]) -> bool:
        """Whether the resource's date is after a date already recorded on a shared node (unknown counts as yes)."""
        where, found = self.values(res, res.data, spec["path"])
        if not found:
            return True
        when = self.as_date(res, where, found[0])
        other = self.graph.value(URIRef(f"{CASE}{self.name}-{spec['shared']}"), self.rules.expand(spec["property"]))
        if when is None or other is None:
            return True
        if when > date.fromisoformat(str(other)):
            return True
        self.note(f"{res.ref} .{where}", f"dated {when}, not after "
                  f"{self.curie(self.rules.expand(spec['property']))} {other} of the {spec['shared']}; not recorded")
        return False

    def resolve_pending(self) -> None:
        """Link references to the nodes of the resources they name, or note that they name none."""
        for node, prop, ref, res in self.pending:
            target = self.by_ref.get(ref) if isinstance(ref, str) else None
            if target is None or target.ref not in self.nodes:
                self.note(res.ref, f"refers to {ref!r}, which is not a mapped resource of the bundle; "
                          f"{self.curie(prop)} not recorded")
                continue
            self.graph.add((node, prop, self.nodes[target.ref]))

    def check_single_values(self) -> None:
        """Note every property of the patient or a shared node that got two different values."""
        for (s, p), refs in sorted(self.origins.items()):
            values = set(self.graph.objects(s, p))
            if len(values) > 1 and all(isinstance(v, Literal) for v in values):
                self.note(", ".join(sorted(set(refs))), f"conflicting values for {self.curie(p)} of {self.curie(s)}: "
                          f"{', '.join(sorted(str(v) for v in values))}")



def _entries(bundle: dict[str, Any], mapper: _Mapper) -> list[_Resource]:
    """The bundle's entries as resources, each checked for a resourceType and given a stable local name; a
    defective entry is recorded (every one, not only the first) and left out."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        mapper.defects.append(InputNote("Bundle .entry", "must be a list"))
        return []
    out = []
    seen_ids: dict[str, int] = {}
    seen_urls: dict[str, int] = {}
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            mapper.defects.append(InputNote(f"entry {i}", "no resource object"))
            continue
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            mapper.defects.append(InputNote(f"entry {i}", "resource without resourceType"))
            continue
        rid = resource.get("id")
        if rid is not None and (not isinstance(rid, str) or not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", rid)):
            mapper.defects.append(InputNote(f"entry {i} ({rtype}) .id", f"{json.dumps(rid)[:40]} is not a FHIR id"))
            continue
        full_url = entry.get("fullUrl")
        if rid is not None:
            if f"{rtype}/{rid}" in seen_ids:
                mapper.defects.append(InputNote(f"entry {i} ({rtype}/{rid}) .id", f"duplicate resource id: entry "
                                                f"{seen_ids[f'{rtype}/{rid}']} is {rtype}/{rid} too (the ids of a "
                                                "bundle's resources must be unique)"))
                continue
            seen_ids[f"{rtype}/{rid}"] = i
        if isinstance(full_url, str):
            if full_url in seen_urls:
                mapper.defects.append(InputNote(f"entry {i} ({rtype}) .fullUrl", f"duplicate fullUrl "
                                                f"{json.dumps(full_url)[:80]}: entry {seen_urls[full_url]} has it "
                                                "too (a bundle's fullUrls must be unique)"))
                continue
            seen_urls[full_url] = i
        if rid is None and isinstance(full_url, str):
            rid = re.sub(r"[^A-Za-z0-9\-.]", "-", full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1])[:64]
        rid = rid or f"entry{i}"
        res = _Resource(i, resource, rtype, f"{rtype}/{rid}", iri_segment(f"{rtype.lower()}-{rid}"))
        if isinstance(full_url, str) and full_url.startswith("urn:uuid:") and not _UUID.match(full_url):
            mapper.note(f"entry {i} ({res.ref}) .fullUrl", f"{full_url!r} is not a urn:uuid with a UUID; references "
                        "to it may not resolve elsewhere")
        for key in sorted(set(entry) - _ENTRY_ELEMENTS):
            mapper.note(f"entry {i} ({res.ref})", f"{key!r} is not an element of a FHIR R4 Bundle.entry; not read")
        out.append(res)
    return out


def _report_elements(mapper: _Mapper, recorded: list[_Resource]) -> None:
    """Note each top-level element of the recorded resources that no rule reads on any recorded resource of its
    type (once per resource type and element, at the first resource that has it), saying whether R4 knows it;
    elements that hold no case fact (``notCaseFacts`` of the rules file) stay quiet."""
    read: dict[str, set[str]] = {}
    for res in recorded:
        read.setdefault(res.type, set()).update(res.read)
    said: set[tuple[str, str]] = set()
    for res in recorded:
        known = R4_ELEMENTS.get(res.type)
        for key in res.data:
            element = key[1:] if key.startswith("_") else key  # _x: the extensions of primitive x
            if element in read[res.type] or mapper.rules.is_quiet(res.type, element) or (res.type, key) in said:
                continue
            said.add((res.type, key))
            once = f"(said once per {res.type})"
            if known is not None and element not in known and element not in _COMMON:
                mapper.note(f"{res.ref} .{key}", f"not an element of a FHIR R4 {res.type}; not read {once}")
            else:
                mapper.note(f"{res.ref} .{key}", f"no rule maps this element; not recorded {once}")


def _about_someone_else(res: _Resource, patient: _Resource, full_url: Any) -> tuple[str, str] | None:
    """(element, why) when ``res`` names a subject or patient that is not the bundle's Patient ``patient``: a
    reference ``Patient/<id>`` (optionally with ``/_history/<version>``) or the Patient entry's ``fullUrl``
    (``urn:uuid:...`` or absolute) is the patient; any other reference, or one without ``reference``, is not.
    None when every such element refers to the patient, or there is none."""
    ours = {patient.ref} | ({full_url} if isinstance(full_url, str) else set())
    for key in SUBJECT_ELEMENTS:
        if key not in res.data:
            continue
        value = res.data[key]
        for item in value if isinstance(value, list) else [value]:
            ref = item.get("reference") if isinstance(item, dict) else None
            if not isinstance(ref, str):
                return key, (f"{json.dumps(item, ensure_ascii=False)[:60]} does not refer to the bundle's Patient "
                             f"({patient.ref}) by reference; the resource may be about someone else and is not "
                             "recorded")
            if ref not in ours and _HISTORY.sub("", ref) not in ours:
                return key, (f"refers to {ref!r}, not to the bundle's Patient ({patient.ref}): the resource is about "
                             "someone else and is not recorded")
    return None


def bundle_to_case(bundle: dict, name: str, source: Path | None = None, *,
                   project: Project | None = None) -> Case:
    """The patient case a FHIR R4 Bundle describes, mapped by the project's rules. What cannot be recorded is in
    the case's notes (each an InputNote with its place); a bundle with defects is refused with all of them
    (:class:`BundleDefects`, an InputError)."""
    where = str(source) if source is not None else None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        got = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        raise InputError(f"not a FHIR Bundle (resourceType is {json.dumps(got)})", path=where)
    rules = project_rules(project or Project.at(), "reading a FHIR case")
    graph = bind_prefixes(Graph())
    patient = URIRef(f"{CASE}{iri_segment(name)}")  # a name (file name, Bundle.id) escaped, so the IRI is valid
    mapper = _Mapper(rules, iri_segment(name), where, graph, patient)
    for key in sorted(set(bundle) - R4_ELEMENTS["Bundle"] - _COMMON):
        mapper.note(f"Bundle .{key}", "not an element of a FHIR R4 Bundle; not read")
    resources = _entries(bundle, mapper)
    for res in resources:
        mapper.by_ref[res.ref] = res
        full_url = bundle["entry"][res.index].get("fullUrl")
        if isinstance(full_url, str):
            mapper.by_ref[full_url] = res
    if rules.assessment_date:
        stamp = bundle.get(rules.assessment_date)
        if stamp is None:
            mapper.note(f"Bundle .{rules.assessment_date}", "absent: the assessment date is unknown")
        else:
            with contextlib.suppress(_Defect):  # the defect is recorded
                mapper.assessment = mapper.as_date(None, rules.assessment_date, stamp)
    graph.add((patient, RDF.type, GK.Patient))
    shown = printable(name)  # a file name's bytes that are not UTF-8 as escapes; the IRI keeps them (%FF)
    graph.add((patient, RDFS.label, Literal(printable(f"{shown}: from FHIR Bundle {bundle.get('id', '')}".strip()))))
    # the patient resource
    patients = [r for r in resources if r.type == rules.patient.get("resourceType", "Patient")]
    if len(patients) > 1:
        mapper.defects.append(InputNote(f"entries {', '.join(str(p.index) for p in patients)}",
                                        "more than one Patient (a case is one patient)"))
    elif not patients and isinstance(bundle.get("entry", []), list):
        mapper.defects.append(InputNote("Bundle .entry", f"no {rules.patient.get('resourceType', 'Patient')} "
                                        "resource: a case is one patient's record, and every other resource must "
                                        "name that patient as its subject"))
    for res in patients[:1]:
        try:
            for spec in rules.patient.get("values", []):
                prop = rules.expand(spec["property"])
                if spec.get("from") == "assessmentDate":
                    if mapper.assessment:
                        graph.add((patient, prop, Literal(mapper.assessment.isoformat(), datatype=XSD.date)))
                    continue
                where_, found = mapper.values(res, res.data, spec["path"])
                for value in found[:1]:
                    converted = mapper.convert(res, spec, where_, value, None)
                    if converted is not None:
                        graph.add((patient, prop, converted))
        except _Defect:
            pass
        mapper.nodes[res.ref] = patient
    # every other resource, rule by rule in the order of the rules file
    others = [r for r in resources if r not in patients]
    if patients:  # subject integrity: a resource about another patient is reported and left out
        the_patient = patients[0]
        patient_url = bundle["entry"][the_patient.index].get("fullUrl")
        kept = []
        for res in others:
            foreign = _about_someone_else(res, the_patient, patient_url)
            if foreign is None:
                kept.append(res)
            else:
                mapper.note(f"{res.ref} .{foreign[0]}", foreign[1])
        others = kept
    terms_by_res: dict[str, list[URIRef]] = {}
    for res in others:
        status = res.data.get("status")
        res.read.add("status")  # weighed by skipStatus and each rule's "status"
        paths = {rule["resources"][res.type] for rule in rules.rules if res.type in rule["resources"]}
        if not paths:
            mapper.note(res.ref, f"no mapping rule for {res.type} resources; not recorded")
            continue
        if "modifierExtension" in res.data:
            mapper.note(f"{res.ref} .modifierExtension", "a modifier extension may change what the resource "
                        "means and none is understood; the resource is not recorded")
            continue
        accepted = {st for rule in rules.rules if res.type in rule["resources"] for st in rule.get("status", [])}
        if isinstance(status, str) and status in rules.skip_status and status not in accepted:
            mapper.note(f"{res.ref} .status", f"{status!r}; not recorded")
            continue
        terms: list[URIRef] = []
        try:
            for path in sorted(paths):
                at, concepts = mapper.values(res, res.data, path)
                if not concepts:
                    mapper.note(res.ref, f"no {path}; not recorded")
                for concept in concepts:
                    terms += [t for t in mapper.terms_of(res, concept, at) if t not in terms]
        except _Defect:
            continue
        terms_by_res[res.ref] = terms
    used: set[str] = set()
    for rule in rules.rules:
        for res in others:
            if res.ref in terms_by_res and res.type in rule["resources"]:
                try:
                    if mapper.apply(rule, res, terms_by_res[res.ref]):
                        used.add(res.ref)
                except _Defect:
                    del terms_by_res[res.ref]
    for res in others:
        mapped = terms_by_res.get(res.ref)
        if not mapped or res.ref in used:
            continue
        refused = mapper.refused.get(res.ref)
        if refused:
            for rule_id, why in refused:
                mapper.note(res.ref, f"{why} (rule {rule_id}); not recorded")
        else:
            mapper.note(res.ref, f"codes map to {', '.join(mapper.curie(t) for t in mapped)}, but no rule maps a "
                        f"{res.type} with that term; not recorded")
    _report_elements(mapper, patients[:1] + [r for r in others if r.ref in used])
    mapper.resolve_pending()
    mapper.check_single_values()
    if mapper.defects:
        def entry_of(d: InputNote) -> int:
            m = re.match(r"entry (\d+)", d.place)
            return int(m[1]) if m else -1
        raise BundleDefects(sorted(mapper.defects, key=entry_of), where)
    return Case(shown, source, graph, patient, mapper.notes)
