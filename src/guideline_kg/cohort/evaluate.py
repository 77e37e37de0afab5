"""Population-scale evaluation: a cohort file, shard by shard, validated (compiled SHACL) and derived (fast path).

Each shard of whole cases is bulk-loaded into its own pyoxigraph store with the ontology's class hierarchy,
validated by the case shapes compiled to SPARQL (:mod:`shacl2sparql`), and derived in batch by
:meth:`derive.Evaluator.evaluate_store`; one JSON line per case is written before the next shard is read, so
memory is bounded by the shard size, not the cohort. The shapes, the class hierarchy and the rule that makes a
case invalid (a result of severity :data:`checks.gate.INVALID_SEVERITY`) are the gate's (:mod:`checks.gate`),
so a case is invalid here exactly when ``recommend`` refuses it. Invalid cases and unreadable records are
reported and never derived nor dropped silently: they get a JSON line with ``"invalid": true``.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyoxigraph as ox
from rdflib import Graph, URIRef

from guideline_kg.checks.gate import CaseShapes, Gate, case_shapes, is_invalid
from guideline_kg.cohort.shards import Shard, iter_shards
from guideline_kg.compile.shacl2sparql import CompiledConstraint, ShapeResult, hierarchy_context
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GK, RDF
from guideline_kg.core.project import Project
from guideline_kg.reasoning.derive import CaseResult, Witness
from guideline_kg.store.stores import EmbeddedStore, RemoteStore

__all__ = ["CohortEvaluator", "CohortSummary", "case_shapes", "hierarchy_context", "shorten"]

STAGES = ("load", "validate", "derive", "write")


@dataclass
class CohortSummary:
    """Counts of a cohort run: cases, scope, statuses per statement, invalid cases with reasons and the count of
    cases per defect, stage times."""

    cases: int = 0
    valid: int = 0
    in_scope: int = 0
    urgent: int = 0
    shards: int = 0
    status: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    invalid: list[dict[str, Any]] = field(default_factory=list)
    #: invalid cases per defect: (message, path, component, shape IRI or "") -> number of cases that have it
    defects: Counter = field(default_factory=Counter)
    warnings: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def by_defect(self) -> list[dict[str, Any]]:
        """The defects, most frequent first: how many cases each, its message, path, constraint and shape."""
        rows = sorted(self.defects.items(), key=lambda kv: (-kv[1], kv[0]))
        return [{"cases": n, "message": msg, "path": path or None, "component": component or None,
                 "shape": shape or None} for (msg, path, component, shape), n in rows]

    def to_json(self) -> dict[str, Any]:
        return {"cases": self.cases, "valid": self.valid, "invalid": len(self.invalid), "in_scope": self.in_scope,
                "urgent": self.urgent, "warnings": self.warnings, "shards": self.shards,
                "statements": {sid: dict(c) for sid, c in sorted(self.status.items())},
                "invalid_by_defect": self.by_defect(),
                "invalid_cases": self.invalid, "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}

    def table(self, lines: dict[str, str] | None = None, texts: dict[str, str] | None = None,
              list_invalid: int = 0) -> str:
        """The summary for people: per statement (its source lines and the start of its text) the number and the
        share of valid cases in each status; the invalid cases counted by defect; the first ``list_invalid``
        invalid cases with their reasons."""
        def pct(n: int, of: int) -> str:
            return f"{100 * n / of:.1f}%" if of else "-"

        invalid = len(self.invalid)
        out = [f"{self.cases} cases: {self.valid} valid ({pct(self.valid, self.cases)}), {invalid} invalid "
               f"({pct(invalid, self.cases)}, skipped); of the valid: {self.in_scope} in scope "
               f"({pct(self.in_scope, self.valid)}), {self.urgent} with urgent findings "
               f"({pct(self.urgent, self.valid)}); {self.warnings} warnings",
               "", f"per statement, cases of the {self.valid} valid (share):",
               f"{'statement':<11} {'lines':<6} {'applicable':>15} {'not-applicable':>15} {'undetermined':>15}  text"]

        def order(sid: str) -> tuple[int, str]:
            first = (lines or {}).get(sid, "").split(",")[0]
            return (int(first) if first.isdigit() else 0, sid)

        for sid, c in sorted(self.status.items(), key=lambda kv: order(kv[0])):
            short = sid.rsplit("/", 1)[-1]
            cells = [f"{c[s]:>7} {pct(c[s], self.valid):>7}" for s in ("applicable", "not-applicable",
                                                                          "undetermined")]
            out.append(f"{short:<11} {(lines or {}).get(sid, ''):<6} {' '.join(cells)}  "
                       f"{shorten((texts or {}).get(sid, ''), 60)}")
        if self.invalid:
            out += ["", f"invalid cases by defect ({invalid} cases; a case may have several defects):",
                    f"{'cases':>7}  {'where':<32} message"]
            for row in self.by_defect():
                where = _local(row["shape"] or "") if row["shape"] else _local(row["path"] or "")
                if row["component"]:
                    where = f"{where} {row['component'].rsplit('#', 1)[-1].removesuffix('ConstraintComponent')}"
                out.append(f"{row['cases']:>7}  {where.strip():<32} {row['message']}")
            if list_invalid > 0:
                shown = self.invalid[:list_invalid]
                out += ["", f"the first {len(shown)} of {invalid} invalid cases (--list-invalid {list_invalid}):"]
                out += [f"  {inv['case']}: " + " | ".join(inv["reasons"]) for inv in shown]
            else:
                out += ["", "(--list-invalid N lists the first N invalid cases with their reasons; every invalid "
                            "case has a JSON line with its violations)"]
        return "\n".join(out) + "\n"


def _local(iri: str) -> str:
    return iri.rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word to at most ``width`` characters (an ellipsis marks the cut)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1].rsplit(" ", 1)[0] if " " in text[: width - 1] else text[: width - 1]
    return cut.rstrip(" ,;:") + "…"


class CohortEvaluator:
    """Prepared once (shapes compiled, derivation queries compiled); runs any number of cohort files."""

    def __init__(self, knowledge: Graph, project: Project, shapes: Graph | None = None) -> None:
        self.project = project
        # the gate's case shapes, class hierarchy and severity rule: "invalid" means what it means for one case
        self.gate = Gate(knowledge, project, CaseShapes.of(knowledge, project, shapes))
        self.evaluator = self.gate.evaluator
        self.constraints: list[CompiledConstraint] = self.gate.shapes.constraints
        self.context = self.gate.shapes.context
        self.lines = {sid: ",".join(map(str, st["source_lines"])) for sid, st in self.evaluator.statements.items()}
        #: each statement's verbatim text (the summary shows its start beside the id)
        self.texts = {sid: str(st.get("text") or "") for sid, st in self.evaluator.statements.items()}

    def _patients_of(self, store: ox.Store | _RemoteQueries, nodes: set[str]) -> dict[str, str]:
        """The patient each focus node belongs to (the node itself, or a node the patient's facts lead to)."""
        if not nodes:
            return {}
        values = " ".join(f"<{n}>" for n in nodes if not n.startswith("_:"))
        q = (f"SELECT ?focus ?patient WHERE {{ VALUES ?focus {{ {values} }} "
             f"?patient a <{GK.Patient}> . ?patient (!<{RDF.type}>)* ?focus }}")
        solutions = store.query(q)
        if not isinstance(solutions, ox.QuerySolutions):
            raise InputError("the store answered a SELECT query with something other than solutions")
        return {s["focus"].value: s["patient"].value for s in solutions}

    def validate(self, store: ox.Store | _RemoteQueries) -> tuple[dict[str, list[ShapeResult]], int]:
        """Violations per patient IRI, and the number of warnings."""
        workers = (os.cpu_count() or 1) if isinstance(store, ox.Store) else 1
        results = self.gate.shapes.run(store, workers=workers)
        violations = [r for r in results if is_invalid(r.severity)]
        owner = self._patients_of(store, {r.focus for r in violations})
        per_patient: dict[str, list[ShapeResult]] = defaultdict(list)
        for r in violations:
            per_patient[owner.get(r.focus, r.focus)].append(r)
        return per_patient, len(results) - len(violations)

    def derive(self, shard: Shard, bad: dict[str, list[ShapeResult]], remote: RemoteStore | None = None,
               membership: dict[str, dict[str, Witness]] | None = None
               ) -> tuple[list[URIRef], list[URIRef], list[CaseResult]]:
        """The shard's patients, the valid ones (no violation in ``bad``) and their derivations, in IRI order
        (``membership``: the class queries' answers, :meth:`memberships`, when already asked)."""
        store = self._store(shard) if remote is None else remote
        # a list, consumed and dropped here: pyoxigraph's iterator must not be dropped on another thread (a Dask
        # worker may collect garbage on its event-loop thread)
        typed = list(shard.store.quads_for_pattern(None, ox.NamedNode(str(RDF.type)), ox.NamedNode(str(GK.Patient))))
        patients = sorted(URIRef(q.subject.value) for q in typed if not isinstance(q.subject, ox.Triple))
        del typed
        valid = [p for p in patients if str(p) not in bad]
        return patients, valid, list(self.evaluator.evaluate_store(store, valid, membership=membership))

    @staticmethod
    def _store(shard: Shard) -> EmbeddedStore:
        store = EmbeddedStore()
        store.ox = shard.store
        return store

    def validate_and_derive(self, shard: Shard, seconds: dict[str, float]
                            ) -> tuple[dict[str, list[ShapeResult]], int, list[URIRef], list[URIRef], list[CaseResult]]:
        """:meth:`validate` and :meth:`derive` of an embedded shard, the derivation's class queries asked on a
        second thread while the shapes run (they do not depend on validity; only valid patients get a result):
        both keep the cores busy to the end. ``seconds`` gets ``validate`` (until the violations are known) and
        ``derive`` (the rest)."""
        clock = time.perf_counter
        t = clock()
        with ThreadPoolExecutor(max_workers=1) as side:
            asked = side.submit(self.evaluator.memberships, self._store(shard))
            bad, warnings = self.validate(shard.store)
            seconds["validate"] += clock() - t
            t = clock()
            membership = asked.result()
        patients, valid, results = self.derive(shard, bad, membership=membership)
        seconds["derive"] += clock() - t
        return bad, warnings, patients, valid, results

    def run(self, path: Path, out: TextIO, shard_size: int = 10_000,
            progress: Callable[[int], None] | None = None, remote: RemoteStore | None = None) -> CohortSummary:
        """Validate and derive every case of the cohort file; one JSON line per case to ``out``.

        With ``remote``, each shard is put into the server's default graph (which must start empty: it is
        replaced shard by shard and cleared at the end), and validation and derivation run there."""
        if remote is not None and remote.ask("ASK { ?s ?p ?o }"):
            raise InputError(f"{remote.url}: the store's default graph is not empty; cohort evaluate replaces it "
                             "shard by shard, so give it an empty store (docs/cohort.md, External store)")
        try:
            return self._run(path, out, shard_size, progress, remote)
        finally:
            if remote is not None:
                remote.clear_default()

    def _run(self, path: Path, out: TextIO, shard_size: int, progress: Callable[[int], None] | None,
             remote: RemoteStore | None) -> CohortSummary:
        summary = CohortSummary()
        clock = time.perf_counter
        t = clock()
        for shard in iter_shards(Path(path), shard_size, self.context, self.project):
            summary.seconds["load"] += clock() - t
            summary.shards += 1
            # the shard's records (those read and those that could not be): what `count_records` counted
            advance = _Advance(shard.cases + len(shard.unreadable), progress)
            if remote is not None:
                buffer = io.BytesIO()
                shard.store.dump(buffer, format=ox.RdfFormat.N_TRIPLES, from_graph=ox.DefaultGraph())
                remote.send_ntriples(buffer.getvalue(), replace=True)
                summary.seconds["load"] += clock() - t
            advance(1)
            t = clock()
            bad, warnings = self.validate(shard.store if remote is None else _RemoteQueries(remote))
            summary.warnings += warnings
            summary.seconds["validate"] += clock() - t
            advance(2)
            t = clock()
            patients, valid, results = self.derive(shard, bad, remote)
            summary.seconds["derive"] += clock() - t
            advance(3)
            t = clock()
            lines = []
            for cr in results:
                doc = cr.to_json()
                lines.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
                summary.in_scope += cr.in_scope
                summary.urgent += cr.has_urgent()
                for sid, status in cr.statuses().items():
                    summary.status[sid][status] += 1
            for patient, unsorted in sorted(bad.items()):
                # a store may give solutions in any order: sort, so that every store writes the same line
                found = sorted(unsorted, key=lambda r: (r.focus, r.path or "", r.component, r.value or "", r.message))
                name = patient.rsplit("/", 1)[-1]
                reasons = [f"{r.focus.rsplit('/', 1)[-1]}: {r.message}" for r in found]
                summary.invalid.append({"case": name, "reasons": reasons})
                summary.defects.update({(r.message, r.path or "", r.component,
                                         "" if r.shape.startswith("_:") else r.shape) for r in found})
                lines.append(json.dumps({"case": name, "invalid": True, "violations": [
                    {"focus": r.focus, "path": r.path, "value": r.value, "component": r.component,
                     "message": r.message} for r in found]}, ensure_ascii=False, separators=(",", ":")))
            for u in shard.unreadable:
                summary.invalid.append({"case": u.name, "reasons": [u.reason]})
                summary.defects[(_UNREADABLE.sub("", u.reason).split(":", 1)[0], "", "", "")] += 1
                lines.append(json.dumps({"case": u.name, "invalid": True, "violations": [{"message": u.reason}]},
                                        ensure_ascii=False, separators=(",", ":")))
            if lines:
                out.write("\n".join(lines) + "\n")
            summary.cases += len(patients) + len(shard.unreadable)
            summary.valid += len(valid)
            summary.seconds["write"] += clock() - t
            advance(4)
            del shard, results
            t = clock()
        return summary


#: the "file:line: " that starts an unreadable record's reason (the defect is what follows)
_UNREADABLE = re.compile(r"^.*?:\d+: ")


class _Advance:
    """A shard's share of the progress bar, moved on after each of the four stages (load, validate, derive,
    write: of similar cost, docs/cohort.md, Benchmark), so that a one-shard run shows progress and an ETA too."""

    def __init__(self, records: int, progress: Callable[[int], None] | None) -> None:
        self.records, self.progress, self.done = records, progress, 0

    def __call__(self, stage: int) -> None:
        target = self.records * stage // len(STAGES)
        if self.progress is not None and target > self.done:
            self.progress(target - self.done)
        self.done = max(self.done, target)


class _RemoteQueries:
    """A RemoteStore seen through the one method the compiled constraints use: ``query(text)`` giving
    pyoxigraph solutions."""

    def __init__(self, remote: RemoteStore) -> None:
        self.remote = remote

    def query(self, text: str) -> Any:
        return self.remote.raw(text)
