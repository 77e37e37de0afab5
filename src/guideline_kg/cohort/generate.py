"""Synthetic patient cohorts for population-scale runs: generated record by record, written as they are made.

Everything a record holds comes from a cohort profile (the guideline package's ``cohort-profile.json``; format in
``docs/cohort.md``): which nodes a record has and how they are linked, their types and properties, every
distribution, rate, dependency and date, and the defects planted so that validation has work. This module is a
small interpreter of that format and knows no term of any guideline: the numbers are synthetic-data parameters,
not clinical rules (a guideline's thresholds live only in its definitions). Each record starts with a marker
comment ``# case <name>`` so that readers can cut a file into shards of whole cases (:mod:`shards`). A record is a
list of triples whose terms are CURIEs (``gk:Patient``, ``case:x-p0000001``) or literals ``(lexical, datatype
CURIE)``; the CURIE prefixes are the project's plus those the profile declares.

The profile is checked completely when it is loaded (every key, kind of value, CURIE prefix and reference to a
node or variable), so a defect is reported with the profile file and the key path before any record is drawn.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TextIO

from guideline_kg.cases.fhir_out import BundleOut, ReverseRules, bundle_line, facts_to_bundle, reverse_rules
from guideline_kg.core.dates import months_between
from guideline_kg.core.errors import InputError
from guideline_kg.core.files import TOO_DEEP, read_input_text
from guideline_kg.core.namespaces import PREFIXES

__all__ = ["FORMATS", "MARKER", "Profile", "Record", "expand", "generate", "load_profile", "plant_defect",
           "record_facts", "record_to_bundle", "record_to_ntriples", "record_to_turtle", "turtle_header",
           "write_cohort"]

#: Output formats of `cohort generate`.
FORMATS = ("turtle", "ntriples", "fhir-ndjson")
#: Comment line that starts each case record in a Turtle or N-Triples cohort file.
MARKER = "# case "

Term = str | tuple[str, str]  # CURIE, or (lexical form, datatype CURIE)
Triple = tuple[str, str, Term]

#: Days per month when a date is moved by a number of months drawn from a distribution.
DAYS_PER_MONTH = 30.44
_DEFAULT_NS = {p: str(ns) for p, ns in PREFIXES.items()}


@dataclass
class Record:
    """One generated case: its name, root-node CURIE, triples, and the defect planted in it (if any)."""

    name: str
    patient: str
    triples: list[Triple]
    defect: str | None = None
    profile: Profile | None = field(default=None, repr=False, compare=False)

    @property
    def namespaces(self) -> dict[str, str]:
        return self.profile.namespaces if self.profile is not None else _DEFAULT_NS


# ---- the drawing context of one record ---------------------------------------------------------------------
class _Ctx:
    """What one record's steps share: the random stream, the anchor date, variables, node IRIs, the triples."""

    __slots__ = ("anchor", "me", "rng", "triples", "vars")

    def __init__(self, rng: random.Random, anchor: date, me: str) -> None:
        self.rng, self.anchor, self.me = rng, anchor, me
        self.vars: dict[str, Any] = {}
        self.triples: list[Triple] = []

    def iri(self, node: str, root: str) -> str:
        return self.me if node == root else f"{self.me}-{node}"


Value = Callable[[_Ctx], Any]          # None means "missing": no fact is written
Cond = Callable[[_Ctx], bool]
Step = Callable[[_Ctx], None]
PropStep = Callable[[_Ctx, str, list[Triple]], bool]  # False: a required value is missing, drop the node

_VALUE_KINDS = ("const", "var", "node", "weights", "one_of", "normal", "lognormal", "uniform", "date",
                "months_between", "if")
_COND_KINDS = ("var", "present", "all", "any", "not")
_LITERAL_TYPES = ("xsd:integer", "xsd:decimal", "xsd:boolean", "xsd:date", "xsd:string")
_GATE_KEYS = ("when", "missing", "present")
_PROPERTY_KEYS = ("property", "value", "datatype", "decimals", "as", "required", "replace", *_GATE_KEYS)
#: The keys each construct may have besides its kind (keys starting with "_" are comments, allowed anywhere).
_KEYS = {
    "top": ("anchor_date", "case_prefix", "record", "prefixes", "invalid"),
    "invalid": ("rate", "defects"), "defect": ("weight", "steps"), "link": ("from", "property"),
    "node": ("node", "link", "properties", *_GATE_KEYS), "subject": ("subject", *_PROPERTY_KEYS),
    "let": ("let", "value"), "property": _PROPERTY_KEYS, "group": ("properties", *_GATE_KEYS),
    "const": ("const",), "var": ("var",), "weights": ("weights",), "one_of": ("one_of",),
    "normal": ("normal", "min", "max", "round"), "lognormal": ("lognormal", "min", "max", "round"),
    "uniform": ("uniform", "min", "max", "round"), "date": ("date", "minus_months", "plus_months", "not_after"),
    "months_between": ("months_between", "decimals"), "if": ("if", "then", "else"),
    "cond:var": ("var", "equals", "in"), "cond:present": ("present",), "cond:all": ("all",), "cond:any": ("any",),
    "cond:not": ("not",), "normal()": ("mean", "sd"), "lognormal()": ("mu", "sigma"), "uniform()": ("min", "max"),
}


class _Compiler:
    """Turns the profile's JSON into closures, checking every key on the way (errors name file and key path)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.source = profile.source
        self.root = ""
        self.nodes: set[str] = set()
        self.vars: set[str] = set()

    # -- errors and plain keys ---------------------------------------------------------------------------------
    def fail(self, where: str, message: str) -> InputError:
        return InputError(f"cohort profile key {where}: {message} (see docs/cohort.md)", path=self.source)

    def need(self, spec: Any, key: str, where: str) -> Any:
        if not isinstance(spec, dict):
            raise self.fail(where, f"expected a JSON object, got {type(spec).__name__}")
        if key not in spec:
            raise self.fail(where, f"missing required key {key!r}")
        return spec[key]

    def obj(self, spec: Any, where: str, kind: str | None = None) -> dict[str, Any]:
        """``spec`` as an object; with ``kind``, one that has only the keys of that construct."""
        if not isinstance(spec, dict):
            raise self.fail(where, f"expected a JSON object, got {json.dumps(spec)[:60]}")
        if kind is not None:
            allowed = _KEYS[kind]
            unknown = [k for k in spec if k not in allowed and not str(k).startswith("_")]
            if unknown:
                raise self.fail(where, f"unknown key {unknown[0]!r} (allowed here: {', '.join(allowed)})")
        return spec

    def number(self, spec: Any, key: str, where: str) -> float:
        value = self.need(spec, key, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{where}.{key}", f"expected a number, got {json.dumps(value)[:60]}")
        return float(value)

    def curie(self, text: Any, where: str) -> str:
        if not isinstance(text, str) or ":" not in text:
            raise self.fail(where, f"expected a CURIE such as gk:Patient, got {json.dumps(text)[:60]}")
        prefix = text.split(":", 1)[0]
        if prefix not in self.profile.namespaces:
            raise self.fail(where, f"unknown prefix {prefix!r} in {text!r} (declare it under \"prefixes\")")
        return text

    def curies(self, text: Any, where: str) -> None:
        """A term value: one CURIE, or several separated by spaces (several facts)."""
        if not isinstance(text, str):
            raise self.fail(where, f"expected a CURIE, got {json.dumps(text)[:60]}")
        for part in text.split():
            self.curie(part, where)

    def known_node(self, name: Any, where: str) -> str:
        if name not in self.nodes:
            raise self.fail(where, f"no node named {name!r} is declared before this step "
                                   f"(declared: {', '.join(sorted(self.nodes)) or 'none'})")
        return str(name)

    def known_var(self, name: Any, where: str) -> str:
        if name not in self.vars:
            raise self.fail(where, f"no variable named {name!r} is set before this step "
                                   f"(set so far: {', '.join(sorted(self.vars)) or 'none'})")
        return str(name)

    # -- values -----------------------------------------------------------------------------------------------
    def value(self, spec: Any, where: str) -> Value:
        spec = self.obj(spec, where)
        kinds = [k for k in _VALUE_KINDS if k in spec]
        if len(kinds) != 1:
            raise self.fail(where, f"a value needs exactly one of {', '.join(_VALUE_KINDS)}; got "
                                   f"{', '.join(spec) or 'nothing'}")
        kind = kinds[0]
        self.obj(spec, where, kind)
        fn = getattr(self, "_v_" + kind)(spec, f"{where}.{kind}")
        return self._numeric_modifiers(spec, where, fn) if kind in ("normal", "lognormal", "uniform") else fn

    def _v_const(self, spec: dict[str, Any], where: str) -> Value:
        v = spec["const"]
        return lambda c: v

    def _v_var(self, spec: dict[str, Any], where: str) -> Value:
        name = self.known_var(spec["var"], where)
        return lambda c: c.vars.get(name)

    def _v_node(self, spec: dict[str, Any], where: str) -> Value:
        name, root = self.known_node(spec["node"], where), self.root
        return lambda c: c.iri(name, root) if c.vars.get(name) else None

    def _v_weights(self, spec: dict[str, Any], where: str) -> Value:
        return self.weighted(spec["weights"], where, allow_missing=True)

    def weighted(self, weights: Any, where: str, allow_missing: bool) -> Value:
        weights = self.obj(weights, where)
        if not weights:
            raise self.fail(where, "no choices")
        for k, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
                raise self.fail(f"{where}.{k}", f"a weight must be a number >= 0, got {json.dumps(w)[:60]}")
        if "missing" in weights and not allow_missing:
            raise self.fail(where, "\"missing\" is not allowed here")
        total = float(sum(weights.values()))
        if total <= 0:
            raise self.fail(where, "weights that sum to zero")
        keys, cum, acc = list(weights), [], 0.0
        for k in keys:
            acc += weights[k] / total
            cum.append(acc)
        values = [None if k == "missing" and allow_missing else k for k in keys]
        last = len(keys) - 1
        return lambda c: values[min(bisect.bisect_left(cum, c.rng.random()), last)]

    def _v_one_of(self, spec: dict[str, Any], where: str) -> Value:
        options = spec["one_of"]
        if not isinstance(options, list) or not options:
            raise self.fail(where, "expected a non-empty list")
        return lambda c: c.rng.choice(options)

    def _v_normal(self, spec: dict[str, Any], where: str) -> Value:
        p = self.obj(spec["normal"], where, "normal()")
        mean, sd = self.number(p, "mean", where), self.number(p, "sd", where)
        return lambda c: c.rng.gauss(mean, sd)

    def _v_lognormal(self, spec: dict[str, Any], where: str) -> Value:
        p = self.obj(spec["lognormal"], where, "lognormal()")
        mu, sigma = self.number(p, "mu", where), self.number(p, "sigma", where)
        return lambda c: c.rng.lognormvariate(mu, sigma)

    def _v_uniform(self, spec: dict[str, Any], where: str) -> Value:
        p = self.obj(spec["uniform"], where, "uniform()")
        lo, hi = self.number(p, "min", where), self.number(p, "max", where)
        return lambda c: c.rng.uniform(lo, hi)

    def _numeric_modifiers(self, spec: dict[str, Any], where: str, draw: Value) -> Value:
        lo = self.number(spec, "min", where) if "min" in spec else -math.inf
        hi = self.number(spec, "max", where) if "max" in spec else math.inf
        digits = int(self.number(spec, "round", where)) if "round" in spec else None
        if digits is None:
            return lambda c: min(max(draw(c), lo), hi)
        if digits == 0:
            return lambda c: round(min(max(draw(c), lo), hi))
        return lambda c: round(min(max(draw(c), lo), hi), digits)

    def months(self, spec: Any, where: str) -> Value:
        """A number of months: a number, a variable's name, or a value."""
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return lambda c: spec
        if isinstance(spec, str):
            name = self.known_var(spec, where)
            return lambda c: c.vars.get(name)
        return self.value(spec, where)

    def a_date(self, spec: Any, where: str) -> Value:
        """``"anchor"`` (the profile's anchor date), an ISO date, or a variable holding a date."""
        if spec == "anchor":
            return lambda c: c.anchor
        if isinstance(spec, str):
            try:
                d = date.fromisoformat(spec)
                return lambda c: d
            except ValueError:
                name = self.known_var(spec, where)
                return lambda c: c.vars.get(name)
        raise self.fail(where, f"expected \"anchor\", an ISO date or a variable name, got {json.dumps(spec)[:60]}")

    def _v_date(self, spec: dict[str, Any], where: str) -> Value:
        base = self.a_date(spec["date"], where)
        shifts: list[tuple[int, Value]] = []
        for key, sign in (("plus_months", 1), ("minus_months", -1)):
            if key in spec:
                shifts.append((sign, self.months(spec[key], f"{where[:-5]}.{key}")))
        cap = self.a_date(spec["not_after"], f"{where[:-5]}.not_after") if "not_after" in spec else None

        def fn(c: _Ctx) -> date | None:
            d = base(c)
            if d is None:
                return None
            for sign, m in shifts:
                months = m(c)
                if months is None:
                    return None
                d = d + sign * timedelta(days=round(months * DAYS_PER_MONTH))
            if cap is not None:
                limit = cap(c)
                if limit is not None:
                    d = min(d, limit)
            return d
        return fn

    def _v_months_between(self, spec: dict[str, Any], where: str) -> Value:
        ends = spec["months_between"]
        if not isinstance(ends, list) or len(ends) != 2:
            raise self.fail(where, "expected [start, end] (dates: \"anchor\", ISO dates or variables)")
        start, end = self.a_date(ends[0], f"{where}[0]"), self.a_date(ends[1], f"{where}[1]")
        quantum = Decimal(1).scaleb(-int(self.number(spec, "decimals", where[:-15]) if "decimals" in spec else 1))

        def fn(c: _Ctx) -> str | None:
            a, b = start(c), end(c)
            if a is None or b is None:
                return None
            return str(Decimal(str(months_between(a, b))).quantize(quantum, rounding=ROUND_HALF_UP))
        return fn

    def _v_if(self, spec: dict[str, Any], where: str) -> Value:
        cond = self.cond(spec["if"], where)
        then = self.value(self.need(spec, "then", where[:-3]), f"{where[:-3]}.then")
        other = self.value(spec["else"], f"{where[:-3]}.else") if "else" in spec else (lambda c: None)
        return lambda c: then(c) if cond(c) else other(c)

    def probability(self, spec: Any, where: str) -> Value:
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            if not 0 <= spec <= 1:
                raise self.fail(where, f"a probability must be from 0 to 1, got {spec}")
            return lambda c: spec
        return self.value(spec, where)

    # -- conditions -------------------------------------------------------------------------------------------
    def cond(self, spec: Any, where: str) -> Cond:
        spec = self.obj(spec, where)
        kinds = [k for k in _COND_KINDS if k in spec]
        if len(kinds) != 1:
            raise self.fail(where, f"a condition needs exactly one of {', '.join(_COND_KINDS)}")
        kind = kinds[0]
        self.obj(spec, where, "cond:" + kind)
        if kind == "var":
            name = self.known_var(spec["var"], f"{where}.var")
            if "equals" in spec:
                want = spec["equals"]
                return lambda c: c.vars.get(name) == want
            if "in" in spec:
                wanted = list(spec["in"])
                return lambda c: c.vars.get(name) in wanted
            return lambda c: c.vars.get(name) is not None
        if kind == "present":
            node = self.known_node(spec["present"], f"{where}.present")
            return lambda c: bool(c.vars.get(node))
        if kind == "not":
            inner = self.cond(spec["not"], f"{where}.not")
            return lambda c: not inner(c)
        parts = spec[kind]
        if not isinstance(parts, list) or not parts:
            raise self.fail(f"{where}.{kind}", "expected a non-empty list of conditions")
        conds = [self.cond(p, f"{where}.{kind}[{i}]") for i, p in enumerate(parts)]
        if kind == "all":
            return lambda c: all(f(c) for f in conds)
        return lambda c: any(f(c) for f in conds)

    # -- gates: when / missing / present ----------------------------------------------------------------------
    def gate(self, spec: dict[str, Any], where: str) -> Cond:
        """``when`` (a condition, no draw), then ``missing`` (left out with this chance) or ``present``."""
        if "missing" in spec and "present" in spec:
            raise self.fail(where, "give \"missing\" or \"present\", not both")
        when = self.cond(spec["when"], f"{where}.when") if "when" in spec else None
        chance: Value | None = None
        keep_below = False
        if "missing" in spec:
            chance = self.probability(spec["missing"], f"{where}.missing")
        elif "present" in spec:
            chance, keep_below = self.probability(spec["present"], f"{where}.present"), True
        if chance is None:
            return (lambda c: True) if when is None else when
        p = chance

        def fn(c: _Ctx) -> bool:
            if when is not None and not when(c):
                return False
            return (c.rng.random() < p(c)) if keep_below else (c.rng.random() >= p(c))
        return fn

    # -- terms --------------------------------------------------------------------------------------------------
    def term_maker(self, spec: dict[str, Any], where: str) -> Callable[[Any], list[Term]]:
        datatype = spec.get("datatype")
        if datatype is not None and datatype not in _LITERAL_TYPES:
            raise self.fail(f"{where}.datatype", f"expected one of {', '.join(_LITERAL_TYPES)}, got {datatype!r}")
        decimals = int(self.number(spec, "decimals", where)) if "decimals" in spec else 1
        self._check_constants(spec.get("value"), datatype, f"{where}.value")

        def make(v: Any) -> list[Term]:
            if isinstance(v, date):
                return [(v.isoformat(), "xsd:date")]
            if datatype is None:
                if isinstance(v, bool):
                    return [("true" if v else "false", "xsd:boolean")]
                if isinstance(v, int):
                    return [(str(v), "xsd:integer")]
                if isinstance(v, float):
                    return [(f"{v:.{decimals}f}", "xsd:decimal")]
                return list(str(v).split())
            if isinstance(v, bool):
                return [("true" if v else "false", datatype)]
            if isinstance(v, (int, float)):
                if datatype == "xsd:integer":
                    return [(str(round(v)), datatype)]
                if datatype == "xsd:decimal":
                    return [(f"{v:.{decimals}f}", datatype)]
            return [(str(v), datatype)]
        return make

    def _check_constants(self, spec: Any, datatype: str | None, where: str) -> None:
        """CURIEs written in the profile as term values (const, weights keys, one_of) must have known prefixes."""
        if datatype is not None or not isinstance(spec, dict):
            return
        if isinstance(spec.get("const"), str):
            self.curies(spec["const"], f"{where}.const")
        if isinstance(spec.get("weights"), dict):
            for k in spec["weights"]:
                if k != "missing":
                    self.curies(k, f"{where}.weights.{k}")
        if isinstance(spec.get("one_of"), list):
            for i, k in enumerate(spec["one_of"]):
                if isinstance(k, str):
                    self.curies(k, f"{where}.one_of[{i}]")
        for key in ("then", "else"):
            self._check_constants(spec.get(key), datatype, f"{where}.{key}")

    # -- steps ------------------------------------------------------------------------------------------------
    def prop(self, spec: Any, where: str) -> PropStep:
        """A property of the current node (``property``, ``value``), or a group of them (``properties``)."""
        spec = self.obj(spec, where)
        gate = self.gate(spec, where)
        if "property" not in spec:
            items = self.need(spec, "properties", where + " (a property needs \"property\" and \"value\")")
            self.obj(spec, where, "group")
            if not isinstance(items, list):
                raise self.fail(f"{where}.properties", "expected a list")
            parts = [self.prop(p, f"{where}.properties[{i}]") for i, p in enumerate(items)]

            def group(c: _Ctx, subject: str, out: list[Triple]) -> bool:
                if gate(c):
                    for part in parts:
                        if not part(c, subject, out):
                            return False
                return True
            return group
        self.obj(spec, where, "property")
        pred = self.curie(spec["property"], f"{where}.property")
        value = self.value(self.need(spec, "value", where), f"{where}.value")
        make = self.term_maker(spec, where)
        required = bool(spec.get("required", False))
        replace = bool(spec.get("replace", False))
        name = spec.get("as")
        if name is not None:
            if not isinstance(name, str):
                raise self.fail(f"{where}.as", "expected a variable name")
            self.vars.add(name)

        def fn(c: _Ctx, subject: str, out: list[Triple]) -> bool:
            v = value(c) if gate(c) else None
            if name is not None:
                c.vars[name] = v
            if v is None:
                return not required
            terms = make(v)
            if replace and len(terms) == 1:
                for i, (s, p, _) in enumerate(out):
                    if s == subject and p == pred:
                        out[i] = (s, p, terms[0])
                        return True
            out.extend((subject, pred, t) for t in terms)
            return True
        return fn

    def step(self, spec: Any, where: str) -> Step:
        spec = self.obj(spec, where)
        if "let" in spec:
            name = spec["let"]
            if not isinstance(name, str):
                raise self.fail(f"{where}.let", "expected a variable name")
            self.obj(spec, where, "let")
            value = self.value(self.need(spec, "value", where), f"{where}.value")
            self.vars.add(name)

            def let(c: _Ctx) -> None:
                c.vars[name] = value(c)
            return let
        if "node" in spec:
            return self.node(spec, where)
        if "subject" in spec:
            self.obj(spec, where, "subject")
            subject, root = self.known_node(spec["subject"], f"{where}.subject"), self.root
            prop = self.prop({k: v for k, v in spec.items() if k != "subject"}, where)

            def on(c: _Ctx) -> None:
                prop(c, c.iri(subject, root), c.triples)
            return on
        raise self.fail(where, "a step needs \"node\", \"subject\" or \"let\"")

    def node(self, spec: dict[str, Any], where: str) -> Step:
        self.obj(spec, where, "node")
        name = spec["node"]
        if not isinstance(name, str) or not name or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise self.fail(f"{where}.node", f"a node name is letters, digits, - and _ (got {json.dumps(name)})")
        is_root = not self.nodes and not self.root
        if is_root:
            self.root = name
        link = None
        if "link" in spec:
            link_spec = self.obj(spec["link"], f"{where}.link", "link")
            link = (self.known_node(self.need(link_spec, "from", f"{where}.link"), f"{where}.link.from"),
                    self.curie(self.need(link_spec, "property", f"{where}.link"), f"{where}.link.property"))
        elif not is_root and name not in self.nodes:
            raise self.fail(where, "a node other than the first (the case's root) needs a \"link\" "
                                   "{\"from\": node, \"property\": CURIE}")
        gate = self.gate(spec, where)
        items = spec.get("properties", [])
        if not isinstance(items, list):
            raise self.fail(f"{where}.properties", "expected a list")
        self.nodes.add(name)
        parts = [self.prop(p, f"{where}.properties[{i}]") for i, p in enumerate(items)]
        root = self.root

        def fn(c: _Ctx) -> None:
            if not gate(c):
                return
            me = c.iri(name, root)
            out: list[Triple] = [(c.iri(link[0], root), link[1], me)] if link else []
            for part in parts:
                if not part(c, me, out):
                    return  # a required value is missing: the node is not in the record
            c.triples.extend(out)
            c.vars[name] = True
        return fn


@dataclass
class _Compiled:
    """A checked profile: the anchor date, the case name prefix, the record's steps and the planted defects."""

    anchor: date
    case_prefix: str
    steps: list[Step]
    defect_rate: Value
    choose_defect: Value
    defects: dict[str, list[Step]]


class Profile:
    """A cohort profile (parsed JSON), compiled once into the steps that draw a record."""

    def __init__(self, data: dict[str, Any], source: str = "<profile>") -> None:
        self.source = source
        self._compiled: _Compiled | None = None
        self.data = data

    @property
    def data(self) -> dict[str, Any]:
        """The profile's JSON; replacing it (a test raising a rate, say) recompiles on the next draw."""
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data = value
        self._compiled = None

    def __getitem__(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise InputError(f"cohort profile has no key {key!r} (see docs/cohort.md)", path=self.source) from None

    @property
    def namespaces(self) -> dict[str, str]:
        """The CURIE prefixes of the records: the project's, and the profile's ``prefixes``."""
        extra = self.data.get("prefixes", {}) if isinstance(self.data, dict) else {}
        return {**_DEFAULT_NS, **(extra if isinstance(extra, dict) else {})}

    def compile(self) -> _Compiled:
        """The profile checked and turned into the steps that draw a record (once; again after ``data`` changes)."""
        if self._compiled is not None:
            return self._compiled
        comp = _Compiler(self)
        data = comp.obj(self.data, "(top level)", "top")
        prefixes = data.get("prefixes", {})
        if not isinstance(prefixes, dict) or not all(isinstance(v, str) for v in prefixes.values()):
            raise comp.fail("prefixes", "expected an object of prefix -> namespace IRI")
        anchor_text = self["anchor_date"]
        try:
            anchor = date.fromisoformat(str(anchor_text))
        except ValueError:
            raise comp.fail("anchor_date", f"expected an ISO date (YYYY-MM-DD), got {anchor_text!r}") from None
        case_prefix = self["case_prefix"]
        if not isinstance(case_prefix, str) or not case_prefix:
            raise comp.fail("case_prefix", "expected a non-empty string")
        steps_spec = self["record"]
        if not isinstance(steps_spec, list) or not steps_spec:
            raise comp.fail("record", "expected a non-empty list of steps")
        first = steps_spec[0]
        if not isinstance(first, dict) or "node" not in first:
            raise comp.fail("record[0]", "the first step declares the case's root node ({\"node\": name, ...})")
        steps = [comp.step(s, f"record[{i}]") for i, s in enumerate(steps_spec)]
        rate: Value = lambda c: 0.0  # noqa: E731
        choose: Value = lambda c: None  # noqa: E731
        plants: dict[str, list[Step]] = {}
        if "invalid" in data:
            inv = comp.obj(data["invalid"], "invalid", "invalid")
            rate = comp.probability(comp.need(inv, "rate", "invalid"), "invalid.rate")
            defects = comp.obj(comp.need(inv, "defects", "invalid"), "invalid.defects")
            weights: dict[str, float] = {}
            for name, spec in defects.items():
                where = f"invalid.defects.{name}"
                d = comp.obj(spec, where, "defect")
                weights[name] = comp.number(d, "weight", where)
                steps_of = comp.need(d, "steps", where)
                if not isinstance(steps_of, list) or not steps_of:
                    raise comp.fail(f"{where}.steps", "expected a non-empty list of steps")
                plants[name] = [comp.step(s, f"{where}.steps[{i}]") for i, s in enumerate(steps_of)]
            if defects:
                choose = comp.weighted(weights, "invalid.defects", allow_missing=False)
        self._compiled = _Compiled(anchor, case_prefix, steps, rate, choose, plants)
        return self._compiled

    def draw(self, rng: random.Random, name: str) -> Record:
        """One record drawn from the profile."""
        compiled = self.compile()
        c = _Ctx(rng, compiled.anchor, f"case:{name}")
        for step in compiled.steps:
            step(c)
        record = Record(name, c.me, c.triples, profile=self)
        if rng.random() < compiled.defect_rate(c):
            defect = compiled.choose_defect(c)
            if defect is not None:
                self._plant(record, defect, c)
        return record

    def plant(self, record: Record, defect: str) -> None:
        """Break ``record`` in the named way of the profile's ``invalid.defects`` (the defect is kept on it)."""
        self._plant(record, defect, _Ctx(random.Random(0), self.compile().anchor, record.patient))

    def _plant(self, record: Record, defect: str, c: _Ctx) -> None:
        plants = self.compile().defects
        if defect not in plants:
            raise InputError(f"cohort profile has no defect {defect!r} under invalid.defects "
                             f"(known: {', '.join(sorted(plants)) or 'none'})", path=self.source)
        c.me, c.triples = record.patient, record.triples
        for step in plants[defect]:
            step(c)
        record.defect = defect


def plant_defect(record: Record, defect: str) -> None:
    """Break a generated record in one of its profile's named ways (``invalid.defects``)."""
    if record.profile is None:
        raise InputError("the record was not drawn from a cohort profile")
    record.profile.plant(record, defect)


def load_profile(path: Path) -> Profile:
    """Read and check a cohort profile (JSON), naming the file and the place or key of a defect."""
    if Path(path).is_dir():
        raise InputError("is a folder, not a cohort profile (JSON)", path=str(path))
    if not Path(path).exists():
        raise InputError("no such cohort profile", path=str(path))
    try:  # a regular file within the input size limit (never a FIFO or an endless device), UTF-8
        data = json.loads(read_input_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=exc.lineno, column=exc.colno) from None
    except RecursionError:
        raise InputError(f"malformed JSON: {TOO_DEEP}", path=str(path)) from None
    profile = Profile(data, str(path))
    try:
        profile.compile()
    except RecursionError:
        raise InputError(f"cohort profile: {TOO_DEEP}", path=str(path)) from None
    return profile


def generate(profile: Profile, n: int, seed: int = 0) -> Iterator[Record]:
    """``n`` case records, one at a time; the same seed and profile give the same records."""
    if n < 0:
        raise InputError(f"--n must not be negative (got {n})")
    prefix = f"{profile.compile().case_prefix}{seed}"
    rng = random.Random(seed)
    width = max(7, len(str(n)))
    for i in range(1, n + 1):
        yield profile.draw(rng, f"{prefix}-p{i:0{width}d}")


# ---- serialisation ------------------------------------------------------------------------------------------
def expand(curie: str, namespaces: dict[str, str] | None = None) -> str:
    """The full IRI of a CURIE (the project's prefixes, or the given ones)."""
    prefix, _, local = curie.partition(":")
    return (namespaces or _DEFAULT_NS)[prefix] + local


def _nt(term: Term, ns: dict[str, str]) -> str:
    if isinstance(term, tuple):
        lexical = json.dumps(term[0], ensure_ascii=False)
        return lexical if term[1] == "xsd:string" else f"{lexical}^^<{expand(term[1], ns)}>"
    return f"<{expand(term, ns)}>"


def _ttl(term: Term) -> str:
    if isinstance(term, tuple):
        lex, dt = term
        if dt in ("xsd:integer", "xsd:boolean") or (dt == "xsd:decimal" and "." in lex):
            return lex
        if dt == "xsd:string":
            return json.dumps(lex, ensure_ascii=False)
        return f'"{lex}"^^{dt}'
    return "a" if term == "rdf:type" else term


def record_to_ntriples(record: Record) -> str:
    """The record as N-Triples, preceded by its marker line."""
    ns = record.namespaces
    return MARKER + record.name + "\n" + "".join(
        f"<{expand(s, ns)}> <{expand(p, ns)}> {_nt(o, ns)} .\n" for s, p, o in record.triples)


def record_to_turtle(record: Record) -> str:
    """The record as Turtle (subjects grouped), preceded by its marker line; needs :func:`turtle_header`."""
    by_subject: dict[str, list[str]] = {}
    for s, p, o in record.triples:
        by_subject.setdefault(s, []).append(f"{_ttl(p)} {_ttl(o)}")
    return MARKER + record.name + "\n" + "".join(
        f"{s} " + " ;\n    ".join(po) + " .\n" for s, po in by_subject.items())


def turtle_header(namespaces: dict[str, str] | None = None) -> str:
    """The @prefix lines a Turtle cohort file starts with."""
    return "".join(f"@prefix {p}: <{ns}> .\n" for p, ns in (namespaces or _DEFAULT_NS).items())


def record_facts(record: Record) -> list[tuple[str, str, str | tuple[str, str]]]:
    """The record's triples with full IRIs (literals as (lexical form, datatype IRI))."""
    ns = record.namespaces
    return [(expand(s, ns), expand(p, ns), (o[0], expand(o[1], ns)) if isinstance(o, tuple) else expand(o, ns))
            for s, p, o in record.triples]


def record_to_bundle(record: Record, rev: ReverseRules) -> BundleOut:
    """The record as a FHIR R4 Bundle (the Bundle and the facts it cannot carry), made by reading the
    guideline's FHIR case mapping in reverse (``rev``: :func:`fhir_out.reverse_rules`)."""
    return facts_to_bundle(record_facts(record), expand(record.patient, record.namespaces), record.name, rev)


def write_cohort(records: Iterator[Record], out: TextIO, fmt: str,
                 progress: Callable[[int], None] | None = None, project: Any = None) -> dict[str, Any]:
    """Write records as they come (memory stays flat); return counts of cases, triples and planted defects.

    For ``fhir-ndjson`` (one Bundle per line, by the project's FHIR mapping read in reverse) the counts also
    give ``unexpressed``: how many facts no mapping rule can carry, per predicate (they are not in the Bundles).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown cohort format {fmt!r} (expected one of {', '.join(FORMATS)})")
    counts: dict[str, Any] = {"cases": 0, "triples": 0, "invalid": 0}
    write: Callable[[Record], str]
    if fmt == "fhir-ndjson":
        rev = reverse_rules(project)
        lost: dict[str, int] = {}
        counts["unexpressed"] = lost

        def write(r: Record) -> str:
            made = record_to_bundle(r, rev)
            for (_, p, _), _why in made.unexpressed:
                lost[p] = lost.get(p, 0) + 1
            return bundle_line(made)
    elif fmt == "turtle":
        write = record_to_turtle
    else:
        write = record_to_ntriples
    header_due = fmt == "turtle"
    for r in records:
        if header_due:
            out.write(turtle_header(r.namespaces))
            header_due = False
        out.write(write(r))
        counts["cases"] += 1
        counts["triples"] += len(r.triples)
        counts["invalid"] += r.defect is not None
        if progress:
            progress(1)
    if header_due:
        out.write(turtle_header())
    return counts
