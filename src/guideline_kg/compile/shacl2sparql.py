"""Compile SHACL shapes into SPARQL queries, so a store validates many cases at once (pySHACL is per graph).

Each constraint of each targeted shape becomes one SELECT query whose solutions (``?this``, optional ``?path``,
``?value``) are its validation results. What is supported, what is refused and why is listed in
``docs/compilers.md`` (checked against the W3C SHACL test suite by ``tests/test_shacl_w3c.py``). Anything
unsupported is refused with an :class:`InputError` naming the feature and the shape, never skipped or validated
approximately. Class membership (``sh:class``, ``sh:targetClass``) follows ``rdf:type/rdfs:subClassOf*`` in the
store, so the store must hold the ontology's class hierarchy beside the cases, as pySHACL's data graph would.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import pyoxigraph as ox
from rdflib import Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import OWL, RDFS, SKOS
from rdflib.term import Node

from guideline_kg.compile.owl2sparql import sparql_term
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import RDF, SH, XSD

__all__ = ["CompiledConstraint", "ShapeResult", "compile_shapes", "hierarchy_context", "run_constraints"]

_RDFS_SUB = f"<{RDFS.subClassOf}>"
_TYPE = f"<{RDF.type}>"
#: Datatypes whose well-formedness the store can decide: oxigraph has a cast function for each, and a literal of
#: one is well-formed when the cast of its lexical form succeeds. Other XSD datatypes are refused: oxigraph
#: rewrites the derived integer types (xsd:byte, xsd:int, xsd:nonNegativeInteger, ...) to xsd:integer when it
#: loads data, so neither the datatype nor the range of such a literal can be checked in the store.
_CASTS = {XSD[n] for n in ("string", "boolean", "decimal", "integer", "double", "float", "date", "dateTime", "time",
                           "duration", "dayTimeDuration", "yearMonthDuration", "gYear", "gYearMonth", "gMonth",
                           "gDay", "gMonthDay")}
_LANG_STRING = RDF.langString
_COMPARE: dict[Node, str] = {SH.minInclusive: ">=", SH.maxInclusive: "<=", SH.minExclusive: ">", SH.maxExclusive: "<"}
#: Constraint parameters that test one value node at a time (the value expression of :meth:`_value_expr`).
_VALUE_COMPONENTS: dict[Node, URIRef] = {
    SH.datatype: SH.DatatypeConstraintComponent, SH.nodeKind: SH.NodeKindConstraintComponent,
    SH["class"]: SH.ClassConstraintComponent, SH["in"]: SH.InConstraintComponent,
    SH.minInclusive: SH.MinInclusiveConstraintComponent, SH.maxInclusive: SH.MaxInclusiveConstraintComponent,
    SH.minExclusive: SH.MinExclusiveConstraintComponent, SH.maxExclusive: SH.MaxExclusiveConstraintComponent,
    SH.pattern: SH.PatternConstraintComponent, SH.minLength: SH.MinLengthConstraintComponent,
    SH.maxLength: SH.MaxLengthConstraintComponent, SH.languageIn: SH.LanguageInConstraintComponent,
    SH["or"]: SH.OrConstraintComponent, SH["and"]: SH.AndConstraintComponent, SH["not"]: SH.NotConstraintComponent,
    SH.xone: SH.XoneConstraintComponent, SH.node: SH.NodeConstraintComponent,
}
_PAIR_COMPONENTS: dict[Node, URIRef] = {
    SH.equals: SH.EqualsConstraintComponent, SH.disjoint: SH.DisjointConstraintComponent,
                    SH.lessThan: SH.LessThanConstraintComponent,
                    SH.lessThanOrEquals: SH.LessThanOrEqualsConstraintComponent}
#: Shape properties that are not constraints themselves (descriptive, targets, or read with another parameter).
_NON_CONSTRAINTS = {RDF.type, SH.path, SH.severity, SH.message, SH.name, SH.description, SH.order, SH.group,
                    SH.defaultValue, SH.targetClass, SH.targetNode, SH.targetSubjectsOf, SH.targetObjectsOf,
                    SH.ignoredProperties, SH.deactivated, SH.flags, SH.qualifiedMinCount, SH.qualifiedMaxCount,
                    SH.qualifiedValueShapesDisjoint, SH.declare, SH.prefixes, SH.select, SH.ask}
#: SPARQL features whose meaning changes when ``$this`` is pre-bound by a join (SHACL 5.2.1 forbids them).
_PREBINDING_BREAKERS = [(re.compile(r"\bMINUS\b", re.I), "MINUS"), (re.compile(r"\bSERVICE\b", re.I), "SERVICE"),
                        (re.compile(r"\bVALUES\b", re.I), "VALUES"),
                        (re.compile(r"\bSELECT\b.*\bSELECT\b", re.I | re.S), "a nested SELECT"),
                        (re.compile(r"\b(?i:AS)\s+[?$](this|PATH|currentShape|shapesGraph)\b"),
                         "AS $this (a pre-bound variable)")]


def _filter_on_this_in_inner_group(text: str) -> bool:
    """Whether a FILTER or BIND reads $this inside a group nested in the WHERE clause (other than an EXISTS
    group). The compiled query binds $this by joining the focus nodes with the WHERE clause, and SPARQL evaluates
    inner groups before that join, so there $this would be unbound where SHACL's pre-binding has it bound."""
    depth, segment = 0, [""]
    exists_depth: list[bool] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "{":
            exists_depth.append(bool(re.search(r"EXISTS\s*$", segment[-1], re.I)) or
                                (bool(exists_depth) and exists_depth[-1]))
            depth += 1
            segment.append("")
        elif ch == "}":
            own = segment.pop()
            inside_exists = exists_depth.pop()
            depth -= 1
            if depth >= 1 and not inside_exists and re.search(r"\b(FILTER|BIND)\b[^{}]*\$this\b", own, re.I):
                return True
        else:
            segment[-1] += ch
        i += 1
    return False


@dataclass(frozen=True)
class ShapeResult:
    """One validation result, in the terms pySHACL reports: focus, path, value, component, severity, message."""

    focus: str
    path: str | None
    value: str | None
    component: str
    severity: str  # Violation | Warning | Info (the local name of the severity IRI)
    message: str
    shape: str
    #: the focus node and value in N-Triples syntax (datatype, language and blank nodes kept), and the full
    #: severity IRI (a shape may declare a severity of its own): what a W3C report compares
    focus_term: str = ""
    value_term: str | None = None
    severity_iri: str = ""

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
    severity_iri: str = ""
    #: a SPARQL constraint whose query binds no ?value reports the focus node as the value (SHACL 5.3.2)
    value_is_focus: bool = False


def _lit(node: Node) -> str:
    return sparql_term(node)


def _int(node: Node) -> int:
    """A count parameter's value (sh:minCount 2)."""
    if not isinstance(node, Literal) or not isinstance(node.toPython(), int):
        raise InputError(f"{node!r} is not an integer where SHACL needs one")
    return int(node.toPython())


_Values = Callable[[str], str] | None


def _true(node: Node | None) -> bool:
    """Whether a boolean parameter is set: only "true"^^xsd:boolean counts (SHACL names only true; "1" does not)."""
    return isinstance(node, Literal) and node.datatype == XSD.boolean and str(node) == "true"


class _ShapeCompiler:
    def __init__(self, shapes: Graph) -> None:
        self.g = shapes
        self.out: list[CompiledConstraint] = []
        self._ids = itertools.count()
        #: parameters of SPARQL-based constraint components declared in the shapes graph (refused when used)
        self.custom_params: dict[Node | None, Node] = {
            self.g.value(p, SH.path): c for c, p in self.g.subject_objects(SH.parameter)}

    def fresh(self, hint: str) -> str:
        return f"?{hint}_{next(self._ids)}"

    def name(self, shape: Node) -> str:
        return str(shape) if isinstance(shape, URIRef) else f"_:{shape}"

    def refuse(self, shape: Node, what: str) -> NoReturn:
        raise InputError(f"shape {self.name(shape)}: {what} is not supported by the compiled validator; "
                         "validate these cases with pySHACL instead (docs/compilers.md lists what is supported)")

    def severity(self, shape: Node) -> str:
        return str(self.g.value(shape, SH.severity) or SH.Violation)

    def message(self, shape: Node, fallback: str) -> str:
        msgs = list(self.g.objects(shape, SH.message))
        en = [m for m in msgs if getattr(m, "language", None) in (None, "en")]
        return str((en or msgs)[0]) if msgs else fallback

    def _parameters(self, shape: Node) -> list[tuple[Node, Node]]:
        """The constraint (parameter, value) pairs of a shape in a fixed order (the queries are the same on every
        run): targets, messages and descriptive properties left out; a SPARQL-based constraint component refused."""
        out = []
        for param, arg in sorted(self.g.predicate_objects(shape), key=lambda po: (str(po[0]), str(po[1]))):
            if param in _NON_CONSTRAINTS:
                continue
            if param in self.custom_params:
                self.refuse(shape, f"the SPARQL-based constraint component {self.custom_params[param]}")
            if str(param).startswith(str(SH)):  # else descriptive (rdfs:label, ...)
                out.append((param, arg))
        return out

    def active(self, node: Node) -> bool:
        return not any(_true(d) for d in self.g.objects(node, SH.deactivated))

    # ---- paths ----------------------------------------------------------------------------------------------
    def path(self, shape: Node, node: Node) -> str:
        """A SHACL property path as a SPARQL property path."""
        if isinstance(node, URIRef):
            return f"<{node}>"
        if self.g.value(node, RDF.first) is not None:
            steps = list(Collection(self.g, node))
            if len(steps) < 2:
                self.refuse(shape, "a sequence path with fewer than two members")
            return "(" + " / ".join(self.path(shape, s) for s in steps) + ")"
        if (alt := self.g.value(node, SH.alternativePath)) is not None:
            return "(" + " | ".join(self.path(shape, s) for s in Collection(self.g, alt)) + ")"
        for pred, fmt in ((SH.inversePath, "^({})"), (SH.zeroOrMorePath, "({})*"), (SH.oneOrMorePath, "({})+"),
                          (SH.zeroOrOnePath, "({})?")):
            if (inner := self.g.value(node, pred)) is not None:
                return fmt.format(self.path(shape, inner))
        self.refuse(shape, "this form of sh:path")
        return ""

    def path_name(self, node: Node | None) -> str | None:
        return None if node is None else self.name(node)

    # ---- targets --------------------------------------------------------------------------------------------
    def target(self, shape: Node) -> str | None:
        """A pattern binding ?this to each focus node of ``shape``, or None when it has no target."""
        parts = []
        classes = list(self.g.objects(shape, SH.targetClass))
        if (shape, RDF.type, RDFS.Class) in self.g or (shape, RDF.type, OWL.Class) in self.g:
            classes.append(shape)  # implicit class target (SHACL 2.1.3.3)
        for c in classes:
            parts.append(f"?this {_TYPE}/{_RDFS_SUB}* {_lit(c)} .")
        for n in self.g.objects(shape, SH.targetNode):
            parts.append(f"VALUES ?this {{ {_lit(n)} }}")
        for p in self.g.objects(shape, SH.targetSubjectsOf):
            parts.append(f"?this {_lit(p)} [] .")
        for p in self.g.objects(shape, SH.targetObjectsOf):
            parts.append(f"[] {_lit(p)} ?this .")
        if SH.target in set(self.g.predicates(shape)):
            self.refuse(shape, "sh:target (SHACL-AF custom targets)")
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return "{ SELECT DISTINCT ?this WHERE { " + " UNION ".join(f"{{ {p} }}" for p in parts) + " } }"

    # ---- value expressions: true when the value node ``v`` conforms ---------------------------------------
    def value_expr(self, owner: Node, param: Node, arg: Node, v: str, stack: frozenset[Node]) -> str:
        if param == SH.datatype:
            test = f"isLiteral({v}) && datatype({v}) = {_lit(arg)}"
            if arg == _LANG_STRING:
                return f"({test} && lang({v}) != \"\")"
            if str(arg).startswith(str(XSD)):
                if arg not in _CASTS:
                    self.refuse(owner, f"sh:datatype {arg} (the store cannot tell a well-formed literal of it)")
                # ill-typed literals ("abc"^^xsd:integer) fail the cast, as SHACL requires
                test += f" && COALESCE(STRLEN(STR({_lit(arg)}(STR({v})))) >= 0, false)"
            return f"({test})"
        if param == SH.nodeKind:
            kinds: dict[Node, str] = {
                SH.IRI: f"isIRI({v})", SH.BlankNode: f"isBlank({v})", SH.Literal: f"isLiteral({v})",
                     SH.BlankNodeOrIRI: f"(isIRI({v}) || isBlank({v}))",
                     SH.BlankNodeOrLiteral: f"(isBlank({v}) || isLiteral({v}))",
                     SH.IRIOrLiteral: f"(isIRI({v}) || isLiteral({v}))"}
            if arg not in kinds:
                self.refuse(owner, f"sh:nodeKind {arg}")
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
            fl = f", {_lit(Literal(str(flags)))}" if flags is not None else ""
            return f"COALESCE(!isBlank({v}) && REGEX(STR({v}), {_lit(Literal(str(arg)))}{fl}), false)"
        if param == SH.minLength:
            return f"COALESCE(!isBlank({v}) && STRLEN(STR({v})) >= {_int(arg)}, false)"
        if param == SH.maxLength:
            return f"COALESCE(!isBlank({v}) && STRLEN(STR({v})) <= {_int(arg)}, false)"
        if param == SH.languageIn:
            tags = " || ".join(f"langMatches(lang({v}), {_lit(Literal(str(t)))})" for t in Collection(self.g, arg))
            return f"(isLiteral({v}) && ({tags or 'false'}))"
        if param in (SH["or"], SH["and"], SH.xone):
            tests: list[str] = [self.conforms(m, v, stack) for m in Collection(self.g, arg)]
            if param == SH.xone:
                return "((" + " + ".join(f"IF({m}, 1, 0)" for m in tests) + ") = 1)" if tests else "false"
            op = " || " if param == SH["or"] else " && "
            return "(" + (op.join(tests) or ("false" if param == SH["or"] else "true")) + ")"
        if param == SH["not"]:
            return f"!({self.conforms(arg, v, stack)})"
        if param == SH.node:
            return self.conforms(arg, v, stack)
        self.refuse(owner, f"the parameter {param}")
        return ""

    def _distinct(self, names: list[str]) -> str:
        pairs = [f"!sameTerm({a}, {b})" for a, b in itertools.combinations(names, 2)]
        return f"FILTER ({' && '.join(pairs)})" if pairs else ""

    def conforms(self, shape: Node, v: str, stack: frozenset[Node] = frozenset()) -> str:
        """An expression true when the node bound to ``v`` conforms to ``shape`` (sh:node, sh:or, sh:not, ...)."""
        if shape in stack:
            self.refuse(shape, "a recursive shape reference")
        stack = stack | {shape}
        if not self.active(shape):
            return "true"
        path_node = self.g.value(shape, SH.path)
        exprs: list[str] = []
        values: _Values = None
        if path_node is not None:
            path = self.path(shape, path_node)
            values = lambda x: f"{v} {path} {x} ."  # noqa: E731
        for param, arg in self._parameters(shape):
            if param == SH.property:
                exprs.append(self.conforms(arg, v, stack))
                continue
            if param in (SH.minCount, SH.maxCount):
                if values is None:
                    self.refuse(shape, f"{param} on a node shape")
                n = _int(arg)
                if n > 4:
                    self.refuse(shape, f"{param} above 4 inside sh:node, sh:or, sh:and, sh:not or sh:xone")
                k = n if param == SH.minCount else n + 1
                if k == 0:
                    continue
                xs = [self.fresh("c") for _ in range(k)]
                pattern = " ".join(values(x) for x in xs) + " " + self._distinct(xs)
                exprs.append(f"{'' if param == SH.minCount else 'NOT '}EXISTS {{ {pattern} }}")
            elif param == SH.hasValue:
                exprs.append(f"sameTerm({v}, {_lit(arg)})" if values is None else f"EXISTS {{ {values(_lit(arg))} }}")
            elif param == SH.closed:
                if _true(arg):
                    p, o = self.fresh("p"), self.fresh("o")
                    exprs.append(f"NOT EXISTS {{ {v} {p} {o} . FILTER ({p} NOT IN ({self._allowed(shape)})) }}")
            elif param == SH.uniqueLang:
                if values is None:
                    self.refuse(shape, "sh:uniqueLang on a node shape")
                if _true(arg):
                    a, b = self.fresh("l"), self.fresh("l")
                    exprs.append(f"NOT EXISTS {{ {values(a)} {values(b)} FILTER (!sameTerm({a}, {b}) && "
                                 f"lang({a}) != \"\" && LCASE(lang({a})) = LCASE(lang({b}))) }}")
            elif param in _PAIR_COMPONENTS:
                if values is None:
                    exprs.append(self._pair_expr(param, arg, v))
                else:
                    pattern = self._pair_violation(param, arg, v, values, self.fresh("x"), self.fresh("o"))
                    exprs.append(f"NOT EXISTS {{ {pattern} }}")
            elif param in _VALUE_COMPONENTS:
                if values is None:
                    exprs.append(self.value_expr(shape, param, arg, v, stack))
                else:
                    x = self.fresh("x")
                    test = self.value_expr(shape, param, arg, x, stack)
                    exprs.append(f"NOT EXISTS {{ {values(x)} FILTER (!({test})) }}")
            else:
                self.refuse(shape, f"{param} inside sh:node, sh:property, sh:or, sh:and, sh:not or sh:xone")
        return "(" + (" && ".join(exprs) or "true") + ")"

    def _allowed(self, shape: Node) -> str:
        allowed = {self.g.value(p, SH.path) for p in self.g.objects(shape, SH.property)}
        ignored = self.g.value(shape, SH.ignoredProperties)
        if ignored is not None:
            allowed |= set(Collection(self.g, ignored))
        return ", ".join(_lit(a) for a in sorted(allowed, key=str) if isinstance(a, URIRef))

    def _pair_violation(self, param: Node, other: Node, this: str, values: _Values, x: str, o: str,
                        head: str = "") -> str:
        """A pattern with solutions when the pair constraint ``param`` (sh:equals, sh:disjoint, sh:lessThan,
        sh:lessThanOrEquals with the property ``other``) fails for the focus ``this``: the failing value node is
        bound to ``x`` (and, for the comparisons, the value of ``other`` to ``o``). ``head`` (the target) starts
        every branch, so that ``this`` is bound where a branch reads it."""
        p2 = _lit(other)
        own = values(x) if values is not None else f"BIND ({this} AS {x})"
        if param == SH.equals:
            own_has = values(x) if values is not None else f"FILTER (sameTerm({this}, {x}))"
            return (f"{{ {head} {own} FILTER NOT EXISTS {{ {this} {p2} {x} }} }} UNION "
                    f"{{ {head} {this} {p2} {x} FILTER NOT EXISTS {{ {own_has} }} }}")
        if param == SH.disjoint:
            return f"{head} {own} {this} {p2} {x} ."
        op = "<" if param == SH.lessThan else "<="
        return f"{head} {own} {this} {p2} {o} . FILTER (!COALESCE({x} {op} {o}, false))"

    def _pair_expr(self, param: Node, other: Node, v: str) -> str:
        """True when the node ``v`` itself (a node shape's value node) meets the pair constraint ``param``."""
        p2, o = _lit(other), self.fresh("o")
        if param == SH.equals:
            return f"(EXISTS {{ {v} {p2} {v} }} && NOT EXISTS {{ {v} {p2} {o} FILTER (!sameTerm({o}, {v})) }})"
        if param == SH.disjoint:
            return f"NOT EXISTS {{ {v} {p2} {v} }}"
        op = "<" if param == SH.lessThan else "<="
        return f"NOT EXISTS {{ {v} {p2} {o} FILTER (!COALESCE({v} {op} {o}, false)) }}"

    # ---- constraints: one query each -----------------------------------------------------------------------
    def add(self, where: str, shape: Node, component: URIRef, message: str, path: Node | None,
            select: str = "?this ?value", value_is_focus: bool = False) -> None:
        severity = self.severity(shape)
        self.out.append(CompiledConstraint(f"SELECT DISTINCT {select} WHERE {{\n  {where}\n}}", self.name(shape),
                                           str(component), severity.rsplit("#", 1)[-1], message,
                                           self.path_name(path), severity, value_is_focus))

    def shape(self, shape: Node, target: str, stack: frozenset[Node] = frozenset()) -> None:
        """Every constraint of ``shape`` on the focus nodes bound to ?this by ``target``."""
        if not self.active(shape):
            return
        if shape in stack:
            self.refuse(shape, "a recursive sh:property")
        stack = stack | {shape}
        path_node = self.g.value(shape, SH.path)
        message = self.message(shape, f"constraint on {path_node} not met" if path_node else "shape not met")
        path = self.path(shape, path_node) if path_node is not None else None
        values: _Values = (lambda x: f"?this {path} {x} .") if path is not None else None
        each = values("?value") if values is not None else "BIND (?this AS ?value)"
        for param, arg in self._parameters(shape):
            if param in (SH.minCount, SH.maxCount):
                if path is None:
                    self.refuse(shape, f"{param} on a node shape")
                self._count(shape, param, _int(arg), target, path, message, path_node)
            elif param == SH.qualifiedValueShape:
                self._qualified(shape, arg, target, path, message, path_node, stack)
            elif param == SH.hasValue:
                test = (f"FILTER NOT EXISTS {{ ?this {path} {_lit(arg)} }}" if path is not None
                        else f"FILTER (!sameTerm(?this, {_lit(arg)}))")
                self.add(f"{target}\n  {test}", shape, SH.HasValueConstraintComponent, message, path_node, "?this")
            elif param == SH.property:
                if path is None:
                    self.shape(arg, target, stack)
                else:  # the value nodes are the focus nodes of the nested property shape
                    self.shape(arg, "{ SELECT DISTINCT (?f AS ?this) WHERE { { SELECT DISTINCT (?value AS ?f) "
                               f"WHERE {{ {target} {each} }} }} }} }}", stack)
            elif param == SH.sparql:
                self._sparql(shape, arg, target, path, path_node)
            elif param == SH.closed:
                if _true(arg):
                    if path is not None:
                        self.refuse(shape, "sh:closed on a property shape")
                    self.add(f"{target}\n  ?this ?path ?value .\n  FILTER (?path NOT IN ({self._allowed(shape)}))",
                             shape, SH.ClosedConstraintComponent, message, None, "?this ?path ?value")
            elif param == SH.uniqueLang:
                if values is None:
                    self.refuse(shape, "sh:uniqueLang on a node shape")
                if _true(arg):
                    self.add(f"{target}\n  {values('?a')} {values('?b')}\n  FILTER (!sameTerm(?a, ?b) && "
                             "lang(?a) != \"\" && LCASE(lang(?a)) = LCASE(lang(?b)))\n"
                             "  BIND (LCASE(lang(?a)) AS ?lang)",
                             shape, SH.UniqueLangConstraintComponent, message, path_node, "?this ?lang")
            elif param in _PAIR_COMPONENTS:
                where = self._pair_violation(param, arg, "?this", values, "?value", "?other", target)
                select = "?this ?value ?other" if param in (SH.lessThan, SH.lessThanOrEquals) else "?this ?value"
                self.add(where, shape, _PAIR_COMPONENTS[param], message, path_node, select)
            elif param in _VALUE_COMPONENTS:
                expr = self.value_expr(shape, param, arg, "?value", stack)
                self.add(f"{target}\n  {each}\n  FILTER (!({expr}))", shape, _VALUE_COMPONENTS[param], message,
                         path_node)
            else:
                self.refuse(shape, f"the parameter {param}")

    def _count(self, shape: Node, param: Node, n: int, target: str, path: str, message: str,
               path_node: Node | None) -> None:
        if param == SH.minCount and n == 0:
            return
        if param == SH.minCount and n == 1:  # the common cases, without grouping (much faster)
            where = f"{target}\n  FILTER NOT EXISTS {{ ?this {path} [] }}"
            self.add(where, shape, SH.MinCountConstraintComponent, message, path_node, "?this")
            return
        if param == SH.maxCount and n == 1:
            where = f"{target}\n  ?this {path} ?v1, ?v2 .\n  FILTER (!sameTerm(?v1, ?v2))"
            self.add(where, shape, SH.MaxCountConstraintComponent, message, path_node, "?this")
            return
        op, comp = (("<", SH.MinCountConstraintComponent) if param == SH.minCount
                    else (">", SH.MaxCountConstraintComponent))
        severity = self.severity(shape)
        q = (f"SELECT ?this WHERE {{\n  {target}\n  OPTIONAL {{ ?this {path} ?v }}\n}} "
             f"GROUP BY ?this HAVING (COUNT(DISTINCT ?v) {op} {n})")
        self.out.append(CompiledConstraint(q, self.name(shape), str(comp), severity.rsplit("#", 1)[-1], message,
                                           self.path_name(path_node), severity))

    def _qualified(self, shape: Node, qshape: Node, target: str, path: str | None, message: str,
                   path_node: Node | None, stack: frozenset[Node]) -> None:
        if path is None:
            self.refuse(shape, "sh:qualifiedValueShape on a node shape")
        expr = self.conforms(qshape, "?v", stack)
        if _true(self.g.value(shape, SH.qualifiedValueShapesDisjoint)):
            siblings = {q for parent in self.g.subjects(SH.property, shape)
                        for sib in self.g.objects(parent, SH.property) if sib != shape
                        for q in self.g.objects(sib, SH.qualifiedValueShape)} - {qshape}
            for sib in sorted(siblings, key=str):
                expr += f" && !({self.conforms(sib, '?v', stack)})"
        severity = self.severity(shape)
        for param, op, comp in ((SH.qualifiedMinCount, "<", SH.QualifiedMinCountConstraintComponent),
                                (SH.qualifiedMaxCount, ">", SH.QualifiedMaxCountConstraintComponent)):
            n = self.g.value(shape, param)
            if n is not None:
                q = (f"SELECT ?this WHERE {{\n  {target}\n  OPTIONAL {{ ?this {path} ?v FILTER ({expr}) }}\n}} "
                     f"GROUP BY ?this HAVING (COUNT(DISTINCT ?v) {op} {_int(n)})")
                self.out.append(CompiledConstraint(q, self.name(shape), str(comp), severity.rsplit("#", 1)[-1],
                                                   message, self.path_name(path_node), severity))

    def _prefixes(self, sparql: Node) -> str:
        """The PREFIX lines of the sh:prefixes of ``sparql``, following owl:imports as SHACL says."""
        lines: dict[str, str] = {}
        todo, seen = list(self.g.objects(sparql, SH.prefixes)), set()
        while todo:
            src = todo.pop()
            if src in seen:
                continue
            seen.add(src)
            todo.extend(self.g.objects(src, OWL.imports))
            for decl in self.g.objects(src, SH.declare):
                prefix, ns = self.g.value(decl, SH.prefix), self.g.value(decl, SH.namespace)
                if str(prefix) in lines and lines[str(prefix)] != str(ns):
                    self.refuse(sparql, f"the prefix {prefix} declared with two namespaces")
                lines[str(prefix)] = str(ns)
        return "".join(f"PREFIX {p}: <{ns}>\n" for p, ns in sorted(lines.items()))

    def _sparql(self, shape: Node, constraint: Node, target: str, path: str | None, path_node: Node | None) -> None:
        if not self.active(constraint):
            return
        select = self.g.value(constraint, SH.select)
        if select is None:
            self.refuse(constraint, "an sh:sparql constraint without sh:select")
        text = str(select)
        if re.search(r"\$shapesGraph\b", text):
            self.refuse(constraint, "$shapesGraph in sh:select (the store holds no shapes graph)")
        for pattern, what in _PREBINDING_BREAKERS:
            if pattern.search(text):
                self.refuse(constraint, f"{what} in sh:select (SHACL forbids it where $this is pre-bound)")
        where = text[text.index("{"):] if "{" in text else text
        if _filter_on_this_in_inner_group(where):
            self.refuse(constraint, "$this in a FILTER or BIND of an inner group of sh:select")
        text = re.sub(r"\$this\b", "?this", text)
        text = re.sub(r"\$currentShape\b", _lit(shape) if isinstance(shape, URIRef) else "?currentShape", text)
        if "?currentShape" in text:
            self.refuse(constraint, "$currentShape of a blank-node shape")
        if "$PATH" in text:
            if path is None:
                self.refuse(constraint, "$PATH in a node shape's sh:select")
            text = re.sub(r"\$PATH\b", path, text)
        m = re.search(r"\bWHERE\s*\{", text, re.IGNORECASE) or re.search(r"\{", text)
        if m is None:
            self.refuse(constraint, "an sh:select without a WHERE clause")
            return
        text = text[: m.end()] + f"\n  {target}\n" + text[m.end():]
        severity = self.severity(constraint) if self.g.value(constraint, SH.severity) else self.severity(shape)
        binds_value = re.search(r"\?value\b|\$value\b", text.split("WHERE", 1)[0], re.IGNORECASE) or \
            re.search(r"SELECT\s+\*", text, re.IGNORECASE)
        self.out.append(CompiledConstraint(
            self._prefixes(constraint) + text, self.name(shape), str(SH.SPARQLConstraintComponent),
            severity.rsplit("#", 1)[-1],
            self.message(constraint, self.message(shape, "SPARQL constraint not met")), self.path_name(path_node),
            severity, value_is_focus=path is None and not binds_value))


def compile_shapes(shapes: Graph) -> list[CompiledConstraint]:
    """Every constraint of every targeted shape in ``shapes``, as SPARQL (InputError for what is unsupported)."""
    compiler = _ShapeCompiler(shapes)
    shape_nodes: set[Node] = set()
    for kind in (SH.NodeShape, SH.PropertyShape):
        shape_nodes |= set(shapes.subjects(RDF.type, kind))
    for pred in (SH.targetClass, SH.targetNode, SH.targetSubjectsOf, SH.targetObjectsOf, SH.target):
        shape_nodes |= set(shapes.subjects(pred, None))
    for s in sorted(shape_nodes, key=str):
        target = compiler.target(s)
        if target is not None:  # a shape without targets only matters where another shape refers to it
            compiler.shape(s, target)
    return compiler.out


def hierarchy_context(knowledge: Graph) -> Graph:
    """The rdf:type, rdfs:subClassOf and skos:broader triples between IRIs of the knowledge: what class tests
    and tests on the hierarchy of concepts (a care action and the narrower ones) need."""
    ctx = Graph()
    for p in (RDF.type, RDFS.subClassOf, SKOS.broader):
        for s, o in knowledge.subject_objects(p):
            if isinstance(s, URIRef) and isinstance(o, URIRef):
                ctx.add((s, p, o))
    return ctx


def _term_str(term: Any) -> str | None:
    if term is None:
        return None
    if isinstance(term, ox.BlankNode):
        return f"_:{term.value}"
    return term.value if isinstance(term, ox.NamedNode) else str(term)


_TEMPLATE = re.compile(r"\{[?$](\w+)\}")


def _fill(message: str, bound: dict[str, Any]) -> str:
    """The message with {$this}, {?value}, {?path} replaced by the solution's terms."""
    return _TEMPLATE.sub(lambda m: str(bound.get(m.group(1)) or m.group(0)), message)


def _run_one(store: ox.Store, c: CompiledConstraint, prologue: str) -> list[ShapeResult]:
    results: list[ShapeResult] = []
    solutions = cast(ox.QuerySolutions, store.query(prologue + c.query))
    names = [v.value for v in solutions.variables]
    for sol in solutions:
        row = {n: sol[n] for n in names}
        this = row.get("this")
        if this is None:
            continue
        path = _term_str(row.get("path")) if row.get("path") is not None else c.path
        value = row.get("value")
        if value is None and c.value_is_focus:
            value = this
        bound = {"this": this, "value": value, "path": row.get("path")}
        message = _fill(c.message, bound)
        results.append(ShapeResult(_term_str(this) or "", path, str(value) if value is not None else None,
                                   c.component, c.severity, message, c.shape, str(this),
                                   str(value) if value is not None else None,
                                   c.severity_iri or str(SH[c.severity])))
    return results


def run_constraints(store: ox.Store, constraints: Iterable[CompiledConstraint],
                    prologue: str = "", workers: int = 1) -> list[ShapeResult]:
    """Run the compiled constraints on a pyoxigraph store; every solution is one result. With ``workers`` > 1
    the queries run in threads (pyoxigraph releases the GIL while it evaluates: 1.9x on 2 cores); the results
    keep the constraints' order either way."""
    constraints = list(constraints)
    if workers <= 1:
        return [r for c in constraints for r in _run_one(store, c, prologue)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for rs in pool.map(lambda c: _run_one(store, c, prologue), constraints) for r in rs]

