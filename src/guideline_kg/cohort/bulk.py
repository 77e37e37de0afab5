"""FHIR Bulk Data (``$export``) folders: read one as a cohort, grouped by patient with bounded memory; write one.

An export folder holds ``manifest.json`` (the ``$export`` completion manifest: ``output`` lists ``{type, url}``)
and NDJSON files of one resource type each, several files per type. Nothing is fetched: each ``url`` names a file
of the folder by its last path segment, and a name that is not a plain file of the folder is refused.

Grouping (:func:`group_export`) is an external hash partition in two passes:

1. every line of every listed file is read once, on its own; the patient it belongs to is the resource's own id
   (the Patient) or its ``subject`` / ``patient`` reference ``Patient/<id>``, and the line, after the patient id
   (JSON-quoted), is appended to bucket file ``crc32(id) mod B`` in a working folder. ``B`` is the export's size
   over :data:`BUCKET_BYTES` (at most :data:`MAX_BUCKETS`), so a bucket holds about ``BUCKET_BYTES`` of resources;
2. bucket by bucket, the lines are grouped by patient (the resources are not parsed again) and written as one
   Bundle per patient (the Patient first, then the resources in export order) to an NDJSON cohort, which the
   usual reader shards (:mod:`shards`).

Memory: one line in pass 1 (plus a write buffer per bucket); one bucket's lines in pass 2 (about
``BUCKET_BYTES`` of NDJSON when patients hash evenly; all of an export larger than ``MAX_BUCKETS * BUCKET_BYTES``
is spread over ``MAX_BUCKETS`` buckets, so a bucket grows to size/``MAX_BUCKETS``). Disk: one copy of the export.

A resource that cannot be put in a patient's case is counted per type with the first place it was seen, and
reported: no patient reference, a resource type that no rule of the package's FHIR case mapping reads, a line
that is not a JSON object.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline_kg.cases.fhir_in import project_rules
from guideline_kg.cases.fhir_out import reverse_rules
from guideline_kg.cohort.generate import Record, record_to_bundle
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project

__all__ = ["BUCKET_BYTES", "MAX_BUCKETS", "BulkReport", "bucket_count", "export_files", "export_time", "group_bucket",
           "group_export", "is_export", "partition_file", "readable_types", "write_export"]

EXPORT_MANIFEST = "manifest.json"
BUCKET_BYTES = 64 << 20
MAX_BUCKETS = 256


@dataclass
class BulkReport:
    """What grouping an export found: resources read, patients, and the resources left out per type."""

    files: int = 0
    resources: int = 0
    patients: int = 0
    buckets: int = 0
    #: (resource type, why) -> number of resources left out
    unmappable: Counter = field(default_factory=Counter)
    #: (resource type, why) -> the first file:line where it happened
    first: dict[tuple[str, str], str] = field(default_factory=dict)

    def leave_out(self, rtype: str, why: str, place: str) -> None:
        self.unmappable[(rtype, why)] += 1
        self.first.setdefault((rtype, why), place)

    def add(self, other: BulkReport) -> None:
        """Another file's counts (the files in export order: the first place stays the first)."""
        self.files += other.files
        self.resources += other.resources
        self.patients += other.patients
        self.unmappable.update(other.unmappable)
        for k, place in other.first.items():
            self.first.setdefault(k, place)

    def lines(self) -> list[str]:
        return [f"{n} {rtype} resources left out ({why}; first at {self.first[(rtype, why)]})"
                for (rtype, why), n in sorted(self.unmappable.items())]


def is_export(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / EXPORT_MANIFEST).is_file()


def export_time(folder: Path) -> str | None:
    """The export's ``transactionTime``: the time its facts hold at (each patient's Bundle.timestamp, which the
    FHIR case mapping reads as the assessment date)."""
    try:
        value = json.loads((Path(folder) / EXPORT_MANIFEST).read_text(encoding="utf-8")).get("transactionTime")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def export_files(folder: Path) -> list[tuple[str, Path]]:
    """(resource type, file) of each ``output`` entry of the export's manifest, in manifest order."""
    folder = Path(folder)
    where = folder / EXPORT_MANIFEST
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the $export manifest cannot be read: {exc}", path=str(where)) from None
    output = manifest.get("output") if isinstance(manifest, dict) else None
    if not isinstance(output, list):
        raise InputError("the $export manifest has no \"output\" list", path=str(where))
    files = []
    for i, item in enumerate(output):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not isinstance(item.get("url"), str):
            raise InputError(f"output[{i}] must have a \"type\" and a \"url\"", path=str(where))
        name = item["url"].rstrip("/").rsplit("/", 1)[-1]
        path = folder / name
        if name in ("", ".", "..") or not path.is_file() or path.resolve().parent != folder.resolve():
            raise InputError(f"output[{i}]: {item['url']!r} is not a file of the export folder (nothing is "
                             "fetched; each url names a file of the folder by its last segment)", path=str(where))
        files.append((item["type"], path))
    return files


def _patient_of(resource: dict[str, Any]) -> str | None:
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            kind, _, rid = ref["reference"].rpartition("/")
            if kind.rsplit("/", 1)[-1] == "Patient" and rid:
                return rid
    return None


def readable_types(project: Project) -> set[str]:
    """The resource types some rule of the package's FHIR case mapping reads (the Patient's too)."""
    rules = project_rules(project, "reading a FHIR Bulk Data export")
    return {rules.patient.get("resourceType", "Patient")} | {t for r in rules.rules for t in r["resources"]}


def bucket_count(total: int, bucket_bytes: int = BUCKET_BYTES, at_least: int = 1) -> int:
    return max(1, min(MAX_BUCKETS, max(math.ceil(total / bucket_bytes), at_least)))


def partition_file(declared: str, path: Path, sinks: list[Any], readable: set[str],
                   report: BulkReport | None = None) -> BulkReport:
    """Pass 1 for one NDJSON file of the export: each line to the bucket of its patient (``sinks``: one binary
    handle per bucket, written ``<P|R> "<patient id>"\t<resource>``); what is left out counted in ``report``."""
    report = BulkReport() if report is None else report
    buckets = len(sinks)
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            place = f"{path}:{lineno}"
            try:
                resource = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                report.leave_out(declared, "not JSON", place)
                continue
            if not isinstance(resource, dict):
                report.leave_out(declared, "not a JSON object", place)
                continue
            rtype = str(resource.get("resourceType") or declared)
            report.resources += 1
            if rtype not in readable:
                report.leave_out(rtype, "no rule of the FHIR case mapping reads this type", place)
                continue
            patient = _patient_of(resource)
            if patient is None:
                report.leave_out(rtype, "no patient: neither a Patient nor a subject/patient reference", place)
                continue
            # "<P|R> <patient id>\t<resource>": pass 2 groups without parsing the resource again
            head = b"P " if rtype == "Patient" else b"R "
            sinks[zlib.crc32(patient.encode()) % buckets].write(
                head + json.dumps(patient).encode() + b"\t" + raw.strip() + b"\n")
    return report


def group_bucket(pieces: list[Path], sink: Any, stamp: str | None) -> int:
    """Pass 2 for one bucket: its lines (from ``pieces``, in export order) grouped by patient and written to the
    text handle ``sink`` as one Bundle per patient (the Patient first, then the resources in export order);
    the number of patients."""
    groups: dict[bytes, list[bytes]] = defaultdict(list)
    for piece in pieces:
        with piece.open("rb") as handle:
            for line in handle:
                head, _, resource = line.rstrip(b"\n").partition(b"\t")
                if head[:1] == b"P":
                    groups[head[2:]].insert(0, resource)
                else:
                    groups[head[2:]].append(resource)
    extra = {"timestamp": stamp} if stamp else {}
    for quoted, resources in groups.items():
        start = json.dumps({"resourceType": "Bundle", "id": json.loads(quoted), "type": "collection", **extra},
                           separators=(",", ":"), ensure_ascii=False)[:-1]
        entries = b",".join(b'{"resource":' + r + b"}" for r in resources).decode("utf-8")
        sink.write(f'{start},"entry":[{entries}]}}\n')
    return len(groups)


def group_export(folder: Path, out: Path, project: Project, bucket_bytes: int = BUCKET_BYTES,
                 progress: Callable[[int], None] | None = None) -> BulkReport:
    """Group the export in ``folder`` by patient into ``out``: an NDJSON cohort, one Bundle per patient (the
    algorithm and its memory bound: this module's docstring). The working buckets live beside ``out``."""
    files = export_files(folder)
    readable = readable_types(project)
    buckets = bucket_count(sum(p.stat().st_size for _, p in files), bucket_bytes)
    report = BulkReport(files=len(files), buckets=buckets)
    work = out.parent / f".{out.name}.buckets"
    work.mkdir(parents=True, exist_ok=True)
    try:
        handles = [(work / f"{i:03d}.ndjson").open("wb") for i in range(buckets)]
        try:
            for declared, path in files:
                partition_file(declared, path, handles, readable, report)
        finally:
            for h in handles:
                h.close()
        tmp = out.parent / f".{out.name}.tmp"
        stamp = export_time(folder)
        with tmp.open("w", encoding="utf-8") as sink:
            for i in range(buckets):
                bucket = work / f"{i:03d}.ndjson"
                n = group_bucket([bucket], sink, stamp)
                bucket.unlink()
                report.patients += n
                if progress is not None:
                    progress(n)
        os.replace(tmp, out)
    finally:
        for leftover in work.glob("*.ndjson"):
            leftover.unlink()
        work.rmdir()
    return report


def write_export(records: Iterator[Record], folder: Path, project: Project | None, per_file: int = 50_000,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write records as a Bulk Data export folder: per resource type NDJSON files of at most ``per_file``
    resources (``Type.000.ndjson``, ``Type.001.ndjson``, ...) and ``manifest.json`` last. Resource ids are made
    unique in the export (the patient's id, a dash, the id within the case) and references follow them; the
    cases' assessment date (Bundle.timestamp) is the export's ``transactionTime``."""
    rev = reverse_rules(project)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Any, int, int]] = {}  # type -> (handle, file number, resources in it)
    outputs: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"cases": 0, "triples": 0, "invalid": 0, "resources": Counter(), "unexpressed": {}}
    stamp = None

    def sink(rtype: str) -> Any:
        handle, number, n = files.get(rtype, (None, -1, per_file))
        if handle is None or n >= per_file:
            if handle is not None:
                handle.close()
            number += 1
            name = f"{rtype}.{number:03d}.ndjson"
            handle = (folder / name).open("w", encoding="utf-8")
            outputs.append({"type": rtype, "url": name, "count": 0})
            n = 0
        files[rtype] = (handle, number, n + 1)
        next(o for o in reversed(outputs) if o["type"] == rtype)["count"] += 1
        return handle

    try:
        for r in records:
            made = record_to_bundle(r, rev)
            for (_, p, _), _why in made.unexpressed:
                counts["unexpressed"][p] = counts["unexpressed"].get(p, 0) + 1
            entries = [e["resource"] for e in made.bundle.get("entry", [])]
            stamp = stamp or made.bundle.get("timestamp")
            if made.bundle.get("timestamp") != stamp:
                raise InputError("the cases of a Bulk Data export must share one assessment date (its "
                                 f"transactionTime): {stamp} and {made.bundle.get('timestamp')}")
            patient = next(e["id"] for e in entries if e["resourceType"] == "Patient")
            renamed = {f"{e['resourceType']}/{e['id']}": f"{e['resourceType']}/{patient}-{e['id']}"
                       for e in entries if e["resourceType"] != "Patient"}
            for entry in entries:
                e = entry if entry["resourceType"] == "Patient" else _rename(
                    dict(entry, id=f"{patient}-{entry['id']}"), renamed)
                sink(e["resourceType"]).write(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n")
                counts["resources"][e["resourceType"]] += 1
            counts["cases"] += 1
            counts["triples"] += len(r.triples)
            counts["invalid"] += r.defect is not None
            if progress:
                progress(1)
    finally:
        for handle, _, _ in files.values():
            handle.close()
    manifest = {"transactionTime": stamp, "request": "$export", "requiresAccessToken": False,
                "output": outputs, "error": []}
    tmp = folder / f".{EXPORT_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / EXPORT_MANIFEST)
    return counts


def _rename(value: Any, renamed: dict[str, str]) -> Any:
    """``value`` with every ``reference`` to a renamed resource following it."""
    if isinstance(value, dict):
        return {k: (renamed.get(v, v) if k == "reference" and isinstance(v, str) else _rename(v, renamed))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, renamed) for v in value]
    return value
