"""Compact cohort results: a partitioned Parquet dataset (pyarrow), one row per valid case and statement.

Layout of an output folder (docs/cohort.md, Columnar results)::

    DIR/results/part-00000.parquet   case, patient, statement, status, urgent, conflict, scope, missing
    DIR/invalid/part-00000.parquet   case, violations [{focus, path, value, component, shape, message}]
    DIR/manifest.json                the partitions with their row counts, written last

One partition per shard, named by the shard's index in the file's plan (:func:`shards.plan_shards`), so a shard
done twice (a retried task) writes the same file again: a partition is written to a temporary name and renamed,
and the manifest, written the same way after every partition, is what makes the dataset complete. A reader takes
the files the manifest lists; a folder without a manifest is an unfinished run.

Nothing here builds an explanation: statuses, urgency, conflicts and the unknown conditions come from the batch
derivation (:meth:`derive.CaseResult.condition_states`), and ``missing`` holds the IRIs of the case properties
(the questions, ``gk:question``) that the statement's undecided conditions are about, read from the graph's
class expressions with one SPARQL query; the texts stay in the graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from guideline_kg.cohort.evaluate import STAGES, CohortEvaluator, CohortSummary
from guideline_kg.cohort.shards import Shard, ShardSpec, read_shard
from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import local_name
from guideline_kg.reasoning.derive import CaseResult

__all__ = ["MANIFEST", "RESULTS_SCHEMA", "ColumnarWriter", "Partition", "evaluate_partition", "evaluate_partitions",
           "read_manifest", "summary_from_dataset"]

MANIFEST = "manifest.json"
FORMAT = "guideline-kg cohort results"
VERSION = 1

RESULTS_SCHEMA = pa.schema([
    ("case", pa.string()), ("patient", pa.string()), ("statement", pa.string()), ("status", pa.string()),
    ("urgent", pa.bool_()), ("conflict", pa.list_(pa.string())), ("scope", pa.string()),
    ("missing", pa.list_(pa.string())),
])
_VIOLATION = pa.struct([("focus", pa.string()), ("path", pa.string()), ("value", pa.string()),
                        ("component", pa.string()), ("shape", pa.string()), ("message", pa.string())])
INVALID_SCHEMA = pa.schema([("case", pa.string()), ("violations", pa.list_(_VIOLATION))])

#: the case properties a condition's class expression is about (through nested and named class expressions)
_PROPERTIES = """
PREFIX owl: <http://www.w3.org/2002/07/owl#>
PREFIX rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#>
SELECT DISTINCT ?condition ?property WHERE {
  VALUES ?condition { %s }
  ?condition (owl:equivalentClass|owl:intersectionOf|owl:unionOf|owl:complementOf|rdf:first|rdf:rest
              |owl:someValuesFrom|owl:allValuesFrom|owl:onClass)* ?r .
  ?r owl:onProperty ?property .
}"""
_UNREADABLE = re.compile(r"^.*?:\d+: ")
_WRITE_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 6, "use_dictionary": True}


@dataclass
class Partition:
    """What one shard's task wrote (or the input error that stopped it)."""

    index: int
    results: str | None = None
    invalid: str | None = None
    rows: int = 0
    cases: int = 0
    valid: int = 0
    invalid_cases: int = 0
    warnings: int = 0
    bytes: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "results": self.results, "invalid": self.invalid, "rows": self.rows,
                "cases": self.cases, "valid": self.valid, "invalid_cases": self.invalid_cases,
                "warnings": self.warnings, "bytes": self.bytes,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


class ColumnarWriter:
    """Rows of the results table from batch derivations, with the statements' short ids and the properties of
    each condition read once from the graph."""

    def __init__(self, ce: CohortEvaluator) -> None:
        self.ce = ce
        ev = ce.evaluator
        shorts = {sid: local_name(sid) for sid in ev.statements}
        # short ids when they are unique in the guideline (they are what people query), else the IRIs
        self.short = shorts if len(set(shorts.values())) == len(shorts) else {sid: sid for sid in ev.statements}
        conditions = {str(c.iri) for cs in ev.conditions.values() for c in cs}
        self.properties: dict[str, tuple[str, ...]] = defaultdict(tuple)
        if conditions:
            found: dict[str, set[str]] = defaultdict(set)
            rows = ev.tbox_store.select(_PROPERTIES % " ".join(f"<{c}>" for c in sorted(conditions)))
            for r in rows.dicts():
                found[str(r["condition"])].add(str(r["property"]))
            self.properties.update({c: tuple(sorted(ps)) for c, ps in found.items()})
        self._kinds = {sid: st.get("kind") for sid, st in ev.statements.items()}
        #: statements with an urgent condition: urgent for a case exactly when applicable to it
        self._urgent = {sid for sid, cs in ev.conditions.items() if any(c.urgent for c in cs)}
        self._missing: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._templates: dict[int, tuple[Any, list[tuple[str, str, bool, list[str], list[str]]]]] = {}
        self._rows: dict[int, tuple[Any, tuple[str, str, bool, list[str], list[str]]]] = {}

    def _missing_of(self, sid: str, conds: tuple[tuple[Any, str], ...]) -> list[str]:
        """The properties of an undetermined statement's own undecided conditions (memoised by their states)."""
        key = (sid, tuple(st for _, st in conds))
        found = self._missing.get(key)
        if found is None:
            guideline = self._kinds.get(sid) == "guideline"
            found = sorted({p for c, st in conds if st == "unknown" and (guideline or not c.scope)
                            for p in self.properties[str(c.iri)]})
            if len(self._missing) >= 100_000:
                self._missing.clear()
            self._missing[key] = found
        return found

    def _template(self, cr: CaseResult) -> list[tuple[str, str, bool, list[str], list[str]]]:
        """(statement, status, urgent, conflict, missing) of every statement for the case's signature
        (shared by all the cases with the same memberships; each statement's row shared by all the cases with
        the same states of its conditions)."""
        states = cr.condition_states()
        hit = self._templates.get(id(states))
        if hit is not None and hit[0] is states:
            return hit[1]
        none: list[str] = []
        short, urgent, memo = self.short, self._urgent, self._rows
        if len(memo) >= 100_000:
            memo.clear()
        rows = []
        for entry in states[1:]:
            found = memo.get(id(entry))
            if found is None or found[0] is not entry:  # (the entry is kept with its row: its id stays its own)
                sid, status, conds = entry
                found = memo[id(entry)] = (entry, (
                    short[sid], status, status == "applicable" and sid in urgent, none,
                    self._missing_of(sid, conds) if status == "undetermined" else none))
            rows.append(found[1])
        pairs = cr.conflicts
        if pairs:
            conflicts: dict[str, list[str]] = defaultdict(list)
            for c in pairs:
                conflicts[c["for"]].append(self.short[c["against"]])
                conflicts[c["against"]].append(self.short[c["for"]])
            rows = [(r[0], r[1], r[2], sorted(conflicts[sid]), r[4]) if sid in conflicts else r
                    for (sid, _, _), r in zip(states[1:], rows, strict=True)]
        if len(self._templates) >= 10_000:
            self._templates.clear()
        self._templates[id(states)] = (states, rows)
        return rows

    def results_table(self, results: Iterable[CaseResult]) -> pa.Table:
        cols: dict[str, list[Any]] = {name: [] for name in RESULTS_SCHEMA.names}
        case, patient, scope = cols["case"], cols["patient"], cols["scope"]
        statement, status, urgent, conflict, missing = (cols[k] for k in ("statement", "status", "urgent",
                                                                          "conflict", "missing"))
        for cr in results:
            rows = self._template(cr)
            n = len(rows)
            case += [cr.case] * n
            patient += [str(cr.patient)] * n
            scope += [cr.scope_status] * n
            a, b, c, d, e = zip(*rows, strict=True)
            statement += a
            status += b
            urgent += c
            conflict += d
            missing += e
        return pa.table(cols, schema=RESULTS_SCHEMA)


def _write_atomically(table: pa.Table, path: Path) -> int:
    """``table`` to ``path`` through a temporary file beside it (renamed when complete); its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, **_WRITE_OPTIONS)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path.stat().st_size


def partition_names(index: int) -> tuple[str, str]:
    return f"results/part-{index:05d}.parquet", f"invalid/part-{index:05d}.parquet"


def evaluate_partition(ce: CohortEvaluator, writer: ColumnarWriter, spec: ShardSpec, out_dir: Path,
                       seen: dict[str, int] | None = None) -> Partition:
    """Read, validate and derive one shard and write its partition (results, and invalid cases if any). An
    input error (the shard cannot be read at all) is returned in ``error``, nothing written."""
    shard, error, seconds = _read(ce, spec, seen)
    return _evaluate(ce, writer, spec, out_dir, shard, error, seconds)


def evaluate_partitions(ce: CohortEvaluator, writer: ColumnarWriter, specs: list[ShardSpec], out_dir: Path,
                        seen: dict[str, int] | None = None) -> Iterator[tuple[ShardSpec, Partition]]:
    """:func:`evaluate_partition` of each shard in turn (one process), the next shard read and loaded on a
    thread while this one is validated, derived and written (pyoxigraph's parser releases the GIL). A shard's
    ``load`` time is then the time its turn waited for it; nothing is read after a shard that cannot be."""
    clock = time.perf_counter
    with ThreadPoolExecutor(max_workers=1) as reader:
        ahead = reader.submit(_read, ce, specs[0], seen) if specs else None
        for i, spec in enumerate(specs):
            t = clock()
            shard, error, _ = ahead.result() if ahead is not None else (None, "not read", 0.0)
            waited = clock() - t
            ahead = reader.submit(_read, ce, specs[i + 1], seen) if error is None and i + 1 < len(specs) else None
            yield spec, _evaluate(ce, writer, spec, out_dir, shard, error, waited)
            del shard


def _read(ce: CohortEvaluator, spec: ShardSpec, seen: dict[str, int] | None) -> tuple[Shard | None, str | None,
                                                                                      float]:
    """The shard, or why it cannot be read, and the seconds it took."""
    t = time.perf_counter()
    try:
        return read_shard(spec, ce.context, ce.project, seen), None, time.perf_counter() - t
    except InputError as exc:
        return None, str(exc), time.perf_counter() - t


def _evaluate(ce: CohortEvaluator, writer: ColumnarWriter, spec: ShardSpec, out_dir: Path, shard: Shard | None,
              error: str | None, load: float) -> Partition:
    clock = time.perf_counter
    part = Partition(spec.index)
    if shard is None:
        part.error = error
        return part
    part.seconds["load"] = load
    bad, part.warnings, patients, valid, results = ce.validate_and_derive(shard, part.seconds)
    t = clock()
    table = writer.results_table(results)
    invalid_rows: list[dict[str, Any]] = []
    for patient, unsorted in sorted(bad.items()):
        found = sorted(unsorted, key=lambda r: (r.focus, r.path or "", r.component, r.value or "", r.message))
        invalid_rows.append({"case": patient.rsplit("/", 1)[-1], "violations": [
            {"focus": r.focus, "path": r.path, "value": r.value, "component": r.component,
             "shape": None if r.shape.startswith("_:") else r.shape, "message": r.message} for r in found]})
    for u in shard.unreadable:
        invalid_rows.append({"case": u.name, "violations": [{"focus": None, "path": None, "value": None,
                                                              "component": None, "shape": None,
                                                              "message": u.reason}]})
    results_name, invalid_name = partition_names(spec.index)
    part.results, part.rows = results_name, table.num_rows
    part.bytes = _write_atomically(table, out_dir / results_name)
    if invalid_rows:
        part.invalid = invalid_name
        part.bytes += _write_atomically(pa.Table.from_pylist(invalid_rows, schema=INVALID_SCHEMA),
                                        out_dir / invalid_name)
    part.cases = len(patients) + len(shard.unreadable)
    part.valid, part.invalid_cases = len(valid), len(invalid_rows)
    part.seconds["write"] = clock() - t
    return part


# ---- the output folder ---------------------------------------------------------------------------------------
def prepare_output(out_dir: Path) -> None:
    """Make ``out_dir`` ready for a run: created if missing; an earlier dataset (its manifest) is unlisted
    first, so that nothing in the folder is presented as complete until this run's manifest; a non-empty
    folder that is not a dataset is refused (exit 2) untouched."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out must be a folder for the columnar results (or a .jsonl file for JSON Lines)",
                         path=str(out_dir))
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise InputError("the folder is not empty and holds no cohort results (no manifest.json); give a new or "
                         "empty folder", path=str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (out_dir / MANIFEST).unlink()


def discard(out_dir: Path, parts: Iterable[Partition | int]) -> None:
    """Remove the partition files of a failed run (nothing half-written stays behind)."""
    for p in parts:
        index = p if isinstance(p, int) else p.index
        for name in partition_names(index):
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()


def commit(out_dir: Path, parts: list[Partition], info: dict[str, Any]) -> dict[str, Any]:
    """Remove files of an earlier run that this one did not write, then write the manifest (last)."""
    parts = sorted(parts, key=lambda p: p.index)
    keep = {name for p in parts for name in (p.results, p.invalid) if name}
    for sub in ("results", "invalid"):
        folder = out_dir / sub
        for f in folder.glob("part-*.parquet") if folder.is_dir() else []:
            if f"{sub}/{f.name}" not in keep:
                f.unlink()
    manifest = {"format": FORMAT, "version": VERSION, **info,
                "cases": sum(p.cases for p in parts), "valid": sum(p.valid for p in parts),
                "invalid": sum(p.invalid_cases for p in parts), "rows": sum(p.rows for p in parts),
                "bytes": sum(p.bytes for p in parts), "partitions": [p.to_json() for p in parts]}
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=out_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, out_dir / MANIFEST)
    return manifest


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError("no manifest.json: not a complete cohort result (an unfinished run?)", path=str(out_dir))
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} manifest", path=str(path))
    return data


def summary_from_dataset(out_dir: Path) -> CohortSummary:
    """The run's summary, counted from the tables the manifest lists (partition by partition, so memory is one
    partition's columns): statuses per statement, cases in scope and with an urgent statement, invalid cases
    by defect; warnings, shards and stage times from the manifest."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    iris = manifest.get("statements") or {}
    summary = CohortSummary()
    for part in manifest["partitions"]:
        summary.shards += 1
        summary.warnings += part["warnings"]
        for stage, seconds in part["seconds"].items():
            summary.seconds[stage] = summary.seconds.get(stage, 0.0) + seconds
        if part["results"]:
            t = pq.read_table(out_dir / part["results"], columns=["case", "statement", "status", "urgent", "scope"])
            for row in t.group_by(["statement", "status"]).aggregate([("case", "count")]).to_pylist():
                summary.status[iris.get(row["statement"], row["statement"])][row["status"]] += row["case_count"]
            cases = pc.count_distinct(t["case"]).as_py()
            summary.cases += cases
            summary.valid += cases
            summary.in_scope += pc.count_distinct(t.filter(pc.equal(t["scope"], "in"))["case"]).as_py()
            summary.urgent += pc.count_distinct(t.filter(t["urgent"])["case"]).as_py()
        if part["invalid"]:
            for row in pq.read_table(out_dir / part["invalid"]).to_pylist():
                summary.cases += 1
                found = row["violations"]
                if len(found) == 1 and found[0]["focus"] is None:  # a record that could not be read
                    reason = found[0]["message"]
                    summary.invalid.append({"case": row["case"], "reasons": [reason]})
                    summary.defects[(_UNREADABLE.sub("", reason).split(":", 1)[0], "", "", "")] += 1
                    continue
                summary.invalid.append({"case": row["case"], "reasons": [
                    f"{v['focus'].rsplit('/', 1)[-1]}: {v['message']}" for v in found]})
                summary.defects.update({(v["message"], v["path"] or "", v["component"] or "", v["shape"] or "")
                                        for v in found})
    return summary

