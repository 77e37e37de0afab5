"""Derivation: which statements apply to a patient case, which do not, which are undetermined, and why.

A statement applies when the case belongs to every condition of its population (``gk:population``); it does
not apply when the case belongs to the ``gk:negation`` of a condition (a failed condition wins); otherwise it
is undetermined and the conditions' ``gk:missingData`` say what would decide it. Membership comes from one of
two independent paths: the reference path classifies the case with HermiT; the fast path evaluates the same
OWL classes as SPARQL on pyoxigraph (:mod:`owl2sparql`). The explanation (the facts that met or failed a
condition) comes from the SPARQL witnesses of the class definitions.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyoxigraph as ox
from rdflib import Graph, Literal, URIRef
from rdflib.term import Node

from guideline_kg.cases.reader import Case
from guideline_kg.compile.owl2sparql import Compiler, Pattern
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GK, PROV, RDF, RDFS, RESULT, bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.knowledge.graph import guideline_iri
from guideline_kg.knowledge.statements import list_statements
from guideline_kg.reasoning.hermit import classify
from guideline_kg.store.stores import EmbeddedStore, Store

__all__ = ["STATUSES", "CaseResult", "Condition", "Evaluator", "results_graph"]

_MEMO_LIMIT = 10_000  # distinct membership signatures kept (~14 KB each); beyond it the memo starts afresh
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


#: How one fact of a witness is rendered: subject position (or None), verb, object position (or None), constant.
FactPlan = tuple[int | None, str, int | None, str]


class Witness:
    """The facts of a case that witness its membership of a class: one solution of the class's SPARQL
    pattern, rendered to readable facts (``node property value``) only when first read."""

    __slots__ = ("_facts", "_label", "_nodes", "_plan", "_solution", "_subjects")

    def __init__(self, solution: Any = None, plan: list[FactPlan] | None = None, subjects: list[int] | None = None,
                 label: Any = None, facts: list[str] | None = None, nodes: list[str] | None = None) -> None:
        self._solution, self._plan, self._subjects, self._label = solution, plan, subjects, label
        self._facts, self._nodes = facts, nodes

    @property
    def facts(self) -> list[str]:
        if self._facts is None:
            sol, label = self._solution, self._label
            self._facts = [f"{label(sol[si]) if si is not None else '?'} {verb} "
                           f"{label(sol[oi]) if oi is not None else const}" for si, verb, oi, const in self._plan or []]
        return self._facts

    @property
    def nodes(self) -> list[str]:
        if self._nodes is None:
            self._nodes = list(dict.fromkeys(self._solution[i].value for i in self._subjects or []))
        return self._nodes


NO_WITNESS = Witness(facts=[], nodes=[])


@dataclass(slots=True)
class ConditionState:
    """How one condition came out for one case, with the facts that decided it."""

    condition: Condition
    state: str  # met | failed | unknown
    facts: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)


@dataclass(slots=True)
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


class CaseResult:
    """The derivation for one case: scope, urgent findings and every statement's result.

    The statuses are decided when the result is made; the per-statement objects (``scope``, ``results``)
    are assembled from them on first use, so a batch run pays for them only when it writes them."""

    __slots__ = ("_built", "_evaluator", "_explain", "_signature", "case", "patient", "reasoner")

    def __init__(self, case: str, patient: URIRef, reasoner: str, signature: list,
                 explain: dict[str, Witness], evaluator: Evaluator) -> None:
        self.case, self.patient, self.reasoner = case, patient, reasoner
        self._signature, self._explain, self._evaluator = signature, explain, evaluator
        self._built: list[StatementResult] | None = None

    def _all(self) -> list[StatementResult]:
        if self._built is None:
            self._built = self._evaluator._build(self._signature, self._explain)
        return self._built

    @property
    def scope(self) -> StatementResult:
        return self._all()[0]

    @property
    def results(self) -> list[StatementResult]:
        return self._all()[1:]

    def statuses(self) -> dict[str, str]:
        """Statement IRI to status, without assembling the explanations."""
        return {sid: status for sid, status, _ in self._signature[1:]}

    def has_urgent(self) -> bool:
        """Whether any urgent condition is met (what :attr:`urgent` lists), without assembling explanations."""
        return any(state == "met" and cond.urgent for _, _, states in self._signature[1:] for cond, state in states)

    @property
    def in_scope(self) -> bool:
        return self._signature[0][1] == "applicable"

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
        return self.statuses()[statement_id]

    def to_json(self) -> dict[str, Any]:
        """The object of a case in `recommend --format json` (built straight from the signature: the
        same content as the per-statement objects, without assembling them)."""
        return self._evaluator._json(self)


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
            self.populations[sid] = URIRef(str(r["population"]))
            urgent = r["urgent"]
            cond = Condition(URIRef(str(r["condition"])), URIRef(str(r["negation"])),
                             str(r["conditionLabel"] or r["condition"]), str(r["negationLabel"] or r["negation"]),
                             str(r["missing"] or ""), isinstance(urgent, Literal) and urgent.toPython() is True)
            if cond not in self.conditions[sid]:
                self.conditions[sid].append(cond)
        if str(self.guideline) not in self.conditions:
            raise InputError(f"the guideline {self.guideline} has no gk:population with conditions")
        self.statements = {sid: statements[sid] for sid in self.conditions if sid in statements}
        self.classes = sorted({c.iri for cs in self.conditions.values() for c in cs}
                              | {c.negation for cs in self.conditions.values() for c in cs})
        compiler = Compiler(knowledge)
        self.patterns: dict[URIRef, list[Pattern]] = {c: compiler.compile(c, "?patient") for c in self.classes}
        self._labels: dict[str, str] = {str(s): str(o) for s, o in knowledge.subject_objects(RDFS.label)
                                         if isinstance(s, URIRef)}
        self._plans: dict[int, list[tuple[str | None, str, str | None, str]]] = {}
        self._status_memo: dict[frozenset[str], list[tuple[str, str, tuple[tuple[Condition, str], ...]]]] = {}
        self._gid = str(self.guideline)
        self._json_memo: dict[int, tuple] = {}
        self._sort_key = {sid: (st["source_lines"], sid) for sid, st in self.statements.items()}
        self._condition_keys = {sid: [(c, str(c.iri), str(c.negation)) for c in cs]
                                for sid, cs in self.conditions.items()}
        self._scope_statement: dict[str, Any] = {"id": self._gid, "source_lines": [], "text": "", "action": None,
                                 "direction": None, "strength": None, "line_of_therapy": None, "citations": [],
                                 "kind": "guideline"}

    # ---- membership ---------------------------------------------------------------------------------
    def _witness_query(self, pattern: Pattern, patient: URIRef | None) -> str:
        variables = " ".join(["?patient"] + [v for v in pattern.variables() if v != "?patient"])
        bind = f"VALUES ?patient {{ <{patient}> }}\n  " if patient is not None else ""
        return f"SELECT {variables} WHERE {{\n  {bind}{pattern.where()}\n}}"

    def _plan(self, pattern: Pattern) -> list[tuple[str | None, str, str | None, str]]:
        """How to render a witness of ``pattern``: per fact, the subject variable, the verb, and the object
        variable or constant label (computed once per pattern; the patient's own type is left out)."""
        plan = []
        for s, p, o in pattern.triples:
            if p == f"<{RDF.type}>" and s == "?patient":
                continue  # "the patient is a patient" explains nothing
            verb = "is a" if p == f"<{RDF.type}>" else self._label_of(p[1:-1])
            const = self._label_of(o[1:-1]) if o.startswith("<") else o
            plan.append((s[1:] if s.startswith("?") else None, verb, o[1:] if o.startswith("?") else None, const))
        return plan

    def witnesses(self, store: Store, cls: URIRef, patient: URIRef | None = None
                  ) -> dict[str, Witness]:
        """Members of ``cls`` in ``store`` (or just ``patient``), by IRI, each with one witnessing solution."""
        found: dict[str, Witness] = {}
        label = self._term_label
        for pattern in self.patterns[cls]:
            variables = ["patient"] + [v[1:] for v in pattern.variables() if v != "?patient"]
            position = {v: i for i, v in enumerate(variables)}
            plan = [(position[s] if s else None, verb, position[o] if o else None, const)
                    for s, verb, o, const in self._plans.setdefault(id(pattern), self._plan(pattern))]
            subjects = sorted({i for i, _, _, _ in plan if i is not None})
            for sol in store.raw(self._witness_query(pattern, patient)):
                key = sol[0].value
                if key not in found:
                    found[key] = Witness(sol, plan, subjects, label)
        return found

    def _label_of(self, iri: str) -> str:
        """The rdfs:label of an IRI of the knowledge graph, else its local name (case nodes)."""
        label = self._labels.get(iri)
        return label if label is not None else iri.rsplit("#", 1)[-1].rsplit("/", 1)[-1]

    def _term_label(self, term: Any) -> str:
        """A readable form of a pyoxigraph term: literal value, label, or local name."""
        if term is None:
            return "?"
        if isinstance(term, ox.Literal):
            return term.value
        return self._label_of(term.value)

    def _label(self, node: Node | None) -> str:
        if node is None:
            return "?"
        return str(node) if isinstance(node, Literal) else self._label_of(str(node))

    # ---- status ---------------------------------------------------------------------------------------
    def _signature(self, members: frozenset[str]) -> list[tuple[str, str, tuple[tuple[Condition, str], ...]]]:
        """Status and condition states of every statement (scope first) for one set of member classes;
        memoised, since patients with the same memberships share them."""
        cached = self._status_memo.get(members)
        if cached is None:
            if len(self._status_memo) >= _MEMO_LIMIT:  # bounded memory on unbounded cohorts; both memos go
                self._status_memo.clear()             # together, so no id() of a dead signature is reused
                self._json_memo.clear()
            cached = []
            for sid in [self._gid, *self.statements]:
                states = tuple((c, "failed" if neg in members else "met" if iri in members else "unknown")
                               for c, iri, neg in self._condition_keys[sid])
                kinds = {st for _, st in states}
                status = ("not-applicable" if "failed" in kinds else "undetermined" if "unknown" in kinds
                          else "applicable")
                cached.append((sid, status, states))
            self._status_memo[members] = cached
        return cached

    def _build(self, signature: list, explain: dict[str, Witness]) -> list[StatementResult]:
        """The statement results (scope first) of one signature, with the case's explaining facts."""
        results = []
        for sid, status, states in signature:
            conditions = []
            for cond, state in states:
                if state == "unknown":
                    conditions.append(ConditionState(cond, state))
                else:
                    w = explain.get(str(cond.negation if state == "failed" else cond.iri), NO_WITNESS)
                    conditions.append(ConditionState(cond, state, w.facts, w.nodes))
            statement = self._scope_statement if sid == self._gid else self.statements[sid]
            results.append(StatementResult(statement, self.populations[sid], status, conditions))
        return results

    def _case_result(self, name: str, patient: URIRef, reasoner: str, members: set[str],
                     explain: dict[str, Witness]) -> CaseResult:
        return CaseResult(name, patient, reasoner, self._signature(frozenset(members)), explain, self)

    # ---- JSON -----------------------------------------------------------------------------------------
    def _json_plan(self, signature: list) -> tuple[list, list]:
        """For one signature: per statement in report order, its static JSON fields, status, the
        conditions whose facts explain it (with the wording), and the missing data; and the scope's."""
        key = id(signature)
        plan = self._json_memo.get(key)
        if plan is None:
            rows = []
            for sid, status, states in signature:
                if status == "not-applicable":
                    explain = [(c, "failed") for c, st in states if st == "failed"]
                else:
                    explain = [(c, "met") for c, st in states if st == "met"]
                missing = ([c.missing or f"a fact deciding {c.label}" for c, st in states if st == "unknown"]
                           if status == "undetermined" else [])
                urgent = status == "applicable" and any(c.urgent for c, _ in states)
                rows.append((sid, status, explain, missing, urgent))
            scope, statements = rows[0], rows[1:]
            statements.sort(key=lambda r: (not r[4], self._sort_key[r[0]]))
            plan = self._json_memo[key] = (scope, statements, signature)
        return plan[0], plan[1]

    def _reason(self, cond: Condition, kind: str, explain: dict[str, Witness],
                cache: dict[tuple[Condition, str], str]) -> str:
        """The wording of one met or failed condition with its facts (once per case and condition)."""
        text = cache.get((cond, kind))
        if text is None:
            w = explain.get(str(cond.negation if kind == "failed" else cond.iri), NO_WITNESS)
            facts = f" ({'; '.join(w.facts)})" if w.facts else ""
            text = (f"not met: {cond.label}, since {cond.negation_label}{facts}" if kind == "failed"
                    else f"{cond.label}{facts}")
            cache[(cond, kind)] = text
        return text

    def _json(self, result: CaseResult) -> dict[str, Any]:
        scope, statements = self._json_plan(result._signature)
        explain = result._explain
        cache: dict[tuple[Condition, str], str] = {}
        if scope[1] == "applicable":
            reason = None
        elif scope[1] == "not-applicable":
            reason = "; ".join(self._reason(c, k, explain, cache) for c, k in scope[2])
        else:
            reason = "undetermined: missing " + "; ".join(scope[3])
        recs = []
        for sid, status, conds, missing, _urgent in statements:
            s = self.statements[sid]
            recs.append({"id": sid, "source_lines": s["source_lines"], "status": status, "text": s["text"],
                         "action": s["action"], "direction": s["direction"], "strength": s["strength"],
                         "line_of_therapy": s["line_of_therapy"], "citations": s["citations"],
                         "because": [self._reason(c, k, explain, cache) for c, k in conds],
                         "missing": list(missing)})
        return {"case": result.case, "in_scope": scope[1] == "applicable", "scope_reason": reason,
                "recommendations": recs}

    def evaluate(self, case: Case, reasoner: str = "fast") -> CaseResult:
        """Derive every statement's status for ``case`` on the chosen path (``fast`` or ``hermit``)."""
        if reasoner not in REASONERS:
            raise InputError(f"unknown reasoner {reasoner!r} (expected one of {', '.join(REASONERS)})")
        store = EmbeddedStore.from_graph(case.graph)
        explain: dict[str, Witness] = {}
        for cls in self.classes:
            found = self.witnesses(store, cls, case.patient)
            if str(case.patient) in found:
                explain[str(cls)] = found[str(case.patient)]
        members = set(explain)
        if reasoner == "hermit":
            result = classify(self.knowledge, [case.patient], extra=case.graph)
            if not result.consistent:
                raise InputError("the case contradicts the ontology (HermiT finds it inconsistent)",
                                 path=str(case.source) if case.source else case.name)
            fast_members = members
            members = result.types.get(str(case.patient), set()) & {str(c) for c in self.classes}
            for entailed in members - fast_members:
                why = f"entailed by the reasoner for {self._label(case.patient)}"
                explain[entailed] = Witness(facts=[why], nodes=[])
        return self._case_result(case.name, case.patient, reasoner, members, explain)

    def evaluate_store(self, store: Store, patients: Iterable[URIRef] | None = None,
                       names: dict[URIRef, str] | None = None) -> Iterator[CaseResult]:
        """Fast path in batch: every patient of ``store`` (one SPARQL query per condition class)."""
        membership: dict[str, dict[str, Witness]] = defaultdict(dict)
        workers = (os.cpu_count() or 1) if isinstance(store, EmbeddedStore) else 1
        # pyoxigraph releases the GIL while it evaluates, so the class queries overlap on several cores
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found_by_class = pool.map(lambda c: self.witnesses(store, c), self.classes)
            for cls, found in zip(self.classes, found_by_class, strict=True):
                key = str(cls)
                for patient, explained in found.items():
                    membership[patient][key] = explained
        if patients is None:
            patients = [URIRef(sol["p"].value) for sol in
                        store.raw(f"SELECT ?p WHERE {{ ?p a <{GK.Patient}> }} ORDER BY ?p")]
        for patient in patients:
            explain = membership.get(str(patient), {})
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
        for r in [cr.scope, *cr.results]:
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


