"""FHIR Bulk Data in and out: `cohort generate --format fhir-bulk` writes an `$export` folder (manifest.json, NDJSON
per resource type, several files per type); `cohort evaluate FOLDER` groups it by patient (hash buckets) and gives
the rows the same cases give as one Bundle per line; resources that cannot be mapped are counted per type."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from guideline_kg.cli.main import main
from guideline_kg.cohort.bulk import group_export

N = 30

pytestmark = pytest.mark.slow  # two cohort runs: several seconds


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bulk")
    bulk, ndjson = folder / "export", folder / "c.ndjson"
    assert main(["cohort", "generate", "--n", str(N), "--seed", "6", "--format", "fhir-bulk", "--per-file", "40",
                 "--out", str(bulk)]) == 0
    assert main(["cohort", "generate", "--n", str(N), "--seed", "6", "--format", "fhir-ndjson", "--out",
                 str(ndjson)]) == 0
    return {"bulk": bulk, "ndjson": ndjson, "folder": folder}


def _rows(out: Path) -> list[tuple]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [r for p in manifest["partitions"] for r in pq.read_table(out / p["results"]).to_pylist()]
    return sorted((r["case"], r["patient"], r["statement"], r["status"], r["urgent"], r["scope"],
                   tuple(r["missing"])) for r in rows)


def test_export_layout(export) -> None:
    """The manifest lists every NDJSON file with its type; a type with more than 40 resources has several
    files; resource ids are unique within their type and every reference resolves inside the export."""
    manifest = json.loads((export["bulk"] / "manifest.json").read_text())
    listed = {o["url"] for o in manifest["output"]}
    assert listed == {p.name for p in export["bulk"].glob("*.ndjson")}
    per_type = Counter(o["type"] for o in manifest["output"])
    assert per_type["Patient"] == 1 and max(per_type.values()) >= 2
    ids: set[str] = set()
    refs: set[str] = set()
    for o in manifest["output"]:
        lines = (export["bulk"] / o["url"]).read_text().splitlines()
        assert len(lines) == o["count"] <= 40
        for line in lines:
            r = json.loads(line)
            assert r["resourceType"] == o["type"]
            key = f"{r['resourceType']}/{r['id']}"
            assert key not in ids
            ids.add(key)
            refs.update(_references(r))
    assert sum(1 for i in ids if i.startswith("Patient/")) == N
    assert refs <= ids


def _references(value) -> set[str]:
    if isinstance(value, dict):
        return {v for k, v in value.items() if k == "reference"} | {x for v in value.values() for x in _references(v)}
    if isinstance(value, list):
        return {x for v in value for x in _references(v)}
    return set()


def test_evaluating_the_export_equals_evaluating_the_bundles(export, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    code_a = main(["cohort", "evaluate", str(export["bulk"]), "--out", str(a), "--shard-size", "8"])
    code_b = main(["cohort", "evaluate", str(export["ndjson"]), "--out", str(b), "--shard-size", "8"])
    assert code_a == code_b and code_a in (0, 1)
    rows = _rows(a)
    assert len({r[0] for r in rows}) > N * 0.8 and rows == _rows(b)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("a", "b")], "the grouping's staging is removed"


def test_unmappable_resources_are_counted_per_type(export, tmp_path: Path, capsys) -> None:
    """Two Practitioners (no rule of the FHIR case mapping reads them), an Observation about no patient and a
    line that is not JSON: each counted and reported with its first place; the cases are unchanged."""
    bulk = tmp_path / "export"
    bulk.mkdir()
    for f in export["bulk"].iterdir():
        (bulk / f.name).write_bytes(f.read_bytes())
    (bulk / "Practitioner.000.ndjson").write_text('{"resourceType":"Practitioner","id":"d1"}\n'
                                                  '{"resourceType":"Practitioner","id":"d2"}\n')
    (bulk / "Observation.900.ndjson").write_text('{"resourceType":"Observation","id":"o1","status":"final"}\n'
                                                 'not json\n')
    manifest = json.loads((bulk / "manifest.json").read_text())
    manifest["output"] += [{"type": "Practitioner", "url": "https://fhir.example.test/x/Practitioner.000.ndjson"},
                           {"type": "Observation", "url": "Observation.900.ndjson"}]
    (bulk / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r"
    assert main(["cohort", "evaluate", str(bulk), "--out", str(out), "--shard-size", "8"]) in (0, 1)
    err = capsys.readouterr().err
    assert "2 Practitioner resources left out (no rule of the FHIR case mapping reads this type" in err
    assert "1 Observation resources left out (no patient" in err and "Observation.900.ndjson:1" in err
    assert "1 Observation resources left out (not JSON; first at" in err and "Observation.900.ndjson:2" in err
    base = tmp_path / "base"
    assert main(["cohort", "evaluate", str(export["bulk"]), "--out", str(base), "--shard-size", "8"]) in (0, 1)
    assert _rows(out) == _rows(base)


def test_many_buckets_group_as_one(export, tmp_path: Path, project) -> None:
    """Buckets of ~2 KB (many) give the same Bundles as one bucket: each patient's resources meet in one."""
    one, many = tmp_path / "one.ndjson", tmp_path / "many.ndjson"
    r1 = group_export(export["bulk"], one, project)
    r2 = group_export(export["bulk"], many, project, bucket_bytes=2000)
    assert r1.buckets == 1 and r2.buckets > 20 and r1.patients == r2.patients == N

    def bundles(p: Path) -> dict[str, list]:
        return {b["id"]: b["entry"] for b in map(json.loads, p.read_text().splitlines())}

    assert bundles(one) == bundles(many)
    assert not list(tmp_path.glob(".*")), "no bucket left behind"


def test_a_url_outside_the_folder_is_refused(export, tmp_path: Path) -> None:
    bulk = tmp_path / "export"
    bulk.mkdir()
    (bulk / "manifest.json").write_text(json.dumps({"output": [{"type": "Patient", "url": "../c.ndjson"}]}))
    (tmp_path / "c.ndjson").write_text("")
    assert main(["cohort", "evaluate", str(bulk), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_the_export_on_a_local_cluster_equals_in_process(export, tmp_path: Path) -> None:
    """`--workers 2`: one task per export file partitions by patient, one task per bucket groups and evaluates
    (at least two buckets per worker). A patient's resources spread over several files (40 resources a file) meet
    in one Bundle; the rows equal the in-process rows of the same export; the resources left out are counted per
    type on this path too (stderr and manifest)."""
    spread = Counter()
    manifest = json.loads((export["bulk"] / "manifest.json").read_text())
    for o in manifest["output"]:
        for line in (export["bulk"] / o["url"]).read_text().splitlines():
            ref = json.loads(line).get("subject", {}).get("reference")
            if ref:
                spread[(ref, o["url"])] += 1
    files_per_patient = Counter(ref for ref, _ in spread)
    assert max(files_per_patient.values()) >= 3, "some patient's resources must lie in several files"
    bulk = tmp_path / "export"
    bulk.mkdir()
    for f in export["bulk"].iterdir():
        (bulk / f.name).write_bytes(f.read_bytes())
    (bulk / "Practitioner.000.ndjson").write_text('{"resourceType":"Practitioner","id":"d1"}\n')
    manifest["output"].append({"type": "Practitioner", "url": "Practitioner.000.ndjson"})
    (bulk / "manifest.json").write_text(json.dumps(manifest))
    base, out = tmp_path / "base", tmp_path / "r"
    assert main(["cohort", "evaluate", str(export["bulk"]), "--out", str(base), "--shard-size", "8"]) in (0, 1)
    done = subprocess.run([str(Path(sys.executable).parent / "guideline-kg"), "cohort", "evaluate", str(bulk),
                           "--out", str(out), "--shard-size", "8", "--workers", "2"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    assert f"{N} patients (grouped in 4 buckets on the cluster)" in done.stderr
    assert "1 Practitioner resources left out (no rule of the FHIR case mapping reads this type" in done.stderr
    assert _rows(out) == _rows(base)
    written = json.loads((out / "manifest.json").read_text())
    assert written["buckets"] == 4 and written["left_out"][0]["type"] == "Practitioner"
    assert sorted({p["index"] // 10_000 for p in written["partitions"]}) == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "the buckets are removed"
