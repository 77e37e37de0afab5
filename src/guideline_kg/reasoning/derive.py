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
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.term import Node

from guideline_kg.cases.reader import Case
from guideline_kg.compile.owl2sparql import Compiler, Pattern
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GK, PROV, RDF, RDFS, RESULT, bind_prefixes, local_name
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.core.rdfio import from_oxigraph
from guideline_kg.knowledge.graph import guideline_iri
from guideline_kg.knowledge.statements import list_statements
from guideline_kg.reasoning.explanation import Explainer, Facts, Gap, GraphFacts, Threshold, questions
from guideline_kg.reasoning.hermit import classify
from guideline_kg.store.stores import EmbeddedStore, Store

__all__ = ["STATUSES", "CaseResult", "Condition", "Evaluator", "Witness", "results_graph"]

_MEMO_LIMIT = 10_000  # distinct membership signatures kept (~14 KB each); beyond it the memo starts afresh
STATUSES = {"applicable": GK.Applicable, "not-applicable": GK.NotApplicable, "undetermined": GK.Undetermined}
REASONERS = ("fast", "hermit")


@dataclass(frozen=True)
class Condition:
    """A condition of a population, read from the graph: its class, negation, labels and missing-data text;
    ``scope`` marks a condition of the guideline's own population (said once per case, not per statement)."""

    iri: URIRef
    negation: URIRef
    label: str
    negation_label: str
    missing: str
    urgent: bool
    scope: bool = False


#: How one fact of a witness is rendered: subject position (or None), verb, object position (or None), constant.
FactPlan = tuple[int | None, str, int | None, str]


class Witness:
    """A case's membership of a class found by the fast path: one solution of the class's SPARQL pattern,
    whose nodes are the case facts the PROV-O result links to (read only when first used)."""

    __slots__ = ("_nodes", "_solution", "_subjects")

    def __init__(self, solution: Any = None, subjects: list[int] | None = None, nodes: list[str] | None = None
                 ) -> None:
        self._solution, self._subjects, self._nodes = solution, subjects, nodes

    @property
    def nodes(self) -> list[str]:
        if self._nodes is None:
            self._nodes = list(dict.fromkeys(self._solution[i].value for i in self._subjects or []))
        return self._nodes


NO_WITNESS = Witness(nodes=[])


@dataclass(slots=True)
class ConditionState:
    """How one condition came out for one case: the facts that decided it (with the thresholds they met) or,
    when unknown, what is absent (alternatives of questions, smallest first)."""

    condition: Condition
    state: str  # met | failed | unknown
    facts: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    gaps: list[list[Gap]] = field(default_factory=list)

    def reason(self) -> str:
        """The condition in words with its deciding facts."""
        facts = f" ({'; '.join(self.facts)})" if self.facts else ""
        if self.state == "failed":
            return f"{self.condition.negation_label}{facts}: so not {self.condition.label}"
        return f"{self.condition.label}{facts}"

    def questions(self) -> list[str]:
        """What would decide an unknown condition: one line per alternative (any one suffices)."""
        if self.state != "unknown":
            return []
        answerable = [alt for alt in self.gaps if all(g.kind != "change" for g in alt)]
        asked = list(dict.fromkeys(questions(answerable, " ".join)))
        # two ways to ask one thing (one with the deciding answer added): ask once
        lines = [q for q in asked if not any(o != q and o.startswith(q.rstrip("?") + "?") for o in asked)]
        if not lines and self.gaps:
            return [f"only a different recorded value would decide it (decides: {self.condition.label}); "
                    "see `guideline-kg explain`"]
        if not lines:
            lines = [self.condition.missing or f"a fact deciding {self.condition.label}"]
        if len(lines) > 1:
            lines = ["Either: " + " Or: ".join(lines)]
        return [f"{line} (decides: {self.condition.label})" for line in lines]


def _sets(alternatives: list[list[Gap]]) -> list[list[dict[str, str]]]:
    """Flip sets as JSON, smallest first, without duplicates."""
    out: list[list[dict[str, str]]] = []
    for alt in sorted(alternatives, key=len):
        item = [g.to_json() for g in alt]
        if item and item not in out:
            out.append(item)
    return out[:8]


IN_POPULATION = "the patient is in the guideline's population (see scope)"
OUT_OF_POPULATION = "the patient is not in the guideline's population (see scope)"
SCOPE_UNDECIDED = "whether the patient is in the guideline's population (see scope)"
UNSPECIFIED_NOTE = "the guideline names this option without saying more"


@dataclass(slots=True)
class StatementResult:
    """One statement's status for one case, explained."""

    statement: dict[str, Any]
    population: URIRef
    status: str
    conditions: list[ConditionState]
    conflicts_with: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def own(self) -> list[ConditionState]:
        """The statement's own conditions (those of the guideline population are the scope's)."""
        own = [c for c in self.conditions if not c.condition.scope]
        return own if own or self.statement.get("kind") == "guideline" else []

    def _scope_state(self) -> str:
        states = {c.state for c in self.conditions if c.condition.scope}
        return "failed" if "failed" in states else "unknown" if "unknown" in states else "met"

    @property
    def because(self) -> list[str]:
        own = self.own if self.statement.get("kind") != "guideline" else self.conditions
        if self.status == "not-applicable":
            out = [c.reason() for c in own if c.state == "failed"]
            return out or [OUT_OF_POPULATION]
        out = [c.reason() for c in own if c.state == "met"]
        if self.status == "applicable" and not out:
            out = [IN_POPULATION]
        return out

    @property
    def missing(self) -> list[str]:
        if self.status != "undetermined":
            return []
        own = self.own if self.statement.get("kind") != "guideline" else self.conditions
        out = [q for c in own if c.state == "unknown" for q in c.questions()]
        if self.statement.get("kind") != "guideline" and self._scope_state() == "unknown":
            out.append(SCOPE_UNDECIDED)
        return out

    @property
    def thresholds(self) -> list[Threshold]:
        seen: dict[Threshold, None] = {}
        for c in self.conditions:
            if c.state != "unknown" and (self.statement.get("kind") == "guideline" or not c.condition.scope):
                seen.update(dict.fromkeys(c.thresholds))
        return list(seen)

    @property
    def urgent(self) -> bool:
        return self.status == "applicable" and any(c.condition.urgent for c in self.conditions)

    def to_json(self) -> dict[str, Any]:
        s = self.statement
        return {"id": s["id"], "source_lines": s["source_lines"], "status": self.status, "urgent": self.urgent,
                "text": s["text"], "action": s["action"], "direction": s["direction"], "strength": s["strength"],
                "line_of_therapy": s["line_of_therapy"], "citations": s["citations"],
                "because": self.because, "missing": self.missing,
                "thresholds": [t.to_json() for t in self.thresholds],
                "conflicts_with": list(self.conflicts_with), "note": self.note}


@dataclass(frozen=True)
class UnspecifiedOption:
    """A section the source names without content, reported to a patient it concerns."""

    statement: dict[str, Any]
    section: str
    because: list[str]

    def to_json(self) -> dict[str, Any]:
        s = self.statement
        return {"id": s["id"], "source_lines": s["source_lines"], "text": s["text"], "section": self.section,
                "because": self.because, "note": UNSPECIFIED_NOTE}


class CaseResult:
    """The derivation for one case: scope, urgent findings, conflicts and every statement's result.

    The statuses are decided when the result is made; the explanations (``scope``, ``results``) are computed
    from the case's facts on first use, so a batch run pays for them only when it writes them."""

    __slots__ = ("_built", "_evaluator", "_facts", "_members", "_signature", "_witnesses", "case", "patient",
                 "reasoner")

    def __init__(self, case: str, patient: URIRef, reasoner: str, signature: list, members: frozenset[str],
                 witnesses: dict[str, Witness], facts: Facts, evaluator: Evaluator) -> None:
        self.case, self.patient, self.reasoner = case, patient, reasoner
        self._signature, self._members, self._witnesses = signature, members, witnesses
        self._facts, self._evaluator = facts, evaluator
        self._built: list[StatementResult] | None = None

    def _all(self) -> list[StatementResult]:
        if self._built is None:
            self._built = self._evaluator._build(self)
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

    def condition_states(self) -> list[tuple[str, str, tuple[tuple[Condition, str], ...]]]:
        """(statement IRI, status, each condition with its state: met, failed or unknown), scope first, as
        decided, without assembling any explanation (the columnar cohort writer reads only these)."""
        return self._signature

    def has_urgent(self) -> bool:
        """Whether any urgent condition is met by an applicable statement, without assembling explanations."""
        return any(status == "applicable" and any(cond.urgent for cond, _ in states)
                   for _, status, states in self._signature[1:])

    @property
    def in_scope(self) -> bool:
        return self._signature[0][1] == "applicable"

    @property
    def scope_status(self) -> str:
        """``in``, ``out`` or ``undetermined``."""
        return {"applicable": "in", "not-applicable": "out"}.get(self._signature[0][1], "undetermined")

    @property
    def scope_reasons(self) -> list[str]:
        """Why the case is in or out of the guideline's population (the scope conditions with their facts)."""
        scope = self.scope
        if scope.status == "not-applicable":
            return [c.reason() for c in scope.conditions if c.state == "failed"]
        return [c.reason() for c in scope.conditions if c.state == "met"]

    @property
    def scope_reason(self) -> str | None:
        """One line for an out-of-scope or undetermined case (None when in scope)."""
        if self.scope_status == "in":
            return None
        if self.scope_status == "out":
            return "; ".join(self.scope_reasons)
        return "not known, since " + "; ".join(self.scope.missing)

    def scope_json(self) -> dict[str, Any]:
        return {"status": self.scope_status, "reasons": self.scope_reasons, "missing": self.scope.missing}

    @property
    def urgent_findings(self) -> list[dict[str, Any]]:
        """Each urgent statement that applies: its finding (with the facts) and its action in words."""
        out = []
        for r in self.results:
            if r.urgent:
                finding = "; ".join(c.reason() for c in r.conditions if c.state == "met" and c.condition.urgent)
                actions = [self._evaluator.explainer.label(URIRef(a)) for a in r.statement["action"] or []]
                out.append({"statement": r.statement["id"], "finding": finding, "action": ", ".join(actions)})
        return out

    @property
    def urgent(self) -> list[str]:
        """Readable urgent findings: the urgent conditions met, with their facts."""
        return list(dict.fromkeys(u["finding"] for u in self.urgent_findings))

    @property
    def conflicts(self) -> list[dict[str, Any]]:
        """Pairs of applicable statements advising for and against the same action (as ``validate`` pairs
        them), with both source texts and what the graph says would resolve them."""
        return self._evaluator._conflicts(self.statuses())

    @property
    def unspecified_options(self) -> list[UnspecifiedOption]:
        """Sections named without content that concern this patient (by the class each ``gk:concerns``)."""
        return self._evaluator._unspecified(self)

    def ordered(self) -> list[StatementResult]:
        """Urgent applicable statements first, then by source line."""
        return sorted(self.results, key=lambda r: (not r.urgent, r.statement["source_lines"], r.statement["id"]))

    def status_of(self, statement_id: str) -> str:
        return self.statuses()[statement_id]

    def statement_result(self, statement_id: str) -> StatementResult:
        """The result of one statement (by IRI); InputError naming the known ids when there is none."""
        for r in self.results:
            if r.statement["id"] == statement_id:
                return r
        known = ", ".join(local_name(r.statement["id"]) for r in self.results)
        raise InputError(f"no statement {statement_id!r} has a status in this guideline (known: {known})")

    def explain(self, statement_id: str) -> dict[str, Any]:
        """Why (or why not) one statement applies, and what would change it: the smallest sets of facts that
        would flip its status, read from the structure of its conditions (``guideline-kg explain``)."""
        r = self.statement_result(statement_id)
        ex, patient, facts = self._evaluator.explainer, self.patient, self._facts

        def alternatives(cls: URIRef) -> list[list[Gap]]:
            return ex.gaps(ex.expression(cls), patient, facts)

        changes: list[dict[str, Any]] = []
        if r.status in ("applicable", "undetermined"):  # any one condition proved false: not applicable
            sets = [alt for c in r.conditions if c.state != "failed" for alt in alternatives(c.condition.negation)]
            changes.append({"to": "not-applicable", "any_of": _sets(sets)})
        if r.status in ("not-applicable", "undetermined"):  # every condition not met proved: applicable
            needed = [alternatives(c.condition.iri) for c in r.conditions if c.state != "met"]
            combined: list[list[Gap]] = [[]]
            for options in needed:
                combined = sorted(([*a, *[g for g in b if g not in a]] for a in combined for b in options),
                                  key=len)[:8]
            changes.append({"to": "applicable", "any_of": _sets(combined)})
        conditions = [{"condition": str(c.condition.iri), "label": c.condition.label, "state": c.state,
                       "scope": c.condition.scope, "facts": c.facts, "questions": c.questions(),
                       "thresholds": [t.to_json() for t in c.thresholds]} for c in r.conditions]
        return {"case": self.case, "patient": str(self.patient), "reasoner": self.reasoner,
                "statement": r.statement["id"], "source_lines": r.statement["source_lines"],
                "text": r.statement["text"], "status": r.status, "urgent": r.urgent, "conditions": conditions,
                "because": r.because, "missing": r.missing, "thresholds": [t.to_json() for t in r.thresholds],
                "conflicts_with": r.conflicts_with, "note": r.note, "would_change": changes}

    def to_json(self) -> dict[str, Any]:
        """The object of a case in `recommend --format json`."""
        return {"case": self.case, "patient": str(self.patient), "reasoner": self.reasoner, "valid": True,
                "scope": self.scope_json(), "in_scope": self.in_scope, "scope_reason": self.scope_reason,
                "urgent": self.urgent_findings, "conflicts": self.conflicts,
                "recommendations": [r.to_json() for r in self.ordered()],
                "unspecified_options": [u.to_json() for u in self.unspecified_options]}


class Evaluator:
    """Evaluates cases against one guideline; prepared once (queries compiled), used for many cases."""

    def __init__(self, knowledge: Graph, project: Project) -> None:
        self.knowledge = knowledge
        self.project = project
        self.guideline = guideline_iri(knowledge)
        self.tbox_store = EmbeddedStore.from_graph(knowledge)
        self.explainer = Explainer(knowledge)
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
        self._gid = str(self.guideline)
        if self._gid not in self.conditions:
            raise InputError(f"the guideline {self.guideline} has no gk:population with conditions")
        scope_iris = {c.iri for c in self.conditions[self._gid]}
        self.conditions = defaultdict(list, {sid: [replace(c, scope=c.iri in scope_iris) for c in cs]
                                             for sid, cs in self.conditions.items()})
        self.statements = {sid: statements[sid] for sid in self.conditions if sid in statements}
        self._notes = self._read_notes()
        self._candidates = self._read_conflict_candidates()
        self.unspecified = self._read_unspecified(statements)
        self.classes = sorted({c.iri for cs in self.conditions.values() for c in cs}
                              | {c.negation for cs in self.conditions.values() for c in cs}
                              | {concerns for concerns, _, _ in self.unspecified})
        compiler = Compiler(knowledge)
        self.patterns: dict[URIRef, list[Pattern]] = {c: compiler.compile(c, "?patient") for c in self.classes}
        self._status_memo: dict[frozenset[str], list[tuple[str, str, tuple[tuple[Condition, str], ...]]]] = {}
        self._condition_keys = {sid: [(c, str(c.iri), str(c.negation)) for c in cs]
                                for sid, cs in self.conditions.items()}
        # one bit per condition class: a case's memberships as an int, and each statement's share of it, so that
        # a statement's status and states are decided once per distinct share (not once per case)
        self._bits: dict[str, int] = {}
        for keys in self._condition_keys.values():
            for _, iri, neg in keys:
                for k in (iri, neg):
                    self._bits.setdefault(k, 1 << len(self._bits))
        self._order = [self._gid, *self.statements]
        self._masks = {sid: sum({self._bits[k] for _, iri, neg in self._condition_keys[sid] for k in (iri, neg)})
                       for sid in self._order}
        self._entry_memo: dict[tuple[str, int], tuple[str, str, tuple[tuple[Condition, str], ...]]] = {}
        self._scope_statement: dict[str, Any] = {"id": self._gid, "source_lines": [], "text": "", "action": None,
                                                 "direction": None, "strength": None, "line_of_therapy": None,
                                                 "citations": [], "kind": "guideline"}

    # ---- what the graph says about statements -------------------------------------------------------
    def _read_notes(self) -> dict[tuple[str, frozenset[str]], str]:
        rows = self.tbox_store.select(load_query(self.project.queries_dir, "derive-notes").text)
        return {(str(r["kind"]), frozenset((str(r["first"]), str(r["second"])))): str(r["text"] or "")
                for r in rows.dicts()}

    def _read_conflict_candidates(self) -> list[tuple[str, str, str]]:
        """(for, against, action in words) pairs, as ``validate`` pairs them (contradiction-candidates.rq)."""
        rows = self.tbox_store.select(load_query(self.project.queries_dir, "contradiction-candidates").text)
        out = []
        for r in rows.dicts():
            message = str(r.get("message") or "")
            action = message.split(" advises for ", 1)[-1].split(", line ", 1)[0] if " advises for " in message else ""
            out.append((str(r["focus"]), str(r["other"]), action))
        return out

    def _read_unspecified(self, statements: dict[str, dict[str, Any]]) -> list[tuple[URIRef, dict[str, Any], str]]:
        rows = self.tbox_store.select(load_query(self.project.queries_dir, "derive-unspecified").text)
        out = []
        for r in rows.dicts():
            sid = str(r["statement"])
            statement = statements.get(sid) or {"id": sid, "source_lines": [int(str(r["line"]))],
                                                "text": str(r["text"]), "kind": "unspecified"}
            out.append((URIRef(str(r["concerns"])), statement, str(r["sectionLabel"] or "")))
        return out

    # ---- membership ---------------------------------------------------------------------------------
    def _witness_query(self, pattern: Pattern, patient: URIRef | None) -> str:
        variables = " ".join(["?patient"] + [v for v in pattern.variables() if v != "?patient"])
        bind = f"VALUES ?patient {{ <{patient}> }}\n  " if patient is not None else ""
        return f"SELECT {variables} WHERE {{\n  {bind}{pattern.where()}\n}}"

    def witnesses(self, store: Store, cls: URIRef, patient: URIRef | None = None) -> dict[str, Witness]:
        """Members of ``cls`` in ``store`` (or just ``patient``), by IRI, each with one witnessing solution."""
        found: dict[str, Witness] = {}
        for pattern in self.patterns[cls]:
            variables = ["patient"] + [v[1:] for v in pattern.variables() if v != "?patient"]
            position = {v: i for i, v in enumerate(variables)}
            subjects = sorted({position[s[1:]] for s, _, _ in pattern.triples if s.startswith("?")})
            for sol in store.raw(self._witness_query(pattern, patient)):
                key = sol[0].value
                if key not in found:
                    found[key] = Witness(sol, subjects)
        return found

    # ---- status ---------------------------------------------------------------------------------------
    def _signature(self, members: frozenset[str]) -> list[tuple[str, str, tuple[tuple[Condition, str], ...]]]:
        """Status and condition states of every statement (scope first) for one set of member classes;
        memoised, since patients with the same memberships share them."""
        cached = self._status_memo.get(members)
        if cached is None:
            if len(self._status_memo) >= _MEMO_LIMIT:  # bounded memory on unbounded cohorts
                self._status_memo.clear()
            bits, memo = self._bits, self._entry_memo
            if len(memo) >= 10 * _MEMO_LIMIT:  # a statement has at most 4^conditions shares: bounded anyway
                memo.clear()
            mask = 0
            for m in members:
                mask |= bits.get(m, 0)
            cached = []
            for sid in self._order:
                key = (sid, mask & self._masks[sid])
                entry = memo.get(key)
                if entry is None:
                    entry = memo[key] = self._entry(sid, key[1])
                cached.append(entry)
            self._status_memo[members] = cached
        return cached

    def _entry(self, sid: str, share: int) -> tuple[str, str, tuple[tuple[Condition, str], ...]]:
        """One statement's status and condition states for the memberships ``share`` (bits of its classes)."""
        bits = self._bits
        states = tuple((c, "failed" if bits[neg] & share else "met" if bits[iri] & share else "unknown")
                       for c, iri, neg in self._condition_keys[sid])
        kinds = {st for _, st in states}
        status = "not-applicable" if "failed" in kinds else "undetermined" if "unknown" in kinds else "applicable"
        return (sid, status, states)

    # ---- explanation ----------------------------------------------------------------------------------
    def _state(self, result: CaseResult, cond: Condition, state: str,
               cache: dict[tuple[URIRef, str], ConditionState]) -> ConditionState:
        """One condition's state for a case with its facts or gaps (computed once per case and condition)."""
        key = (cond.iri, state)
        found = cache.get(key)
        if found is not None:
            return found
        ex, facts, patient = self.explainer, result._facts, result.patient
        if state == "unknown":
            found = ConditionState(cond, state, gaps=ex.gaps(ex.expression(cond.iri), patient, facts))
        else:
            cls = cond.negation if state == "failed" else cond.iri
            trace = ex.trace(ex.expression(cls), patient, facts)
            witness = result._witnesses.get(str(cls), NO_WITNESS)
            if trace is None:  # entailed (HermiT) from facts the structure does not show directly
                found = ConditionState(cond, state, [f"entailed by the {result.reasoner} reasoner from the case"],
                                       witness.nodes)
            else:
                found = ConditionState(cond, state, trace.texts(),
                                       list(dict.fromkeys(trace.nodes + witness.nodes)), trace.thresholds)
        cache[key] = found
        return found

    def _build(self, result: CaseResult) -> list[StatementResult]:
        """The statement results (scope first) of one case, explained from its facts."""
        cache: dict[tuple[URIRef, str], ConditionState] = {}
        statuses = {sid: status for sid, status, _ in result._signature}
        conflicts: dict[str, list[str]] = defaultdict(list)
        for c in self._conflicts(statuses):
            conflicts[c["for"]].append(c["against"])
            conflicts[c["against"]].append(c["for"])
        out = []
        for sid, status, states in result._signature:
            conditions = [self._state(result, cond, state, cache) for cond, state in states]
            statement = self._scope_statement if sid == self._gid else self.statements[sid]
            out.append(StatementResult(statement, self.populations[sid], status, conditions, conflicts.get(sid, []),
                                       self._divergence(sid, statuses)))
        return out

    def _divergence(self, sid: str, statuses: dict[str, str]) -> str | None:
        """The graph's reason when a statement it records as a divergent repetition got another status."""
        for (kind, pair), text in self._notes.items():
            if kind == "divergence" and sid in pair:
                (other,) = pair - {sid}
                if other in statuses and statuses[other] != statuses[sid]:
                    short = local_name(other)
                    return f"repeats {short}, which is {statuses[other]} for this patient: {text}"
        return None

    def _conflicts(self, statuses: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for first, second, action in self._candidates:
            if statuses.get(first) == "applicable" and statuses.get(second) == "applicable":
                resolution = self._notes.get(("conflict", frozenset((first, second))))
                out.append({"for": first, "against": second, "action": action,
                            "for_text": self.statements[first]["text"], "against_text": self.statements[second]["text"],
                            "resolution": resolution or None})
        return out

    def _unspecified(self, result: CaseResult) -> list[UnspecifiedOption]:
        out = []
        for concerns, statement, section in self.unspecified:
            if str(concerns) in result._members:
                trace = self.explainer.trace(self.explainer.expression(concerns), result.patient, result._facts)
                because = ([f"{self.explainer.label(concerns)} ({'; '.join(trace.texts())})"]
                           if trace is not None and trace.facts else [self.explainer.label(concerns)])
                out.append(UnspecifiedOption(statement, section, because))
        return out

    def _case_result(self, name: str, patient: URIRef, reasoner: str, members: set[str],
                     witnesses: dict[str, Witness], facts: Facts) -> CaseResult:
        frozen = frozenset(members)
        return CaseResult(name, patient, reasoner, self._signature(frozen), frozen, witnesses, facts, self)

    def evaluate(self, case: Case, reasoner: str = "fast") -> CaseResult:
        """Derive every statement's status for ``case`` on the chosen path (``fast`` or ``hermit``)."""
        if reasoner not in REASONERS:
            raise InputError(f"unknown reasoner {reasoner!r} (expected one of {', '.join(REASONERS)})")
        witnesses = self._case_witnesses(case)
        members = set(witnesses)
        if reasoner == "hermit":
            result = classify(self.knowledge, [case.patient], extra=case.graph)
            if not result.consistent:
                raise InputError("the case contradicts the ontology (HermiT finds it inconsistent)",
                                 path=str(case.source) if case.source else case.name)
            members = result.types.get(str(case.patient), set()) & {str(c) for c in self.classes}
        return self._case_result(case.name, case.patient, reasoner, members, witnesses, GraphFacts(case.graph))

    def evaluate_many(self, cases: list[Case], reasoner: str = "fast") -> list[CaseResult]:
        """Derive several cases; on the HermiT path with one reasoner run for all of them (a JVM start and the
        guideline's classification paid once), falling back to one run per case when the cases share a subject
        IRI (their facts could mix) or the merged cases are inconsistent (so that the case at fault is named)."""
        patients = [c.patient for c in cases]
        if reasoner != "hermit" or len(cases) < 2 or not _disjoint(cases):
            return [self.evaluate(c, reasoner) for c in cases]
        merged = Graph()
        for c in cases:
            merged += c.graph
        found = classify(self.knowledge, patients, extra=merged)
        if not found.consistent:
            return [self.evaluate(c, reasoner) for c in cases]
        wanted = {str(c) for c in self.classes}
        return [self._case_result(case.name, case.patient, reasoner, found.types.get(str(case.patient), set()) & wanted,
                                  self._case_witnesses(case), GraphFacts(case.graph)) for case in cases]

    def _case_witnesses(self, case: Case) -> dict[str, Witness]:
        """The facts that put ``case``'s patient in each condition class it belongs to (fast path, one store)."""
        store = EmbeddedStore.from_graph(case.graph)
        witnesses: dict[str, Witness] = {}
        for cls in self.classes:
            hit = self.witnesses(store, cls, case.patient).get(str(case.patient))
            if hit is not None:
                witnesses[str(cls)] = hit
        return witnesses

    def memberships(self, store: Store) -> dict[str, dict[str, Witness]]:
        """Patient IRI to the condition classes it belongs to, each with its witness: one SPARQL query per class
        over every patient of ``store`` (the part of :meth:`evaluate_store` that asks the store)."""
        membership: dict[str, dict[str, Witness]] = defaultdict(dict)
        workers = (os.cpu_count() or 1) if isinstance(store, EmbeddedStore) else 1
        # pyoxigraph releases the GIL while it evaluates, so the class queries overlap on several cores
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found_by_class = pool.map(lambda c: self.witnesses(store, c), self.classes)
            for cls, found in zip(self.classes, found_by_class, strict=True):
                key = str(cls)
                for patient, explained in found.items():
                    membership[patient][key] = explained
        return membership

    def evaluate_store(self, store: Store, patients: Iterable[URIRef] | None = None,
                       names: dict[URIRef, str] | None = None,
                       membership: dict[str, dict[str, Witness]] | None = None) -> Iterator[CaseResult]:
        """Fast path in batch: every patient of ``store`` (one SPARQL query per condition class; ``membership``:
        those queries' answers, :meth:`memberships`, when already asked)."""
        if membership is None:
            membership = self.memberships(store)
        if patients is None:
            patients = [URIRef(sol["p"].value) for sol in
                        store.raw(f"SELECT ?p WHERE {{ ?p a <{GK.Patient}> }} ORDER BY ?p")]
        for patient in patients:
            witnesses = membership.get(str(patient), {})
            name = (names or {}).get(patient) or str(patient).rsplit("/", 1)[-1]
            yield self._case_result(name, patient, "fast", set(witnesses), witnesses, StoreFacts(store))


class StoreFacts(Facts):
    """:class:`Facts` of one patient read from a store (batch results explain only when written): straight from
    pyoxigraph's index for the embedded store, one SPARQL query per node for a server."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def _load(self, node: Node) -> list[tuple[Node, Node]]:
        if not isinstance(node, URIRef):
            return []  # a blank node of a store cannot be named in a query
        if isinstance(self.store, EmbeddedStore):
            return [(from_oxigraph(q.predicate), from_oxigraph(q.object))
                    for q in self.store.ox.quads_for_pattern(ox.NamedNode(str(node)), None, None)]
        query = f"SELECT ?p ?o WHERE {{ <{node}> ?p ?o }}"
        return [(from_oxigraph(sol[0]), from_oxigraph(sol[1])) for sol in self.store.raw(query)]


def results_graph(results: Iterable[CaseResult], knowledge: Graph | None = None) -> Graph:
    """The results as RDF with PROV-O: each result linked to the case, the statement, the population class
    and the case facts that decided it; the scope, urgent findings, conflicts, thresholds and unspecified options
    of the patient result (the same content as the JSON)."""
    g = bind_prefixes(Graph())
    for cr in results:
        case_key = quote(str(cr.case).replace(" ", "_"), safe="-_.~")
        activity = RESULT[f"{case_key}/derivation"]
        g.add((activity, RDF.type, GK.Derivation))
        g.add((activity, RDF.type, PROV.Activity))
        g.add((activity, PROV.used, cr.patient))
        g.add((activity, RDFS.label, Literal(f"derivation for case {cr.case} ({cr.reasoner} path)")))
        g.add((activity, GK.scopeStatus, Literal(cr.scope_status)))
        for text in cr.scope_reasons + (cr.scope.missing if cr.scope_status == "undetermined" else []):
            g.add((activity, GK.scopeReason, Literal(text)))
        g.add((cr.patient, GK.inScope, Literal(cr.in_scope)))
        nodes: dict[str, URIRef] = {}
        for r in [cr.scope, *cr.results]:
            sid = r.statement["id"]
            node = nodes[sid] = RESULT[f"{case_key}/{local_name(sid)}"]
            g.add((node, RDF.type, GK.ScopeResult if r is cr.scope else GK.RecommendationResult))
            g.add((node, RDF.type, PROV.Entity))
            g.add((node, GK.forCase, cr.patient))
            g.add((node, GK.forStatement, URIRef(sid)))
            g.add((node, GK.status, STATUSES[r.status]))
            g.add((node, PROV.wasGeneratedBy, activity))
            g.add((node, PROV.wasDerivedFrom, r.population))
            if r.statement.get("kind") != "guideline":
                g.add((node, GK.isUrgent, Literal(r.urgent)))
            for c in r.conditions:
                if c.state != "unknown":
                    for n in c.nodes:
                        g.add((node, PROV.wasDerivedFrom, URIRef(n) if not n.startswith("_:") else BNode(n[2:])))
            for text in r.because:
                g.add((node, GK.because, Literal(text)))
            for text in r.missing:
                g.add((node, GK.missing, Literal(text)))
            for t in r.thresholds:
                g.add((node, GK.usedThreshold, URIRef(t.name)))
            if r.note:
                g.add((node, GK.resultNote, Literal(r.note)))
        for u in cr.urgent_findings:
            g.add((nodes[u["statement"]], GK.urgentFinding, Literal(u["finding"])))
        for pair in cr.conflicts:
            first, second = (local_name(pair[k]) for k in ("for", "against"))
            conflict = RESULT[f"{case_key}/conflict-{first}-{second}"]
            g.add((activity, GK.hasConflict, conflict))
            g.add((conflict, RDF.type, GK.PatientConflict))
            g.add((conflict, RDF.type, PROV.Entity))
            g.add((conflict, PROV.wasGeneratedBy, activity))
            g.add((conflict, GK.conflictFor, nodes[pair["for"]]))
            g.add((conflict, GK.conflictAgainst, nodes[pair["against"]]))
            g.add((conflict, RDFS.label, Literal(f"conflict about {pair['action']}")))
            if pair["resolution"]:
                g.add((conflict, GK.resolution, Literal(pair["resolution"])))
        for o in cr.unspecified_options:
            node = RESULT[f"{case_key}/{local_name(o.statement['id'])}"]
            g.add((node, RDF.type, GK.UnspecifiedOptionResult))
            g.add((node, GK.forCase, cr.patient))
            g.add((node, GK.forStatement, URIRef(o.statement["id"])))
            g.add((node, PROV.wasGeneratedBy, activity))
            g.add((node, RDFS.comment, Literal(UNSPECIFIED_NOTE)))
            for text in o.because:
                g.add((node, GK.because, Literal(text)))
    return g


def _disjoint(cases: list[Case]) -> bool:
    """True when no IRI is the subject of statements in two cases: merging them cannot mix one patient's facts
    with another's (blank nodes of separately read files are already distinct)."""
    seen: set[URIRef] = set()
    for case in cases:
        mine = {s for s in case.graph.subjects() if isinstance(s, URIRef)}
        if mine & seen:
            return False
        seen |= mine
    return True
