"""The applicability tree (``compile.applicability``) written as FHIRPath (``text/fhirpath``), evaluated on a FHIR
R4 Bundle: ``true`` applicable, ``false`` not applicable, empty undetermined.

Only the normative FHIRPath functions that both HL7's ``fhirpath`` (npm) and ``fhirpathpy`` implement are used
(``where``, ``select``, ``exists``, ``empty``, ``all``, ``first``, ``iif``, ``intersect``, ``substring``,
``toInteger``, ``toString``, ``length``; ``%context`` is the Bundle). A ``let`` of the tree is inlined (fhirpathpy has
no ``defineVariable``). docs/compilers.md has the translation table.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rdflib import Graph, URIRef

from guideline_kg.compile.applicability import Expr, MappingData, Statement, TreeBuilder
from guideline_kg.compile.owl2sparql import UnsupportedExpression

__all__ = ["compile_population", "compile_statements", "to_fhirpath"]


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text if "." in text else text + ".0"
    if isinstance(value, str):
        return _string(value)
    raise UnsupportedExpression(f"no FHIRPath literal for {value!r}")


def _path(base: str, step: str) -> str:
    return step if base == "$this" else f"{base}.{step}"


def to_fhirpath(expr: Expr, env: dict[str, Expr] | None = None) -> str:
    """The FHIRPath text of a tree."""
    env = env or {}

    def w(e: Expr) -> str:
        return to_fhirpath(e, env)

    k, a = expr.kind, expr.args
    if k == "lit":
        return _literal(expr.value)
    if k == "empty":
        return "{}"
    if k == "this":
        return "$this"
    if k == "root":
        return "%context"
    if k == "var":
        return to_fhirpath(env[expr.value], env)
    if k == "let":
        return to_fhirpath(a[1], {**env, expr.value: a[0]})
    if k == "nav":
        return _path(w(a[0]), expr.value)
    if k == "op":
        return f"({w(a[0])} {expr.value} {w(a[1])})"
    if k in ("and", "or"):
        return "(" + f" {k} ".join(w(x) for x in a) + ")"
    if k == "not":
        return f"{w(a[0])}.not()"
    if k == "in":
        if all(isinstance(v, str) and " " not in v for v in expr.value):
            # one string test instead of a union of literals (HL7's engine builds and compares the union on every
            # call): the item, between spaces, occurs in the values joined by spaces (codes, systems and statuses
            # hold no space here)
            joined = _string(" " + " ".join(expr.value) + " ")
            return f"{joined}.contains(' ' & {w(a[0])} & ' ')"
        values = " | ".join(_literal(v) for v in expr.value)
        return f"({w(a[0])} in ({values}))"
    if k == "where" and a[1].kind == "and":  # a chain of filters: each runs only on what the last let through
        out = w(a[0])
        for cond in a[1].args:
            out += f".where({w(cond)})"
        return out
    if k in ("where", "select", "all"):
        return f"{w(a[0])}.{k}({w(a[1])})"
    if k in ("exists", "first", "toInteger"):
        return f"{w(a[0])}.{k}()"
    if k == "empty?":
        return f"{w(a[0])}.empty()"
    if k == "str":
        return f"{w(a[0])}.toString()"
    if k == "isDate":
        return f"({w(a[0])}.toString().length() >= 10)"
    if k == "iif":
        return f"iif({w(a[0])}, {w(a[1])}, {w(a[2])})"
    if k == "substring":
        return f"{w(a[0])}.substring({expr.value[0]}, {expr.value[1]})"
    if k == "union":
        return f"({w(a[0])} | {w(a[1])})"
    if k == "entries":
        types = " | ".join(_string(t) for t in expr.value)
        return f"%context.entry.where(resource.resourceType in ({types}))"
    if k == "codingKey":
        base = w(a[0])
        return f"({_path(base, 'system')} & '|' & {_path(base, 'code')})"
    if k == "refsOf":
        return f"{w(a[0])}.select(fullUrl | (resource.resourceType & '/' & resource.id))"
    if k == "refIntersect":
        return f"{w(a[0])}.intersect({w(a[1])})"
    if k == "refIn":
        return f"(reference.exists() and (reference in {w(a[0])}))"
    raise UnsupportedExpression(f"no FHIRPath for tree node {k!r}")


def compile_statements(tbox: Graph, mapping: MappingData) -> dict[URIRef, str]:
    """Statement IRI -> the FHIRPath of its applicability, for every statement with a population (the guideline's
    own ``gk:population``, its scope, included): one compilation for all."""
    return {s.iri: to_fhirpath(s.applicability()) for s in _statements(tbox, mapping)}


def compile_population(tbox: Graph, mapping: MappingData, statement: URIRef) -> str:
    """The FHIRPath applicability condition of one statement (``PlanDefinition.action.condition``, kind
    applicability, language ``text/fhirpath``), evaluated on the patient's Bundle."""
    for s in _statements(tbox, mapping):
        if s.iri == statement:
            return to_fhirpath(s.applicability())
    raise UnsupportedExpression(f"{statement} has no gk:population")


def _statements(tbox: Graph, mapping: MappingData) -> list[Statement]:
    return TreeBuilder(tbox, mapping).statements()
