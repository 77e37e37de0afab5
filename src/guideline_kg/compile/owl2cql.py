"""The applicability tree (``compile.applicability``) written as a CQL library and its ELM JSON
(``application/elm+json``), both from ONE walk of the tree, so the two cannot drift: one ``define`` per statement,
``true`` applicable, ``false`` not applicable, ``null`` undetermined.

The library is what a CPG engine runs: ``using FHIR version '4.0.1'``, ``context Patient``, and the patient's data
read with retrieves (``[Observation]``, ``[Condition]``, ...: exactly the resource types the FHIR case mapping's
rules read). The tree is written over a Bundle's entries; this module lowers it to resources first:

- ``entries(T1, T2)`` becomes one retrieve per type, and every condition on an entry is specialised to each type:
  ``resourceType`` is a constant there, an element the type does not have (``elements``: FHIR R4's element names per
  resource type, passed in as data) is null, and what that settles is folded away (a rule about Procedures adds
  nothing to a query over Observations);
- FHIR primitives are read through ``.value`` (the FHIR model info: ``Observation.status`` is a ``FHIR.code``), so
  no FHIRHelpers library is needed;
- a reference names a resource as ``Type/id`` (a ``Reference.reference`` compared with the target's type and id):
  that is how references read on a FHIR server, where a Bundle's ``urn:uuid`` references are rewritten to
  ``Type/id`` when it is posted as a transaction (docs/compilers.md, CQL);
- the assessment date (the mapping's ``assessmentDate``, a Bundle element) is ``Today()``: the evaluation date the
  engine is given (cql-execution's ``executionDateTime``; ``$apply`` evaluates "as of now").

Shared parts are written once as defines: every query over a retrieve is a chain of ``where`` filters whose
common first filters (the subject check, a rule's codes and statuses) are defines of their own, and any other
closed part used twice (a condition of the guideline's scope, the patient's references, a list of three or more
codes or statuses) is a define too; a CQL engine evaluates a define once per patient. Every node is a list (a
FHIRPath collection) or a single value (null = empty). A tree node this writer does not know is refused by name.
docs/compilers.md has the table and the measured agreement.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rdflib import Graph

from guideline_kg.compile.applicability import (
    EMPTY,
    FALSE,
    THIS,
    TRUE,
    Expr,
    MappingData,
    Statement,
    TreeBuilder,
    and_,
    not_,
    or_,
)
from guideline_kg.compile.owl2sparql import UnsupportedExpression

__all__ = ["FHIR_MODEL", "RESOURCE_ELEMENTS", "CqlLibrary", "compile_library", "library_of"]

_T = "{urn:hl7-org:elm-types:r1}"
_F = "{http://hl7.org/fhir}"
#: The FHIR R4 model the library uses (``using FHIR version '4.0.1'``).
FHIR_MODEL = ("http://hl7.org/fhir", "4.0.1")
#: The elements every FHIR R4 resource has (Resource and DomainResource): never pruned.
RESOURCE_ELEMENTS = frozenset({"id", "meta", "implicitRules", "language", "text", "contained", "extension",
                               "modifierExtension"})
_BINARY = {"=": "Equal", "<": "Less", "<=": "LessOrEqual", ">": "Greater", ">=": "GreaterOrEqual", "+": "Add",
           "-": "Subtract", "*": "Multiply", "div": "TruncatedDivide", "mod": "Modulo"}
#: A closed part used in two places is a define when its tree has at least this many nodes.
_MIN_SHARED = 3


@dataclass(frozen=True)
class CqlLibrary:
    """One library: its CQL text, its ELM JSON (a dict), the names of its statements' expressions (in order), the
    FHIR resource types it retrieves, its name and version, and the statements' IRIs (in the order of ``names``)."""

    cql: str
    elm: dict[str, Any]
    names: tuple[str, ...]
    data_types: tuple[str, ...] = ()
    name: str = "Applicability"
    version: str = "1.0.0"
    statements: tuple[str, ...] = ()

    def define_of(self, statement: str) -> str | None:
        """The define that holds ``statement``'s applicability (its IRI), or None."""
        return dict(zip(self.statements, self.names, strict=True)).get(statement)


# --------------------------------------------------------------------------------------------------------------
# Lowering: the Bundle tree to a tree over retrieved resources
# --------------------------------------------------------------------------------------------------------------
def _retrieve(rtype: str) -> Expr:
    return Expr("retrieve", value=rtype)


def _concat(items: Iterable[Expr]) -> Expr:
    parts = [i for i in items if i != EMPTY]
    if not parts:
        return EMPTY
    return parts[0] if len(parts) == 1 else Expr("concat", tuple(parts))


def _branches(source: Expr) -> list[tuple[str | None, Expr]]:
    """The parts of a lowered list and the resource type of each (None: not resources of one known type)."""
    if source.kind == "concat":
        return [b for part in source.args for b in _branches(part)]
    if source.kind == "retrieve":
        return [(source.value, source)]
    if source.kind in ("where", "first"):
        inner = _branches(source.args[0])
        if len(inner) == 1 and inner[0][0] is not None:
            return [(inner[0][0], source)]
    return [(None, source)]


@dataclass
class _Lowering:
    """The tree over a Bundle to a tree over resources (memoised per node and per type of ``$this``)."""

    elements: Mapping[str, Iterable[str]] | None
    assessment_date: str | None
    memo: dict[tuple[int, str | None], tuple[Expr, Expr]] = field(default_factory=dict)
    code_paths: dict[str, set[str]] = field(default_factory=dict)   # type -> paths whose codings are tested

    def has(self, rtype: str, step: str) -> bool:
        if self.elements is None or rtype not in self.elements or step in RESOURCE_ELEMENTS:
            return True
        return step in set(self.elements[rtype])

    def low(self, e: Expr, cur: str | None) -> Expr:
        key = (id(e), cur)
        hit = self.memo.get(key)
        if hit is not None and hit[0] is e:
            return hit[1]
        out = self._low(e, cur)
        self.memo[key] = (e, out)
        return out

    def code_test(self, x: Expr) -> Expr | None:
        """``exists(<resource>.a.b.coding.where(codingKey($this) in codes))`` as ``codeIn``: the resource's coding
        keys at ``a.b`` are computed once per resource (beside it, when it is retrieved), not once per test."""
        if x.kind != "where" or x.args[1].kind != "in" or x.args[1].args[0] != Expr("codingKey", (THIS,)):
            return None
        steps: list[str] = []
        node = x.args[0]
        while node.kind == "nav":
            steps.insert(0, node.value)
            node = node.args[0]
        if node.kind != "rthis" or len(steps) < 2 or steps[-1] != "coding":
            return None
        path = ".".join(steps[:-1])
        self.code_paths.setdefault(node.value, set()).add(path)
        return Expr("codeIn", (node,), (path, x.args[1].value))

    def _low(self, e: Expr, cur: str | None) -> Expr:
        k, a = e.kind, e.args
        if k == "this":
            return Expr("entry", value=cur) if cur is not None else e
        if k in ("lit", "empty", "root"):
            return e
        if k == "nav":
            base = self.low(a[0], cur)
            step = e.value
            if base == EMPTY:
                return EMPTY
            if base.kind == "entry":
                if step == "resource":
                    return Expr("rthis", value=base.value)
                raise UnsupportedExpression(f"Bundle.entry.{step}: the retrieve-based library reads resources, "
                                            "not Bundle entries")
            if base.kind == "root":
                if step == self.assessment_date:
                    return Expr("today")
                raise UnsupportedExpression(f"Bundle.{step}: the retrieve-based library reads resources, not the "
                                            "Bundle (only the assessment date, as Today())")
            if base.kind == "rthis":
                if step == "resourceType":
                    return Expr("lit", value=base.value)
                if not self.has(base.value, step):
                    return EMPTY
            return Expr("nav", (base,), step)
        if k == "entries":
            return _concat(_retrieve(t) for t in e.value)
        if k in ("where", "select", "all"):
            source = self.low(a[0], cur)
            if source == EMPTY:
                return TRUE if k == "all" else EMPTY
            parts = []
            for rtype, branch in _branches(source):
                inner = self.low(a[1], rtype)
                if k == "where":
                    if inner == FALSE:
                        continue
                    parts.append(branch if inner == TRUE else Expr("where", (branch, inner)))
                elif k == "select":
                    parts.append(Expr("select", (branch, inner)))
                else:
                    parts.append(TRUE if inner == TRUE else Expr("all", (branch, inner)))
            if k == "all":
                return and_(p for p in parts if p != EMPTY)
            return _concat(parts)
        if k == "exists":
            x = self.low(a[0], cur)
            if x == EMPTY:
                return FALSE
            coded = self.code_test(x)
            if coded is not None:
                return coded
            return or_(Expr("exists", (p,)) for p in (x.args if x.kind == "concat" else (x,)))
        if k == "empty?":
            x = self.low(a[0], cur)
            return TRUE if x == EMPTY else Expr("empty?", (x,))
        if k == "refsOf":
            x = self.low(a[0], cur)
            if x.kind == "entry":
                return Expr("refs", (Expr("rthis", value=x.value),), x.value)
            out = []
            for rtype, branch in _branches(x):
                if rtype is None:
                    raise UnsupportedExpression("references of something other than resources of one type")
                out.append(Expr("refs", (branch,), rtype))
            return _concat(out)
        if k == "union":
            return _concat(self.low(x, cur) for x in a)
        if k == "and":
            return and_(self.low(x, cur) for x in a)
        if k == "or":
            return or_(self.low(x, cur) for x in a)
        if k == "not":
            return not_(self.low(a[0], cur))
        if k == "iif":
            c = self.low(a[0], cur)
            if c == TRUE:
                return self.low(a[1], cur)
            if c in (FALSE, EMPTY):
                return self.low(a[2], cur)
            return Expr("iif", (c, self.low(a[1], cur), self.low(a[2], cur)))
        if k == "op":
            x, y = self.low(a[0], cur), self.low(a[1], cur)
            if EMPTY in (x, y):
                return EMPTY
            if x.kind == "lit" and y.kind == "lit" and e.value in ("=", "!=") \
                    and isinstance(x.value, str) and isinstance(y.value, str):
                return TRUE if (x.value == y.value) == (e.value == "=") else FALSE
            return Expr("op", (x, y), e.value)
        if k == "in":
            x = self.low(a[0], cur)
            if x == EMPTY:
                return EMPTY
            if x.kind == "lit" and isinstance(x.value, str):
                return TRUE if x.value in e.value else FALSE
            return Expr("in", (x,), e.value)
        if k in ("first", "toInteger", "substring", "isDate", "str", "codingKey", "refIn", "refIntersect"):
            args = tuple(self.low(x, cur) for x in a)
            if k in ("first", "toInteger", "substring", "str", "codingKey") and args[0] == EMPTY:
                return EMPTY
            if k == "isDate" and args[0] == EMPTY:
                return FALSE
            if k == "refIntersect" and EMPTY in args:
                return EMPTY
            return Expr(k, args, e.value)
        if k in ("let", "var"):
            raise UnsupportedExpression(f"no CQL/ELM for tree node {k!r} in the retrieve-based library")
        raise UnsupportedExpression(f"no CQL/ELM for tree node {k!r}")


# --------------------------------------------------------------------------------------------------------------
# The shared parts: structural identity, closedness and size of every lowered node
# --------------------------------------------------------------------------------------------------------------
_BINDERS = ("where", "select", "all")


@dataclass
class _Shape:
    """Every distinct lowered node (by structure): an int key, whether it is closed (reads no ``$this``), its size,
    and from how many distinct places it is used."""

    seen: dict[int, tuple[Expr, int]] = field(default_factory=dict)   # id(expr) -> (expr, key)
    table: dict[tuple[Any, ...], int] = field(default_factory=dict)
    nodes: list[Expr] = field(default_factory=list)
    closed: list[bool] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    users: list[set[int]] = field(default_factory=list)

    def key(self, e: Expr) -> int:
        hit = self.seen.get(id(e))
        if hit is not None and hit[0] is e:
            return hit[1]
        kids = tuple(self.key(x) for x in e.args)
        sig = (e.kind, repr(e.value), kids)
        k = self.table.get(sig)
        if k is None:
            k = len(self.nodes)
            self.table[sig] = k
            if e.kind in ("this", "rthis", "entry", "refIn"):  # refIn reads $this (the Reference) implicitly
                closed = False
            elif e.kind in _BINDERS:
                closed = self.closed[kids[0]]
            else:
                closed = all(self.closed[c] for c in kids)
            self.nodes.append(e)
            self.closed.append(closed)
            self.size.append(min(1 + sum(self.size[c] for c in kids), 1 << 20))
            self.users.append(set())
            for c in kids:
                self.users[c].add(k)
        self.seen[id(e)] = (e, k)
        return k


# --------------------------------------------------------------------------------------------------------------
# Writing: ELM and CQL together
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Out:
    elm: dict[str, Any]
    cql: str
    many: bool           # a list (collection) rather than one value
    fhir: bool = False   # FHIR model values (a primitive's System value is its .value)
    wrapped: bool = False  # resources as Tuple{resource, <code path>: coding keys} (a retrieve with its codes)


#: The tree nodes that use an operand as a value (never navigate into it).
_VALUE_USERS = frozenset({"op", "in", "substring", "toInteger", "isDate", "str"})


def _scalar_only(e: Expr) -> bool:
    """``$this`` is used in ``e`` only as a value (an operand of ``_VALUE_USERS``), not navigated."""
    for x in (e.args[:1] if e.kind in _BINDERS else e.args):
        if x.kind in ("rthis", "entry"):  # a resource: navigated, never a value
            return False
        if x.kind == "this":
            if e.kind not in _VALUE_USERS:
                return False
        elif not _scalar_only(x):
            return False
    return e.kind != "this"


def _cql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cql_name(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(value: Any) -> _Out:
    if isinstance(value, bool):
        return _Out({"type": "Literal", "valueType": _T + "Boolean", "value": str(value).lower()},
                    str(value).lower(), False)
    if isinstance(value, int):
        return _Out({"type": "Literal", "valueType": _T + "Integer", "value": str(value)}, str(value), False)
    if isinstance(value, Decimal):
        text = format(value, "f")
        text = text if "." in text else text + ".0"
        return _Out({"type": "Literal", "valueType": _T + "Decimal", "value": text}, text, False)
    if isinstance(value, str):
        return _Out({"type": "Literal", "valueType": _T + "String", "value": value}, _cql_string(value), False)
    raise UnsupportedExpression(f"no CQL literal for {value!r}")


def _many(o: _Out) -> _Out:
    """As a list: one value -> {value} (null -> {})."""
    return o if o.many else _Out({"type": "ToList", "operand": o.elm}, f"ToList({o.cql})", True, o.fhir, o.wrapped)


def _one(o: _Out) -> _Out:
    """As one value: a list's first item (null if empty)."""
    return _Out({"type": "First", "source": o.elm}, f"First({o.cql})", False, o.fhir, o.wrapped) if o.many else o


def _paren(cql: str) -> str:
    return cql if re.fullmatch(r'[A-Za-z_][\w.]*|"[^"]*"|\(.*\)', cql, re.S) else f"({cql})"


_NULL = _Out({"type": "Null"}, "null", False)


class _Writer:
    """One walk: each lowered node to its ELM and its CQL together; shared closed parts become defines."""

    def __init__(self, shape: _Shape, shared: set[int], names: dict[int, str]) -> None:
        self.shape = shape
        self.shared = shared                  # structural keys written as defines
        self.names = names                    # preferred names of some of them
        self.defined: dict[Any, str] = {}     # key -> define name, once written
        self.defs: list[tuple[str, _Out]] = []
        self.kinds: dict[str, tuple[bool, bool, bool]] = {}
        self.code_paths: dict[str, set[str]] = {}
        self.used_names: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.depth = 0
        self.this: list[_Out] = []
        self.data_types: set[str] = set()
        self.chain_order: dict[str, dict[int, int]] = {}   # type -> item key -> rank (most shared first)
        self.prefix_uses: Counter[tuple[str, tuple[int, ...]]] = Counter()

    # --- defines -----------------------------------------------------------------------------------------------
    def name_for(self, base: str, numbered: bool) -> str:
        """``base`` (the first time, unless ``numbered``) or ``base N``: a name no define has yet."""
        while True:
            self.counters[base] += 1
            n = self.counters[base]
            name = base if n == 1 and not numbered else f"{base} {n}"
            if name not in self.used_names:
                self.used_names.add(name)
                return name

    def define(self, key: Any, base: str, body: Any, numbered: bool = False) -> _Out:
        """A reference to the define of ``key``, written (by ``body``, with no alias in scope) the first time."""
        if key not in self.defined:
            saved = self.this, self.depth
            self.this, self.depth = [], 0
            try:
                out = body()
            finally:
                self.this, self.depth = saved
            name = self.name_for(base, numbered)
            self.defined[key] = name
            self.defs.append((name, out))
            self.kinds[name] = (out.many, out.fhir, out.wrapped)
        name = self.defined[key]
        many, fhir, wrapped = self.kinds[name]
        return _Out({"type": "ExpressionRef", "name": name}, _cql_name(name), many, fhir, wrapped)

    # --- values ------------------------------------------------------------------------------------------------
    def val(self, o: _Out) -> _Out:
        """System values: a FHIR primitive's ``.value`` (each item's, for a list)."""
        if not o.fhir:
            return o
        if not o.many:
            return _Out({"type": "Property", "source": o.elm, "path": "value"}, f"{_paren(o.cql)}.value", False)
        alias = self.alias("V")
        elm = {"type": "Query", "source": [{"alias": alias, "expression": o.elm}], "relationship": [],
               "return": {"distinct": False, "expression": {"type": "Property", "path": "value",
                                                            "source": {"type": "AliasRef", "name": alias}}}}
        return _Out(elm, f"({_paren(o.cql)} {alias} return all {alias}.value)", True)

    def alias(self, letter: str) -> str:
        return f"{letter}{self.depth + 1}"

    def scalar(self, e: Expr) -> _Out:
        return self.val(_one(self.w(e)))

    def text(self, e: Expr) -> _Out:
        """A value as a string (dates and dateTimes as their ISO text)."""
        x = self.scalar(e)
        return _Out({"type": "ToString", "operand": x.elm}, f"ToString({x.cql})", False)

    # --- queries -----------------------------------------------------------------------------------------------
    def query(self, source: _Out, where: Expr | None, ret: Expr | None, letter: str = "X") -> _Out:
        """``source A where ... return ...`` with ``$this`` bound to the alias ``A`` (FHIR primitives read as
        their values first when ``$this`` is only used as a value: a date is parsed once, not at every use)."""
        src = _many(source)
        if src.fhir and not src.wrapped and all(_scalar_only(x) for x in (where, ret) if x is not None):
            src = self.val(src)
        alias = self.alias(letter)
        self.depth += 1
        self.this.append(_Out({"type": "AliasRef", "name": alias}, alias, False, src.fhir, src.wrapped))
        try:
            elm: dict[str, Any] = {"type": "Query", "source": [{"alias": alias, "expression": src.elm}],
                                   "relationship": []}
            text = f"{_paren(src.cql)} {alias}"
            fhir, wrapped = src.fhir, src.wrapped
            if where is not None:
                cond = self.scalar(where)
                elm["where"] = cond.elm
                text += f" where {cond.cql}"
            if ret is None:  # "return all": a query without return is distinct, which compares FHIR resources
                elm["return"] = {"distinct": False, "expression": {"type": "AliasRef", "name": alias}}
                text += f" return all {alias}"
            else:
                value = self.w(ret)
                fhir, wrapped = value.fhir, value.wrapped
                if value.many:
                    elm["return"] = {"distinct": False, "expression": value.elm}
                    text += f" return all {value.cql}"
                    elm = {"type": "Flatten", "operand": elm}
                    text = f"Flatten({text})"
                else:
                    elm["return"] = {"distinct": False, "expression": value.elm}
                    text += f" return all {value.cql}"
        finally:
            self.this.pop()
            self.depth -= 1
        return _Out(elm, f"({text})", True, fhir, wrapped)

    def nav(self, base: _Out, step: str) -> _Out:
        """FHIRPath ``base.step``: the step of every item, lists flattened (CQL's list navigation). Each property is
        read once: ``Flatten(ToList(x.step))`` is the collection of ``x.step`` (null: empty; one value: itself, as
        cql-execution's Flatten returns a list that holds no list as it is; a list: its items)."""
        def step_of(source: dict[str, Any]) -> dict[str, Any]:
            return {"type": "Flatten", "operand": {"type": "ToList", "operand": {
                "type": "Property", "source": source, "path": step}}}
        if not base.many:
            return _Out(step_of(base.elm), f"{_paren(base.cql)}.{step}", True, True)
        alias = self.alias("N")
        elm = {"type": "Flatten", "operand": {
            "type": "Query", "source": [{"alias": alias, "expression": base.elm}], "relationship": [],
            "return": {"distinct": False, "expression": step_of({"type": "AliasRef", "name": alias})}}}
        return _Out(elm, f"{_paren(base.cql)}.{step}", True, True)

    def chain(self, e: Expr) -> _Out:
        """A ``where`` over one retrieve: its filters in the order most shared first, the longest shared prefix
        as a define (evaluated once per patient), the rest as one ``where``."""
        rtype, items = self.chain_items(e)
        keys = tuple(self.shape.key(i) for i in items)
        return self.prefix(rtype, items, keys, len(items))

    def chain_items(self, e: Expr) -> tuple[str, list[Expr]]:
        source, cond = e.args
        rtype = source.value
        items = list(cond.args) if cond.kind == "and" else [cond]
        order = self.chain_order.get(rtype, {})
        items.sort(key=lambda i: order.get(self.shape.key(i), 1 << 30))
        return rtype, items

    def prefix(self, rtype: str, items: list[Expr], keys: tuple[int, ...], n: int) -> _Out:
        def body() -> _Out:
            # split where more queries share the filters so far than share all of them (a run of filters the
            # same queries share is one where: one pass over the items, not one per filter)
            uses = self.prefix_uses[(rtype, keys[:n])]
            cut = max((m for m in range(1, n) if self.prefix_uses[(rtype, keys[:m])] > max(uses, 1)), default=0)
            source = self.prefix(rtype, items, keys, cut) if cut else self.retrieve(rtype)
            run = items[cut:n]
            codes = [i for i in run if i.kind == "codeIn"]
            if codes and len(codes) < len(run):  # the code test first: the other filters see only its items
                source = self.query(source, and_(codes), None)
                run = [i for i in run if i.kind != "codeIn"]
            return self.query(source, and_(run), None)
        return self.define(("chain", rtype, keys[:n]), rtype, body, numbered=True)

    def retrieve(self, rtype: str) -> _Out:
        """``[rtype]``; with the coding keys of its tested code paths beside each resource, once, as a define."""
        self.data_types.add(rtype)
        plain = _Out({"type": "Retrieve", "dataType": _F + rtype,
                      "templateId": f"http://hl7.org/fhir/StructureDefinition/{rtype}"}, f"[{rtype}]", True, True)
        paths = sorted(self.code_paths.get(rtype, ()))
        if not paths:
            return plain

        def body() -> _Out:
            alias = "R"
            res = _Out({"type": "AliasRef", "name": alias}, alias, False, True)
            elements = [{"name": "resource", "value": res.elm}]
            texts = [f"resource: {alias}"]
            for path in paths:
                coding = res
                for step in [*path.split("."), "coding"]:
                    coding = self.nav(coding, step)
                self.depth += 1
                self.this.append(_Out({"type": "AliasRef", "name": "C"}, "C", False, True))
                try:
                    key = self.node(Expr("codingKey", (THIS,)))
                finally:
                    self.this.pop()
                    self.depth -= 1
                keys = {"type": "Query", "source": [{"alias": "C", "expression": coding.elm}], "relationship": [],
                        "return": {"distinct": False, "expression": key.elm}}
                elements.append({"name": path, "value": keys})
                texts.append(f"{_cql_name(path) if '.' in path else path}: ({coding.cql} C return all {key.cql})")
            elm = {"type": "Query", "source": [{"alias": alias, "expression": plain.elm}], "relationship": [],
                   "return": {"distinct": False, "expression": {"type": "Tuple", "element": elements}}}
            return _Out(elm, f"({plain.cql} {alias} return all Tuple {{ {', '.join(texts)} }})", True, False, True)
        return self.define(("retrieve", rtype), f"{rtype} with codes", body)

    # --- nodes -------------------------------------------------------------------------------------------------
    def w(self, e: Expr) -> _Out:
        k = self.shape.key(e)
        if e.kind == "where" and e.args[0].kind == "retrieve":
            return self.chain(e)
        if k in self.shared:
            base = self.names.get(k, "Shared")
            return self.define(k, base, lambda: self.node(e), numbered=k not in self.names)
        return self.node(e)

    def node(self, e: Expr) -> _Out:
        k, a = e.kind, e.args
        if k == "lit":
            return _literal(e.value)
        if k == "empty":
            return _NULL
        if k in ("this", "entry", "rthis"):
            if not self.this:
                raise UnsupportedExpression(f"{k} outside a query")
            return self.resource(self.this[-1])
        if k == "codeIn":
            item = self.this[-1]
            path, codes = e.value
            if not item.wrapped:
                raise UnsupportedExpression(f"coding keys at {path} of something other than a retrieved resource")
            lst = self.values(codes)
            keys = {"type": "Property", "source": item.elm, "path": path}
            test = {"type": "Query", "source": [{"alias": "K", "expression": keys}], "relationship": [],
                    "where": {"type": "In", "operand": [{"type": "AliasRef", "name": "K"}, lst.elm]},
                    "return": {"distinct": False, "expression": {"type": "AliasRef", "name": "K"}}}
            name = _cql_name(path) if "." in path else path
            return _Out({"type": "Exists", "operand": test},
                        f"exists ({item.cql}.{name} K where K in {lst.cql} return all K)", False)
        if k == "today":
            return _Out({"type": "Today"}, "Today()", False)
        if k == "retrieve":
            return self.retrieve(e.value)
        if k == "concat":
            parts = [_many(self.w(x)) for x in a]
            fhir = all(p.fhir for p in parts)
            if not fhir:
                parts = [self.val(p) for p in parts]
            return _Out({"type": "Flatten", "operand": {"type": "List", "element": [p.elm for p in parts]}},
                        f"Flatten({{{', '.join(p.cql for p in parts)}}})", True, fhir)
        if k == "nav":
            return self.nav(self.w(a[0]), e.value)
        if k == "op":
            x, y = self.scalar(a[0]), self.scalar(a[1])
            if e.value == "!=":
                return _Out({"type": "Not", "operand": {"type": "Equal", "operand": [x.elm, y.elm]}},
                            f"({x.cql} != {y.cql})", False)
            if e.value not in _BINARY:
                raise UnsupportedExpression(f"no CQL for the operator {e.value!r}")
            return _Out({"type": _BINARY[e.value], "operand": [x.elm, y.elm]},
                        f"({x.cql} {e.value} {y.cql})", False)
        if k in ("and", "or"):
            parts = [self.scalar(x) for x in a]
            out = parts[0]
            for p in parts[1:]:
                out = _Out({"type": k.capitalize(), "operand": [out.elm, p.elm]}, f"{out.cql} {k} {p.cql}", False)
            return _Out(out.elm, f"({out.cql})", False)
        if k == "not":
            x = self.scalar(a[0])
            return _Out({"type": "Not", "operand": x.elm}, f"not {_paren(x.cql)}", False)
        if k == "in":
            x = self.scalar(a[0])
            lst = self.values(e.value)
            elm: dict[str, Any] = {"type": "If", "condition": {"type": "IsNull", "operand": x.elm},
                                   "then": {"type": "Null"}, "else": {"type": "In", "operand": [x.elm, lst.elm]}}
            return _Out(elm, f"({x.cql} in {lst.cql})", False)
        if k == "where":
            return self.query(self.w(a[0]), a[1], None)
        if k == "select":
            return self.query(self.w(a[0]), None, a[1])
        if k == "all":  # true when no item fails to satisfy the criterion
            src = _many(self.w(a[0]))
            alias = self.alias("X")
            self.depth += 1
            self.this.append(_Out({"type": "AliasRef", "name": alias}, alias, False, src.fhir, src.wrapped))
            try:
                cond = self.scalar(a[1])
            finally:
                self.this.pop()
                self.depth -= 1
            failing = {"type": "Query", "source": [{"alias": alias, "expression": src.elm}], "relationship": [],
                       "where": {"type": "Not", "operand": {"type": "IsTrue", "operand": cond.elm}},
                       "return": {"distinct": False, "expression": {"type": "AliasRef", "name": alias}}}
            return _Out({"type": "Not", "operand": {"type": "Exists", "operand": failing}},
                        f"not exists ({_paren(src.cql)} {alias} where not ({cond.cql} is true) return all {alias})",
                        False)
        if k in ("exists", "empty?"):
            x = self.w(a[0])
            elm = {"type": "Exists", "operand": x.elm} if x.many else {
                "type": "Not", "operand": {"type": "IsNull", "operand": x.elm}}
            text = f"exists {_paren(x.cql)}" if x.many else f"({x.cql} is not null)"
            if k == "exists":
                return _Out(elm, text, False)
            return _Out({"type": "Not", "operand": elm}, f"not {text}", False)
        if k == "first":
            return _one(self.w(a[0]))
        if k == "toInteger":
            x = self.scalar(a[0])
            return _Out({"type": "ToInteger", "operand": x.elm}, f"ToInteger({x.cql})", False)
        if k == "str":
            return self.text(a[0])
        if k == "isDate":
            x = self.text(a[0])
            # Length of null needs its operand's type (As String, as the translator writes it)
            size: dict[str, Any] = {"type": "Length", "operand": {
                "type": "As", "operand": x.elm,
                "asTypeSpecifier": {"type": "NamedTypeSpecifier", "name": _T + "String"}}}
            return _Out({"type": "GreaterOrEqual", "operand": [size, _literal(10).elm]},
                        f"(Length({x.cql}) >= 10)", False)
        if k == "iif":
            c, t, o = self.scalar(a[0]), self.w(a[1]), self.w(a[2])
            if _NULL.elm in (t.elm, o.elm):
                fhir = t.fhir or o.fhir
            elif t.fhir != o.fhir:
                t, o, fhir = self.val(t), self.val(o), False
            else:
                fhir = t.fhir
            if t.many or o.many:
                t, o = _many(t), _many(o)
            return _Out({"type": "If", "condition": c.elm, "then": t.elm, "else": o.elm},
                        f"(if {c.cql} then {t.cql} else {o.cql})", t.many, fhir)
        if k == "substring":
            x = self.text(a[0])
            begin, count = _literal(e.value[0]), _literal(e.value[1])
            return _Out({"type": "Substring", "stringToSub": x.elm, "startIndex": begin.elm, "length": count.elm},
                        f"Substring({x.cql}, {begin.cql}, {count.cql})", False)
        if k == "codingKey":
            x = _one(self.w(a[0]))
            parts = [self._or_empty(self.val(self.prop(x, "system"))), _literal("|"),
                     self._or_empty(self.val(self.prop(x, "code")))]
            return _Out({"type": "Concatenate", "operand": [p.elm for p in parts]},
                        f"({x.cql}.system.value & '|' & {x.cql}.code.value)", False)
        if k == "refs":
            return self.refs(self.w(a[0]), e.value)
        if k == "refIntersect":
            x, y = self.val(_many(self.w(a[0]))), self.val(_many(self.w(a[1])))
            return _Out({"type": "Intersect", "operand": [x.elm, y.elm]}, f"({x.cql} intersect {y.cql})", True)
        if k == "refIn":
            ref = self.val(self.prop(self.this[-1], "reference"))
            refs = self.val(_many(self.w(a[0])))
            elm = {"type": "And", "operand": [{"type": "Not", "operand": {"type": "IsNull", "operand": ref.elm}},
                                              {"type": "In", "operand": [ref.elm, refs.elm]}]}
            return _Out(elm, f"({ref.cql} is not null and {ref.cql} in {refs.cql})", False)
        raise UnsupportedExpression(f"no CQL/ELM for tree node {k!r}")

    def values(self, values: tuple[Any, ...]) -> _Out:
        """A list of constants; of three or more, a define (its items are evaluated once per patient, not at every
        test): ``"Codes N"`` for coding keys, ``"Values N"`` otherwise."""
        items = [_literal(v) for v in values]
        lst = _Out({"type": "List", "element": [v.elm for v in items]}, f"{{{', '.join(v.cql for v in items)}}}", True)
        if len(items) < 3:
            return lst
        codes = all(isinstance(v, str) and "|" in v for v in values)
        return self.define(("values", values), "Codes" if codes else "Values", lambda: lst, numbered=True)

    @staticmethod
    def prop(base: _Out, step: str) -> _Out:
        return _Out({"type": "Property", "source": base.elm, "path": step}, f"{_paren(base.cql)}.{step}", False,
                    True)

    @staticmethod
    def _or_empty(x: _Out) -> _Out:
        return _Out({"type": "Coalesce", "operand": [x.elm, _literal("").elm]}, f"Coalesce({x.cql}, '')", False)

    @staticmethod
    def resource(item: _Out) -> _Out:
        """The resource of a query's item (a retrieved resource with its coding keys: its ``resource``)."""
        if not item.wrapped:
            return item
        return _Out({"type": "Property", "source": item.elm, "path": "resource"}, f"{item.cql}.resource", False, True)

    def refs(self, source: _Out, rtype: str) -> _Out:
        """``Type/id`` of each resource: the reference that names it."""
        src = _many(source)
        alias = self.alias("R")
        res = self.resource(_Out({"type": "AliasRef", "name": alias}, alias, False, True, src.wrapped))
        ident = {"type": "Property", "path": "value",
                 "source": {"type": "Property", "path": "id", "source": res.elm}}
        ref = {"type": "Concatenate", "operand": [_literal(rtype + "/").elm, ident]}
        elm = {"type": "Query", "source": [{"alias": alias, "expression": src.elm}], "relationship": [],
               "where": {"type": "Not", "operand": {"type": "IsNull", "operand": ident}},
               "return": {"distinct": False, "expression": ref}}
        return _Out(elm, f"({_paren(src.cql)} {alias} where {res.cql}.id.value is not null "
                         f"return all {_cql_string(rtype + '/')} & {res.cql}.id.value)", True)


# --------------------------------------------------------------------------------------------------------------
# The library
# --------------------------------------------------------------------------------------------------------------
def _walk(e: Expr, seen: set[int], visit: Any) -> None:
    if id(e) in seen:
        return
    seen.add(id(e))
    visit(e)
    for x in e.args:
        _walk(x, seen, visit)


def library_of(statements: list[Statement], name: str = "Applicability", version: str = "1.0.0", *,
               elements: Mapping[str, Iterable[str]] | None = None, assessment_date: str | None = None,
               labels: Mapping[Expr, str] | None = None) -> CqlLibrary:
    """The CQL library and its ELM of ``statements``: one expression per statement, named by its local id.
    ``elements``: FHIR R4's element names per resource type (an element a type lacks is null there);
    ``assessment_date``: the Bundle element the tree reads as the assessment date (written as ``Today()``);
    ``labels``: names for shared parts (a condition's tree -> its label)."""
    lowering = _Lowering(elements, assessment_date)
    trees = [s.applicability() for s in statements]
    roots = [lowering.low(t, None) for t in trees]
    shape = _Shape()
    for r in roots:
        shape.key(r)
    named: dict[int, str] = {}
    for tree, label in (labels or {}).items():
        low = lowering.low(tree, None)
        if low.kind not in ("lit", "empty"):
            named.setdefault(shape.key(low), label)
    # shared closed parts: used from two places (or named), big enough to be worth a define
    root_keys = Counter(shape.key(r) for r in roots)
    for k, node in enumerate(shape.nodes):
        if node.kind == "refs" and node.args[0].kind == "retrieve":
            named.setdefault(k, f"{node.value} references")
    shared = {k for k, node in enumerate(shape.nodes) if shape.closed[k]
              and node.kind not in ("lit", "empty", "retrieve", "today")
              and not (node.kind == "where" and node.args[0].kind == "retrieve")
              and (k in named or (shape.size[k] >= _MIN_SHARED and len(shape.users[k]) + root_keys[k] >= 2))}
    writer = _Writer(shape, shared, named)
    writer.code_paths = lowering.code_paths
    # the filters of the queries over each retrieve, most shared first; the prefixes two queries share
    wheres: list[Expr] = []
    _seen: set[int] = set()
    for r in roots:
        _walk(r, _seen, lambda e: wheres.append(e) if e.kind == "where" and e.args[0].kind == "retrieve" else None)
    distinct = {shape.key(w): w for w in wheres}
    counts: dict[str, Counter[int]] = {}
    first_seen: dict[int, int] = {}
    for w in distinct.values():
        cond = w.args[1]
        for i in (cond.args if cond.kind == "and" else (cond,)):
            ik = shape.key(i)
            counts.setdefault(w.args[0].value, Counter())[ik] += 1
            first_seen.setdefault(ik, len(first_seen))
    for rtype, c in counts.items():
        ranked = sorted(c, key=lambda ik: (-c[ik], first_seen[ik]))
        writer.chain_order[rtype] = {ik: n for n, ik in enumerate(ranked)}
    for w in distinct.values():
        rtype, items = writer.chain_items(w)
        keys = tuple(shape.key(i) for i in items)
        for m in range(1, len(keys) + 1):
            writer.prefix_uses[(rtype, keys[:m])] += 1
    # the statements
    stmt_defs: list[tuple[str, _Out, str]] = []
    written: dict[int, str] = {}
    names: list[str] = []
    for s, root in zip(statements, roots, strict=True):
        k = shape.key(root)
        if k in written:
            out = _Out({"type": "ExpressionRef", "name": written[k]}, _cql_name(written[k]), False)
        else:
            out = _one(writer.val(writer.w(root) if k not in shared else writer.node(root)))
            written[k] = s.name
        names.append(s.name)
        stmt_defs.append((s.name, out, str(s.iri)))
    for n in names:
        if n in writer.used_names:
            raise UnsupportedExpression(f"the statement name {n!r} is also the name of a shared part")
    # text and ELM
    types = sorted(writer.data_types)
    text = [f"library {name} version {_cql_string(version)}", "", f"using FHIR version {_cql_string(FHIR_MODEL[1])}",
            "", "// the data: retrieves of " + ", ".join(types) + " (the resource types the FHIR case mapping reads);",
            "// references name resources as Type/id; Today() is the assessment date", "",
            "context Patient", "", 'define "Patient":', "  singleton from [Patient]", ""]
    defs: list[dict[str, Any]] = [{
        "name": "Patient", "context": "Patient", "accessLevel": "Public",
        "expression": {"type": "SingletonFrom", "operand": {
            "type": "Retrieve", "dataType": _F + "Patient",
            "templateId": "http://hl7.org/fhir/StructureDefinition/Patient"}}}]
    for dname, out in writer.defs:
        defs.append({"name": dname, "context": "Patient", "accessLevel": "Public", "expression": out.elm})
        text += [f"define {_cql_name(dname)}:", f"  {out.cql}", ""]
    for sname, out, iri in stmt_defs:
        defs.append({"name": sname, "context": "Patient", "accessLevel": "Public", "expression": out.elm})
        text += [f"// {iri}: true applicable, false not applicable, null undetermined",
                 f"define {_cql_name(sname)}:", f"  {out.cql}", ""]
    elm = {"library": {
        "identifier": {"id": name, "version": version},
        "schemaIdentifier": {"id": "urn:hl7-org:elm", "version": "r1"},
        "usings": {"def": [{"localIdentifier": "System", "uri": "urn:hl7-org:elm-types:r1"},
                           {"localIdentifier": "FHIR", "uri": FHIR_MODEL[0], "version": FHIR_MODEL[1]}]},
        "contexts": {"def": [{"name": "Patient"}]},
        "statements": {"def": defs},
    }}
    return CqlLibrary("\n".join(text), elm, tuple(names), tuple(types), name, version,
                      tuple(str(s.iri) for s in statements))


def compile_library(tbox: Graph, mapping: MappingData, name: str = "Applicability", version: str = "1.0.0", *,
                    elements: Mapping[str, Iterable[str]] | None = None) -> CqlLibrary:
    """The CQL library (``text/cql``) and ELM (``application/elm+json``) of every statement with a population;
    ``elements``: FHIR R4's element names per resource type (``cases.fhir_in.R4_ELEMENTS``)."""
    statements = TreeBuilder(tbox, mapping).statements()
    labels: dict[Expr, str] = {}
    for s in statements:
        for c in s.conditions:
            labels.setdefault(c.met, f"{c.label}")
            labels.setdefault(c.failed, f"not {c.label}")
    return library_of(statements, name, version, elements=elements, assessment_date=mapping.assessment_date,
                      labels=labels)
