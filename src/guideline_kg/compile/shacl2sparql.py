"""Compile SHACL shapes into SPARQL queries, so a store validates many cases at once (pySHACL is per graph).

Supported (the SHACL Core subset the case shapes use, plus SHACL-SPARQL): targets ``sh:targetClass``,
``sh:targetNode``, ``sh:targetSubjectsOf``, ``sh:targetObjectsOf``; property shapes with a simple ``sh:path``;
``sh:minCount``, ``sh:maxCount``, ``sh:qualifiedValueShape`` with ``sh:qualifiedMinCount``/``MaxCount``;
value constraints ``sh:datatype``, ``sh:nodeKind``, ``sh:class``, ``sh:in``, ``sh:hasValue``,
``sh:min/maxInclusive``, ``sh:min/maxExclusive``, ``sh:pattern``, ``sh:minLength``, ``sh:maxLength``,
``sh:or``/``sh:and``/``sh:not`` of such constraints; ``sh:closed`` with ``sh:ignoredProperties``; and
``sh:sparql`` constraints with ``sh:select`` (``$this`` pre-bound by placing the target pattern first in the
query's group). Anything else is refused with the shape named, never skipped. Class membership
(``sh:class``, ``sh:targetClass``) follows ``rdf:type/rdfs:subClassOf*`` in the store, so the store must hold
the ontology's class hierarchy beside the cases, as pySHACL's data graph would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.term import Node

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import RDF, SH, XSD
from guideline_kg.compile.owl2sparql import sparql_term

__all__ = ["ShapeResult", "CompiledConstraint", "compile_shapes", "run_constraints", "hierarchy_context"]

_RDFS_SUB = "<http://www.w3.org/2000/01/rdf-schema#subClassOf>"
_TYPE = f"<{RDF.type}>"
#: XSD datatypes with a SPARQL cast function: a literal of one is well-formed when the cast of its lexical form
#: succeeds.
_CASTS = {XSD[n] for n in ("integer", "decimal", "double", "float", "boolean", "dateTime", "date", "string")}
_COMPARE = {SH.minInclusive: ">=", SH.maxInclusive: "<=", SH.minExclusive: ">", SH.maxExclusive: "<"}
_VALUE_COMPONENTS = {
    SH.datatype: SH.DatatypeConstraintComponent, SH.nodeKind: SH.NodeKindConstraintComponent,
    SH["class"]: SH.ClassConstraintComponent, SH["in"]: SH.InConstraintComponent,
    SH.minInclusive: SH.MinInclusiveConstraintComponent, SH.maxInclusive: SH.MaxInclusiveConstraintComponent,
    SH.minExclusive: SH.MinExclusiveConstraintComponent, SH.maxExclusive: SH.MaxExclusiveConstraintComponent,
    SH.pattern: SH.PatternConstraintComponent, SH.minLength: SH.MinLengthConstraintComponent,
    SH.maxLength: SH.MaxLengthConstraintComponent, SH["or"]: SH.OrConstraintComponent,
    SH["and"]: SH.AndConstraintComponent, SH["not"]: SH.NotConstraintComponent,
}
#: Shape properties that are not constraints (descriptive or consumed with another parameter).
_NON_CONSTRAINTS = {RDF.type, SH.path, SH.severity, SH.message, SH.name, SH.description, SH.order, SH.group,
                    SH.targetClass, SH.targetNode, SH.targetSubjectsOf, SH.targetObjectsOf, SH.ignoredProperties,
                    SH.property, SH.sparql, SH.closed, SH.deactivated, SH.flags, SH.qualifiedMinCount,
                    SH.qualifiedMaxCount, SH.qualifiedValueShapesDisjoint, SH.minCount, SH.maxCount,
                    SH.qualifiedValueShape, SH.declare, SH.prefixes}


@dataclass(frozen=True)
class ShapeResult:
    """One validation result, in the terms pySHACL reports: focus, path, value, component, severity, message."""

    focus: str
    path: str | None
    value: str | None
    component: str
    severity: str  # Violation | Warning | Info
    message: str
    shape: str

    def key(self) -> tuple[str, str | None, str, str]:
        """What identifies the result when comparing with another validator (focus, path, component, severity)."""
        return (self.focus, self.path, self.component, self.severity)


@dataclass
class CompiledConstraint:
    """One SPARQL query whose solutions (?this, optional ?path, ?value) are the results of one constraint."""

    query: str
    shape: str
    component: str
    severity: str
    message: str
    path: str | None = None


def _lit(node: Node) -> str:
    return sparql_term(node)


class _ShapeCompiler:
    def __init__(self, shapes: Graph) -> None:
        self.g = shapes
        self.out: list[CompiledConstraint] = []

    def _name(self, shape: Node) -> str:
        return str(shape) if isinstance(shape, URIRef) else f"_:{shape}"

    def _refuse(self, shape: Node, what: str) -> None:
        raise InputError(f"shape {self._name(shape)}: {what} is not supported by the compiled validator; "
                         "validate these cases with pySHACL instead")

    def _severity(self, shape: Node, default: str = "Violation") -> str:
        sev = self.g.value(shape, SH.severity)
        return str(sev).rsplit("#", 1)[-1] if sev is not None else default

    def _message(self, shape: Node, fallback: str) -> str:
        msgs = list(self.g.objects(shape, SH.message))
        en = [m for m in msgs if getattr(m, "language", None) in (None, "en")]
        return str((en or msgs)[0]) if msgs else fallback

    def _target(self, shape: Node) -> str | None:
        parts = []
        for c in self.g.objects(shape, SH.targetClass):
            parts.append(f"?this {_TYPE}/{_RDFS_SUB}* {_lit(c)} .")
        for n in self.g.objects(shape, SH.targetNode):
            parts.append(f"VALUES ?this {{ {_lit(n)} }}")
        for p in self.g.objects(shape, SH.targetSubjectsOf):
            parts.append(f"?this {_lit(p)} [] .")
        for p in self.g.objects(shape, SH.targetObjectsOf):
            parts.append(f"[] {_lit(p)} ?this .")
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return "{ SELECT DISTINCT ?this WHERE { " + " UNION ".join(f"{{ {p} }}" for p in parts) + " } }"

    # ---- value expressions: true when ?v conforms ---------------------------------------------------------
    def _value_expr(self, owner: Node, param: URIRef, arg: Node, v: str = "?v") -> str:
        if param == SH.datatype:
            test = f"(isLiteral({v}) && datatype({v}) = {_lit(arg)}"
            if arg in _CASTS:  # ill-typed literals ("abc"^^xsd:integer) fail the cast, as SHACL requires
                test += f" && COALESCE(STRLEN(STR({_lit(arg)}(STR({v})))) >= 0, false)"
            return test + ")"
        if param == SH.nodeKind:
            kinds = {SH.IRI: f"isIRI({v})", SH.BlankNode: f"isBlank({v})", SH.Literal: f"isLiteral({v})",
                     SH.BlankNodeOrIRI: f"(isIRI({v}) || isBlank({v}))",
                     SH.BlankNodeOrLiteral: f"(isBlank({v}) || isLiteral({v}))",
                     SH.IRIOrLiteral: f"(isIRI({v}) || isLiteral({v}))"}
            if arg not in kinds:
                self._refuse(owner, f"sh:nodeKind {arg}")
            return kinds[arg]
        if param == SH["class"]:
            return f"EXISTS {{ {v} {_TYPE}/{_RDFS_SUB}* {_lit(arg)} }}"
        if param == SH["in"]:
            members = list(Collection(self.g, arg))
            return "(" + (" || ".join(f"sameTerm({v}, {_lit(m)})" for m in members) or "false") + ")"
        if param in _COMPARE:
            return f"COALESCE(!isBlank({v}) && !isIRI({v}) && {v} {_COMPARE[param]} {_lit(arg)}, false)"
        if param == SH.pattern:
            flags = self.g.value(owner, SH.flags)
            pat = _lit(Literal(str(arg)))
            fl = f", {_lit(Literal(str(flags)))}" if flags is not None else ""
            return f"COALESCE(!isBlank({v}) && REGEX(STR({v}), {pat}{fl}), false)"
        if param == SH.minLength:
            return f"COALESCE(!isBlank({v}) && STRLEN(STR({v})) >= {int(arg)}, false)"
        if param == SH.maxLength:
            return f"COALESCE(!isBlank({v}) && STRLEN(STR({v})) <= {int(arg)}, false)"
        if param in (SH["or"], SH["and"]):
            members = [self._shape_expr(m, v) for m in Collection(self.g, arg)]
            op = " || " if param == SH["or"] else " && "
            return "(" + (op.join(members) or ("false" if param == SH["or"] else "true")) + ")"
        if param == SH["not"]:
            return f"!({self._shape_expr(arg, v)})"
        self._refuse(owner, f"the parameter {param}")
        return ""

    def _shape_expr(self, shape: Node, v: str) -> str:
        """A shape used as a value test (inside sh:or, sh:not, sh:qualifiedValueShape): all its value constraints."""
        exprs = []
        for p, o in self.g.predicate_objects(shape):
            if p in (RDF.type, SH.message, SH.severity, SH.name, SH.description, SH.flags) \
                    or not str(p).startswith(str(SH)):
                continue
            if p not in _VALUE_COMPONENTS:
                self._refuse(shape, f"{p} inside a logical or qualified shape")
            exprs.append(self._value_expr(shape, p, o, v))
        return "(" + (" && ".join(exprs) or "true") + ")"

    # ---- constraints -------------------------------------------------------------------------------------
    def _add(self, query: str, shape: Node, component: URIRef, severity: str, message: str,
             path: Node | None = None) -> None:
        self.out.append(CompiledConstraint(query, self._name(shape), str(component), severity, message,
                                           str(path) if path is not None else None))

    def _value_constraints(self, node_shape: Node, owner: Node, target: str, path: Node | None,
                           severity: str, message: str) -> None:
        for param, arg in self.g.predicate_objects(owner):
            if param in _NON_CONSTRAINTS or not str(param).startswith(str(SH)):
                continue  # descriptive (rdfs:label, ...) or handled elsewhere
            if param == SH.hasValue:
                where = (f"{target}\n  FILTER NOT EXISTS {{ ?this {_lit(path)} {_lit(arg)} }}" if path is not None
                         else f"{target}\n  FILTER (!sameTerm(?this, {_lit(arg)}))")
                self._add(f"SELECT DISTINCT ?this WHERE {{\n  {where}\n}}", owner, SH.HasValueConstraintComponent,
                          severity, message, path)
                continue
            if param not in _VALUE_COMPONENTS:
                self._refuse(owner, f"the parameter {param}")
            expr = self._value_expr(owner, param, arg)
            values = f"?this {_lit(path)} ?v ." if path is not None else "BIND (?this AS ?v)"
            q = f"SELECT DISTINCT ?this (?v AS ?value) WHERE {{\n  {target}\n  {values}\n  FILTER (!({expr}))\n}}"
            self._add(q, owner, _VALUE_COMPONENTS[param], severity, message, path)

    def _property(self, node_shape: Node, prop: Node, target: str) -> None:
        path = self.g.value(prop, SH.path)
        if not isinstance(path, URIRef):
            self._refuse(prop, "a complex sh:path (only a single property is supported)")
        severity = self._severity(prop, self._severity(node_shape))
        message = self._message(prop, f"constraint on {path} not met")
        p = _lit(path)
        for param, op, comp in ((SH.minCount, "<", SH.MinCountConstraintComponent),
                                (SH.maxCount, ">", SH.MaxCountConstraintComponent)):
            n = self.g.value(prop, param)
            if n is None:
                continue
            if param == SH.minCount and int(n) == 1:  # the common cases, without grouping (much faster)
                q = f"SELECT DISTINCT ?this WHERE {{\n  {target}\n  FILTER NOT EXISTS {{ ?this {p} [] }}\n}}"
            elif param == SH.maxCount and int(n) == 1:
                q = (f"SELECT DISTINCT ?this WHERE {{\n  {target}\n  ?this {p} ?v1, ?v2 .\n"
                     f"  FILTER (!sameTerm(?v1, ?v2))\n}}")
            elif param == SH.minCount and int(n) == 0:
                continue
            else:
                q = (f"SELECT ?this WHERE {{\n  {target}\n  OPTIONAL {{ ?this {p} ?v }}\n}} "
                     f"GROUP BY ?this HAVING (COUNT(DISTINCT ?v) {op} {int(n)})")
            self._add(q, prop, comp, severity, message, path)
        qshape = self.g.value(prop, SH.qualifiedValueShape)
        if qshape is not None:
            expr = self._shape_expr(qshape, "?v")
            for param, op, comp in ((SH.qualifiedMinCount, "<", SH.QualifiedMinCountConstraintComponent),
                                    (SH.qualifiedMaxCount, ">", SH.QualifiedMaxCountConstraintComponent)):
                n = self.g.value(prop, param)
                if n is not None:
                    q = (f"SELECT ?this WHERE {{\n  {target}\n  OPTIONAL {{ ?this {p} ?v FILTER ({expr}) }}\n}} "
                         f"GROUP BY ?this HAVING (COUNT(DISTINCT ?v) {op} {int(n)})")
                    self._add(q, prop, comp, severity, message, path)
        self._value_constraints(node_shape, prop, target, path, severity, message)

    def _prefixes(self, sparql: Node) -> str:
        lines = []
        for src in self.g.objects(sparql, SH.prefixes):
            for decl in self.g.objects(src, SH.declare):
                prefix, ns = self.g.value(decl, SH.prefix), self.g.value(decl, SH.namespace)
                lines.append(f"PREFIX {prefix}: <{ns}>")
        return "\n".join(lines) + "\n"

    def _sparql(self, shape: Node, constraint: Node, target: str) -> None:
        select = self.g.value(constraint, SH.select)
        if select is None:
            self._refuse(constraint, "an sh:sparql constraint without sh:select")
        text = re.sub(r"\$this\b", "?this", str(select))
        if re.search(r"\$(PATH|currentShape|shapesGraph)\b", text):
            self._refuse(constraint, "$PATH, $currentShape or $shapesGraph in sh:select")
        m = re.search(r"\bWHERE\s*\{", text, re.IGNORECASE) or re.search(r"\{", text)
        if m is None:
            self._refuse(constraint, "an sh:select without a WHERE clause")
        text = text[: m.end()] + f"\n  {target}\n" + text[m.end():]
        path = self.g.value(shape, SH.path)
        self._add(self._prefixes(constraint) + text, constraint, SH.SPARQLConstraintComponent,
                  self._severity(constraint, self._severity(shape)),
                  self._message(constraint, self._message(shape, "SPARQL constraint not met")), path)

    def node_shape(self, shape: Node) -> None:
        if (shape, SH.deactivated, Literal(True)) in self.g:
            return
        target = self._target(shape)
        if target is None:
            return  # a shape without targets only matters when referenced (sh:node), which is refused there
        severity, message = self._severity(shape), self._message(shape, "shape not met")
        props = list(self.g.objects(shape, SH.property))
        for prop in props:
            self._property(shape, prop, target)
        for c in self.g.objects(shape, SH.sparql):
            self._sparql(shape, c, target)
        if (shape, SH.closed, Literal(True)) in self.g:
            allowed = {self.g.value(p, SH.path) for p in props}
            ignored = self.g.value(shape, SH.ignoredProperties)
            if ignored is not None:
                allowed |= set(Collection(self.g, ignored))
            inlist = ", ".join(_lit(a) for a in sorted(allowed, key=str) if a is not None)
            q = (f"SELECT ?this ?path ?value WHERE {{\n  {target}\n  ?this ?path ?value .\n"
                 f"  FILTER (?path NOT IN ({inlist}))\n}}")
            self._add(q, shape, SH.ClosedConstraintComponent, severity, message)
        self._value_constraints(shape, shape, target, None, severity, message)


def compile_shapes(shapes: Graph) -> list[CompiledConstraint]:
    """Every constraint of every targeted node shape in ``shapes``, as SPARQL."""
    compiler = _ShapeCompiler(shapes)
    shape_nodes = set(shapes.subjects(RDF.type, SH.NodeShape))
    for pred in (SH.targetClass, SH.targetNode, SH.targetSubjectsOf, SH.targetObjectsOf):
        shape_nodes |= set(shapes.subjects(pred, None))
    for s in sorted(shape_nodes, key=str):
        if (s, RDF.type, SH.PropertyShape) in shapes:
            compiler._refuse(s, "a property shape with its own target")
        compiler.node_shape(s)
    return compiler.out


def hierarchy_context(knowledge: Graph) -> Graph:
    """The rdf:type and rdfs:subClassOf triples between IRIs of the knowledge: what class tests need."""
    from guideline_kg.core.namespaces import RDFS

    ctx = Graph()
    for p in (RDF.type, RDFS.subClassOf):
        for s, o in knowledge.subject_objects(p):
            if isinstance(s, URIRef) and isinstance(o, URIRef):
                ctx.add((s, p, o))
    return ctx


def _term_str(term: Any) -> str | None:
    if term is None:
        return None
    if isinstance(term, ox.BlankNode):
        return f"_:{term.value}"
    return term.value if isinstance(term, (ox.NamedNode,)) else str(term)


_TEMPLATE = re.compile(r"\{[?$](\w+)\}")


def _run_one(store: ox.Store, c: CompiledConstraint, prologue: str) -> list[ShapeResult]:
    results: list[ShapeResult] = []
    solutions = store.query(prologue + c.query)
    names = [v.value for v in solutions.variables]
    for sol in solutions:
        row = {n: sol[n] for n in names}
        this = row.get("this")
        if this is None:
            continue
        path = _term_str(row.get("path")) if row.get("path") is not None else c.path
        value = row.get("value")
        bound = {"this": this, "value": value, "path": row.get("path")}
        message = _TEMPLATE.sub(lambda m: str(bound.get(m.group(1)) or m.group(0)), c.message)
        results.append(ShapeResult(_term_str(this) or "", path, str(value) if value is not None else None,
                                   c.component, c.severity, message, c.shape))
    return results


def run_constraints(store: ox.Store, constraints: Iterable[CompiledConstraint],
                    prologue: str = "", workers: int = 1) -> list[ShapeResult]:
    """Run the compiled constraints on a pyoxigraph store; every solution is one result. With ``workers`` > 1
    the queries run in threads (pyoxigraph releases the GIL while it evaluates: 1.9x on 2 cores); the results
    keep the constraints' order either way."""
    constraints = list(constraints)
    if workers <= 1:
        return [r for c in constraints for r in _run_one(store, c, prologue)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for rs in pool.map(lambda c: _run_one(store, c, prologue), constraints) for r in rs]


_ = (BNode,)
