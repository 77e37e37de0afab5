"""The applicability tree (``compile.applicability``) written as FHIRPath (``text/fhirpath``), evaluated on a FHIR
R4 Bundle: ``true`` applicable, ``false`` not applicable, empty undetermined.

Only the normative FHIRPath functions that both HL7's ``fhirpath`` (npm) and ``fhirpathpy`` implement are used
(``where``, ``select``, ``exists``, ``empty``, ``all``, ``first``, ``iif``, ``intersect``, ``substring``,
``toInteger``, ``toString``, ``length``, ``contains``; ``%context`` is the Bundle). docs/compilers.md has the
translation table.

Two forms:

- :func:`compile_statements` / :func:`compile_population`: one self-contained expression per statement, every
  shared part written out where it is used (tens of KB each: the scope and the code lists repeat);
- :func:`compile_factored`: the shared parts as named variables, in order, each evaluated on the Bundle with the
  earlier ones in scope, and per statement a short expression over them (``%name``). This is the FHIR ``variable``
  extension's semantics (``http://hl7.org/fhir/StructureDefinition/variable`` on PlanDefinition and
  PlanDefinition.action: "the name of the variable is added to FHIRPath's context when processing descendants of
  the element ... later variables may use earlier ones"), which the export writes and ``$apply`` runs. The
  variables are found in the trees generically (:func:`factor`), never named in code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rdflib import Graph, URIRef

from guideline_kg.compile.applicability import (
    FALSE,
    THIS,
    TRUE,
    Expr,
    MappingData,
    Statement,
    TreeBuilder,
    and_,
    nav,
    not_,
    or_,
)
from guideline_kg.compile.owl2sparql import UnsupportedExpression

__all__ = ["MIN_SHARED", "RESERVED", "VARIABLE_EXTENSION", "Factored", "FactoredCondition", "Variable",
           "compile_factored", "compile_population", "compile_statements", "factor", "to_fhirpath"]

#: The FHIR extension that names a FHIRPath variable for the descendants of the element holding it.
VARIABLE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/variable"
#: Names a FHIRPath environment already gives (FHIRPath, FHIR, SDC, CDS Hooks and CPG): never a variable's name.
RESERVED = frozenset({"context", "resource", "rootResource", "ucum", "sct", "loinc", "factory", "terminologies",
                      "server", "patient", "encounter", "location", "practitioner", "subject", "questionnaire",
                      "qitem", "this", "index", "total", "user", "parameters", "prefetch", "data"})
#: The shortest written-out FHIRPath (characters) a shared part must have to become a variable.
MIN_SHARED = 40


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


def _render(k: str, value: Any, a: list[str]) -> str:
    """The FHIRPath of one node of kind ``k`` (constant ``value``) whose operands are written ``a``."""
    if k == "lit":
        return _literal(value)
    if k == "empty":
        return "{}"
    if k == "this":
        return "$this"
    if k == "root":
        return "%context"
    if k == "ref":  # a variable
        return "%" + str(value)
    if k == "nav":
        return _path(a[0], value)
    if k == "op":
        return f"({a[0]} {value} {a[1]})"
    if k in ("and", "or"):
        return "(" + f" {k} ".join(a) + ")"
    if k == "not":
        return f"{a[0]}.not()"
    if k == "instr":
        # one string test instead of a union of literals (HL7's engine builds and compares the union on every
        # call): the item, between spaces, occurs in the values joined by spaces (codes, systems and statuses
        # hold no space here); the joined values are operand 1, a string (a variable when shared)
        return f"{a[1]}.contains(' ' & {a[0]} & ' ')"
    if k == "in":
        values = " | ".join(_literal(v) for v in value)
        return f"({a[0]} in ({values}))"
    if k in ("where", "select", "all"):
        return f"{a[0]}.{k}({a[1]})"
    if k in ("exists", "first", "toInteger"):
        return f"{a[0]}.{k}()"
    if k == "empty?":
        return f"{a[0]}.empty()"
    if k == "str":
        return f"{a[0]}.toString()"
    if k == "isDate":
        return f"({a[0]}.toString().length() >= 10)"
    if k == "iif":
        return f"iif({a[0]}, {a[1]}, {a[2]})"
    if k == "substring":
        return f"{a[0]}.substring({value[0]}, {value[1]})"
    if k == "union":
        return f"({a[0]} | {a[1]})"
    if k == "entries":
        types = " | ".join(_string(t) for t in value)
        return f"%context.entry.where(resource.resourceType in ({types}))"
    if k == "codingKey":
        return f"({_path(a[0], 'system')} & '|' & {_path(a[0], 'code')})"
    if k == "refsOf":
        return f"{a[0]}.select(fullUrl | (resource.resourceType & '/' & resource.id))"
    if k == "refIntersect":
        return f"{a[0]}.intersect({a[1]})"
    if k == "refIn":
        return f"(reference.exists() and (reference in {a[0]}))"
    raise UnsupportedExpression(f"no FHIRPath for tree node {k!r}")


#: Tree nodes whose FHIRPath reads the current item (``$this``) without a ``this`` operand.
_READS_ITEM = frozenset({"this", "refIn"})
#: Tree nodes whose operand 1 is evaluated on each item of operand 0 (``$this`` is bound there).
_ITERATES = frozenset({"where", "select", "all"})


def _normal(expr: Expr, env: dict[str, Expr], memo: dict[int, Expr]) -> Expr:
    """The tree as the writer reads it: a ``let`` substituted; ``where(s, a and b)`` as ``s.where(a).where(b)``
    (each filter runs only on what the last let through, and a prefix of the chain is a tree of its own that can
    be shared); a membership in string constants as a string test on one joined literal."""
    if not env and id(expr) in memo:
        return memo[id(expr)]
    k = expr.kind
    if k == "var":
        out = env[expr.value]
    elif k == "let":
        out = _normal(expr.args[1], {**env, expr.value: _normal(expr.args[0], env, memo)}, memo)
    else:
        args = tuple(_normal(x, env, memo) for x in expr.args)
        if k == "where":
            cond = _typed(args[1], _types(args[0]))
            out = args[0]
            for c in cond.args if cond.kind == "and" else () if cond == TRUE else (cond,):
                out = Expr("where", (out, c))
        elif k == "in" and expr.value and all(isinstance(v, str) and " " not in v for v in expr.value):
            out = Expr("instr", (args[0], Expr("lit", value=" " + " ".join(expr.value) + " ")))
        elif k == "or":
            out = or_(_merge_memberships(args))
        else:
            out = Expr(k, args, expr.value)
    if not env:
        memo[id(expr)] = out
    return out


_RESOURCE_TYPE = nav(THIS, "resource", "resourceType")


def _merge_memberships(items: tuple[Expr, ...]) -> list[Expr]:
    """``S.where(k in A).exists() or S.where(k in B).exists()`` (string sets) as ``S.where(k in A | B).exists()``:
    one pass over ``S`` instead of one per set (the same value, as ``exists`` is two-valued)."""
    sets: dict[tuple[Expr, Expr], list[str]] = {}
    out: list[Expr | tuple[Expr, Expr]] = []
    for x in items:
        test = x.args[0].args[1] if x.kind == "exists" and x.args[0].kind == "where" else None
        if test is not None and test.kind == "instr" and test.args[1].kind == "lit":
            key = (x.args[0].args[0], test.args[0])
            if key not in sets:
                sets[key] = []
                out.append(key)
            sets[key] += str(test.args[1].value).split()
        else:
            out.append(x)
    return [Expr("exists", (Expr("where", (o[0], Expr("instr", (o[1], Expr(
        "lit", value=" " + " ".join(sorted(set(sets[o]))) + " "))))),)) if isinstance(o, tuple) else o for o in out]


def _types(source: Expr) -> frozenset[str] | None:
    """The resource types the entries of ``source`` can have (a chain of filters on ``entries``), else None."""
    while source.kind == "where":
        source = source.args[0]
    return frozenset(source.value) if source.kind == "entries" else None


def _typed(cond: Expr, types: frozenset[str] | None) -> Expr:
    """``cond`` on an entry whose resource is known to be of one of ``types``: a test of the resource type (top
    level of its and / or / not) decided where the types decide it, the constants folded."""
    if types is None:
        return cond
    k, a = cond.kind, cond.args
    if k in ("and", "or"):
        parts = [_typed(x, types) for x in a]
        return and_(parts) if k == "and" else or_(_merge_memberships(tuple(parts)))
    if k == "not":
        return not_(_typed(a[0], types))
    named: frozenset[str] | None = None
    if k == "op" and cond.value == "=" and a[0] == _RESOURCE_TYPE and a[1].kind == "lit":
        named = frozenset({a[1].value})
    elif k == "instr" and a[0] == _RESOURCE_TYPE and a[1].kind == "lit":
        named = frozenset(str(a[1].value).split())
    if named is not None:
        return TRUE if types <= named else FALSE if not types & named else cond
    return cond


@dataclass
class _Dag:
    """The trees of one compilation as a DAG: equal subtrees are one node; a node's operands come before it."""

    kind: list[str] = field(default_factory=list)
    value: list[Any] = field(default_factory=list)
    args: list[tuple[int, ...]] = field(default_factory=list)
    _ids: dict[tuple[Any, ...], int] = field(default_factory=dict)
    _seen: dict[int, Any] = field(default_factory=dict)
    _text: dict[int, str] = field(default_factory=dict)

    def node(self, kind: str, args: tuple[int, ...] = (), value: Any = None) -> int:
        # the value's type is part of the key: True == 1 == Decimal(1) in Python, not in FHIRPath
        key = (kind, type(value).__name__, repr(value), args)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.kind)
            self.kind.append(kind)
            self.value.append(value)
            self.args.append(args)
        return found

    def add(self, expr: Expr) -> int:
        seen = self._seen.get(id(expr))
        if seen is not None and seen[1] is expr:
            return int(seen[0])
        n = self.node(expr.kind, tuple(self.add(x) for x in expr.args), expr.value)
        self._seen[id(expr)] = (n, expr)  # the tree is kept alive with its id
        return n

    def inline(self, n: int) -> str:
        """The node's FHIRPath, everything written out."""
        if n not in self._text:
            self._text[n] = _render(self.kind[n], self.value[n], [self.inline(a) for a in self.args[n]])
        return self._text[n]

    def closed(self) -> list[bool]:
        """Per node: its value depends on the Bundle only, not on the item an enclosing where / select / all
        iterates over, so it can be evaluated once, on the Bundle, as a variable."""
        out: list[bool] = []
        for k, args in zip(self.kind, self.args, strict=True):
            if k in _READS_ITEM:
                out.append(False)
            elif k in _ITERATES:
                out.append(out[args[0]])
            else:
                out.append(all(out[a] for a in args))
        return out


def to_fhirpath(expr: Expr, env: dict[str, Expr] | None = None) -> str:
    """The FHIRPath text of a tree, every part written out where it is used (no variables)."""
    dag = _Dag()
    return dag.inline(dag.add(_normal(expr, env or {}, {})))


@dataclass(frozen=True)
class Variable:
    """A named FHIRPath (the FHIR ``variable`` extension's ``valueExpression``): evaluated on the Bundle with the
    variables before it in scope; ``uses`` names those its expression reads."""

    name: str
    expression: str
    uses: tuple[str, ...]

    def extension(self) -> dict[str, Any]:
        """As the FHIR extension ``http://hl7.org/fhir/StructureDefinition/variable``."""
        return {"url": VARIABLE_EXTENSION,
                "valueExpression": {"name": self.name, "language": "text/fhirpath", "expression": self.expression}}


@dataclass(frozen=True)
class FactoredCondition:
    """One condition of a statement: its label and the FHIRPath of "met" and of "failed" (a variable, or a
    constant when the tree is one)."""

    label: str
    met: str
    failed: str


@dataclass(frozen=True)
class Factored:
    """A guideline's applicability as FHIRPath with its shared parts named: ``variables`` in order (each reads
    only earlier ones), per statement a short expression (``statements``) and its conditions, which read the
    variables ``needs`` names (directly or through other variables)."""

    variables: tuple[Variable, ...]
    statements: dict[URIRef, str]
    conditions: dict[URIRef, tuple[FactoredCondition, ...]]
    needs: dict[URIRef, frozenset[str]]

    def variables_of(self, statement: str) -> list[Variable]:
        """The variables the statement's expression and conditions read, in order (what its PlanDefinition
        declares)."""
        wanted = self.needs.get(URIRef(statement), frozenset())
        return [v for v in self.variables if v.name in wanted]

    def size(self) -> int:
        """Characters of FHIRPath: every variable once, every statement's expression."""
        return sum(len(v.expression) for v in self.variables) + sum(map(len, self.statements.values()))


def _identifier(text: str) -> str:
    """A FHIRPath identifier (``[A-Za-z_][A-Za-z0-9_]*``) made from ``text``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text) or "v"
    return "_" + name if name[0].isdigit() else name


def _local(iri: URIRef) -> str:
    return str(iri).rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


#: The stem of a shared part's variable name, by its kind of node (then a number).
_STEMS = {"lit": "codes", "where": "records", "entries": "entries", "refsOf": "refs", "first": "first",
          "exists": "has", "select": "values", "union": "values", "or": "any", "and": "all", "not": "no",
          "iif": "choice", "op": "calc", "toInteger": "number", "substring": "text"}


def factor(statements: list[Statement], min_shared: int = MIN_SHARED) -> Factored:
    """The statements' trees written as FHIRPath with their shared parts as variables.

    Generic, from the trees alone: every condition's "met" and "failed" tree is a variable (named after its OWL
    class), and so is every other part that does not depend on the item a ``where`` iterates over, occurs more
    than once (counting the uses of the larger part holding it once when that part is a variable) and is at
    least ``min_shared`` characters written out. A statement's expression is ``iif(<failed> or ..., false,
    iif(<met> and ..., true, {}))`` over its conditions' variables (the logic of ``Statement.applicability``)."""
    dag = _Dag()
    memo: dict[int, Expr] = {}
    false, true, empty = dag.node("lit", value=False), dag.node("lit", value=True), dag.node("empty")
    roots: dict[URIRef, int] = {}
    conds: dict[URIRef, list[tuple[str, int, int]]] = {}
    named: dict[int, str] = {}

    def junction(kind: str, items: list[int], unit: int, absorbing: int) -> int:
        # conditions kept whole (never flattened into each other), constants folded as and_ / or_ fold them
        if absorbing in items:
            return absorbing
        kept = tuple(dict.fromkeys(i for i in items if i != unit))
        return unit if not kept else kept[0] if len(kept) == 1 else dag.node(kind, kept)

    for st in statements:
        pairs = []
        for c in st.conditions:
            met, failed = dag.add(_normal(c.met, {}, memo)), dag.add(_normal(c.failed, {}, memo))
            pairs.append((c.label, met, failed))
            named.setdefault(met, _identifier(_local(c.cls)))
            named.setdefault(failed, _identifier(_local(c.negation)))
        conds[st.iri] = pairs
        any_failed = junction("or", [f for _, _, f in pairs], false, true)
        all_met = junction("and", [m for _, m, _ in pairs], true, false)
        inner = empty if all_met == false else true if all_met == true else dag.node("iif", (all_met, true, empty))
        roots[st.iri] = (false if any_failed == true else inner if any_failed == false
                         else dag.node("iif", (any_failed, false, inner)))

    closed = dag.closed()
    constant = {false, true, empty}
    # every condition; and every long string constant (a code list, parsed once per Bundle, not once per item)
    forced = {n for n in named if n not in constant and closed[n]} | {
        n for n, (k, v) in enumerate(zip(dag.kind, dag.value, strict=True))
        if k == "lit" and isinstance(v, str) and len(v) >= min_shared}
    statement_roots = set(roots.values())
    uses = [0] * len(dag.kind)
    for r in roots.values():
        uses[r] += 1
    hoisted: set[int] = set()
    for n in range(len(dag.kind) - 1, -1, -1):  # users before their operands
        if n in forced or (closed[n] and n not in statement_roots and uses[n] >= 2 and dag.kind[n] != "ref"
                           and len(dag.inline(n)) >= min_shared):
            hoisted.add(n)
        for a in dag.args[n]:
            uses[a] += 1 if n in hoisted else uses[n]

    # names: the condition's class for a condition, else the part's kind and a number; never reserved, never twice
    taken: set[str] = set()
    counters: dict[str, int] = {}
    names: dict[int, str] = {}
    order: list[int] = []
    text: dict[int, str] = {}
    direct: dict[int, frozenset[int]] = {}

    def name_of(n: int) -> str:
        base = named.get(n)
        if base is None:
            stem = _STEMS.get(dag.kind[n], "part")
            counters[stem] = counters.get(stem, 0) + 1
            base = f"{stem}{counters[stem]}"
        name = base
        while name in taken or name in RESERVED:
            name += "_"
        taken.add(name)
        return name

    def write(n: int) -> str:
        """The node's FHIRPath with its hoisted operands as variables; a hoisted node is named (operands first:
        the order of the variables) and written as its ``%name``."""
        if n in text:
            return text[n]
        out = _render(dag.kind[n], dag.value[n], [ref(a) for a in dag.args[n]])
        direct[n] = frozenset(u for a in dag.args[n] for u in refs(a))
        text[n] = out
        return out

    def ref(n: int) -> str:
        body = write(n)
        if n in hoisted:
            if n not in names:
                names[n] = name_of(n)
                order.append(n)
            return "%" + names[n]
        return body

    def refs(n: int) -> frozenset[int]:
        """The hoisted nodes the text of ``n`` (as its user writes it) reads directly."""
        return frozenset({n}) if n in hoisted else direct[n]

    statement_text = {iri: ref(r) for iri, r in roots.items()}
    condition_text = {iri: tuple(FactoredCondition(label, ref(m), ref(f)) for label, m, f in pairs)
                      for iri, pairs in conds.items()}

    def closure(start: frozenset[int]) -> frozenset[str]:
        seen, todo = set(start), list(start)
        while todo:
            for u in direct[todo.pop()]:
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        return frozenset(names[u] for u in seen)

    variables = tuple(Variable(names[n], text[n], tuple(names[u] for u in sorted(direct[n], key=order.index)))
                      for n in order)
    needs = {iri: closure(refs(r) | frozenset(x for _, m, f in conds[iri] for x in refs(m) | refs(f)))
             for iri, r in roots.items()}
    return Factored(variables, statement_text, condition_text, needs)


def compile_factored(tbox: Graph, mapping: MappingData, min_shared: int = MIN_SHARED) -> Factored:
    """Every statement with a population (the guideline's scope included) as FHIRPath over shared variables
    (:func:`factor`): what ``export --format fhir`` writes and ``$apply`` runs."""
    return factor(_statements(tbox, mapping), min_shared)


def compile_statements(tbox: Graph, mapping: MappingData) -> dict[URIRef, str]:
    """Statement IRI -> the FHIRPath of its applicability, self-contained (no variables), for every statement with
    a population (the guideline's own ``gk:population``, its scope, included): one compilation for all."""
    return {s.iri: to_fhirpath(s.applicability()) for s in _statements(tbox, mapping)}


def compile_population(tbox: Graph, mapping: MappingData, statement: URIRef) -> str:
    """The self-contained FHIRPath applicability condition of one statement, evaluated on the patient's Bundle."""
    for s in _statements(tbox, mapping):
        if s.iri == statement:
            return to_fhirpath(s.applicability())
    raise UnsupportedExpression(f"{statement} has no gk:population")


def _statements(tbox: Graph, mapping: MappingData) -> list[Statement]:
    return TreeBuilder(tbox, mapping).statements()
