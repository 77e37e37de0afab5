"""Derivation: which statements apply to a patient case, which do not, which are undetermined, and why.

A statement applies when the case belongs to every condition of its population (``gk:population``); it does
not apply when the case belongs to the ``gk:negation`` of a condition (a failed condition wins); otherwise it
is undetermined and the conditions' ``gk:missingData`` say what would decide it. Membership comes from one of
two independent paths: the reference path classifies the case with HermiT; the fast path evaluates the same
OWL classes as SPARQL on pyoxigraph (:mod:`owl2sparql`). The explanation (the facts that met or failed a
condition) comes from the SPARQL witnesses of the class definitions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from rdflib import Graph, Literal, URIRef
from rdflib.term import Node

from .cases import Case
from .errors import InputError
from .knowledge import guideline_iri
from .namespaces import CASE, GK, PROV, RDF, RDFS, RESULT, SKOS, XSD, bind_prefixes
from .owl2sparql import Compiler, Pattern
from .project import Project
from .queries import load_query
from .reasoner import classify
from .statements import list_statements
from .store import EmbeddedStore, Store

__all__ = ["Condition", "CaseResult", "Evaluator", "results_graph", "STATUSES"]

STATUSES = {"applicable": GK.Applicable, "not-applicable": GK.NotApplicable, "undetermined": GK.Undetermined}
REASONERS = ("fast", "hermit")


@dataclass(frozen=True)
class Condition:
    """A condition of a population, read from the graph: its class, negation, labels and missing-data text."""

    iri: URIRef
    negation: URIRef
    label: str
    negation_label: str
    missing: str
    urgent: bool


@dataclass
class ConditionState:
    """How one condition came out for one case, with the facts that decided it."""

    condition: Condition
    state: str  # met | failed | unknown
    facts: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)


@dataclass
class StatementResult:
    """One statement's status for one case."""

    statement: dict[str, Any]
    population: URIRef
    status: str
    conditions: list[ConditionState]

    @property
    def because(self) -> list[str]:
        if self.status == "not-applicable":
            return [f"not met: {c.condition.label}, since {c.condition.negation_label}"
                    + (f" ({'; '.join(c.facts)})" if c.facts else "")
                    for c in self.conditions if c.state == "failed"]
        return [f"{c.condition.label}" + (f" ({'; '.join(c.facts)})" if c.facts else "")
                for c in self.conditions if c.state == "met"]

    @property
    def missing(self) -> list[str]:
        if self.status != "undetermined":
            return []
        return [c.condition.missing or f"a fact deciding {c.condition.label}"
                for c in self.conditions if c.state == "unknown"]

    @property
    def urgent(self) -> bool:
        return self.status == "applicable" and any(c.condition.urgent for c in self.conditions)

    def to_json(self) -> dict[str, Any]:
        s = self.statement
        return {"id": s["id"], "source_lines": s["source_lines"], "status": self.status, "text": s["text"],
                "action": s["action"], "direction": s["direction"], "strength": s["strength"],
                "line_of_therapy": s["line_of_therapy"], "citations": s["citations"],
                "because": self.because, "missing": self.missing}


@dataclass
class CaseResult:
    """The derivation for one case: scope, urgent findings and every statement's result."""

    case: str
    patient: URIRef
    reasoner: str
    scope: StatementResult
    results: list[StatementResult]

    @property
    def in_scope(self) -> bool:
        return self.scope.status == "applicable"

    @property
    def scope_reason(self) -> str | None:
        if self.in_scope:
            return None
        if self.scope.status == "not-applicable":
            return "; ".join(self.scope.because)
        return "undetermined: missing " + "; ".join(self.scope.missing)

    @property
    def urgent(self) -> list[str]:
        """Readable urgent findings: met conditions flagged gk:urgent."""
        seen: dict[str, None] = {}
        for r in self.results:
            for c in r.conditions:
                if c.state == "met" and c.condition.urgent:
                    seen[c.condition.label + (f" ({'; '.join(c.facts)})" if c.facts else "")] = None
        return list(seen)

    def ordered(self) -> list[StatementResult]:
        """Urgent applicable statements first, then by source line."""
        return sorted(self.results, key=lambda r: (not r.urgent, r.statement["source_lines"], r.statement["id"]))

    def status_of(self, statement_id: str) -> str:
        return next(r.status for r in self.results if r.statement["id"] == statement_id)

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "in_scope": self.in_scope, "scope_reason": self.scope_reason,
                "recommendations": [r.to_json() for r in self.ordered()]}


class Evaluator:
    """Evaluates cases against one guideline; prepared once (queries compiled), used for many cases."""

    def __init__(self, knowledge: Graph, project: Project) -> None:
        self.knowledge = knowledge
        self.project = project
        self.guideline = guideline_iri(knowledge)
        self.tbox_store = EmbeddedStore.from_graph(knowledge)
        statements = {s["id"]: s for s in list_statements(self.tbox_store, project)}
        rows = self.tbox_store.select(load_query(project.queries_dir, "derive-conditions").text)
        self.populations: dict[str, URIRef] = {}
        self.conditions: dict[str, list[Condition]] = defaultdict(list)
        for r in rows.dicts():
            sid = str(r["statement"])
            self.populations[sid] = URIRef(r["population"])
            cond = Condition(URIRef(r["condition"]), URIRef(r["negation"]),
                             str(r["conditionLabel"] or r["condition"]), str(r["negationLabel"] or r["negation"]),
                             str(r["missing"] or ""), bool(r["urgent"] and r["urgent"].toPython() is True))
            if cond not in self.conditions[sid]:
                self.conditions[sid].append(cond)
        if str(self.guideline) not in self.conditions:
            raise InputError(f"the guideline {self.guideline} has no gk:population with conditions")
        self.statements = {sid: statements[sid] for sid in self.conditions if sid in statements}
        self.classes = sorted({c.iri for cs in self.conditions.values() for c in cs}
                              | {c.negation for cs in self.conditions.values() for c in cs})
        compiler = Compiler(knowledge)
        self.patterns: dict[URIRef, list[Pattern]] = {c: compiler.compile(c, "?patient") for c in self.classes}
        self._labels: dict[str, str] = {}

    # ---- membership ---------------------------------------------------------------------------------
    def _witness_query(self, pattern: Pattern, patient: URIRef | None) -> str:
        variables = " ".join(["?patient"] + [v for v in pattern.variables() if v != "?patient"])
        bind = f"VALUES ?patient {{ <{patient}> }}\n  " if patient is not None else ""
        return f"SELECT {variables} WHERE {{\n  {bind}{pattern.where()}\n}}"

    def witnesses(self, store: EmbeddedStore, cls: URIRef, patient: URIRef | None = None
                  ) -> dict[URIRef, list[tuple[Pattern, dict[str, Node | None]]]]:
        """Members of ``cls`` in ``store`` (or just ``patient``), each with one witnessing solution."""
        found: dict[URIRef, list[tuple[Pattern, dict[str, Node | None]]]] = {}
        for pattern in self.patterns[cls]:
            for row in store.select(self._witness_query(pattern, patient)).dicts():
                p = URIRef(row["patient"])
                if p not in found:
                    found[p] = [(pattern, row)]
        return found

    def _label(self, node: Node | None) -> str:
        if node is None:
            return "?"
        if isinstance(node, Literal):
            return str(node)
        key = str(node)
        if key not in self._labels:
            label = self.knowledge.value(node, RDFS.label) if isinstance(node, URIRef) else None
            self._labels[key] = str(label) if label is not None else key.rsplit("#", 1)[-1].rsplit("/", 1)[-1]
        return self._labels[key]

    def render_facts(self, pattern: Pattern, row: dict[str, Node | None]) -> tuple[list[str], list[str]]:
        """Readable facts of a witness (``node property value``) and the case nodes involved."""
        facts, nodes = [], []
        for s, p, o in pattern.triples:
            subj = row.get(s[1:]) if s.startswith("?") else None
            obj = row.get(o[1:]) if o.startswith("?") else URIRef(o[1:-1]) if o.startswith("<") else None
            prop = URIRef(p[1:-1])
            if subj is not None and str(subj) not in nodes:
                nodes.append(str(subj))
            if prop == RDF.type and s == "?patient":
                continue  # "the patient is a patient" explains nothing
            verb = "is a" if prop == RDF.type else self._label(prop)
            facts.append(f"{self._label(subj)} {verb} {self._label(obj)}")
        return facts, nodes

    # ---- status ---------------------------------------------------------------------------------------
    def _statement_result(self, sid: str, statement: dict[str, Any], members: dict[URIRef, Any],
                          explain: dict[URIRef, tuple[list[str], list[str]]]) -> StatementResult:
        states = []
        for cond in self.conditions[sid]:
            if cond.negation in members:
                facts, nodes = explain.get(cond.negation, ([], []))
                states.append(ConditionState(cond, "failed", facts, nodes))
            elif cond.iri in members:
                facts, nodes = explain.get(cond.iri, ([], []))
                states.append(ConditionState(cond, "met", facts, nodes))
            else:
                states.append(ConditionState(cond, "unknown"))
        if any(s.state == "failed" for s in states):
            status = "not-applicable"
        elif all(s.state == "met" for s in states):
            status = "applicable"
        else:
            status = "undetermined"
        return StatementResult(statement, self.populations[sid], status, states)

    def _case_result(self, name: str, patient: URIRef, reasoner: str, members: set[URIRef],
                     explain: dict[URIRef, tuple[list[str], list[str]]]) -> CaseResult:
        gid = str(self.guideline)
        scope_stmt = {"id": gid, "source_lines": [], "text": "", "action": None, "direction": None,
                      "strength": None, "line_of_therapy": None, "citations": [], "kind": "guideline"}
        scope = self._statement_result(gid, scope_stmt, dict.fromkeys(members), explain)
        results = [self._statement_result(sid, st, dict.fromkeys(members), explain)
                   for sid, st in self.statements.items()]
        return CaseResult(name, patient, reasoner, scope, results)

    def evaluate(self, case: Case, reasoner: str = "fast") -> CaseResult:
        """Derive every statement's status for ``case`` on the chosen path (``fast`` or ``hermit``)."""
        if reasoner not in REASONERS:
            raise InputError(f"unknown reasoner {reasoner!r} (expected one of {', '.join(REASONERS)})")
        store = EmbeddedStore.from_graph(case.graph)
        explain: dict[URIRef, tuple[list[str], list[str]]] = {}
        fast_members: set[URIRef] = set()
        for cls in self.classes:
            found = self.witnesses(store, cls, case.patient)
            if case.patient in found:
                fast_members.add(cls)
                pattern, row = found[case.patient][0]
                explain[cls] = self.render_facts(pattern, row)
        if reasoner == "fast":
            members = fast_members
        else:
            result = classify(self.knowledge, [case.patient], extra=case.graph)
            if not result.consistent:
                raise InputError("the case contradicts the ontology (HermiT finds it inconsistent)",
                                 path=str(case.source) if case.source else case.name)
            members = {URIRef(c) for c in result.types.get(str(case.patient), set())} & set(self.classes)
            for cls in members - fast_members:
                explain[cls] = ([f"entailed by the reasoner for {self._label(case.patient)}"], [])
        return self._case_result(case.name, case.patient, reasoner, members, explain)

    def evaluate_store(self, store: "Store", patients: Iterable[URIRef] | None = None,
                       names: dict[URIRef, str] | None = None) -> Iterator[CaseResult]:
        """Fast path in batch: every patient of ``store`` (one SPARQL query per condition class)."""
        membership: dict[URIRef, dict[URIRef, tuple[list[str], list[str]]]] = defaultdict(dict)
        for cls in self.classes:
            for patient, wits in self.witnesses(store, cls).items():
                pattern, row = wits[0]
                membership[patient][cls] = self.render_facts(pattern, row)
        if patients is None:
            rows = store.select(f"SELECT ?p WHERE {{ ?p a <{GK.Patient}> }} ORDER BY ?p")
            patients = [URIRef(r[0]) for r in rows.rows]
        for patient in patients:
            explain = membership.get(patient, {})
            name = (names or {}).get(patient) or str(patient).rsplit("/", 1)[-1]
            yield self._case_result(name, patient, "fast", set(explain), explain)


def results_graph(results: Iterable[CaseResult], knowledge: Graph | None = None) -> Graph:
    """The results as RDF with PROV-O: each result linked to the case, the statement, the population class
    and the case facts that decided it."""
    g = bind_prefixes(Graph())
    for cr in results:
        case_key = str(cr.case).replace(" ", "_")
        activity = RESULT[f"{case_key}/derivation"]
        g.add((activity, RDF.type, GK.Derivation))
        g.add((activity, RDF.type, PROV.Activity))
        g.add((activity, PROV.used, cr.patient))
        g.add((activity, RDFS.label, Literal(f"derivation for case {cr.case} ({cr.reasoner} path)")))
        g.add((cr.patient, GK.inScope, Literal(cr.in_scope)))
        for r in [cr.scope] + cr.results:
            sid = r.statement["id"]
            node = RESULT[f"{case_key}/{sid.rsplit('/', 1)[-1]}"]
            g.add((node, RDF.type, GK.RecommendationResult))
            g.add((node, RDF.type, PROV.Entity))
            g.add((node, GK.forCase, cr.patient))
            g.add((node, GK.forStatement, URIRef(sid)))
            g.add((node, GK.status, STATUSES[r.status]))
            g.add((node, PROV.wasGeneratedBy, activity))
            g.add((node, PROV.wasDerivedFrom, r.population))
            for c in r.conditions:
                if c.state != "unknown":
                    for n in c.nodes:
                        g.add((node, PROV.wasDerivedFrom, URIRef(n)))
            for text in r.because:
                g.add((node, GK.because, Literal(text)))
            for text in r.missing:
                g.add((node, GK.missing, Literal(text)))
    return g


_ = (CASE, SKOS, XSD)
