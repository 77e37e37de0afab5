"""The one gate every patient case passes: read, validate against the case shapes, and only then derive.

Every entry point that touches a case (``recommend``, ``validate``, ``render --case``, ``query``, ``serve`` and
its CDS Hooks service, ``export careplan|cds-cards``, ``cohort evaluate``) goes through this module, so "invalid"
means one thing everywhere:

- **read** by the one reader (:func:`guideline_kg.cases.reader.load_cases`; a FHIR Bundle that arrives over HTTP
  by :func:`guideline_kg.cases.fhir_in.bundle_to_case`, the function the reader uses for ``*.fhir.json`` files);
  a file that cannot be read gives an *unreadable* result (its InputError: file, place, defect) and every other
  file is still read, validated and derived; the command then exits 2 (:func:`exit_code`). When no file at all
  can be read, :meth:`Gate.read` raises the InputError (exit 2, nothing else is printed);
- **validated** by the case shapes (:func:`case_shapes`: the project's ``case*-shapes.ttl``) compiled to SPARQL
  (:mod:`guideline_kg.compile.shacl2sparql`) and run on an embedded store holding the case and the class
  hierarchy of the knowledge graph; a case is **invalid** when one result has the severity
  :data:`INVALID_SEVERITY` (``sh:Violation``); warnings are reported and do not stop the case;
- **derived** (:class:`guideline_kg.reasoning.derive.Evaluator`) only when it is valid.

The answer is one :class:`GateResult` per case: valid (the derivation result, the reader's notes, the warnings)
or invalid (its violations, each with focus node, path, value, message and source shape, and *no* derivation:
an invalid result holds neither the case's graph nor a result, so nothing downstream can draw one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.term import Node
from rdflib.util import from_n3

from guideline_kg.cases import fhir_in
from guideline_kg.cases.model import Case, InputNote
from guideline_kg.cases.reader import case_files, case_name, load_cases
from guideline_kg.checks.validate import CASE_SHAPES_PREFIX, load_shapes
from guideline_kg.compile.shacl2sparql import (
    CompiledConstraint,
    ShapeResult,
    compile_shapes,
    hierarchy_context,
    run_constraints,
)
from guideline_kg.core.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK, InputError
from guideline_kg.core.findings import SEVERITIES, Finding
from guideline_kg.core.namespaces import DCTERMS, GK, RDF, SH, bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.reasoning.derive import CaseResult, Evaluator
from guideline_kg.store.stores import Store, count_typed_subjects, graph_to_ntriples

__all__ = [
    "INVALID_SEVERITY",
    "MAX_CASES",
    "CaseShapes",
    "Gate",
    "GateResult",
    "Violation",
    "case_shapes",
    "exit_code",
    "gate",
    "is_invalid",
    "refuse_many_cases",
]

#: The severity that makes a case invalid (no derivation). Warnings and infos are reported and do not block.
INVALID_SEVERITY = "Violation"


def is_invalid(severity: str) -> bool:
    """Whether a shape result of this severity makes its case invalid: the one rule of every entry point."""
    return severity == INVALID_SEVERITY


def case_shapes(project: Project) -> Graph:
    """The case shapes of the project (every ``case*-shapes.ttl`` of its shapes folder) in one graph."""
    return load_shapes(project, CASE_SHAPES_PREFIX)


_NAMES = bind_prefixes(Graph())


def _short(iri: str | None) -> str:
    """An IRI as a prefixed name where a project prefix fits; blank nodes and other terms as given."""
    if not iri:
        return ""
    if iri.startswith("_:") or ("://" not in iri and not iri.startswith("urn:")):
        return iri
    try:
        return _NAMES.namespace_manager.normalizeUri(URIRef(iri))
    except Exception:  # an IRI that cannot be shortened
        return f"<{iri}>"


def _value_text(value: str | None) -> str | None:
    """A value as the store gives it (N-Triples term) in the form people read: a literal's lexical form, a
    prefixed name for an IRI."""
    if value is None:
        return None
    if value.startswith("<") and value.endswith(">"):
        return _short(value[1:-1])
    if value.startswith('"'):
        end = value.rfind('"')
        return value[1:end] if end > 0 else value
    return value


def _term(text: str, n3: bool = False) -> Node:
    """A focus, shape or value string back as an RDF term (values come as N-Triples terms)."""
    if text.startswith("_:"):
        return BNode(text[2:])
    if n3:
        try:
            term = from_n3(text)
        except Exception:  # not N-Triples: keep the text
            term = None
        return term if isinstance(term, (URIRef, BNode, Literal)) else Literal(text)
    return URIRef(text)


@dataclass(frozen=True)
class Violation:
    """One result of the case shapes on a case: focus node, path, value, message, source shape, severity."""

    focus: str  #: the focus node (IRI, or ``_:id`` for a blank node)
    path: str | None  #: the property (IRI) the constraint is on, if any
    value: str | None  #: the offending value (N-Triples term), if any
    message: str  #: the shape's ``sh:message``
    shape: str  #: the source shape: the named node shape (its property shapes are blank nodes)
    severity: str  #: Violation | Warning | Info
    component: str = ""  #: the SHACL constraint component

    def same_defect(self, other: Violation) -> bool:
        """The same defect reported by two constraint components of one shape (datatype and range)."""
        return (self.focus, self.path, self.value, self.message, self.shape, self.severity) == \
            (other.focus, other.path, other.value, other.message, other.shape, other.severity)

    def shown_value(self) -> str | None:
        """The value as people read it; None when there is none or it is the focus node itself (a SPARQL
        constraint that binds no ?value reports its focus node, SHACL 5.3.2), which says nothing more."""
        if self.value is None or self.value in (self.focus, f"<{self.focus}>"):
            return None
        return _value_text(self.value)

    def text(self) -> str:
        """One line for people: ``focus path = value: message [shape]``."""
        where = _short(self.focus) + (f" {_short(self.path)}" if self.path else "")
        value = self.shown_value()
        return f"{where}{f' = {value}' if value is not None else ''}: {self.message} [{_short(self.shape)}]"

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "focus": _short(self.focus), "path": _short(self.path) or None,
                "value": _value_text(self.value), "message": self.message, "shape": _short(self.shape)}

    def finding(self, source: str | None = None) -> Finding:
        """The violation as a :class:`Finding` of kind ``shape`` (the ``validate`` report), its message in the
        form pySHACL's findings have: ``path: message (value: v)``."""
        text = f"{_short(self.path)}: {self.message}" if self.path else self.message
        value = self.shown_value()
        if value is not None and not (self.value or "").startswith("_:"):
            text += f" (value: {value})"
        severity = self.severity if self.severity in SEVERITIES else INVALID_SEVERITY
        return Finding("shape", severity, text, focus=_short(self.focus), source=source)


@dataclass
class CaseShapes:
    """The case shapes compiled once: the SPARQL of each constraint, the class hierarchy the class tests need
    (N-Triples), and the named node shape of each blank-node property shape (to name the source shape)."""

    constraints: list[CompiledConstraint]
    context: bytes
    owners: dict[str, str] = field(default_factory=dict)
    known: frozenset[str] = frozenset()  #: the IRIs the context describes (terms of the knowledge graph)

    @classmethod
    def of(cls, knowledge: Graph, project: Project, shapes: Graph | None = None) -> CaseShapes:
        """The project's case shapes (or ``shapes``), with the class hierarchy of ``knowledge``."""
        shapes = case_shapes(project) if shapes is None else shapes
        owners = {f"_:{part}": str(shape) for link in (SH.property, SH.sparql)
                  for shape, part in shapes.subject_objects(link)
                  if isinstance(part, BNode) and isinstance(shape, URIRef)}
        hierarchy = hierarchy_context(knowledge)
        return cls(compile_shapes(shapes), graph_to_ntriples(hierarchy), owners,
                   frozenset(str(s) for s in hierarchy.subjects()))

    def run(self, store: Any, workers: int = 1) -> list[ShapeResult]:
        """Every result of the compiled constraints on ``store`` (a pyoxigraph store holding the context)."""
        return run_constraints(store, self.constraints, workers=workers)

    def violation(self, r: ShapeResult) -> Violation:
        return Violation(r.focus, r.path, r.value, r.message, self.owners.get(r.shape, r.shape), r.severity,
                         r.component)


@dataclass
class GateResult:
    """What the gate says about one case. Valid: ``result`` (the derivation, unless it was not asked for) and
    ``case``. Invalid: ``violations``, and neither ``case`` nor ``result``. Unreadable: ``error`` (the file could
    not be read: its InputError names file, place and defect), and nothing else.

    ``notes`` are what the reader could not record (for a FHIR Bundle each is a
    :class:`~guideline_kg.cases.model.InputNote` with ``place`` and ``message``); :meth:`input_notes` gives them
    as JSON (``[{"place", "message"}]``), the case object's ``"input_notes"``."""

    name: str
    source: Path | None
    notes: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    case: Case | None = None
    result: CaseResult | None = None
    error: InputError | None = None

    @property
    def valid(self) -> bool:
        return not self.violations and self.error is None

    @property
    def unreadable(self) -> bool:
        """The case's file could not be read (``error``)."""
        return self.error is not None

    def input_notes(self) -> list[dict[str, Any]]:
        """The reader's notes as ``[{"place", "message"}]`` (a note without a known place has place "")."""
        return [n.to_json() if isinstance(n, InputNote) else {"place": "", "message": str(n)} for n in self.notes]

    def input_errors(self) -> list[dict[str, Any]]:
        """Why an unreadable file could not be read, as ``[{"place", "message"}]``: every defect of a FHIR
        Bundle, or the one error of another file (place: ``line:column`` when known)."""
        if self.error is None:
            return []
        defects = getattr(self.error, "defects", None)
        if defects:
            return [d.to_json() for d in defects]
        e = self.error
        place = f"{e.line}:{e.column}" if e.line is not None and e.column is not None else \
            (str(e.line) if e.line is not None else "")
        prefix = f"{e.path}:{place}: " if e.path and place else (f"{e.path}: " if e.path else "")
        text = str(e)
        return [{"place": place, "message": text[len(prefix):] if text.startswith(prefix) else text}]

    @property
    def where(self) -> str:
        """The case file (or, for a case that came without one, its name)."""
        return str(self.source) if self.source is not None else self.name

    def label(self) -> str:
        """``file`` or ``file#case`` (a file holding several patients)."""
        if self.source is None:
            return self.name
        return self.where + (f" (case {self.name})" if "#" in self.name else "")

    def report(self, consequence: str) -> list[str]:
        """The lines for people about an invalid case: the file, what it does not get, each violation (for an
        unreadable file: the read error, which names file, place and defect)."""
        if self.error is not None:
            return [f"{self.label()}: UNREADABLE case file, {consequence}: {self.error}"]
        n = len(self.violations)
        return [f"{self.label()}: INVALID case, {consequence} ({n} violation{'s' if n != 1 else ''} "
                "of the case shapes):"] + [f"  - {v.text()}" for v in self.violations]

    def to_json(self) -> dict[str, Any]:
        """``{"case", "file", "valid", "violations", "input_notes"}`` (invalid), ``{"case", "file", "valid",
        "input_notes"}`` (valid), ``{"case", "file", "valid": false, "unreadable": true, "violations": [],
        "input_errors": [{"place", "message"}]}`` (unreadable)."""
        doc: dict[str, Any] = {"case": self.name, "file": str(self.source) if self.source else None,
                               "valid": self.valid}
        if not self.valid:
            doc["violations"] = [v.to_json() for v in self.violations]
        if self.error is not None:
            doc["unreadable"] = True
            doc["input_errors"] = self.input_errors()
        else:
            doc["input_notes"] = self.input_notes()
        return doc

    def shacl_report(self) -> Graph:
        """The case's shape results as one ``sh:ValidationReport`` (focus node, path, value, source shape,
        constraint component, severity, message)."""
        out = bind_prefixes(Graph())
        report = BNode()
        out.add((report, RDF.type, SH.ValidationReport))
        out.add((report, SH.conforms, Literal(self.valid)))
        for v in self.violations + self.warnings:
            node = BNode()
            out.add((report, SH.result, node))
            out.add((node, RDF.type, SH.ValidationResult))
            out.add((node, SH.focusNode, _term(v.focus)))
            out.add((node, SH.resultSeverity, SH[v.severity]))
            out.add((node, SH.resultMessage, Literal(v.message, lang="en")))
            out.add((node, SH.sourceShape, _term(v.shape)))
            if v.component:
                out.add((node, SH.sourceConstraintComponent, URIRef(v.component)))
            if v.path:
                out.add((node, SH.resultPath, URIRef(v.path)))
            if v.value is not None:
                out.add((node, SH.value, _term(v.value, n3=True)))
            if self.source is not None:
                out.add((node, DCTERMS.source, Literal(str(self.source))))
        return out

    def findings(self) -> list[Finding]:
        """Violations and warnings as ``shape`` findings naming the case file (for ``validate``; an unreadable
        file has none: its read error is reported on its own, :meth:`report`, and the command exits 2)."""
        return [v.finding(self.where) for v in self.violations + self.warnings]


#: The most cases one command holds in memory (recommend, validate, query, export, serve: every case is read,
#: then checked); more are refused before any is parsed: `cohort evaluate` streams populations (docs/security.md).
MAX_CASES = 1000


def refuse_many_cases(paths: Sequence[Path | str], limit: int = MAX_CASES,
                      why: str = "a command reads every case into memory") -> None:
    """InputError, before any case is parsed, when the files and folders hold more than ``limit`` cases.

    Turtle and N-Triples files are scanned by pyoxigraph's streaming parser for gk:Patient nodes, stopping at
    ``limit + 1`` (seconds for a file of 100,000 cases that takes rdflib minutes); any other case file counts as
    one. Missing or malformed files are left to the reader, which reports them."""
    total = 0
    for f in case_files([Path(p) for p in paths], errors=[]):
        n = count_typed_subjects(f, str(GK.Patient), limit + 1 - total)
        total += 1 if n is None else n
        if total > limit:
            one_file = n is not None and n > limit
            raise InputError(f"more than {limit} patient case{'' if limit == 1 else 's'}"
                             f"{'' if one_file else ' in the files given'} ({why}); for populations run "
                             "`guideline-kg cohort evaluate`, which reads cases one by one",
                             path=str(f) if one_file else None)


class Gate:
    """Prepared once per knowledge graph (shapes compiled, derivation queries compiled on first use); lets any
    number of cases through, one :class:`GateResult` each."""

    def __init__(self, knowledge: Graph, project: Project, shapes: CaseShapes | None = None) -> None:
        self.knowledge, self.project = knowledge, project
        self.shapes = shapes or CaseShapes.of(knowledge, project)
        self._evaluator: Evaluator | None = None

    @property
    def evaluator(self) -> Evaluator:
        """The derivation (made on first use: a command whose every case is invalid never compiles it)."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.knowledge, self.project)
        return self._evaluator

    # ------------------------------------------------------------ validate

    def check(self, case: Case) -> tuple[list[Violation], list[Violation]]:
        """The case shapes on one case: (violations, warnings and infos)."""
        store = ox.Store()
        store.bulk_load(self.shapes.context, format=ox.RdfFormat.N_TRIPLES)
        store.bulk_load(graph_to_ntriples(case.graph), format=ox.RdfFormat.N_TRIPLES)
        own = {str(s) for s in case.graph.subjects() if isinstance(s, URIRef)}
        found: list[Violation] = []
        for r in self.shapes.run(store):
            # a result on a term of the knowledge graph the case does not describe is not the case's defect;
            # blank nodes and the case's own nodes always count
            if r.focus in self.shapes.known and r.focus not in own:
                continue
            v = self.shapes.violation(r)
            # one defect, one result: an ill-typed value also fails the range checks of the same shape
            if not any(v.same_defect(f) for f in found):
                found.append(v)
        found.sort(key=lambda v: (SEVERITIES.index(v.severity) if v.severity in SEVERITIES else 9, v.focus,
                                  v.path or "", v.message))
        return [v for v in found if is_invalid(v.severity)], [v for v in found if not is_invalid(v.severity)]

    # ------------------------------------------------------------ the gate

    def admit(self, cases: Iterable[Case], *, derive: bool = True, reasoner: str = "fast",
              store: Store | None = None) -> list[GateResult]:
        """Validate each case, then derive the valid ones (``derive``) on the chosen path; with ``store`` (a
        SPARQL server) the valid cases are loaded there and derived in one batch on the fast path."""
        out: list[GateResult] = []
        admitted: list[tuple[GateResult, Case]] = []
        for case in cases:
            violations, warnings = self.check(case)
            gated = GateResult(case.name, case.source, list(case.notes), violations, warnings)
            if gated.valid:
                gated.case = case
                admitted.append((gated, case))
            out.append(gated)
        if not derive or not admitted:
            return out
        if store is not None:
            if reasoner != "fast":
                raise InputError("--store runs the fast path (SPARQL); --reasoner hermit runs only in-process")
            if not getattr(store, "has_knowledge", lambda: False)():
                store.add_graph(self.knowledge)
            for _, case in admitted:
                store.add_graph(case.graph)
            names = {case.patient: g.name for g, case in admitted}
            by_patient = {r.patient: r for r in self.evaluator.evaluate_store(store, list(names), names)}
            for g, case in admitted:
                g.result = by_patient.get(case.patient)
        else:  # in-process; on the HermiT path one reasoner run for all admitted cases
            results = self.evaluator.evaluate_many([case for _, case in admitted], reasoner)
            for (g, _), result in zip(admitted, results, strict=True):
                g.result = result
        return out

    def read(self, paths: Sequence[Path | str], **options: Any) -> list[GateResult]:
        """Read the case files and folders (one reader), then :meth:`admit` every case. A file that cannot be
        read becomes an unreadable result (after the others, in file order) and does not stop the rest; when no
        file can be read at all, the InputError is raised (several: one error listing each)."""
        refuse_many_cases(paths)
        errors: list[InputError] = []
        cases = load_cases([Path(p) for p in paths], self.project, errors=errors)
        if errors and not cases:
            if len(errors) == 1:
                raise errors[0]
            raise InputError(f"none of the {len(errors)} case files can be read:"
                             + "".join(f"\n  - {e}" for e in errors))
        out = self.admit(cases, **options)
        for e in errors:
            source = Path(e.path) if e.path else None
            out.append(GateResult(case_name(source) if source else "?", source, error=e))
        return out

    def bundle(self, bundle: dict[str, Any], name: str, **options: Any) -> GateResult:
        """A FHIR R4 Bundle received in memory (CDS Hooks prefetch): mapped as the reader maps a
        ``*.fhir.json`` file, then :meth:`admit`."""
        return self.admit([fhir_in.bundle_to_case(bundle, name, project=self.project)], **options)[0]


def exit_code(results: Sequence[GateResult]) -> int:
    """The exit code the gate's results give a command: 2 when a case file could not be read, else 1 when a case
    is invalid, else 0 (the command reports them all first)."""
    if any(r.unreadable for r in results):
        return EXIT_ERROR
    return EXIT_FAILED if any(not r.valid for r in results) else EXIT_OK


def gate(paths: Sequence[Path | str], knowledge: Graph, project: Project, *, derive: bool = True,
         reasoner: str = "fast", store: Store | None = None) -> list[GateResult]:
    """Read, validate, then derive: one :class:`GateResult` per case of the given files and folders."""
    return Gate(knowledge, project).read(paths, derive=derive, reasoner=reasoner, store=store)

