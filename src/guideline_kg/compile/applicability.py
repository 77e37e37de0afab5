"""Applicability compiled for FHIR: OWL populations over case facts, read through the FHIR case mapping, to one
small expression tree over a FHIR R4 Bundle; ``owl2fhirpath`` and ``owl2cql`` write that one tree as FHIRPath,
CQL and ELM, so the three say the same thing (docs/compilers.md).

The tree is built from two pieces of data and nothing else: the OWL class expressions of the guideline package
(each statement's ``gk:population``, its conditions and their ``gk:negation``s, read as ``queries/derive-conditions.rq``
reads them) and the package's FHIR case mapping (``fhir-case-mapping.json`` with its SSSOM code index: which
resources, codes, statuses and elements make which case fact). A class expression is not evaluated over case facts,
as ``owl2sparql`` does, but over the FHIR resources the mapping would turn into those facts: ``gk:hadTreatment some
(gk:careAction value X and gk:response value Y)`` becomes "an entry whose resource a rule records as a treatment
episode, coded as X, with an outcome (or an Observation ``partOf`` it) coded as Y".

Three-valued, as the derivation is (docs/derivation.md): a statement is ``false`` (not applicable) when the bundle
proves the negation of one of its conditions, ``true`` (applicable) when it proves every condition, and empty /
null (undetermined) otherwise. A membership itself is two-valued (``exists``): open world, no negative by absence.

Supported: what ``owl2sparql`` supports (named classes through definitions and ``rdfs:subClassOf``, intersection,
union, oneOf of individuals as values, someValuesFrom, hasValue, data ranges with numeric facets, named datatypes and
their complements), over the mapping's value kinds (boolean, decimal, integer, map, term, date, const,
monthsToAssessment, weeksOfPeriod, and the Patient's yearsToAssessment: the age in whole years at the assessment
date). Anything else is refused with :class:`~guideline_kg.compile.owl2sparql.UnsupportedExpression` naming the
class or the rule, never dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import OWL, RDF, RDFS, XSD
from rdflib.term import Node

from guideline_kg.compile.owl2sparql import UnsupportedExpression
from guideline_kg.core.namespaces import GK

__all__ = ["Condition", "Expr", "MappingData", "Statement", "TreeBuilder", "statements_of"]


# --------------------------------------------------------------------------------------------------------------
# The tree (FHIRPath-like: a collection language; every node is a collection, booleans are singletons)
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expr:
    """One node of the tree: ``kind`` and its operands (``args``) or constant (``value``)."""

    kind: str
    args: tuple[Expr, ...] = ()
    value: Any = None


def lit(value: Any) -> Expr:
    """A constant: bool, int, Decimal or str."""
    return Expr("lit", value=value)


TRUE, FALSE, EMPTY = lit(True), lit(False), Expr("empty")
THIS = Expr("this")          # the item a where/select iterates over (the Bundle at the top)
ROOT = Expr("root")          # the Bundle


def nav(base: Expr, *steps: str) -> Expr:
    """``base.a.b``: FHIR JSON element names (flattening lists)."""
    for step in steps:
        base = Expr("nav", (base,), step)
    return base


def op(name: str, a: Expr, b: Expr) -> Expr:
    return Expr("op", (a, b), name)


def _unique(items: Iterable[Expr]) -> list[Expr]:
    """The items in order, each once (a and a is a; a or a is a)."""
    return list(dict.fromkeys(items))


def and_(items: Iterable[Expr]) -> Expr:
    items = _unique(x for i in items if i != TRUE for x in (i.args if i.kind == "and" else (i,)))
    if FALSE in items:
        return FALSE
    if not items:
        return TRUE
    return items[0] if len(items) == 1 else Expr("and", tuple(items))


def or_(items: Iterable[Expr]) -> Expr:
    items = _unique(x for i in items if i != FALSE for x in (i.args if i.kind == "or" else (i,)))
    if TRUE in items:
        return TRUE
    if not items:
        return FALSE
    return items[0] if len(items) == 1 else Expr("or", tuple(items))


def not_(a: Expr) -> Expr:
    return FALSE if a == TRUE else TRUE if a == FALSE else Expr("not", (a,))


def where(source: Expr, cond: Expr) -> Expr:
    return source if cond == TRUE else Expr("where", (source, cond))


def exists(source: Expr) -> Expr:
    return Expr("exists", (source,))


def first(source: Expr) -> Expr:
    return Expr("first", (source,))


def iif(cond: Expr, then: Expr, other: Expr) -> Expr:
    return Expr("iif", (cond, then, other))


def entries(types: Iterable[str]) -> Expr:
    """The Bundle's entries whose resource is one of ``types`` (an entry: ``fullUrl`` and ``resource``)."""
    return Expr("entries", value=tuple(sorted(set(types))))


def substring(base: Expr, start: int, length: int) -> Expr:
    return Expr("substring", (base,), (start, length))


def to_integer(base: Expr) -> Expr:
    return Expr("toInteger", (base,))


def in_(item: Expr, values: Iterable[Any]) -> Expr:
    """``item`` (one value) is one of the constants ``values``."""
    values = tuple(values)
    return Expr("in", (item,), values) if values else FALSE


def first_of(base: Expr, alternatives: str) -> Expr:
    """The values at the first alternative of ``a.b|c`` that has any (the case mapping's path rule), as a tree."""
    alts = [nav(base, *alt.split(".")) for alt in alternatives.split("|")]
    out = alts[-1]
    for alt in reversed(alts[:-1]):
        out = iif(exists(alt), alt, out)
    return out


def key_in(item: Expr, keys: Iterable[str]) -> Expr:
    """A code or boolean ``item`` (the current value) is one of the mapping's ``keys`` (a boolean as "true" /
    "false", as ``cases.fhir_in`` reads it): compared as a value, never through toString (engines write booleans
    differently)."""
    parts = []
    for k in keys:
        parts.append(op("=", item, lit(k)))
        if k in ("true", "false"):
            parts.append(op("=", item, lit(k == "true")))
    return or_(parts)


def let(name: str, value: Expr, body: Expr) -> Expr:
    """``body`` with ``var(name)`` standing for ``value`` (CQL writes a let; FHIRPath inlines it)."""
    return Expr("let", (value, body), name)


def var(name: str) -> Expr:
    return Expr("var", value=name)


# --------------------------------------------------------------------------------------------------------------
# Date arithmetic as integer arithmetic (the one definition of core.dates.months_between, written as a tree)
# --------------------------------------------------------------------------------------------------------------
def _ymd(date: Expr) -> tuple[Expr, Expr, Expr]:
    """Year, month, day of a FHIR date or dateTime string (its first ten characters)."""
    return (to_integer(substring(date, 0, 4)), to_integer(substring(date, 5, 2)), to_integer(substring(date, 8, 2)))


def _day_number(y: Expr, m: Expr, d: Expr) -> Expr:
    """Days since 0000-03-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil, for years >= 1)."""
    shift = iif(op("<=", m, lit(2)), lit(1), lit(0))
    yy = op("-", y, shift)
    mm = iif(op(">", m, lit(2)), op("-", m, lit(3)), op("+", m, lit(9)))
    doy = op("+", op("div", op("+", op("*", lit(153), mm), lit(2)), lit(5)), op("-", d, lit(1)))
    return op("+", op("+", op("-", op("+", op("*", yy, lit(365)), op("div", yy, lit(4))), op("div", yy, lit(100))),
                      op("div", yy, lit(400))), doy)


def _days_in_month(y: Expr, m: Expr) -> Expr:
    leap = and_([op("=", op("mod", y, lit(4)), lit(0)),
                 or_([op("!=", op("mod", y, lit(100)), lit(0)), op("=", op("mod", y, lit(400)), lit(0))])])
    return iif(op("=", m, lit(2)), iif(leap, lit(29), lit(28)),
               iif(in_(m, (4, 6, 9, 11)), lit(30), lit(31)))


def whole_months(start: Expr, end: Expr) -> Expr:
    """The whole calendar months from ``start`` to ``end`` (``core.dates.months_between`` without the fraction)."""
    sy, sm, sd = _ymd(start)
    ey, em, ed = _ymd(end)
    return op("-", op("+", op("*", op("-", ey, sy), lit(12)), op("-", em, sm)), iif(op("<", ed, sd), lit(1), lit(0)))


def whole_years(start: Expr, end: Expr) -> Expr:
    """Age in whole years at ``end`` of someone born on ``start``, as ``cases.fhir_in`` computes it:
    ``months_between(start, end) // 12`` (a floor; the whole months W decide it, and ``div`` truncates, so a
    negative W is floored by hand)."""
    months = whole_months(start, end)
    return iif(op(">=", months, lit(0)), op("div", months, lit(12)),
               op("-", op("div", op("+", months, lit(1)), lit(12)), lit(1)))


def months_at_least(start: Expr, end: Expr, bound: Decimal) -> Expr:
    """``core.dates.months_between(start, end) >= bound``, exactly, in integers: with K the whole months of the
    bound and f its fraction, either more than K whole months, or K whole months and the remaining days (from the
    anchor, ``start`` plus K months with the day clamped to the month) at least f of the anchor's month."""
    whole = int(bound // 1)
    fraction = bound - whole
    months = whole_months(start, end)
    if fraction == 0:
        return op(">=", months, lit(whole))
    sy, sm, sd = _ymd(start)
    ey, em, ed = _ymd(end)
    ay = op("+", sy, op("div", op("+", sm, lit(whole - 1)), lit(12)))
    am = op("+", op("mod", op("+", sm, lit(whole - 1)), lit(12)), lit(1))
    days_in = _days_in_month(ay, am)
    anchor_d = iif(op("<", sd, days_in), sd, days_in)
    days = op("-", _day_number(ey, em, ed), _day_number(ay, am, anchor_d))
    scale = 10 ** max(0, -int(fraction.as_tuple().exponent))
    return or_([op(">", months, lit(whole)),
                and_([op("=", months, lit(whole)),
                      op(">=", op("*", days, lit(scale)), op("*", days_in, lit(int(fraction * scale))))])])


def days_between(start: Expr, end: Expr) -> Expr:
    """Days from ``start`` to ``end``."""
    return op("-", _day_number(*_ymd(end)), _day_number(*_ymd(start)))


# --------------------------------------------------------------------------------------------------------------
# The mapping data the tree is built from (cases.fhir_in.MappingRules has this shape; compile may not import it)
# --------------------------------------------------------------------------------------------------------------
class MappingData(Protocol):
    """What the compiler reads of the FHIR case mapping (``cases.fhir_in.MappingRules``)."""

    rules: list[dict[str, Any]]
    patient: dict[str, Any]
    assessment_date: str | None
    skip_status: set[str]
    codes: dict[tuple[str, str], list[tuple[URIRef, URIRef]]]
    recognise: set[URIRef]

    def expand(self, curie: str) -> URIRef: ...


@dataclass(frozen=True)
class Condition:
    """One condition of a population: the class, its negation and their trees (membership, two-valued)."""

    cls: URIRef
    negation: URIRef
    label: str
    met: Expr
    failed: Expr


@dataclass(frozen=True)
class Statement:
    """One statement's applicability: its population, conditions and the three-valued tree."""

    iri: URIRef
    population: URIRef
    conditions: tuple[Condition, ...]

    @property
    def name(self) -> str:
        """The statement's local id (``L16``), the name of its expression in the CQL library."""
        return str(self.iri).rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]

    def applicability(self) -> Expr:
        """``false`` if a condition failed, ``true`` if all are met, empty (null) otherwise."""
        return iif(or_(c.failed for c in self.conditions), FALSE,
                   iif(and_(c.met for c in self.conditions), TRUE, EMPTY))


def _list(tbox: Graph, node: Node | None) -> list[Node]:
    return list(Collection(tbox, node)) if node is not None else []


def statements_of(tbox: Graph) -> list[tuple[URIRef, URIRef, list[tuple[URIRef, URIRef]]]]:
    """(statement, population, [(condition, negation)]) of every statement with ``gk:population``, read as
    ``queries/derive-conditions.rq`` reads them: the population itself if it has a negation, else the members of
    its intersection that have one, and one level down the members of a member without one (the guideline
    population)."""
    out = []
    for statement, population in sorted(tbox.subject_objects(GK.population)):
        if not isinstance(statement, URIRef) or not isinstance(population, URIRef):
            continue
        conditions: list[tuple[URIRef, URIRef]] = []

        def add(c: Node, conditions: list[tuple[URIRef, URIRef]] = conditions) -> None:
            neg = tbox.value(c, GK.negation)
            if isinstance(c, URIRef) and isinstance(neg, URIRef) and (c, neg) not in conditions:
                conditions.append((c, neg))

        members = [m for d in tbox.objects(population, OWL.equivalentClass)
                   for m in _list(tbox, tbox.value(d, OWL.intersectionOf))]
        scope = [c for m in members if tbox.value(m, GK.negation) is None
                 for d in tbox.objects(m, OWL.equivalentClass) for c in _list(tbox, tbox.value(d, OWL.intersectionOf))]
        if tbox.value(population, GK.negation) is not None:
            add(population)
        for c in sorted((c for c in scope if tbox.value(c, GK.negation) is not None), key=str):
            add(c)
        for c in sorted((m for m in members if tbox.value(m, GK.negation) is not None), key=str):
            add(c)
        out.append((statement, population, conditions))
    return out


# --------------------------------------------------------------------------------------------------------------
# Nodes of the case graph, seen from the FHIR side
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Node:
    """Where a case node comes from: the patient, a shared node (``key``) or the resource a rule records (``rule``
    index; evaluated with the entry as the current item)."""

    kind: str
    key: str = ""
    rule: int = -1


_PATIENT = _Node("patient")


@dataclass
class TreeBuilder:
    """Builds the trees of a guideline's populations from its TBox and its FHIR case mapping."""

    tbox: Graph
    mapping: MappingData
    _subclasses: dict[URIRef, set[URIRef]] = field(default_factory=dict)
    _counter: Any = field(default_factory=itertools.count)

    # --- the ontology ---------------------------------------------------------------------------------------
    def subclasses(self, cls: URIRef) -> set[URIRef]:
        if cls not in self._subclasses:
            seen, todo = {cls}, [cls]
            while todo:
                for s in self.tbox.subjects(RDFS.subClassOf, todo.pop()):
                    if isinstance(s, URIRef) and s not in seen:
                        seen.add(s)
                        todo.append(s)
            self._subclasses[cls] = seen
        return self._subclasses[cls]

    def definition(self, node: Node) -> Node | None:
        return self.tbox.value(node, OWL.equivalentClass) if isinstance(node, URIRef) else None

    def individuals(self, node: Node, stack: frozenset[Node] = frozenset()) -> set[URIRef]:
        """The individuals a class expression used as a value (``gk:careAction some X``) enumerates."""
        if (d := self.definition(node)) is not None and node not in stack:
            return self.individuals(d, stack | {node})
        if isinstance(node, URIRef):
            return {i for c in self.subclasses(node) for i in self.tbox.subjects(RDF.type, c) if isinstance(i, URIRef)}
        if (m := self.tbox.value(node, OWL.oneOf)) is not None:
            return {i for i in _list(self.tbox, m) if isinstance(i, URIRef)}
        if (m := self.tbox.value(node, OWL.unionOf)) is not None:
            return set().union(*(self.individuals(x, stack) for x in _list(self.tbox, m)))
        if (m := self.tbox.value(node, OWL.intersectionOf)) is not None:
            sets = [self.individuals(x, stack) for x in _list(self.tbox, m)]
            return set.intersection(*sets) if sets else set()
        raise UnsupportedExpression(f"a value class must enumerate individuals (oneOf, union, intersection, named "
                                    f"class), not {sorted(str(p) for p in self.tbox.predicates(node))}")

    # --- the mapping ----------------------------------------------------------------------------------------
    def rule(self, i: int) -> dict[str, Any]:
        return self.mapping.rules[i]

    def rid(self, i: int) -> str:
        return str(self.rule(i).get("id", i + 1))

    def terms(self, i: int) -> list[URIRef]:
        return [self.mapping.expand(t) for t in self.rule(i).get("terms", [])]

    def codes(self, terms: Iterable[URIRef], predicates: set[URIRef] | None = None) -> list[str]:
        """``system|code`` of every coding the mapping recognises as one of ``terms``."""
        wanted, preds = set(terms), self.mapping.recognise if predicates is None else predicates
        return sorted(f"{s}|{c}" for (s, c), mapped in self.mapping.codes.items()
                      if any(t in wanted and p in preds for t, p in mapped))

    def code_paths(self, rtype: str) -> list[str]:
        return sorted({r["resources"][rtype] for r in self.mapping.rules if rtype in r["resources"]})

    def coded(self, terms: Iterable[URIRef], rtypes: Iterable[str], predicates: set[URIRef] | None = None) -> Expr:
        """The current entry's resource has a coding (at its type's code path) recognised as one of ``terms``."""
        codes = self.codes(terms, predicates)
        if not codes:
            return FALSE
        concepts = {rtype: or_(exists(where(nav(THIS, "resource", *p.split("."), "coding"),
                                            in_(Expr("codingKey", (THIS,)), codes))) for p in self.code_paths(rtype))
                    for rtype in sorted(set(rtypes))}
        if len(set(concepts.values())) == 1:  # the same code paths in every type: one test of the type, one of codes
            return and_([in_(nav(THIS, "resource", "resourceType"), list(concepts)), next(iter(concepts.values()))])
        return or_(and_([op("=", nav(THIS, "resource", "resourceType"), lit(rtype)), concept])
                   for rtype, concept in concepts.items())

    def value_term(self, i: int, term: URIRef) -> Expr:
        """The rule records ``term`` as the value / type of the current entry (``pick: first``: the first term of
        the rule's list it is coded as)."""
        rule, terms = self.rule(i), self.terms(i)
        if term not in terms:
            return FALSE
        rtypes = rule["resources"]
        parts = [self.coded([term], rtypes)]
        if rule.get("pick") == "first":
            earlier = terms[:terms.index(term)]
            if earlier:
                parts.append(not_(self.coded(earlier, rtypes)))
        return and_(parts)

    def value_terms(self, i: int, terms: Iterable[URIRef]) -> Expr:
        """The rule records one of ``terms`` as the value / type of the current entry: ``value_term`` of each,
        or'ed; one code test of all their codes when the rule does not pick the first term (the same test)."""
        wanted = set(terms)
        rtypes = self.rule(i)["resources"]
        if self.rule(i).get("pick") != "first":
            mine = [t for t in self.terms(i) if t in wanted]
            return self.coded(mine, rtypes) if mine else FALSE
        # pick first: the first term of the rule's list the entry is coded as decides. Runs of consecutive terms
        # in / not in ``terms``, tested in order: c1 or (not c2 and (c3 or ...)), one code test per run
        runs: list[tuple[bool, list[URIRef]]] = []
        for t in self.terms(i):
            if runs and runs[-1][0] == (t in wanted):
                runs[-1][1].append(t)
            else:
                runs.append((t in wanted, [t]))
        out = FALSE
        for inside, run in reversed(runs):
            out = or_([self.coded(run, rtypes), out]) if inside else and_([not_(self.coded(run, rtypes)), out])
        return out

    def subject_ok(self) -> Expr:
        """The resource is about the bundle's Patient (cases.fhir_in: subject / patient refer to it) and has no
        modifier extension."""
        patient_type = self.mapping.patient.get("resourceType", "Patient")
        refs = Expr("refsOf", (entries([patient_type]),))
        ref_ok = Expr("all", (Expr("union", (nav(THIS, "resource", "subject"), nav(THIS, "resource", "patient"))),
                              Expr("refIn", (refs,))))
        return and_([ref_ok, Expr("empty?", (nav(THIS, "resource", "modifierExtension"),))])

    def base(self, i: int) -> Expr:
        """A rule's terms match the current entry and its status and ``when`` conditions let it through."""
        rule = self.rule(i)
        rtypes = list(rule["resources"])
        status = nav(THIS, "resource", "status")
        accepted = {s for r in self.mapping.rules for t in rtypes if t in r["resources"] for s in r.get("status", [])}
        skipped = sorted(self.mapping.skip_status - accepted)
        parts = [self.coded(self.terms(i), rtypes)]
        if skipped:
            parts.append(not_(exists(where(status, in_(THIS, skipped)))))
        if rule.get("status"):
            parts.append(or_([Expr("empty?", (status,)), exists(where(status, in_(THIS, rule["status"])))]))
        for cond in rule.get("when", []):
            values = first_of(nav(THIS, "resource"), cond["path"])
            if "in" in cond:
                parts.append(exists(where(values, key_in(THIS, cond["in"]))))
            if "notIn" in cond:
                parts.append(not_(exists(where(values, key_in(THIS, cond["notIn"])))))
        return and_(parts)

    def applies(self, i: int, check_reference: bool = True) -> Expr:
        """The rule records the current entry: base, its ``after`` date, its required values, ``absentOnlyBy``."""
        rule = self.rule(i)
        parts = [self.base(i)]
        if "after" in rule:
            spec = rule["after"]
            mine = first(first_of(nav(THIS, "resource"), spec["path"]))
            other = first(self.shared_values(spec["shared"], self.mapping.expand(spec["property"])))
            parts.append(not_(and_([exists(mine), exists(other),
                                    op("<=", substring(mine, 0, 10), substring(other, 0, 10))])))
        for required in rule.get("require", []):
            prop = self.mapping.expand(required)
            specs = [s for s in rule.get("values", []) if prop in self.spec_props(i, s)]
            parts.append(or_(self.spec_has_value(i, s) for s in specs))
        if "absentOnlyBy" in rule:
            deny = rule["absentOnlyBy"]
            allowed = {self.mapping.expand(p) for p in deny["predicates"]}
            by_allowed = self.coded(self.terms(i), rule["resources"], allowed)
            negatives = [self.mapping.expand(v) for v in deny.get("values", [])]
            if negatives:
                negative = or_(self.spec_test(i, s, p, ("terms", set(negatives)))
                               for s in rule.get("values", []) for p in self.spec_props(i, s))
                parts.append(or_([not_(negative), by_allowed]))
            else:
                parts.append(by_allowed)
        if rule["node"].get("kind") == "referenced" and check_reference:
            parts.append(self.refers_to_recorded(i))
        return and_(parts)

    def refers_to_recorded(self, i: int) -> Expr:
        """A ``referenced`` rule's reference names an entry some rule records (its node)."""
        path = self.rule(i)["node"]["path"]
        targets = [j for j, r in enumerate(self.mapping.rules) if j != i and r["node"].get("kind") != "referenced"]
        recorded = or_(and_([self.applies(j), self.subject_ok()]) for j in targets)
        types = sorted({t for j in targets for t in self.rule(j)["resources"]})
        return exists(Expr("refIntersect", (first(first_of(nav(THIS, "resource"), path)),
                                            Expr("refsOf", (where(entries(types), recorded),)))))

    # --- values ---------------------------------------------------------------------------------------------
    def spec_props(self, i: int, spec: dict[str, Any]) -> list[URIRef]:
        if spec.get("propertyFromTerm"):
            allowed = [self.mapping.expand(t) for t in spec.get("forTerms", [])] or self.terms(i)
            return [t for t in self.terms(i) if t in allowed]
        return [self.mapping.expand(spec["property"])]

    def spec_guard(self, i: int, spec: dict[str, Any], prop: URIRef) -> Expr:
        """The spec applies to the current entry (its resource types, its terms) and gives property ``prop``."""
        parts = []
        if spec.get("resourceTypes"):
            parts.append(in_(nav(THIS, "resource", "resourceType"), spec["resourceTypes"]))
        if spec.get("forTerms"):
            parts.append(self.coded([self.mapping.expand(t) for t in spec["forTerms"]], self.rule(i)["resources"]))
        if spec.get("propertyFromTerm"):
            parts.append(self.coded([prop], self.rule(i)["resources"]))
        return and_(parts)

    def raw(self, spec: dict[str, Any]) -> Expr:
        """The first value at the spec's path (the mapping uses the first convertible one)."""
        return first(first_of(nav(THIS, "resource"), spec["path"]))

    def spec_has_value(self, i: int, spec: dict[str, Any]) -> Expr:
        """The spec records a value (``require``)."""
        if "const" in spec:
            return TRUE
        kind = spec.get("as", "string")
        raw = self.raw(spec)
        if kind == "map":
            found = exists(where(raw, key_in(THIS, list(spec["map"]))))
            guard = self.spec_guard(i, spec, self.spec_props(i, spec)[0])
            return and_([guard, or_([found, not_(exists(raw))]) if "default" in spec else found])
        if kind == "term":
            allowed = [self.mapping.expand(t) for t in spec.get("terms", [])]
            return and_([self.spec_guard(i, spec, self.spec_props(i, spec)[0]), self.concept_is(raw, allowed)])
        return and_([self.spec_guard(i, spec, self.spec_props(i, spec)[0]), exists(raw)])

    def concept_is(self, concept: Expr, terms: Iterable[URIRef], allowed: Iterable[URIRef] | None = None) -> Expr:
        """The CodeableConcept ``concept`` has a coding recognised as one of ``terms``."""
        codes = self.codes(terms)
        return exists(where(nav(concept, "coding"), in_(Expr("codingKey", (THIS,)), codes))) if codes else FALSE

    def spec_test(self, i: int, spec: dict[str, Any], prop: URIRef, test: tuple[str, Any]) -> Expr:
        """The spec records for ``prop`` a value that passes ``test``: ("terms", set of IRIs), ("literal",
        Literal) or ("range", data range node)."""
        guard = self.spec_guard(i, spec, prop)
        kind = spec.get("as", "string")
        what, arg = test
        if "const" in spec:
            value = Literal(spec["const"])
            return guard if self.literal_passes(value, test) else FALSE
        raw = self.raw(spec)
        if kind == "map":
            keys = [k for k, v in spec["map"].items()
                    if (what == "terms" and self.mapping.expand(v) in arg)]
            hit = exists(where(raw, key_in(THIS, keys))) if keys else FALSE
            if "default" in spec and what == "terms" and self.mapping.expand(spec["default"]) in arg:
                hit = or_([hit, not_(exists(raw))])
            return and_([guard, hit])
        if kind == "term":
            if what != "terms":
                return FALSE
            allowed = [self.mapping.expand(t) for t in spec.get("terms", [])]
            wanted = [t for t in allowed if t in arg]
            # the first coding recognised as an allowed term decides the value
            firstc = first(where(nav(raw, "coding"), in_(Expr("codingKey", (THIS,)), self.codes(allowed))))
            codes = self.codes(wanted)
            return and_([guard, exists(where(firstc, in_(Expr("codingKey", (THIS,)), codes)))]) if codes else FALSE
        if kind == "boolean":
            if what == "literal" and arg.datatype == XSD.boolean:
                return and_([guard, exists(where(raw, op("=", THIS, lit(bool(arg.toPython())))))])
            if what == "range":
                return and_([guard, exists(where(raw, self.range_test(arg, THIS, XSD.boolean)))])
            return FALSE
        if kind in ("decimal", "integer"):
            dt = XSD.integer if kind == "integer" else XSD.decimal
            if "round" in spec:
                raise UnsupportedExpression(f"rule {self.rid(i)}: a rounded {kind} value is not supported")
            if what == "literal":
                return and_([guard, exists(where(raw, self.literal_eq(arg, THIS, dt)))])
            if what == "range":
                return and_([guard, exists(where(raw, self.range_test(arg, THIS, dt)))])
            return FALSE
        if kind in ("monthsToAssessment", "weeksOfPeriod"):
            if what != "range":
                raise UnsupportedExpression(f"rule {self.rid(i)}: a {kind} value compared with {arg}; only data "
                                            "ranges are supported")
            places = int(spec.get("round", -1))
            assessment = first(nav(ROOT, self.mapping.assessment_date)) if self.mapping.assessment_date else EMPTY
            if kind == "monthsToAssessment":
                def at_least(b: Decimal) -> Expr:
                    return months_at_least(THIS, assessment, b)
                need = and_([exists(assessment), Expr("isDate", (THIS,))])
                source = raw
            else:
                start, end = nav(THIS, "start"), iif(exists(nav(THIS, "end")), nav(THIS, "end"), assessment)
                days = days_between(first(start), first(end))

                def at_least(b: Decimal) -> Expr:
                    scale = 10 ** max(0, -int(b.as_tuple().exponent))
                    return op(">=", op("*", days, lit(scale)), lit(b * 7 * scale))
                need = and_([exists(start), Expr("isDate", (first(start),)),
                             or_([and_([exists(nav(THIS, "end")), Expr("isDate", (first(nav(THIS, "end")),))]),
                                  and_([not_(exists(nav(THIS, "end"))), exists(assessment)])])])
                source = raw
            return and_([guard, exists(where(source, and_([need, self.rounded_test(arg, at_least, places)])))])
        if kind in ("date", "ref", "string", "codeOfSystem") and what == "terms":
            return FALSE
        if kind == "date":
            raise UnsupportedExpression(f"rule {self.rid(i)}: a test on a date value is not supported")
        return FALSE

    def literal_passes(self, value: Literal, test: tuple[str, Any]) -> bool:
        what, arg = test
        if what == "literal":
            return bool(value == arg)
        if what == "range":
            raise UnsupportedExpression("a data range over a constant value is not supported")
        return False

    # --- literal and data-range tests (value spaces as owl2sparql: decimal holds integer) -------------------
    def literal_eq(self, lit_: Literal, v: Expr, dt: URIRef) -> Expr:
        if lit_.datatype in (XSD.integer, XSD.decimal, XSD.int, XSD.long) and dt in (XSD.integer, XSD.decimal):
            return op("=", v, lit(Decimal(str(lit_))))
        return FALSE

    def range_test(self, node: Node, v: Expr, dt: URIRef, stack: frozenset[Node] = frozenset()) -> Expr:
        """``v`` (a value of datatype ``dt``) is in the data range ``node``."""
        return self._range(node, dt, stack, lambda o, bound: op(o, v, lit(bound)))

    def rounded_test(self, node: Node, at_least: Any, places: int) -> Expr:
        """A value ``x``, rounded half up to ``places`` decimals (if >= 0), is in the data range ``node``;
        ``at_least(b)`` is the tree of ``x >= b`` (exact). round(x) >= b <=> x >= b - h; round(x) > b <=>
        x >= b + u - h (u the unit of the last place, h half of it); < and <= are their negations."""
        def compare(o: str, bound: Decimal) -> Expr:
            unit = Decimal(1).scaleb(-places) if places >= 0 else Decimal(0)
            half = unit / 2
            if o in (">=", "<"):
                test = at_least(bound - half)
            elif places >= 0:
                test = at_least(bound + unit - half)
            else:
                raise UnsupportedExpression("an exclusive bound on an unrounded derived value is not supported")
            return test if o in (">=", ">") else not_(test)
        return self._range(node, XSD.decimal, frozenset(), compare)

    def _range(self, node: Node, dt: URIRef, stack: frozenset[Node], compare: Any) -> Expr:
        facets: dict[Node, str] = {XSD.minInclusive: ">=", XSD.maxInclusive: "<=", XSD.minExclusive: ">",
                                   XSD.maxExclusive: "<"}
        if isinstance(node, URIRef):
            d = self.definition(node)
            if d is not None and not str(node).startswith(str(XSD)):
                if node in stack:
                    raise UnsupportedExpression(f"the named datatype {node} is defined in terms of itself")
                return self._range(d, dt, stack | {node}, compare)
            if node == RDFS.Literal:
                return TRUE
            if node == XSD.decimal:
                return TRUE if dt in (XSD.decimal, XSD.integer) else FALSE
            if node == XSD.integer:
                if dt == XSD.integer:
                    return TRUE
                raise UnsupportedExpression(f"an xsd:integer range over {dt} values is not supported")
            if node == dt:
                return TRUE
            if str(node).startswith(str(XSD)):
                return FALSE
            raise UnsupportedExpression(f"the named datatype {node} has no definition (owl:equivalentClass)")
        if (m := self.tbox.value(node, OWL.intersectionOf)) is not None:
            return and_(self._range(x, dt, stack, compare) for x in _list(self.tbox, m))
        if (m := self.tbox.value(node, OWL.unionOf)) is not None:
            return or_(self._range(x, dt, stack, compare) for x in _list(self.tbox, m))
        if (inner := self.tbox.value(node, OWL.datatypeComplementOf)) is not None:
            return not_(self._range(inner, dt, stack, compare))
        base = self.tbox.value(node, OWL.onDatatype)
        if not isinstance(base, URIRef):
            raise UnsupportedExpression(f"unsupported data range {sorted(str(p) for p in self.tbox.predicates(node))}")
        parts = [self._range(base, dt, stack, compare)]
        for facet_node in _list(self.tbox, self.tbox.value(node, OWL.withRestrictions)):
            for facet, bound in self.tbox.predicate_objects(facet_node):
                if facet not in facets or not isinstance(bound, Literal):
                    raise UnsupportedExpression(f"unsupported facet {facet} on {base}")
                parts.append(compare(facets[facet], Decimal(str(bound))))
        return and_(parts)

    # --- nodes and class expressions -----------------------------------------------------------------------
    def rules_of(self, node: _Node) -> list[int]:
        """The rules that write facts on ``node`` (for a resource node: its rule; ``referenced`` rules apart)."""
        out = []
        for i, r in enumerate(self.mapping.rules):
            spec = r["node"]
            if (node.kind == "patient" and spec.get("kind") == "patient") \
                    or (node.kind == "shared" and spec.get("kind") == "shared" and spec.get("key") == node.key) \
                    or (node.kind == "resource" and i == node.rule):
                out.append(i)
        return out

    def referencing(self, node: _Node) -> list[int]:
        """The ``referenced`` rules that can write on a resource node."""
        return [i for i, r in enumerate(self.mapping.rules) if node.kind == "resource"
                and r["node"].get("kind") == "referenced"]

    def on_entries(self, rules: Iterable[int], cond: Any) -> Expr:
        """Some entry that rule i records satisfies ``cond(i)``, for any of ``rules``."""
        return or_(exists(where(entries(self.rule(i)["resources"]), and_([self.applies(i), c, self.subject_ok()])))
                   for i in rules if (c := cond(i)) != FALSE)

    def shared_values(self, key: str, prop: URIRef) -> Expr:
        """The raw values of ``prop`` on shared node ``key`` (for ``after``)."""
        out: list[Expr] = []
        for i in self.rules_of(_Node("shared", key)):
            for spec in self.rule(i).get("values", []):
                if prop in self.spec_props(i, spec) and "path" in spec:
                    out.append(Expr("select", (where(entries(self.rule(i)["resources"]),
                                                     and_([self.base(i), self.subject_ok()])),
                                               self.raw(spec))))
        if not out:
            return EMPTY
        res = out[0]
        for o in out[1:]:
            res = Expr("union", (res, o))
        return res

    def member(self, expr: Node, node: _Node, stack: frozenset[Node] = frozenset()) -> Expr:
        """The tree of "``node`` is a member of ``expr``" (two-valued)."""
        if expr == OWL.Thing:
            return TRUE
        if isinstance(expr, URIRef):
            d = self.definition(expr)
            if d is not None and expr not in stack:
                return self.member(d, node, stack | {expr})
            return self.has_type(expr, node)
        if not isinstance(expr, BNode):
            raise UnsupportedExpression(f"unexpected class expression {expr!r}")
        if (m := self.tbox.value(expr, OWL.intersectionOf)) is not None:
            return and_(self.member(x, node, stack) for x in _list(self.tbox, m))
        if (m := self.tbox.value(expr, OWL.unionOf)) is not None:
            return or_(self.member(x, node, stack) for x in _list(self.tbox, m))
        prop = self.tbox.value(expr, OWL.onProperty)
        if isinstance(prop, URIRef):
            if (value := self.tbox.value(expr, OWL.hasValue)) is not None:
                test = ("literal", value) if isinstance(value, Literal) else ("terms", {value})
                return self.property_test(node, prop, test, None, stack)
            if (filler := self.tbox.value(expr, OWL.someValuesFrom)) is not None:
                return self.property_test(node, prop, None, filler, stack)
        raise UnsupportedExpression(
            f"the FHIR compiler cannot evaluate this class expression (intersection, union, someValuesFrom and "
            f"hasValue only): {sorted(str(p) for p in self.tbox.predicates(expr))}")

    def has_type(self, cls: URIRef, node: _Node) -> Expr:
        below = self.subclasses(cls)
        if node.kind == "patient":
            return TRUE if GK.Patient in below else FALSE
        parts = []
        for i in self.rules_of(node):
            spec = self.rule(i)["node"]
            if spec.get("type") and self.mapping.expand(spec["type"]) in below:
                cond = TRUE
            elif spec.get("typeFromTerm"):
                cond = self.value_terms(i, below)
            else:
                continue
            parts.append(cond if node.kind == "resource" else self.on_entries([i], lambda _j, c=cond: c))
        return or_(parts)

    def is_datarange(self, node: Node) -> bool:
        if isinstance(node, URIRef):
            return (str(node).startswith(str(XSD)) or node == RDFS.Literal
                    or (node, RDF.type, RDFS.Datatype) in self.tbox)
        return (node, RDF.type, RDFS.Datatype) in self.tbox or any(
            self.tbox.value(node, p) is not None for p in (OWL.onDatatype, OWL.datatypeComplementOf))

    def property_test(self, node: _Node, prop: URIRef, test: tuple[str, Any] | None, filler: Node | None,
                      stack: frozenset[Node]) -> Expr:
        """``node`` has a value of ``prop`` that passes ``test`` (hasValue) or is in ``filler`` (someValuesFrom)."""
        links = [i for i, r in enumerate(self.mapping.rules)
                 if r["node"].get("link") and self.mapping.expand(r["node"]["link"]) == prop]
        if links:
            if node.kind != "patient":
                raise UnsupportedExpression(f"{prop} links the patient to a node; used on another node")
            if test is not None:
                raise UnsupportedExpression(f"hasValue on the object property {prop} is not supported")
            assert filler is not None
            parts = []
            for key in sorted({self.rule(i)["node"]["key"] for i in links if self.rule(i)["node"]["kind"] == "shared"}):
                shared = _Node("shared", key)
                exists_node = self.on_entries([i for i in links if self.rule(i)["node"].get("key") == key],
                                              lambda _i: TRUE)
                parts.append(and_([exists_node, self.member(filler, shared, stack)]))
            for i in links:
                if self.rule(i)["node"]["kind"] == "resource":
                    parts.append(self.on_entries([i], lambda _i, i0=i: self.member(filler, _Node("resource", rule=i0),
                                                                                 stack)))
            return or_(parts)
        if test is None:
            assert filler is not None
            found: tuple[str, Any] = (("range", filler) if self.is_datarange(filler)
                                      else ("terms", self.individuals(filler)))
            test = found
        parts = []
        # terms recorded as the value of prop (termAsValueOf)
        for i in self.rules_of(node):
            spec = self.rule(i)["node"]
            if spec.get("termAsValueOf") and self.mapping.expand(spec["termAsValueOf"]) == prop:
                if test[0] != "terms":
                    raise UnsupportedExpression(f"rule {self.rid(i)} records terms as {prop}; compared with {test}")
                cond = self.value_terms(i, test[1])
                parts.append(cond if node.kind == "resource" else self.on_entries([i], lambda _j, c=cond: c))
            for vspec in self.rule(i).get("values", []):
                if "from" in vspec or prop not in self.spec_props(i, vspec):
                    continue
                cond = self.spec_test(i, vspec, prop, test)
                parts.append(cond if node.kind == "resource" else self.on_entries([i], lambda _j, c=cond: c))
        if node.kind == "resource":  # values a referenced rule writes on this resource's node
            for i in self.referencing(node):
                conds = [self.spec_test(i, vspec, prop, test) for vspec in self.rule(i).get("values", [])
                         if prop in self.spec_props(i, vspec)]
                cond = or_(conds)
                if cond == FALSE:
                    continue
                path = self.rule(i)["node"]["path"]
                others = Expr("select", (where(entries(self.rule(i)["resources"]),
                                               and_([self.applies(i, False), cond, self.subject_ok()])),
                                         first(first_of(nav(THIS, "resource"), path))))
                parts.append(exists(Expr("refIntersect", (Expr("refsOf", (THIS,)), others))))
        if node.kind == "patient":
            for i, rule in enumerate(self.mapping.rules):  # constants a rule writes on the patient
                for vspec in rule.get("patientValues", []):
                    if self.mapping.expand(vspec["property"]) != prop or not self.literal_passes(
                            Literal(vspec["const"]), test if test[0] != "terms" else ("terms", set())):
                        continue
                    extra = []
                    if vspec.get("status"):
                        extra.append(exists(where(nav(THIS, "resource", "status"), in_(THIS, vspec["status"]))))
                    if vspec.get("terms"):
                        extra.append(self.value_terms(i, [self.mapping.expand(t) for t in vspec["terms"]]))
                    parts.append(self.on_entries([i], lambda _j, e=extra: and_(e)))
            for vspec in self.mapping.patient.get("values", []):
                if self.mapping.expand(vspec["property"]) == prop:
                    parts.append(self.patient_value(vspec, prop, test))
        return or_(parts)

    def patient_value(self, spec: dict[str, Any], prop: URIRef, test: tuple[str, Any]) -> Expr:
        """The Patient resource has, for ``prop`` (a value of the mapping's ``patient``), a value that passes
        ``test``: the first value at the spec's path, converted as ``cases.fhir_in`` converts it (the first Patient
        entry: a Bundle with two is not a valid case)."""
        kind, (what, arg) = spec.get("as", "string"), test
        if kind != "yearsToAssessment" or "path" not in spec:
            raise UnsupportedExpression(f"a population reads {prop}, a {kind} value of the Patient resource; only "
                                        "yearsToAssessment is supported by the FHIR compiler")
        if what == "terms":
            return FALSE
        assessment = first(nav(ROOT, self.mapping.assessment_date)) if self.mapping.assessment_date else EMPTY
        age = whole_years(THIS, assessment)
        hit = self.literal_eq(arg, age, XSD.integer) if what == "literal" else self.range_test(arg, age, XSD.integer)
        patient = self.mapping.patient.get("resourceType", "Patient")
        return exists(where(Expr("select", (first(entries([patient])), self.raw(spec))),
                            and_([exists(assessment), Expr("isDate", (THIS,)), hit])))

    # --- statements -----------------------------------------------------------------------------------------
    def label(self, node: URIRef) -> str:
        value = self.tbox.value(node, RDFS.label)
        return str(value) if value is not None else str(node)

    def statements(self) -> list[Statement]:
        """Every statement with a population, compiled."""
        out = []
        for statement, population, conditions in statements_of(self.tbox):
            conds = []
            for cls, neg in conditions:
                try:
                    conds.append(Condition(cls, neg, self.label(cls), self.member(cls, _PATIENT),
                                           self.member(neg, _PATIENT)))
                except UnsupportedExpression as exc:
                    raise UnsupportedExpression(f"{statement}: condition {cls}: {exc}") from None
            out.append(Statement(statement, population, tuple(conds)))
        return out


def codes_index(mapping: MappingData) -> Mapping[tuple[str, str], list[tuple[URIRef, URIRef]]]:
    """The mapping's code index (for tests and reports)."""
    return mapping.codes
