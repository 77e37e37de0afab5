"""Case facts out as a FHIR R4 Bundle: the guideline package's FHIR case mapping rules read in reverse.

The inverse of :func:`fhir_in.bundle_to_case`. Which resource type, code path, value path and code carry a fact
is read from ``fhir-case-mapping.json`` and the SSSOM set (a term's code is a row whose predicate the rules
``recognise``, exact before close before broad); nothing clinical is written here. A fact no rule can carry is
returned as *unexpressed*, never dropped silently. Facts are plain strings so that a generator can stream
millions of records: ``(subject IRI, predicate IRI, object)`` where the object is an IRI or ``(lexical form,
datatype IRI)``.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from guideline_kg.cases.fhir_in import RULES_CACHE_SIZE, MappingRules, load_rules, project_rules
from guideline_kg.core.dates import months_between
from guideline_kg.core.project import Project

__all__ = ["BundleOut", "Fact", "ReverseRules", "facts_to_bundle", "reverse_rules"]

Obj = str | tuple[str, str]
Fact = tuple[str, str, Obj]

_RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
#: FHIR R4 elements (in the paths the rules use) whose values are lists: FHIR structure, not clinical content.
_FHIR_LISTS = frozenset({"coding", "bodySite", "derivedFrom", "partOf", "focus", "evidence", "detail",
                         "category", "identifier", "reasonCode"})
#: A status for resource types where FHIR R4 requires one and the rule names none (FHIR structure).
_REQUIRED_STATUS = {"Observation": "final", "DiagnosticReport": "final", "Procedure": "completed",
                    "MedicationStatement": "completed", "MedicationRequest": "completed", "ImagingStudy": "available"}
_PREDICATE_RANK = ("skos:exactMatch", "skos:closeMatch", "skos:broadMatch")


@dataclass
class ReverseRules:
    """The rules with the indexes the reverse direction needs: a code for each term, links to rules."""

    rules: MappingRules
    #: term IRI -> [(system, code, predicate IRI)], best first
    codes: dict[str, list[tuple[str, str, str]]]

    def code(self, term: str, predicates: set[str] | None = None) -> tuple[str, str] | None:
        """The (system, code) that carries ``term`` (optionally only through the given predicates)."""
        for system, code, pred in self.codes.get(term, []):
            if predicates is None or pred in predicates:
                return system, code
        return None

    def x(self, curie: str) -> str:
        return str(self.rules.expand(curie))


#: Reverse indexes by the identity of their rules, least recently used first; at most RULES_CACHE_SIZE, like the
#: rules themselves (an entry holds its rules, so an id is not reused while cached).
_REVERSE_CACHE: dict[int, ReverseRules] = {}


def reverse_rules(project: Project | None = None, path: Path | None = None) -> ReverseRules:
    """The project's FHIR mapping rules, indexed for case -> FHIR (cached with the rules)."""
    rules = load_rules(path) if path else project_rules(project or Project.at(), "writing cases as FHIR")
    cached = _REVERSE_CACHE.pop(id(rules), None)
    if cached is not None and cached.rules is rules:
        _REVERSE_CACHE[id(rules)] = cached  # now the most recently used
        return cached
    recognise = {str(p) for p in rules.recognise}
    rank = {str(rules.expand(p)): i for i, p in enumerate(_PREDICATE_RANK)}
    codes: dict[str, list[tuple[str, str, str]]] = {}
    ambiguity: dict[tuple[str, str], int] = {}
    for (system, code), mapped in rules.codes.items():
        ambiguity[(system, code)] = len({t for t, p in mapped if p in rules.recognise})
        for term, pred in mapped:
            if str(pred) in recognise:
                codes.setdefault(str(term), []).append((system, code, str(pred)))
    for found in codes.values():  # exact first; a code that means only this term before a shared one
        found.sort(key=lambda c: (rank.get(c[2], 9), ambiguity[(c[0], c[1])]))
    rev = ReverseRules(rules, codes)
    _REVERSE_CACHE[id(rules)] = rev
    while len(_REVERSE_CACHE) > RULES_CACHE_SIZE:
        del _REVERSE_CACHE[next(iter(_REVERSE_CACHE))]
    return rev


@dataclass
class BundleOut:
    """A Bundle made from case facts, and the facts it could not carry (with the reason)."""

    bundle: dict[str, Any]
    unexpressed: list[tuple[Fact, str]] = field(default_factory=list)


def _first_alt(path: str) -> list[str]:
    return path.split("|", maxsplit=1)[0].split(".")


def _put(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at the first alternative of a rule path, making objects (and FHIR lists) on the way."""
    steps = _first_alt(path)
    for step in steps[:-1]:
        nxt = obj.get(step)
        if nxt is None:
            nxt = {}
            obj[step] = [nxt] if step in _FHIR_LISTS else nxt
        elif isinstance(nxt, list):
            nxt = nxt[0]
        obj = nxt
    last = steps[-1]
    obj[last] = [value] if last in _FHIR_LISTS and not isinstance(value, list) else value


def _shift_years(d: date, years: int) -> date:
    year = d.year + years
    return date(year, d.month, min(d.day, calendar.monthrange(year, d.month)[1]))


def _decimal(value: float, spec: dict[str, Any]) -> Decimal:
    number = Decimal(str(value))
    if "round" in spec:
        number = number.quantize(Decimal(1).scaleb(-int(spec["round"])), rounding=ROUND_HALF_UP)
    return number


def _number(lexical: str) -> int | float:
    n = Decimal(lexical)
    return int(n) if n == n.to_integral_value() and "." not in lexical else float(n)


class _Writer:
    """The state of one case's reverse mapping."""

    def __init__(self, rev: ReverseRules, facts: Iterable[Fact], patient: str, name: str) -> None:
        self.rev, self.rules, self.patient, self.name = rev, rev.rules, patient, name
        self.by_subject: dict[str, list[tuple[str, Obj]]] = {}
        for s, p, o in facts:
            self.by_subject.setdefault(s, []).append((p, o))
        self.done: set[tuple[str, str, Obj]] = set()
        self.resources: list[dict[str, Any]] = []
        self.node_ref: dict[str, str] = {}
        self.refs_pending: list[tuple[dict[str, Any], str, str, tuple[str, str, Obj]]] = []
        self.unexpressed: list[tuple[Fact, str]] = []
        self.assessment: date | None = None
        self.ids: set[str] = set()
        self.pid = name

    # --- helpers ------------------------------------------------------------------------------------------------
    def facts_of(self, node: str) -> list[tuple[str, Obj]]:
        return [(p, o) for p, o in self.by_subject.get(node, []) if (node, p, o) not in self.done]

    def take(self, node: str, p: str, o: Obj) -> None:
        self.done.add((node, p, o))

    def new_id(self, base: str) -> str:
        rid, n = base[:60], 2
        while rid in self.ids:
            rid, n = f"{base[:56]}-{n}", n + 1
        self.ids.add(rid)
        return rid

    def local(self, node: str) -> str:
        prefix = self.patient + "-"
        return node[len(prefix):] if node.startswith(prefix) else "r"

    def concept(self, terms: list[str], predicates: set[str] | None = None) -> dict[str, Any] | None:
        codings = []
        for term in terms:
            code = self.rev.code(term, predicates)
            if code is None:
                return None
            codings.append({"system": code[0], "code": code[1]})
        return {"coding": codings}

    def resource(self, rule: dict[str, Any], node_local: str, codes: dict[str, Any], status: str | None
                 ) -> dict[str, Any]:
        rtype, code_path = next(iter(rule["resources"].items()))
        res: dict[str, Any] = {"resourceType": rtype, "id": self.new_id(node_local)}
        status = status or _REQUIRED_STATUS.get(rtype)
        if status:
            res["status"] = status
        res["subject"] = {"reference": f"Patient/{self.pid}"}
        _put(res, code_path, codes)
        self.resources.append(res)
        return res

    def status_for(self, rule: dict[str, Any], terms: list[str]) -> str | None:
        """The first allowed status whose patientValues the case states (a status must not add facts)."""
        allowed = rule.get("status") or [None]
        for status in allowed:
            ok = True
            for pv in rule.get("patientValues", []):
                if pv.get("status") and status not in pv["status"]:
                    continue
                if pv.get("terms") and not {self.rev.x(t) for t in pv["terms"]} & set(terms):
                    continue
                if (self.rev.x(pv["property"]), _lit(pv["const"])) not in self.by_subject.get(self.patient, []):
                    ok = False
            if ok:
                return status
        return None

    # --- values -------------------------------------------------------------------------------------------------
    def value_specs(self, rule: dict[str, Any], rtype: str, matched: list[str]) -> list[tuple[str, dict]]:
        """(property IRI, spec) of every value spec of the rule that applies to the resource type and terms."""
        out = []
        for spec in rule.get("values", []):
            if spec.get("resourceTypes") and rtype not in spec["resourceTypes"]:
                continue
            if spec.get("forTerms") and not {self.rev.x(t) for t in spec["forTerms"]} & set(matched):
                continue
            if "const" in spec or "from" in spec:
                continue
            if spec.get("propertyFromTerm"):
                allowed = {self.rev.x(t) for t in spec.get("forTerms", [])}
                out += [(t, spec) for t in matched if not allowed or t in allowed]
            else:
                out.append((self.rev.x(spec["property"]), spec))
        return out

    def write_values(self, rule: dict[str, Any], res: dict[str, Any], node: str, matched: list[str]) -> None:
        """Put every fact of ``node`` that a value spec of the rule carries into ``res``."""
        specs = self.value_specs(rule, res["resourceType"], matched)
        derived = [(p, s) for p, s in specs if s.get("as") in ("monthsToAssessment", "weeksOfPeriod")]
        plain = [(p, s) for p, s in specs if (p, s) not in derived]
        # a date whose FHIR form would also state a derived fact the case leaves unknown is not written
        stated = {p for p, _ in self.by_subject.get(node, [])}
        silent = [".".join(_first_alt(s["path"])) for p, s in derived if p not in stated]
        plain = [(p, s) for p, s in plain
                 if not any(".".join(_first_alt(s["path"])).startswith(d) for d in silent)]
        for prop, spec in plain + derived:
            for p, o in self.facts_of(node):
                if p != prop:
                    continue
                value = self.invert(spec, o, res, node)
                if value is _NO:
                    continue
                if spec.get("as") == "ref":
                    self.refs_pending.append((res, spec["path"], str(o), (node, p, o)))
                    self.take(node, p, o)
                    break
                if value is not _SET:
                    _put(res, spec["path"], value)
                self.take(node, p, o)
                break

    def invert(self, spec: dict[str, Any], o: Obj, res: dict[str, Any], node: str) -> Any:
        """The FHIR value that ``convert`` of fhir_in turns into ``o`` (or _NO when the spec cannot give it)."""
        kind = spec.get("as", "string")
        if kind == "ref":
            return _NO if isinstance(o, tuple) else None
        if not isinstance(o, tuple):  # an IRI
            if kind == "term":
                allowed = {self.rev.x(t) for t in spec.get("terms", [])}
                if allowed and o not in allowed:
                    return _NO
                return self.concept([o]) or _NO
            if kind == "map":
                for key, curie in spec["map"].items():
                    if self.rev.x(curie) == o:
                        return key == "true" if key in ("true", "false") else key
            return _NO
        lex = o[0]
        if kind in ("date", "string"):
            return lex
        if kind in ("decimal", "integer"):
            try:
                return _number(lex)
            except ArithmeticError:
                return _NO
        if kind == "boolean":
            return lex == "true" if lex in ("true", "false") else _NO
        if kind == "yearsToAssessment" and self.assessment:
            return _shift_years(self.assessment, -int(lex)).isoformat()
        if kind == "monthsToAssessment" and self.assessment:
            return self.months_date(spec, lex, res, node)
        if kind == "weeksOfPeriod":
            end = self.assessment
            if end is None:
                return _NO
            days = round(float(lex) * 7)
            start = end - timedelta(days=days)
            if _decimal(days / 7, spec) != _decimal(float(lex), spec):
                return _NO
            return {"start": start.isoformat(), "end": end.isoformat()}
        return _NO

    def months_date(self, spec: dict[str, Any], lex: str, res: dict[str, Any], node: str) -> Any:
        """The date whose months to the assessment round to ``lex``: the one already written, if it does."""
        assessment = self.assessment
        if assessment is None:
            return _NO
        want = _decimal(float(lex), spec)
        steps = _first_alt(spec["path"])
        current: Any = res
        for step in steps:
            current = current.get(step) if isinstance(current, dict) else None
        if isinstance(current, str):
            d = date.fromisoformat(current[:10])
            return _SET if _decimal(months_between(d, assessment), spec) == want else _NO
        guess = assessment - timedelta(days=round(float(lex) * 30.44))
        for delta in sorted(range(-40, 41), key=abs):
            d = guess + timedelta(days=delta)
            if _decimal(months_between(d, assessment), spec) == want:
                return d.isoformat()
        return _NO

    # --- nodes --------------------------------------------------------------------------------------------------
    def node(self, link: str, node: str) -> None:
        """Resources for a node the patient links to, rule by rule in the order of the rules file."""
        for rule in self.rules.rules:
            spec = rule["node"]
            if spec.get("kind") not in ("shared", "resource") or spec.get("link") is None \
                    or self.rev.x(spec["link"]) != link:
                continue
            if spec.get("kind") == "shared" and node != f"{self.patient}-{spec['key']}":
                continue
            terms = [self.rev.x(t) for t in rule.get("terms", [])]
            facts = self.facts_of(node)
            types = [o for p, o in facts if p == _RDF_TYPE]
            if spec.get("type") and self.rev.x(spec["type"]) not in [o for p, o in self.by_subject[node]
                                                                      if p == _RDF_TYPE]:
                continue
            if spec.get("typeFromTerm"):
                matched = [t for t in terms if t in types]
                taken = [(_RDF_TYPE, t) for t in matched]
            elif spec.get("termAsValueOf"):
                prop = self.rev.x(spec["termAsValueOf"])
                matched = [o for p, o in facts if p == prop and o in terms][:1]
                taken = [(prop, t) for t in matched]
            else:
                matched = [t for t in terms if any(p == t for p, _ in facts)]
                taken = []
            if not matched:
                continue
            if rule.get("pick") == "first" and len(matched) > 1:
                matched = matched[:1]
            codes = self.concept(matched)
            if codes is None:
                continue
            rtype = next(iter(rule["resources"]))
            res = self.resource(rule, self.local(node), codes, self.status_for(rule, matched))
            for p, o in taken:
                self.take(node, p, o)
            if spec.get("type"):
                self.take(node, _RDF_TYPE, self.rev.x(spec["type"]))
            self.write_values(rule, res, node, matched)
            if "absentOnlyBy" in rule:
                self.check_absent(rule, res, node, matched)
            self.node_ref.setdefault(node, f"{rtype}/{res['id']}")
        self.referenced(node)

    def check_absent(self, rule: dict[str, Any], res: dict[str, Any], node: str, matched: list[str]) -> None:
        """Re-code with an allowed predicate when a negative value may rest only on such a code."""
        spec = rule["absentOnlyBy"]
        negatives = {self.rev.x(v) for v in spec["values"]}
        if not any(o in negatives for p, o in self.by_subject[node]):
            return
        allowed = {self.rev.x(p) for p in spec["predicates"]}
        codes = self.concept(matched, allowed)
        if codes is None:
            self.resources.remove(res)
            for p, o in self.by_subject[node]:
                self.done.discard((node, p, o))
        else:
            _put(res, next(iter(rule["resources"].values())), codes)

    def referenced(self, node: str) -> None:
        """Facts left on a node that a rule of kind 'referenced' carries: one resource each, pointing at it."""
        for rule in self.rules.rules:
            spec = rule["node"]
            if spec.get("kind") != "referenced" or node not in self.node_ref:
                continue
            terms = [self.rev.x(t) for t in rule.get("terms", [])]
            for p, _o in self.facts_of(node):
                if p not in terms:
                    continue
                codes = self.concept([p])
                if codes is None:
                    continue
                res = self.resource(rule, f"{self.local(node)}-{p.rsplit('#', 1)[-1].rsplit('/', 1)[-1]}",
                                    codes, self.status_for(rule, [p]))
                _put(res, spec["path"], self.node_ref[node])
                self.write_values(rule, res, node, [p])

    def patient_facts(self) -> None:
        """Facts of the patient (literals, or terms such as a coded result) through a rule of kind 'patient'
        (one resource each)."""
        for rule in self.rules.rules:
            if rule["node"].get("kind") != "patient":
                continue
            terms = [self.rev.x(t) for t in rule.get("terms", [])]
            if rule["node"].get("termAsValueOf"):
                self.term_as_value(rule, terms)
                continue
            for p, o in self.facts_of(self.patient):
                if p not in terms:
                    continue
                codes = self.concept([p])
                if codes is None:
                    continue
                res = self.resource(rule, p.rsplit("#", 1)[-1].rsplit("/", 1)[-1], codes,
                                    self.status_for(rule, [p]))
                self.write_values(rule, res, self.patient, [p])
                if (self.patient, p, o) not in self.done:
                    self.resources.remove(res)

    def term_as_value(self, rule: dict[str, Any], terms: list[str]) -> None:
        """A patient fact whose value is a term of the rule (``termAsValueOf``, e.g. a treatment the patient has not
        had): one resource coded with that term, in the rule's first resource type and first status. A rule with
        ``absentOnlyBy`` may carry the term only through those predicates; without such a code the fact stays
        unexpressed (reported), never written with a code the reader would not accept."""
        prop = self.rev.x(rule["node"]["termAsValueOf"])
        allowed = {self.rev.x(p) for p in rule["absentOnlyBy"]["predicates"]} if "absentOnlyBy" in rule else None
        for p, o in self.facts_of(self.patient):
            if p != prop or o not in terms or not isinstance(o, str):
                continue
            codes = self.concept([o], allowed)
            if codes is None:
                continue
            self.resource(rule, "not-" + o.rsplit("#", 1)[-1].rsplit("/", 1)[-1], codes,
                          (rule.get("status") or [None])[0])
            self.take(self.patient, p, o)

    def implied(self) -> None:
        """Patient facts that a written resource implies (patientValues of its rule) need no resource."""
        for rule in self.rules.rules:
            for pv in rule.get("patientValues", []):
                fact = (self.rev.x(pv["property"]), _lit(pv["const"]))
                rtypes = set(rule["resources"])
                if any(r["resourceType"] in rtypes and r.get("status") in (pv.get("status") or [r.get("status")])
                       and self.rule_matches(rule, r, pv) for r in self.resources):
                    self.take(self.patient, *fact)

    def rule_matches(self, rule: dict[str, Any], res: dict[str, Any], pv: dict[str, Any]) -> bool:
        code_path = rule["resources"].get(res["resourceType"])
        if code_path is None:
            return False
        cur: Any = res
        for step in code_path.split("."):
            cur = cur.get(step) if isinstance(cur, dict) else None
        codes = {(c["system"], c["code"]) for c in (cur or {}).get("coding", [])}
        want = {self.rev.x(t) for t in (pv.get("terms") or rule.get("terms", []))}
        return any(str(t) in want for sc in codes for t, _ in self.rules.codes.get(sc, []))


class _Marker:
    pass


_NO, _SET = _Marker(), _Marker()


def _lit(value: Any) -> tuple[str, str]:
    xsd = "http://www.w3.org/2001/XMLSchema#"
    if isinstance(value, bool):
        return ("true" if value else "false", xsd + "boolean")
    if isinstance(value, int):
        return (str(value), xsd + "integer")
    return (str(value), xsd + "string")


def facts_to_bundle(facts: Iterable[Fact], patient: str, name: str, rev: ReverseRules) -> BundleOut:
    """The FHIR R4 collection Bundle that :func:`fhir_in.bundle_to_case` reads back as these facts."""
    w = _Writer(rev, facts, patient, name)
    rules = rev.rules
    patient_res: dict[str, Any] = {"resourceType": rules.patient.get("resourceType", "Patient"), "id": name}
    w.ids.add(name)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": name, "type": "collection"}
    w.take(patient, _RDF_TYPE, str(rules.expand("gk:Patient")))
    # the patient resource: the assessment date on the Bundle, then the Patient's own values
    for spec in rules.patient.get("values", []):
        prop = w.rev.x(spec["property"])
        for p, o in w.facts_of(patient):
            if p != prop or not isinstance(o, tuple):
                continue
            if spec.get("from") == "assessmentDate" and rules.assessment_date:
                bundle[rules.assessment_date] = f"{o[0]}T00:00:00Z"
                w.assessment = date.fromisoformat(o[0])
                w.take(patient, p, o)
    for spec in rules.patient.get("values", []):
        if "from" in spec:
            continue
        prop = w.rev.x(spec["property"])
        for p, o in w.facts_of(patient):
            if p != prop:
                continue
            value = w.invert(spec, o, patient_res, patient)
            if value is _NO:
                continue
            have = patient_res.get(_first_alt(spec["path"])[0])
            if have is not None and have != value:
                continue
            _put(patient_res, spec["path"], value)
            w.take(patient, p, o)
    # the nodes the patient links to, then the patient's own facts
    for p, o in list(w.by_subject.get(patient, [])):
        if isinstance(o, str) and p != _RDF_TYPE and o in w.by_subject:
            w.node(p, o)
            if o in w.node_ref:
                w.take(patient, p, o)
    w.implied()
    w.patient_facts()
    for res, path, target, fact in w.refs_pending:
        if target in w.node_ref:
            _put(res, path, w.node_ref[target])
        else:
            w.done.discard(fact)
    bundle["entry"] = [{"resource": r} for r in [patient_res, *w.resources]]
    for s, pos in w.by_subject.items():
        for p, o in pos:
            if (s, p, o) not in w.done:
                w.unexpressed.append(((s, p, o), "no rule of the FHIR mapping carries it"))
    return BundleOut(bundle, w.unexpressed)


def bundle_line(out: BundleOut) -> str:
    """One NDJSON line."""
    return json.dumps(out.bundle, separators=(",", ":"), ensure_ascii=False) + "\n"
