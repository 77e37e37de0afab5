"""The applicability tree (``compile.applicability``) written as a CQL library and its ELM JSON
(``application/elm+json``), both from ONE walk of the tree, so the two cannot drift: one ``define`` per statement,
``true`` applicable, ``false`` not applicable, ``null`` undetermined.

The CQL-to-ELM translator (Java) is not reachable here, so the ELM is written by this module; the CQL text is the
human-readable form of the same nodes. The tree navigates the patient's Bundle (entries, ``fullUrl`` references),
which ``cql-exec-fhir``'s patient source does not keep, so the library reads the Bundle as its parameter ``Bundle``
(FHIR JSON as it is: primitives unwrapped). Every node is a list (a FHIRPath collection) or a single value (null =
empty); a ``let`` is inlined as in ``owl2fhirpath``. docs/compilers.md has the table and the measured agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rdflib import Graph

from guideline_kg.compile.applicability import Expr, MappingData, Statement, TreeBuilder
from guideline_kg.compile.owl2sparql import UnsupportedExpression

__all__ = ["CqlLibrary", "compile_library", "library_of"]

_T = "{urn:hl7-org:elm-types:r1}"
_BINARY = {"=": "Equal", "<": "Less", "<=": "LessOrEqual", ">": "Greater", ">=": "GreaterOrEqual", "+": "Add",
           "-": "Subtract", "*": "Multiply", "div": "TruncatedDivide", "mod": "Modulo"}
_CQL_OP = {"div": "div", "mod": "mod"}


@dataclass(frozen=True)
class CqlLibrary:
    """One library: its CQL text and its ELM JSON (a dict), and the names of its statements' expressions."""

    cql: str
    elm: dict[str, Any]
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Out:
    elm: dict[str, Any]
    cql: str
    many: bool  # a list (collection) rather than one value


def _cql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
    return o if o.many else _Out({"type": "ToList", "operand": o.elm}, f"ToList({o.cql})", True)


def _one(o: _Out) -> _Out:
    """As one value: a list's first item (null if empty)."""
    return _Out({"type": "First", "source": o.elm}, f"First({o.cql})", False) if o.many else o


def _call(name: str, *args: _Out, many: bool = False) -> _Out:
    elm: dict[str, Any] = {"type": name}
    if len(args) == 1:
        elm["operand"] = args[0].elm
    else:
        elm["operand"] = [a.elm for a in args]
    return _Out(elm, f"{name}({', '.join(a.cql for a in args)})", many)


_NULL = _Out({"type": "Null"}, "null", False)


class _Writer:
    """One walk: each tree node to its ELM and its CQL together."""

    def __init__(self) -> None:
        self.depth = 0
        self.this = _Out({"type": "ParameterRef", "name": "Bundle"}, '"Bundle"', False)  # $this at the top
        self.env: dict[str, Expr] = {}

    def query(self, source: _Out, where: Expr | None, ret: Expr | None, flatten: bool) -> _Out:
        """``source A where ... return ...`` with ``$this`` bound to the alias ``A``."""
        self.depth += 1
        alias = f"X{self.depth}"
        env_this = self.this
        self.this = _Out({"type": "AliasRef", "name": alias}, alias, False)
        try:
            src = _many(source)
            elm: dict[str, Any] = {"type": "Query", "source": [{"alias": alias, "expression": src.elm}],
                                   "relationship": []}
            text = f"(({src.cql}) {alias}"
            if where is not None:
                cond = _one(self.w(where))
                elm["where"] = cond.elm
                text += f" where {cond.cql}"
            if ret is not None:
                value = _many(self.w(ret)) if flatten else _one(self.w(ret))
                elm["return"] = {"distinct": False, "expression": value.elm}
                text += f" return all {value.cql}"
            text += ")"
        finally:
            self.this = env_this
            self.depth -= 1
        if flatten:
            return _Out({"type": "Flatten", "operand": elm}, f"Flatten{text}", True)
        return _Out(elm, text, True)

    def prop(self, base: _Out, step: str) -> _Out:
        return _Out({"type": "Property", "source": base.elm, "path": step}, f"{base.cql}.{step}", False)

    def nav(self, base: _Out, step: str) -> _Out:
        """FHIRPath ``base.step``: the step of every item, lists flattened (CQL's list navigation)."""
        self.depth += 1
        alias = f"N{self.depth}"
        self.depth -= 1
        src = _many(base)
        value = {"type": "Property", "source": {"type": "AliasRef", "name": alias}, "path": step}
        as_list = {"type": "If",
                   "condition": {"type": "Is", "operand": value,
                                 "isTypeSpecifier": {"type": "ListTypeSpecifier",
                                                     "elementType": {"type": "NamedTypeSpecifier",
                                                                     "name": _T + "Any"}}},
                   "then": value, "else": {"type": "ToList", "operand": value}}
        elm = {"type": "Flatten", "operand": {
            "type": "Query", "source": [{"alias": alias, "expression": src.elm}], "relationship": [],
            "return": {"distinct": False, "expression": as_list}}}
        return _Out(elm, f"({base.cql}).{step}" if base.cql != '"Bundle"' else f'"Bundle".{step}', True)

    def w(self, e: Expr) -> _Out:
        k, a = e.kind, e.args
        if k == "lit":
            return _literal(e.value)
        if k == "empty":
            return _NULL
        if k == "this":
            return self.this
        if k == "root":
            return _Out({"type": "ParameterRef", "name": "Bundle"}, '"Bundle"', False)
        if k == "var":
            return self.w(self.env[e.value])
        if k == "let":
            saved = self.env
            self.env = {**saved, e.value: a[0]}
            try:
                return self.w(a[1])
            finally:
                self.env = saved
        if k == "nav":
            return self.nav(self.w(a[0]), e.value)
        if k == "op":
            x, y = _one(self.w(a[0])), _one(self.w(a[1]))
            if e.value == "!=":
                eq = _Out({"type": "Equal", "operand": [x.elm, y.elm]}, "", False)
                return _Out({"type": "Not", "operand": eq.elm}, f"({x.cql} != {y.cql})", False)
            if e.value not in _BINARY:
                raise UnsupportedExpression(f"no CQL for the operator {e.value!r}")
            return _Out({"type": _BINARY[e.value], "operand": [x.elm, y.elm]},
                        f"({x.cql} {_CQL_OP.get(e.value, e.value)} {y.cql})", False)
        if k in ("and", "or"):
            parts = [_one(self.w(x)) for x in a]
            out = parts[0]
            for p in parts[1:]:
                out = _Out({"type": k.capitalize(), "operand": [out.elm, p.elm]}, f"{out.cql} {k} {p.cql}", False)
            return _Out(out.elm, f"({out.cql})", False)
        if k == "not":
            x = _one(self.w(a[0]))
            return _Out({"type": "Not", "operand": x.elm}, f"not {x.cql}", False)
        if k == "in":
            x = _one(self.w(a[0]))
            values = [_literal(v) for v in e.value]
            lst: dict[str, Any] = {"type": "List", "element": [v.elm for v in values]}
            test: dict[str, Any] = {"type": "In", "operand": [x.elm, lst]}
            elm: dict[str, Any] = {"type": "If", "condition": {"type": "IsNull", "operand": x.elm},
                                   "then": {"type": "Null"}, "else": test}
            return _Out(elm, f"({x.cql} in {{{', '.join(v.cql for v in values)}}})", False)
        if k == "where":
            return self.query(self.w(a[0]), a[1], None, False)
        if k == "select":
            return self.query(self.w(a[0]), None, a[1], True)
        if k == "all":  # true when no item fails to satisfy the criterion
            self.depth += 1
            alias = f"X{self.depth}"
            outer, self.this = self.this, _Out({"type": "AliasRef", "name": alias}, alias, False)
            try:
                src = _many(self.w(a[0]))
                cond = _one(self.w(a[1]))
            finally:
                self.this, self.depth = outer, self.depth - 1
            failing = {"type": "Query", "source": [{"alias": alias, "expression": src.elm}], "relationship": [],
                       "where": {"type": "Not", "operand": {"type": "IsTrue", "operand": cond.elm}}}
            return _Out({"type": "Not", "operand": {"type": "Exists", "operand": failing}},
                        f"not exists (({src.cql}) {alias} where not ({cond.cql} is true))", False)
        if k in ("exists", "empty?"):
            x = self.w(a[0])
            elm = {"type": "Exists", "operand": x.elm} if x.many else {
                "type": "Not", "operand": {"type": "IsNull", "operand": x.elm}}
            text = f"exists ({x.cql})" if x.many else f"({x.cql} is not null)"
            if k == "exists":
                return _Out(elm, text, False)
            return _Out({"type": "Not", "operand": elm}, f"not {text}", False)
        if k == "first":
            return _one(self.w(a[0]))
        if k == "toInteger":
            return _call("ToInteger", _one(self.w(a[0])))
        if k == "str":
            return _call("ToString", _one(self.w(a[0])))
        if k == "isDate":
            x = _one(self.w(a[0]))
            # Length of null needs its operand's type (As String, as the translator writes it)
            size: dict[str, Any] = {"type": "Length", "operand": {
                "type": "As", "operand": {"type": "ToString", "operand": x.elm},
                "asTypeSpecifier": {"type": "NamedTypeSpecifier", "name": _T + "String"}}}
            ten = _literal(10)
            return _Out({"type": "GreaterOrEqual", "operand": [size, ten.elm]},
                        f"(Length(ToString({x.cql})) >= 10)", False)
        if k == "iif":
            c, t, o = _one(self.w(a[0])), self.w(a[1]), self.w(a[2])
            if t.many or o.many:
                t, o = _many(t), _many(o)
            return _Out({"type": "If", "condition": c.elm, "then": t.elm, "else": o.elm},
                        f"(if {c.cql} then {t.cql} else {o.cql})", t.many)
        if k == "substring":
            x = _one(self.w(a[0]))
            begin, count = _literal(e.value[0]), _literal(e.value[1])
            return _Out({"type": "Substring", "stringToSub": x.elm, "startIndex": begin.elm, "length": count.elm},
                        f"Substring({x.cql}, {begin.cql}, {count.cql})", False)
        if k == "union":
            x, y = _many(self.w(a[0])), _many(self.w(a[1]))
            return _Out({"type": "Union", "operand": [x.elm, y.elm]}, f"({x.cql} union {y.cql})", True)
        if k == "entries":
            entry = self.nav(self.w(Expr("root")), "entry")
            types = [_literal(name) for name in e.value]
            self.depth += 1
            alias = f"E{self.depth}"
            self.depth -= 1
            rtype: dict[str, Any] = {"type": "Property", "path": "resourceType",
                     "source": {"type": "Property", "path": "resource", "source": {"type": "AliasRef", "name": alias}}}
            elm = {"type": "Query", "source": [{"alias": alias, "expression": entry.elm}], "relationship": [],
                   "where": {"type": "In", "operand": [rtype, {"type": "List", "element": [x.elm for x in types]}]}}
            return _Out(elm, f"({entry.cql} {alias} where {alias}.resource.resourceType in "
                             f"{{{', '.join(x.cql for x in types)}}})", True)
        if k == "codingKey":
            x = _one(self.w(a[0]))
            parts = [self._or_empty(self.prop(x, "system")), _literal("|"), self._or_empty(self.prop(x, "code"))]
            return _Out({"type": "Concatenate", "operand": [p.elm for p in parts]},
                        f"({x.cql}.system & '|' & {x.cql}.code)", False)
        if k == "refsOf":
            return self.refs(self.w(a[0]))
        if k == "refIntersect":
            x, y = _many(self.w(a[0])), _many(self.w(a[1]))
            return _Out({"type": "Intersect", "operand": [x.elm, y.elm]}, f"({x.cql} intersect {y.cql})", True)
        if k == "refIn":
            ref = self.prop(self.this, "reference")
            refs = _many(self.w(a[0]))
            elm = {"type": "And", "operand": [{"type": "Not", "operand": {"type": "IsNull", "operand": ref.elm}},
                                              {"type": "In", "operand": [ref.elm, refs.elm]}]}
            return _Out(elm, f"({ref.cql} is not null and {ref.cql} in {refs.cql})", False)
        raise UnsupportedExpression(f"no CQL/ELM for tree node {k!r}")

    @staticmethod
    def _or_empty(x: _Out) -> _Out:
        return _Out({"type": "Coalesce", "operand": [x.elm, _literal("").elm]}, f"Coalesce({x.cql}, '')", False)

    def refs(self, source: _Out) -> _Out:
        """Each entry's ``fullUrl`` and ``type/id`` (the references that can point at it)."""
        self.depth += 1
        alias = f"R{self.depth}"
        self.depth -= 1
        ref = {"type": "AliasRef", "name": alias}
        res = _Out({"type": "Property", "source": ref, "path": "resource"}, f"{alias}.resource", False)
        full = _Out({"type": "Property", "source": ref, "path": "fullUrl"}, f"{alias}.fullUrl", False)
        local = _Out({"type": "Concatenate", "operand": [
            self._or_empty(self.prop(res, "resourceType")).elm, _literal("/").elm,
            self._or_empty(self.prop(res, "id")).elm]}, "", False)
        pair = {"type": "Union", "operand": [{"type": "ToList", "operand": full.elm},
                                             {"type": "ToList", "operand": local.elm}]}
        src = _many(source)
        elm = {"type": "Flatten", "operand": {
            "type": "Query", "source": [{"alias": alias, "expression": src.elm}], "relationship": [],
            "return": {"distinct": False, "expression": pair}}}
        return _Out(elm, f"Flatten(({src.cql}) {alias} return all ({{{alias}.fullUrl}} union "
                         f"{{{alias}.resource.resourceType & '/' & {alias}.resource.id}}))", True)


def library_of(statements: list[Statement], name: str = "Applicability", version: str = "1.0.0") -> CqlLibrary:
    """The CQL library and its ELM of ``statements``: one expression per statement, named by its local id."""
    defs: list[dict[str, Any]] = []
    text = [f"library {name} version '{version}'", "", "using FHIR version '4.0.1'", "",
            "// the patient's FHIR R4 Bundle (its entries and fullUrl references are what the conditions read)",
            'parameter "Bundle" Any', "", "context Patient", ""]
    names: list[str] = []
    written: dict[Expr, str] = {}  # a tree already written -> the statement that holds it (shared populations)
    for s in statements:
        tree = s.applicability()
        if tree in written:
            out = _Out({"type": "ExpressionRef", "name": written[tree]}, f'"{written[tree]}"', False)
        else:
            out = _one(_Writer().w(tree))
            written[tree] = s.name
        names.append(s.name)
        defs.append({"name": s.name, "context": "Patient", "accessLevel": "Public", "expression": out.elm})
        text += [f"// {s.iri}: true applicable, false not applicable, null undetermined",
                 f'define "{s.name}":', f"  {out.cql}", ""]
    elm = {"library": {
        "identifier": {"id": name, "version": version},
        "schemaIdentifier": {"id": "urn:hl7-org:elm", "version": "r1"},
        "usings": {"def": [{"localIdentifier": "System", "uri": "urn:hl7-org:elm-types:r1"},
                           {"localIdentifier": "FHIR", "uri": "http://hl7.org/fhir", "version": "4.0.1"}]},
        "parameters": {"def": [{"name": "Bundle", "accessLevel": "Public"}]},
        "contexts": {"def": [{"name": "Patient"}]},
        "statements": {"def": [
            {"name": "Patient", "context": "Patient", "expression": {
                "type": "SingletonFrom", "operand": {"type": "Retrieve",
                                                     "dataType": "{http://hl7.org/fhir}Patient"}}},
            *defs]},
    }}
    return CqlLibrary("\n".join(text), elm, tuple(names))


def compile_library(tbox: Graph, mapping: MappingData, name: str = "Applicability") -> CqlLibrary:
    """The CQL library (``text/cql``) and ELM (``application/elm+json``) of every statement with a population."""
    return library_of(TreeBuilder(tbox, mapping).statements(), name)
