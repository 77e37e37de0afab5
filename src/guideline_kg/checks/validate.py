"""Validation of a guideline graph and of patient cases: SHACL shapes and the consistency analysis.

Generic machinery: the rules live in ``shapes/*-shapes.ttl`` and ``queries/checks/``. A check query's file name
gives its kind and severity (``<kind>-violation.rq``, ``<kind>-warning.rq``, ``<kind>-info.rq``); its SELECT
returns ``?focus ?message`` and optionally ``?lines`` (space-separated source lines). A ``<kind>-candidates.rq``
query returns pairs of statements with their populations (``?focus ?other ?population ?otherPopulation``), and
HermiT decides whether the two populations can overlap. Queries in ``queries/checks/case/`` run over the guideline
graph plus one case's derivation results.

The named definitions are checked too (kind ``definition``): a condition and its ``gk:negation`` must not overlap
(HermiT, in the same run as the contradiction analysis), and a number in a condition should be a named threshold
(an ``rdfs:Datatype`` IRI), not a literal written in place. Statements the repetition check pairs must
get the same status on every example case and on a generated sample unless a ``gk:DivergentRepetition`` records why
(:func:`repetition_status_findings`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.term import Node

from guideline_kg.cases.reader import load_cases
from guideline_kg.compile.shacl2sparql import compile_shapes, hierarchy_context, run_constraints
from guideline_kg.core.errors import InputError
from guideline_kg.core.findings import KINDS, SEVERITIES, Finding, severity_rank
from guideline_kg.core.namespaces import DCTERMS, GK, OWL, RDF, RDFS, RESULT, SH, XSD, bind_prefixes, local_name
from guideline_kg.core.project import Project
from guideline_kg.core.queries import NamedQuery, list_queries
from guideline_kg.core.rdfio import read_graphs
from guideline_kg.knowledge import algorithm
from guideline_kg.reasoning.derive import CaseResult, Evaluator
from guideline_kg.reasoning.hermit import ReasonerResult, run_hermit
from guideline_kg.store.stores import EmbeddedStore

__all__ = [
    "SHAPES_SUFFIX",
    "ValidationResult",
    "case_report",
    "check_case_results",
    "check_queries",
    "contradiction_findings",
    "inline_number_findings",
    "load_shapes",
    "negation_extra",
    "negation_findings",
    "query_kind",
    "query_severity",
    "repetition_status_findings",
    "report_graph",
    "run_checks",
    "run_shapes",
    "shape_files",
    "sort_findings",
    "validate_case",
    "validate_knowledge",
]

#: Shape files applied to data end in this; other files in shapes/ (such as shacl-shacl.ttl) are not applied.
CASE_SHAPES_PREFIX = "case"
SHAPES_SUFFIX = "-shapes.ttl"
#: Roles of check queries (the end of the file name) and the severity of their findings.
ROLE_SEVERITY = {"violation": "Violation", "warning": "Warning", "info": "Info"}
CANDIDATES_ROLE = "candidates"
#: Sub-folder of queries/checks/ whose queries run over a case's derivation results.
CASE_CHECKS = "case"

_SEVERITY_OF = {SH.Violation: "Violation", SH.Warning: "Warning", SH.Info: "Info"}
_SH_SEVERITY = {v: k for k, v in _SEVERITY_OF.items()}

Reasoner = Callable[..., ReasonerResult]


@dataclass
class ValidationResult:
    """Findings of one validation run and the SHACL validation report graph(s) they came with."""

    findings: list[Finding] = field(default_factory=list)
    shacl_reports: list[Graph] = field(default_factory=list)

    @property
    def conforms(self) -> bool:
        """True when no finding is a violation (warnings and infos do not fail validation)."""
        return not any(f.severity == "Violation" for f in self.findings)

    def extend(self, other: ValidationResult) -> None:
        """Add another run's findings and reports to this one."""
        self.findings += other.findings
        self.shacl_reports += other.shacl_reports

    def to_json(self) -> dict:
        """The `validate --format json` document."""
        return {"conforms": self.conforms, "findings": [f.to_json() for f in sort_findings(self.findings)]}


# ---------------------------------------------------------------- files

def shape_files(project: Project, prefix: str = "") -> list[Path]:
    """The shape files applied to data: ``shapes/<prefix>*-shapes.ttl``, sorted. Case shapes are the files
    named ``case*-shapes.ttl``; applying only those to a case keeps one case's validation fast."""
    files = sorted(project.shapes_dir.glob(prefix + "*" + SHAPES_SUFFIX))
    if prefix in ("", CASE_SHAPES_PREFIX):  # the guideline package's own case shapes (guideline.toml)
        files += project.case_shape_files()
    return files


#: How many versions of a set of RDF files (shapes, ontology) stay parsed, and of compiled case shapes: a few
#: projects per process; a long-running process that sees many file versions drops the oldest.
CACHE_SIZE = 8


def _stamp(paths: Iterable[Path]) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parsed(stamp: tuple) -> Graph:
    """The files of ``stamp`` (paths with their modification times) in one graph, parsed once per version."""
    return read_graphs([Path(path) for path, _ in stamp])


def load_shapes(project: Project, prefix: str = "") -> Graph:
    """The shape files of the project (all, or those starting with ``prefix``) in one shapes graph, parsed once
    per file version."""
    files = shape_files(project, prefix)
    if not files:
        raise InputError(f"no shape files (*{SHAPES_SUFFIX}) found", path=str(project.shapes_dir))
    return _parsed(_stamp(files))


def _ontology(project: Project) -> Graph:
    files = project.vocabulary_files()  # the ontology and the package's patient vocabulary
    if not files:
        raise InputError("no ontology files (*.ttl) found", path=str(project.ontology_dir))
    return _parsed(_stamp(files))


def _role(query: NamedQuery) -> str:
    return query.name.rsplit("-", 1)[-1] if "-" in query.name else ""


def query_kind(query: NamedQuery) -> str:
    """The finding kind a check query reports: its file name less the role, a kind of :data:`KINDS`."""
    stem = query.name.rsplit("-", 1)[0]
    matches = [k for k in KINDS if stem == k or stem.startswith(k + "-")]
    if not matches:
        raise InputError(f"check query name must start with a finding kind ({', '.join(KINDS)}) and end in "
                         f"-violation, -warning, -info or -candidates", path=str(query.path))
    return max(matches, key=len)


def query_severity(query: NamedQuery) -> str:
    """The severity of a check query's findings, from the end of its file name."""
    role = _role(query)
    if role not in ROLE_SEVERITY:
        raise InputError(f"check query name must end in -violation, -warning or -info (found {role!r})",
                         path=str(query.path))
    return ROLE_SEVERITY[role]


def check_queries(project: Project, case_level: bool = False) -> list[NamedQuery]:
    """The check queries of ``queries/checks/`` (or of its ``case/`` sub-folder), sorted by name."""
    folder = project.queries_dir / "checks"
    if case_level:
        folder = folder / CASE_CHECKS
    if not folder.is_dir():
        return []
    return [q for q in list_queries(folder) if case_level or q.path.parent == folder]


# ---------------------------------------------------------------- SHACL

def _qname(graph: Graph, node: Node | None) -> str:
    if node is None:
        return ""
    if isinstance(node, URIRef):
        try:
            return graph.namespace_manager.normalizeUri(node)
        except Exception:  # an IRI that cannot be shortened
            return f"<{node}>"
    if isinstance(node, BNode):
        return "_:" + str(node)
    return node.n3(graph.namespace_manager)


def _lines_of(graph: Graph, node: Node | None) -> tuple[int, ...]:
    if node is None:
        return ()
    return tuple(sorted({int(v) for v in graph.objects(node, GK.sourceLine) if isinstance(v, Literal)
                         and str(v).isdigit()}))


def _message(report: Graph, result: Node) -> str:
    messages = list(report.objects(result, SH.resultMessage))
    english = [m for m in messages if isinstance(m, Literal) and m.language in (None, "en")]
    return str((english or messages or [Literal("constraint not met")])[0])


def shacl_findings(report: Graph, data: Graph) -> list[Finding]:
    """One finding per SHACL validation result: focus node, the property and value, the message."""
    names = bind_prefixes(Graph())
    findings: list[Finding] = []
    for result in report.subjects(RDF.type, SH.ValidationResult):
        focus = report.value(result, SH.focusNode)
        path = report.value(result, SH.resultPath)
        value = report.value(result, SH.value)
        level = report.value(result, SH.resultSeverity)
        severity = _SEVERITY_OF.get(level, "Violation") if isinstance(level, URIRef) else "Violation"
        text = _message(report, result)
        if isinstance(path, URIRef):
            text = f"{_qname(names, path)}: {text}"
        if isinstance(value, Literal) and value.datatype not in (None, XSD.string):
            text += f" (value: {value})"
        elif value is not None and not isinstance(value, BNode):
            text += f" (value: {_qname(names, value)})"
        shape = report.value(result, SH.sourceShape)
        finding = Finding("shape", severity, text, focus=_qname(names, focus), source_lines=_lines_of(data, focus),
                          source=_qname(names, shape) if isinstance(shape, URIRef) else None)
        if finding not in findings:  # one defect, one finding: a wrong datatype also fails the range checks
            findings.append(finding)
    return sort_findings(findings)


def run_shapes(data: Graph, shapes: Graph, ontology: Graph | None = None) -> tuple[list[Finding], Graph]:
    """Validate ``data`` (with ``ontology`` mixed in, never changed) against ``shapes`` with pySHACL."""
    # pySHACL (with OWL-RL) takes about a second to import; only this reference validator needs it.
    from pyshacl import validate as shacl_validate  # noqa: PLC0415 - heavy dependency, see above

    merged = data if ontology is None else data + ontology  # a new graph: the inputs stay unchanged
    try:
        _conforms, report, _text = shacl_validate(merged, shacl_graph=shapes, allow_warnings=True,
                                                  allow_infos=True, inplace=False)
    except Exception as exc:  # pySHACL reports bad shapes or data with its own exception types
        raise InputError(f"SHACL validation could not run: {exc}") from None
    report = bind_prefixes(report)
    return shacl_findings(report, merged), report


# ---------------------------------------------------------------- SPARQL checks

def _lines(value: Node | None) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(sorted({int(t) for t in str(value).split() if t.isdigit()}))


def _relative(project: Project | None, path: Path) -> str:
    if project is not None:
        try:
            return str(path.relative_to(project.home))
        except ValueError:
            pass
    return str(path)


def run_checks(store: EmbeddedStore, queries: Iterable[NamedQuery], project: Project | None = None) -> list[Finding]:
    """Run each check query (not the -candidates ones) and turn its rows into findings."""
    names = bind_prefixes(Graph())
    findings = []
    for query in queries:
        if _role(query) == CANDIDATES_ROLE:
            continue
        kind, severity = query_kind(query), query_severity(query)
        rows = store.select(query.text)
        if "focus" not in rows.variables or "message" not in rows.variables:
            raise InputError("a check query must SELECT ?focus and ?message", path=str(query.path))
        for row in rows.dicts():
            focus = row.get("focus")
            findings.append(Finding(kind, severity, str(row.get("message") or query.purpose),
                                    focus=_qname(names, focus) if focus is not None else None,
                                    source_lines=_lines(row.get("lines")), source=_relative(project, query.path)))
    return findings


def _add_overlap(extra: Graph, overlap: URIRef, first: Node, second: Node) -> None:
    """Declare ``overlap`` as the intersection of the two classes (HermiT finds it unsatisfiable when they are
    disjoint)."""
    members = BNode()
    Collection(extra, members, [first, second])
    expression = BNode()
    extra.add((overlap, RDF.type, OWL.Class))
    extra.add((overlap, OWL.equivalentClass, expression))
    extra.add((expression, RDF.type, OWL.Class))
    extra.add((expression, OWL.intersectionOf, members))


def _overlap_classes(knowledge: Graph, store: EmbeddedStore, queries: Iterable[NamedQuery]
                     ) -> tuple[list[tuple[NamedQuery, dict[str, Node | None], URIRef]], Graph]:
    """The pairs of the -candidates queries, each with the class of their populations' intersection."""
    pairs: list[tuple[NamedQuery, dict[str, Node | None], URIRef]] = []
    extra = Graph()
    for query in queries:
        if _role(query) != CANDIDATES_ROLE:
            continue
        rows = store.select(query.text)
        needed = {"focus", "other", "population", "otherPopulation", "message"}
        if not needed <= set(rows.variables):
            raise InputError("a -candidates query must SELECT " + ", ".join("?" + v for v in sorted(needed)),
                             path=str(query.path))
        for row in rows.dicts():
            focus, other, population, other_population = (row[v] for v in
                                                           ("focus", "other", "population", "otherPopulation"))
            if focus is None or other is None or population is None or other_population is None:
                raise InputError("a -candidates query must bind ?focus, ?other, ?population and ?otherPopulation "
                                 "in every row", path=str(query.path))
            overlap = RESULT[f"consistency/overlap-{local_name(focus)}-{local_name(other)}"]
            _add_overlap(extra, overlap, population, other_population)
            pairs.append((query, row, overlap))
    return pairs, extra


def contradiction_findings(knowledge: Graph, store: EmbeddedStore, queries: Iterable[NamedQuery],
                           project: Project | None = None, reasoner: Reasoner | None = run_hermit,
                           verdict: ReasonerResult | None = None) -> list[Finding]:
    """Pairs from the -candidates queries, each decided by one reasoner run for all pairs: populations proved
    disjoint (the intersection is unsatisfiable) are resolved by their conditions (Info), others conflict (Warning).
    ``verdict``: a reasoner run already made with the overlap classes (see :func:`validate_knowledge`)."""
    names = bind_prefixes(Graph())
    pairs, extra = _overlap_classes(knowledge, store, queries)
    if not pairs:
        return []
    if verdict is None and reasoner is not None:
        verdict = reasoner(knowledge, extra=extra)
    findings = []
    for query, row, overlap in pairs:
        kind = query_kind(query)
        pop, other_pop = _qname(names, row["population"]), _qname(names, row["otherPopulation"])
        if verdict is None:
            severity, why = "Warning", "not decided: the reasoner was not run"
        elif not verdict.consistent:
            severity, why = "Warning", "not decided: the guideline graph is inconsistent"
        elif str(overlap) in verdict.unsatisfiable:
            severity, why = "Info", (f"resolved by their conditions: HermiT proves the populations {pop} and "
                                     f"{other_pop} disjoint, so no patient gets both")
        else:
            severity, why = "Warning", (f"true conflict: a patient can belong to both {pop} and {other_pop} "
                                        "(HermiT finds their intersection satisfiable)")
        findings.append(Finding(kind, severity, f"{row['message']}; {why}", focus=_qname(names, row["focus"]),
                                source_lines=_lines(row.get("lines")), source=_relative(project, query.path)))
    return findings


# ---------------------------------------------------------------- named definitions

def negation_pairs(knowledge: Graph) -> list[tuple[URIRef, URIRef]]:
    """Each condition with its ``gk:negation``, once per pair (the first of the two IRIs first), sorted."""
    pairs = {tuple(sorted((a, b), key=str)) for a, b in knowledge.subject_objects(GK.negation)
             if isinstance(a, URIRef) and isinstance(b, URIRef)}
    return sorted(pairs, key=lambda p: (str(p[0]), str(p[1])))  # type: ignore[arg-type]


def _negation_overlap(condition: URIRef, negation: URIRef) -> URIRef:
    return RESULT[f"consistency/negation-{local_name(condition)}-{local_name(negation)}"]


def _data_ranges(graph: Graph, node: Node, seen: set[Node]) -> dict[URIRef, list[Node]]:
    """The data ranges a class expression requires of each data property (``P some D``), through intersections,
    unions, object restrictions and the named classes it uses."""
    found: dict[URIRef, list[Node]] = {}
    if node in seen:
        return found
    seen.add(node)
    if isinstance(node, URIRef):
        if (node, RDF.type, RDFS.Datatype) in graph:
            return found
        nodes = list(graph.objects(node, OWL.equivalentClass))
    else:
        nodes = [node]
    for n in nodes:
        prop, filler = graph.value(n, OWL.onProperty), graph.value(n, OWL.someValuesFrom)
        if isinstance(prop, URIRef) and filler is not None and (
                (prop, RDF.type, OWL.DatatypeProperty) in graph or (filler, RDF.type, RDFS.Datatype) in graph
                or graph.value(filler, OWL.onDatatype) is not None):
            found.setdefault(prop, []).append(filler)
            continue
        children = [filler] if filler is not None else []
        for p in (OWL.intersectionOf, OWL.unionOf):
            head = graph.value(n, p)
            if head is not None:
                children += list(Collection(graph, head))
        for child in children:
            for prop, ranges in _data_ranges(graph, child, seen).items():
                found.setdefault(prop, []).extend(r for r in ranges if r not in found.get(prop, []))
    return found


def _range_probe(extra: Graph, name: str, parts: list[Node]) -> URIRef:
    """A class that is satisfiable exactly when the intersection of the data ranges ``parts`` is not empty: a
    named datatype for the intersection, and ``probe some`` it on a fresh functional data property."""
    datatype, cls, prop = (RESULT[f"consistency/{name}-range"], RESULT[f"consistency/{name}"],
                           RESULT[f"consistency/{name}-value"])
    head, expression, restriction = BNode(), BNode(), BNode()
    Collection(extra, head, parts)
    extra.add((prop, RDF.type, OWL.DatatypeProperty))
    extra.add((prop, RDF.type, OWL.FunctionalProperty))
    extra.add((datatype, RDF.type, RDFS.Datatype))
    extra.add((datatype, OWL.equivalentClass, expression))
    extra.add((expression, RDF.type, RDFS.Datatype))
    extra.add((expression, OWL.intersectionOf, head))
    extra.add((cls, RDF.type, OWL.Class))
    extra.add((cls, OWL.equivalentClass, restriction))
    extra.add((restriction, RDF.type, OWL.Restriction))
    extra.add((restriction, OWL.onProperty, prop))
    extra.add((restriction, OWL.someValuesFrom, datatype))
    return cls


def _copy(source: Graph, extra: Graph, node: Node) -> Node:
    """A copy of a data range into ``extra`` with fresh blank nodes (OWL's RDF mapping allows a blank node of an
    expression in one place only, so a range of a condition cannot also be a part of a probe)."""
    if not isinstance(node, BNode):
        return node
    fresh = BNode()
    for p, o in source.predicate_objects(node):
        extra.add((fresh, p, _copy(source, extra, o)))
    return fresh


def _complement(extra: Graph, data_range: Node) -> Node:
    node = BNode()
    extra.add((node, RDF.type, RDFS.Datatype))
    extra.add((node, OWL.datatypeComplementOf, data_range))
    return node


def _range_tests(knowledge: Graph, extra: Graph | None = None
                 ) -> list[tuple[URIRef, URIRef, URIRef, str, URIRef]]:
    """For each condition and its negation, and each data property both constrain: a probe class per pair of
    their data ranges (satisfiable = the two ranges overlap) and one for the values neither covers within the
    property's rdfs:range (satisfiable = a gap: a recorded value that decides neither). Rows: (condition,
    negation, property, "overlap" or "gap", probe class)."""
    tests = []
    for i, (condition, negation) in enumerate(negation_pairs(knowledge)):
        mine, theirs = _data_ranges(knowledge, condition, set()), _data_ranges(knowledge, negation, set())
        for j, prop in enumerate(sorted(set(mine) & set(theirs), key=str)):
            for k, (a, b) in enumerate((a, b) for a in mine[prop] for b in theirs[prop]):
                probe = RESULT[f"consistency/range-{i}-{j}-{k}"]
                if extra is not None:
                    probe = _range_probe(extra, f"range-{i}-{j}-{k}", [_copy(knowledge, extra, a),
                                                                      _copy(knowledge, extra, b)])
                tests.append((condition, negation, prop, "overlap", probe))
            base = knowledge.value(prop, RDFS.range)
            if isinstance(base, URIRef):
                probe = RESULT[f"consistency/gap-{i}-{j}"]
                if extra is not None:
                    parts = [base] + [_complement(extra, _copy(knowledge, extra, r)) for r in mine[prop] + theirs[prop]]
                    probe = _range_probe(extra, f"gap-{i}-{j}", parts)
                tests.append((condition, negation, prop, "gap", probe))
    return tests


def negation_extra(knowledge: Graph) -> Graph:
    """For each condition and its negation, the class of their intersection, and the probes of the data ranges
    they use (:func:`_range_tests`), for the one reasoner run."""
    extra = Graph()
    for condition, negation in negation_pairs(knowledge):
        _add_overlap(extra, _negation_overlap(condition, negation), condition, negation)
    _range_tests(knowledge, extra)
    return extra


def negation_findings(knowledge: Graph, verdict: ReasonerResult | None) -> list[Finding]:
    """A condition and its negation must not disagree (``verdict``: a reasoner run with :func:`negation_extra`).
    Per data property both constrain, their data ranges must be disjoint and leave no gap in the property's
    range (a Violation each: the thresholds of the two disagree). As classes they must be disjoint too; where the
    graph states that they can overlap only through contradicting records (gk:negationOverlapReason, such as a
    finding recorded both present and absent), that is listed as Info with the reason, else a Violation."""
    names = bind_prefixes(Graph())
    findings = []
    if verdict is None or not verdict.consistent:
        why = "the reasoner was not run" if verdict is None else "the guideline graph is inconsistent"
        return [Finding("definition", "Warning", f"conditions and their negations not compared: {why}",
                        source="gk:negation")]
    unsatisfiable = set(verdict.unsatisfiable)
    for condition, negation, prop, kind, probe in _range_tests(knowledge):
        if str(probe) in unsatisfiable:
            continue
        c, n, pr = _qname(names, condition), _qname(names, negation), _qname(names, prop)
        what = (f"a value of {pr} can meet both (their data ranges overlap)" if kind == "overlap" else
                f"a value of {pr} can meet neither (their data ranges leave a gap, where a recorded value would be "
                "reported as missing data)")
        findings.append(Finding("definition", "Violation", f"{c} and its negation {n} disagree: {what}; define "
                                "the threshold once as a named datatype and use its complement in the negation",
                                focus=c, source="gk:negation"))
    for condition, negation in negation_pairs(knowledge):
        if str(_negation_overlap(condition, negation)) in unsatisfiable:
            continue
        c, n = _qname(names, condition), _qname(names, negation)
        reason = knowledge.value(condition, GK.negationOverlapReason) or knowledge.value(negation,
                                                                                         GK.negationOverlapReason)
        if reason is not None:
            if knowledge.value(condition, GK.negationOverlapReason) is None:
                c, n = n, c  # name first the class that carries the reason (the condition the graph explains)
            findings.append(Finding("definition", "Info", f"{c} and its negation {n} can both hold only through "
                                    f"records that disagree, as the graph states: {reason}", focus=c,
                                    source="gk:negationOverlapReason"))
        else:
            findings.append(Finding("definition", "Violation", f"{c} and its negation {n} disagree: a patient can "
                                    "belong to both (HermiT finds their intersection satisfiable), so a case could "
                                    "be found both to meet the condition and not to meet it", focus=c,
                                    source="gk:negation"))
    return findings


def _expression_nodes(graph: Graph, node: Node, seen: set[Node]) -> Iterable[Node]:
    """The anonymous parts of a class expression (restrictions, lists, data ranges), not entering named classes
    or named datatypes (each of those is checked where it is defined)."""
    if node in seen:
        return
    seen.add(node)
    yield node
    for p, o in graph.predicate_objects(node):
        if p in (RDF.type,) or isinstance(o, (URIRef, Literal)):
            continue
        yield from _expression_nodes(graph, o, seen)


def _numeric(value: Node | None) -> bool:
    return isinstance(value, Literal) and value.datatype in (XSD.decimal, XSD.integer, XSD.double, XSD.float,
                                                             XSD.int, XSD.long, XSD.short, XSD.nonNegativeInteger,
                                                             XSD.positiveInteger)


def inline_number_findings(knowledge: Graph) -> list[Finding]:
    """A number in a condition (a facet of a datatype restriction, or a numeric owl:hasValue) written in place
    instead of a named threshold (an rdfs:Datatype IRI defined once, used by IRI): a Warning naming the class, since
    a copy of the number elsewhere can silently drift from this one."""
    names = bind_prefixes(Graph())
    classes = ({c for pair in knowledge.subject_objects(GK.negation) for c in pair if isinstance(c, URIRef)}
               | {c for c in knowledge.objects(None, GK.population) if isinstance(c, URIRef)}
               | {c for c in knowledge.objects(None, GK.concerns) if isinstance(c, URIRef)})
    findings = []
    for cls in sorted(classes, key=str):
        if (cls, RDF.type, RDFS.Datatype) in knowledge:
            continue
        numbers: list[str] = []
        for definition in knowledge.objects(cls, OWL.equivalentClass):
            for node in _expression_nodes(knowledge, definition, set()):
                for facet, bound in knowledge.predicate_objects(node):
                    if str(facet).startswith(str(XSD)) and _numeric(bound):
                        numbers.append(f"{_qname(names, facet)} {bound}")
                value = knowledge.value(node, OWL.hasValue)
                if _numeric(value):
                    numbers.append(f"owl:hasValue {value}")
        if numbers:
            findings.append(Finding(
                "definition", "Warning",
                f"{_qname(names, cls)} writes a number in place ({', '.join(sorted(numbers))}): define it once as a "
                "named threshold (an rdfs:Datatype IRI with owl:equivalentClass) and use it by IRI in the "
                "condition and, through owl:datatypeComplementOf, in its negation", focus=_qname(names, cls),
                source="definitions"))
    return findings


#: The size and seed of the generated sample the repetition check evaluates (``validate``; fixed, so that two
#: runs agree).
SAMPLE_SIZE = 200
SAMPLE_SEED = 12


def _repetition_pairs(knowledge: Graph, store: EmbeddedStore, queries: Iterable[NamedQuery]
                      ) -> list[tuple[URIRef, URIRef]]:
    """The pairs the repetition check (``repetition-*.rq``) reports, both with a population, and not recorded as a
    gk:DivergentRepetition."""
    divergent = {frozenset(knowledge.objects(note, GK.between))
                 for note in knowledge.subjects(RDF.type, GK.DivergentRepetition)}
    pairs: list[tuple[URIRef, URIRef]] = []
    for query in queries:
        if _role(query) == CANDIDATES_ROLE or query_kind(query) != "repetition":
            continue
        rows = store.select(query.text)
        if "other" not in rows.variables:
            continue
        for row in rows.dicts():
            focus, other = row.get("focus"), row.get("other")
            if not isinstance(focus, URIRef) or not isinstance(other, URIRef):
                continue
            if knowledge.value(focus, GK.population) is None or knowledge.value(other, GK.population) is None:
                continue
            if frozenset((focus, other)) in divergent or (focus, other) in pairs:
                continue
            pairs.append((focus, other))
    return pairs


def _first_difference(results: Iterable[CaseResult], pairs: list[tuple[URIRef, URIRef]],
                      found: dict[tuple[URIRef, URIRef], tuple[str, str, str]]) -> None:
    for result in results:
        statuses = result.statuses()
        for first, second in pairs:
            if (first, second) in found:
                continue
            a, b = statuses.get(str(first)), statuses.get(str(second))
            if a is not None and b is not None and a != b:
                found[(first, second)] = (result.case, a, b)


def repetition_status_findings(knowledge: Graph, project: Project, store: EmbeddedStore | None = None,
                               queries: Iterable[NamedQuery] | None = None, sample: Graph | None = None,
                               cases: list[Path] | None = None) -> list[Finding]:
    """Statements the graph reports as repetitions must get the same status for every patient, unless a
    gk:DivergentRepetition records why they may differ: evaluated (fast path) on every valid example case of the
    package (``cases``, default the manifest's cases folder) and on ``sample`` (generated patients, see the
    ``validate`` command). A Violation names the pair and the first case where they differ."""
    store = store or EmbeddedStore.from_graph(knowledge)
    pairs = _repetition_pairs(knowledge, store, queries if queries is not None else check_queries(project))
    if not pairs:
        return []
    evaluator = Evaluator(knowledge, project)
    found: dict[tuple[URIRef, URIRef], tuple[str, str, str]] = {}
    folder = project.part("cases")
    paths = cases if cases is not None else ([folder] if folder is not None and folder.is_dir() else [])
    if paths:
        examples = [c for c in load_cases(list(paths), project, errors=[])
                    if not any(f.severity == "Violation" for f in validate_case(c.graph, project, "compiled"))]
        _first_difference((evaluator.evaluate(c) for c in examples), pairs, found)
    if sample is not None and len(sample):
        _first_difference(evaluator.evaluate_store(EmbeddedStore.from_graph(sample)), pairs, found)
    names = bind_prefixes(Graph())
    findings = []
    for (first, second), (case, a, b) in found.items():
        f, o = _qname(names, first), _qname(names, second)
        findings.append(Finding(
            "repetition", "Violation",
            f"{f} and {o} are reported as repetitions but get different statuses for case {case} ({f} {a}, {o} {b}); "
            f"align their populations or record why they may differ (a gk:DivergentRepetition gk:between {f}, {o} "
            "with gk:reason)", focus=f, source_lines=tuple(sorted(_lines_of(knowledge, first)
                                                                  + _lines_of(knowledge, second))),
            source="repetition consistency"))
    return findings


# ---------------------------------------------------------------- entry points

def _algorithm_findings(knowledge: Graph, project: Project) -> list[Finding]:
    names = bind_prefixes(Graph())
    return [replace(f, focus=_qname(names, URIRef(f.focus))) if f.focus and "://" in f.focus else f
            for f in algorithm.check(knowledge, project)]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """Drop exact repeats; where the algorithm check (source ``algorithm``) reports a node as unreachable, drop
    the SPARQL check's finding of the same kind on the same node (the algorithm check is the fuller one)."""
    by_algorithm = {(f.kind, f.focus) for f in findings if f.source == "algorithm"}
    seen: set[tuple] = set()
    out = []
    for f in findings:
        key = (f.kind, f.severity, f.focus, f.source_lines, f.message)
        if key in seen:
            continue
        if f.kind == "unreachable" and f.source != "algorithm" and (f.kind, f.focus) in by_algorithm:
            continue
        seen.add(key)
        out.append(f)
    return out


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by first source line, kind and focus (stable output)."""
    return sorted(findings, key=lambda f: (severity_rank(f.severity), f.source_lines[:1] or (10**9,), f.kind,
                                           f.focus or "", f.message))


def validate_knowledge(knowledge: Graph, project: Project, reasoner: Reasoner | None = run_hermit,
                       sample: Graph | None = None, repetitions: bool = True) -> ValidationResult:
    """Shapes, check queries, the reasoner's contradiction analysis (populations of opposed statements, and each
    condition against its negation, in one reasoner run), the named definitions, populations of statements, the
    repetition consistency (example cases and ``sample``; ``repetitions=False`` skips it) and the algorithm checks
    on the guideline."""
    findings, report = run_shapes(knowledge, load_shapes(project))
    store = EmbeddedStore.from_graph(knowledge)
    queries = check_queries(project)
    findings += run_checks(store, queries, project)
    _pairs, extra = _overlap_classes(knowledge, store, queries)
    extra += negation_extra(knowledge)
    verdict = reasoner(knowledge, extra=extra) if reasoner is not None else None
    findings += contradiction_findings(knowledge, store, queries, project, reasoner, verdict=verdict)
    findings += negation_findings(knowledge, verdict)
    findings += inline_number_findings(knowledge)
    if repetitions:
        findings += repetition_status_findings(knowledge, project, store, queries, sample)
    findings += _algorithm_findings(knowledge, project)
    return ValidationResult(sort_findings(_dedupe(findings)), [report])


def case_report(case_graph: Graph, project: Project) -> ValidationResult:
    """The case shapes applied to one case (the ontology mixed in, so terms are checked against it)."""
    ontology = _ontology(project)
    findings, report = run_shapes(case_graph, load_shapes(project, CASE_SHAPES_PREFIX), ontology)
    names = bind_prefixes(Graph())
    own = {_qname(names, s) for s in case_graph.subjects()}
    foreign = {_qname(names, s) for s in ontology.subjects()}
    findings = [f for f in findings if f.focus in own or f.focus not in foreign]
    return ValidationResult(sort_findings(findings), [report])


def validate_case(case_graph: Graph, project: Project, engine: str = "pyshacl") -> list[Finding]:
    """The findings of the case shapes on one case; a case with a Violation must get no recommendations.
    ``engine`` is ``pyshacl`` (the reference) or ``compiled`` (the same shapes as SPARQL on pyoxigraph, the
    cohort's validator: a fraction of the start-up time, for one-case commands)."""
    if engine == "compiled":
        return compiled_case_findings(case_graph, project)
    return case_report(case_graph, project).findings


@functools.lru_cache(maxsize=CACHE_SIZE)
def _compiled_case_shapes(shapes: tuple, ontology: tuple) -> tuple[list, bytes]:
    """The case shapes of ``shapes`` compiled to SPARQL, and the class hierarchy of ``ontology`` as N-Triples
    (both stamps: paths with modification times)."""
    context = hierarchy_context(_parsed(ontology)).serialize(format="nt", encoding="utf-8")
    return compile_shapes(_parsed(shapes)), context


def compiled_case_findings(case_graph: Graph, project: Project) -> list[Finding]:
    """The case shapes compiled to SPARQL (:mod:`shacl2sparql`) and run on an embedded store holding the case
    and the ontology's class hierarchy; findings as pySHACL's would be (tests/test_validate.py compares)."""
    load_shapes(project, CASE_SHAPES_PREFIX)  # an InputError naming the folder when it has no case shapes
    _ontology(project)  # the same for the ontology
    constraints, context = _compiled_case_shapes(_stamp(shape_files(project, CASE_SHAPES_PREFIX)),
                                                 _stamp(project.vocabulary_files()))
    store = ox.Store()
    store.bulk_load(context, format=ox.RdfFormat.N_TRIPLES)
    store.bulk_load(case_graph.serialize(format="nt", encoding="utf-8"), format=ox.RdfFormat.N_TRIPLES)
    names = bind_prefixes(Graph())
    own = {str(s) for s in case_graph.subjects() if isinstance(s, URIRef)}
    findings: list[Finding] = []
    for r in run_constraints(store, constraints):
        # a result on an IRI the case does not describe is not the case's defect; blank nodes (whose labels
        # the store renames) are always the case's own, as in checks.gate
        if r.focus.startswith("http") and r.focus not in own:
            continue
        finding = Finding(kind="shape", severity=r.severity, message=r.message,
                          focus=_qname(names, URIRef(r.focus)) if r.focus.startswith("http") else r.focus,
                          source=r.shape)
        if finding not in findings:
            findings.append(finding)
    return sort_findings(findings)


def check_case_results(knowledge: Graph, results: Graph, project: Project) -> list[Finding]:
    """The case-level checks (``queries/checks/case/``) over the guideline plus a case's derivation results."""
    store = EmbeddedStore.from_graph(knowledge)
    store.add_graph(results)
    return sort_findings(run_checks(store, check_queries(project, case_level=True), project))


# ---------------------------------------------------------------- RDF output

def report_graph(result: ValidationResult) -> Graph:
    """One sh:ValidationReport: the SHACL results of every run plus the other findings as sh:ValidationResult."""
    out = bind_prefixes(Graph())
    report = BNode()
    out.add((report, RDF.type, SH.ValidationReport))
    out.add((report, SH.conforms, Literal(result.conforms)))
    for g in result.shacl_reports:
        for old in list(g.subjects(RDF.type, SH.ValidationReport)):
            for res in g.objects(old, SH.result):
                out.add((report, SH.result, res))
        for t in g:
            if t[0] in set(g.subjects(RDF.type, SH.ValidationReport)):
                continue
            out.add(t)
    names = bind_prefixes(Graph())
    for f in result.findings:
        if f.kind == "shape":
            continue
        node = BNode()
        out.add((report, SH.result, node))
        out.add((node, RDF.type, SH.ValidationResult))
        out.add((node, SH.resultSeverity, _SH_SEVERITY[f.severity]))
        out.add((node, SH.resultMessage, Literal(f.message, lang="en")))
        out.add((node, DCTERMS.type, Literal(f.kind)))
        if f.focus:
            out.add((node, SH.focusNode, _expand(names, f.focus)))
        if f.source:
            out.add((node, DCTERMS.source, Literal(f.source)))
            if f.source.endswith(".rq"):
                out.add((node, SH.sourceConstraintComponent, SH.SPARQLConstraintComponent))
        for line in f.source_lines:
            out.add((node, GK.sourceLine, Literal(line)))
    return out


def _expand(names: Graph, text: str) -> Node:
    if text.startswith("<") and text.endswith(">"):
        return URIRef(text[1:-1])
    if text.startswith("_:"):
        return BNode(text[2:])
    try:
        return names.namespace_manager.expand_curie(text)
    except Exception:  # not a CURIE of a bound prefix
        return URIRef(text)


_ = SEVERITIES
