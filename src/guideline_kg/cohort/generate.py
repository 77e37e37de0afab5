"""Synthetic patient cohorts for population-scale runs: generated record by record, written as they are made.

Every distribution and rate comes from a profile file (``guidelines/plbp/cohort-profile.json`` by default): the numbers are
synthetic-data parameters, not clinical rules; the guideline's own thresholds live only in
``guidelines/plbp/definitions.ttl``. The records use the case vocabulary of ``ontology/guideline-kg.ttl`` exactly as the
example cases do. Each record starts with a marker comment ``# case <name>`` so that readers can cut a file
into shards of whole cases (:mod:`cohort_io`). A record is a list of triples whose terms are CURIEs
(``gk:Patient``, ``case:x-p0000001``) or literals ``(lexical, datatype CURIE)``.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from guideline_kg.core.errors import InputError
from guideline_kg.core.dates import months_between
from guideline_kg.core.namespaces import CASE, PREFIXES

__all__ = ["Profile", "load_profile", "generate", "write_cohort", "FORMATS", "MARKER", "record_to_turtle",
           "record_to_ntriples", "expand"]

#: Output formats of `cohort generate`.
FORMATS = ("turtle", "ntriples", "fhir-ndjson")
#: Comment line that starts each case record in a Turtle or N-Triples cohort file.
MARKER = "# case "

Term = str | tuple[str, str]  # CURIE, or (lexical form, datatype CURIE)
Triple = tuple[str, str, Term]


@dataclass
class Record:
    """One generated case: its name, patient CURIE, triples, and the defect planted in it (if any)."""

    name: str
    patient: str
    triples: list[Triple]
    defect: str | None = None


class Profile:
    """A cohort profile (parsed JSON) with the weighted choices prepared once."""

    def __init__(self, data: dict[str, Any], source: str = "<profile>") -> None:
        self.data = data
        self.source = source
        self._choices: dict[int, tuple[list[str], list[float]]] = {}

    def __getitem__(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise InputError(f"the cohort profile has no {key!r}", path=self.source) from None

    def choose(self, rng: random.Random, weights: dict[str, float]) -> str:
        """One key of ``weights``, drawn with the given relative weights."""
        key = id(weights)
        if key not in self._choices:
            keys = list(weights)
            total = float(sum(weights.values()))
            if total <= 0:
                raise InputError(f"weights that sum to zero: {weights}", path=self.source)
            acc, cum = 0.0, []
            for k in keys:
                acc += weights[k] / total
                cum.append(acc)
            self._choices[key] = (keys, cum)
        keys, cum = self._choices[key]
        return keys[min(bisect.bisect_left(cum, rng.random()), len(keys) - 1)]


def load_profile(path: Path) -> Profile:
    """Read a cohort profile (JSON), naming the file and place of a syntax error."""
    try:
        return Profile(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
    except FileNotFoundError:
        raise InputError("no such cohort profile", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=str(path), line=exc.lineno, column=exc.colno) from None


def _bounded(rng: random.Random, spec: dict[str, float], value: float) -> float:
    return min(max(value, spec.get("min", -math.inf)), spec.get("max", math.inf))


def _dec(x: float) -> tuple[str, str]:
    return (f"{x:.1f}", "xsd:decimal")


def _int(x: int) -> tuple[str, str]:
    return (str(int(x)), "xsd:integer")


def _months_to(start: date, end: date) -> str:
    """Calendar months from ``start`` to ``end`` to one decimal (half up): the count FHIR input makes of dates."""
    return str(Decimal(str(months_between(start, end))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _bool(s: str) -> tuple[str, str]:
    return (s, "xsd:boolean")


def _date(d: date) -> tuple[str, str]:
    return (d.isoformat(), "xsd:date")


def _record(profile: Profile, rng: random.Random, name: str) -> Record:
    """One synthetic case drawn from the profile."""
    P = profile
    today = date.fromisoformat(P["assessment_date"])
    me = f"case:{name}"
    t: list[Triple] = [(me, "rdf:type", "gk:Patient"), (me, "gk:assessmentDate", _date(today))]
    age = P["age_years"]
    if rng.random() >= age["missing"]:
        t.append((me, "gk:ageYears", _int(round(_bounded(rng, age, rng.gauss(age["mean"], age["sd"]))))))
    # index surgery and the pain since then
    pain = P["pain"]
    dur = pain["duration_months"]
    months = _bounded(rng, dur, rng.lognormvariate(dur["lognormal_mu"], dur["lognormal_sigma"]))
    surgery_day = today - timedelta(days=round(months * 30.44))
    surg = P["index_surgery"]
    if rng.random() >= surg["missing"]:
        node = f"{me}-surgery"
        t.append((me, "gk:hadIndexSurgery", node))
        t += [(node, "rdf:type", cls) for cls in P.choose(rng, surg["weights"]).split()]
        t.append((node, "gk:performedOn", _date(surgery_day)))
        t.append((node, "gk:spinalLevel", (rng.choice(surg["spinal_levels"]), "xsd:string")))
    node = f"{me}-pain"
    t += [(me, "gk:hasPostoperativePain", node), (node, "rdf:type", "gk:PostoperativePain")]
    if rng.random() >= dur["missing"]:  # the duration is the onset's distance to the assessment, or unknown
        t += [(node, "gk:onsetDate", _date(surgery_day)),
              (node, "gk:painDurationMonths", (_months_to(surgery_day, today), "xsd:decimal"))]
    sc = pain["score"]
    if rng.random() >= sc["missing"]:
        t.append((node, "gk:painScore", _dec(_bounded(rng, sc, rng.gauss(sc["mean"], sc["sd"])))))
    ch = pain["character"]
    if rng.random() >= ch["missing"]:
        t.append((node, "gk:painCharacter", P.choose(rng, ch["weights"])))
    # imaging
    im = P["imaging"]
    obtained = P.choose(rng, im["obtained"])
    study = None
    if obtained != "missing":
        t.append((me, "gk:postoperativeImagingObtained", _bool(obtained)))
    if obtained == "true" and rng.random() < im["study_recorded_if_obtained"]:
        study = f"{me}-img"
        lag = im["months_after_surgery"]
        day = min(today, surgery_day + timedelta(days=round(rng.uniform(lag["min"], lag["max"]) * 30.44)))
        t += [(me, "gk:hasPostoperativeImaging", study), (study, "rdf:type", P.choose(rng, im["study_weights"])),
              (study, "gk:performedOn", _date(day))]
    # findings
    for i, spec in enumerate(P["findings"]):
        status = P.choose(rng, spec["status"])
        if status == "missing":
            continue
        classes = spec["class"] if isinstance(spec["class"], list) else [spec["class"]]
        node = f"{me}-f{i + 1}"
        t += [(me, "gk:hasFinding", node), (node, "rdf:type", rng.choice(classes)),
              (node, "gk:assessmentStatus", status), (node, "gk:assessedOn", _date(today))]
        if spec.get("imaging_based") and study and status != "gk:NotAssessed":
            t.append((node, "gk:basedOnImaging", study))
    # treatment history, line by line
    failed_so_far, had_trial = True, False
    for i, line in enumerate(P["treatment_lines"]):
        p = line.get("given_if_previous_failed", line["given"]) if failed_so_far and i else line["given"]
        if rng.random() >= p:
            failed_so_far = False
            continue
        node = f"{me}-t{i + 1}"
        t += [(me, "gk:hadTreatment", node), (node, "rdf:type", "gk:TreatmentEpisode"),
              (node, "gk:careAction", P.choose(rng, line["actions"])),
              (node, "gk:durationWeeks", _dec(round(rng.uniform(line["weeks"]["min"], line["weeks"]["max"]))))]
        response = P.choose(rng, line["response"])
        if response != "missing":
            t.append((node, "gk:response", response))
        failed_so_far = failed_so_far and response == "gk:NoAdequateResponse"
        relief = line.get("relief_percent")
        if relief and rng.random() >= relief["missing"]:
            t.append((node, "gk:painReliefPercent", _dec(round(rng.uniform(relief["min"], relief["max"])))))
        had_trial = had_trial or bool(line.get("opioid"))
    # opioid flags, chronicity
    op = P["opioids"]
    for prop, weights in (("gk:receivesOpioidTherapy", op["receives_if_trial" if had_trial else "receives_otherwise"]),
                          ("gk:longTermOpioidTherapyPlanned", op["long_term_planned"])):
        v = P.choose(rng, weights)
        if v != "missing":
            t.append((me, prop, _bool(v)))
    planned = any(p == "gk:longTermOpioidTherapyPlanned" and o == ("true", "xsd:boolean") for _, p, o in t)
    v = P.choose(rng, op["monitoring_if_planned" if planned else "monitoring_otherwise"])
    if v != "missing":
        t.append((me, "gk:opioidMonitoringPlanInPlace", _bool(v)))
    stage = P.choose(rng, P["chronicity_stage"])
    if stage != "missing":
        t.append((me, "gk:chronicityStage", _int(int(stage))))
    record = Record(name, me, t)
    inv = P["invalid"]
    if rng.random() < inv["rate"]:
        _plant_defect(record, P.choose(rng, inv["defects"]))
    return record


def _replace(t: list[Triple], pred: str, value: Term) -> bool:
    for i, (s, p, _) in enumerate(t):
        if p == pred:
            t[i] = (s, p, value)
            return True
    return False


def _plant_defect(record: Record, defect: str) -> None:
    """Break the record in the named way (so validation has real work); the defect is kept on the record."""
    t, me = record.triples, record.patient
    if defect == "pain-score-out-of-range":
        if not _replace(t, "gk:painScore", _dec(14.0)):
            t.append((f"{me}-pain", "gk:painScore", _dec(14.0)))
    elif defect == "chronicity-stage-out-of-range":
        if not _replace(t, "gk:chronicityStage", _int(7)):
            t.append((me, "gk:chronicityStage", _int(7)))
    elif defect == "negative-age":
        if not _replace(t, "gk:ageYears", _int(-3)):
            t.append((me, "gk:ageYears", _int(-3)))
    elif defect == "finding-without-status":
        node = f"{me}-fx"
        t += [(me, "gk:hasFinding", node), (node, "rdf:type", "gk:FacetJointInvolvement")]
    elif defect == "two-index-surgeries":
        t += [(me, "gk:hadIndexSurgery", f"{me}-surgery2"), (f"{me}-surgery2", "rdf:type", "gk:SpinalFusion")]
    elif defect == "response-not-a-response":
        node = f"{me}-tx"
        t += [(me, "gk:hadTreatment", node), (node, "rdf:type", "gk:TreatmentEpisode"),
              (node, "gk:careAction", "gk:ActivePhysicalTherapy"), (node, "gk:response", "gk:AssessedPresent")]
    else:
        raise InputError(f"unknown defect {defect!r} in the cohort profile")
    record.defect = defect


def generate(profile: Profile, n: int, seed: int = 0) -> Iterator[Record]:
    """``n`` case records, one at a time; the same seed and profile give the same records."""
    if n < 0:
        raise InputError(f"--n must not be negative (got {n})")
    rng = random.Random(seed)
    prefix = f"{profile['case_prefix']}{seed}"
    width = max(7, len(str(n)))
    for i in range(1, n + 1):
        yield _record(profile, rng, f"{prefix}-p{i:0{width}d}")


# ---- serialisation ------------------------------------------------------------------------------------------
_NS = {p: str(ns) for p, ns in PREFIXES.items()}


def expand(curie: str) -> str:
    """The full IRI of a project CURIE."""
    prefix, _, local = curie.partition(":")
    return _NS[prefix] + local


def _nt(term: Term) -> str:
    if isinstance(term, tuple):
        return f'"{term[0]}"' if term[1] == "xsd:string" else f'"{term[0]}"^^<{expand(term[1])}>'
    return f"<{expand(term)}>"


def _ttl(term: Term) -> str:
    if isinstance(term, tuple):
        lex, dt = term
        if dt in ("xsd:integer", "xsd:boolean") or (dt == "xsd:decimal" and "." in lex):
            return lex
        if dt == "xsd:string":
            return f'"{lex}"'
        return f'"{lex}"^^{dt}'
    return "a" if term == "rdf:type" else term


def record_to_ntriples(record: Record) -> str:
    """The record as N-Triples, preceded by its marker line."""
    return MARKER + record.name + "\n" + "".join(
        f"<{expand(s)}> <{expand(p)}> {_nt(o)} .\n" for s, p, o in record.triples)


def record_to_turtle(record: Record) -> str:
    """The record as Turtle (subjects grouped), preceded by its marker line; needs :func:`turtle_header`."""
    by_subject: dict[str, list[str]] = {}
    for s, p, o in record.triples:
        by_subject.setdefault(s, []).append(f"{_ttl(p)} {_ttl(o)}")
    return MARKER + record.name + "\n" + "".join(
        f"{s} " + " ;\n    ".join(po) + " .\n" for s, po in by_subject.items())


def turtle_header() -> str:
    """The @prefix lines a Turtle cohort file starts with."""
    return "".join(f"@prefix {p}: <{ns}> .\n" for p, ns in PREFIXES.items())


def record_facts(record: Record) -> list[tuple[str, str, str | tuple[str, str]]]:
    """The record's triples with full IRIs (literals as (lexical form, datatype IRI))."""
    return [(expand(s), expand(p), (o[0], expand(o[1])) if isinstance(o, tuple) else expand(o))
            for s, p, o in record.triples]


def record_to_bundle(record: Record, rev: Any) -> Any:
    """The record as a FHIR R4 Bundle (``fhir_case_out.BundleOut``: the Bundle and the facts it cannot carry),
    made by reading the project's FHIR mapping rules in reverse (``rev``: ``fhir_case_out.reverse_rules()``)."""
    from guideline_kg.cases.fhir_out import facts_to_bundle

    return facts_to_bundle(record_facts(record), expand(record.patient), record.name, rev)


def write_cohort(records: Iterator[Record], out: TextIO, fmt: str,
                 progress: Callable[[int], None] | None = None, project: Any = None) -> dict[str, Any]:
    """Write records as they come (memory stays flat); return counts of cases, triples and planted defects.

    For ``fhir-ndjson`` (one Bundle per line, by the project's FHIR mapping read in reverse) the counts also
    give ``unexpressed``: how many facts no mapping rule can carry, per predicate (they are not in the Bundles).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown cohort format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt == "turtle":
        out.write(turtle_header())
    counts: dict[str, Any] = {"cases": 0, "triples": 0, "invalid": 0}
    if fmt == "fhir-ndjson":
        from guideline_kg.cases.fhir_out import bundle_line, reverse_rules

        rev = reverse_rules(project)
        lost: dict[str, int] = {}
        counts["unexpressed"] = lost

        def write(r: Record) -> str:
            made = record_to_bundle(r, rev)
            for (_, p, _), _why in made.unexpressed:
                lost[p] = lost.get(p, 0) + 1
            return bundle_line(made)
    else:
        write = {"turtle": record_to_turtle, "ntriples": record_to_ntriples}[fmt]
    for r in records:
        out.write(write(r))
        counts["cases"] += 1
        counts["triples"] += len(r.triples)
        counts["invalid"] += r.defect is not None
        if progress:
            progress(1)
    return counts


_ = CASE
