"""`cohort evaluate INPUT --out DIR`: the columnar (Parquet) results. Every row agrees with `recommend --format json`
on the same cases (run independently, one file per case); DuckDB answers a population question from the table
with the number counted from recommend's explanation texts; the manifest comes last and a failed run leaves none."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from guideline_kg.cli.main import main
from guideline_kg.cohort.generate import generate, load_profile, record_to_turtle, turtle_header

N = 40
MONITORING = "https://w3id.org/guideline-kg/ontology#opioidMonitoringPlanInPlace"

pytestmark = pytest.mark.slow  # recommend over 40 files and a cohort run: several seconds


@pytest.fixture(scope="module")
def run(tmp_path_factory, project) -> dict:
    """The same 40 generated cases (10% with a planted defect) as one cohort file and as one Turtle file each;
    the cohort evaluated to Parquet in shards of 15, the files through `recommend --format json`."""
    folder = tmp_path_factory.mktemp("parquet")
    profile = load_profile(project.kg_dir / "cohort-profile.json")
    profile.data = dict(profile.data, invalid=dict(profile["invalid"], rate=0.1))
    cases = folder / "cases"
    cases.mkdir()
    cohort = folder / "cohort.ttl"
    with cohort.open("w") as f:
        records = list(generate(profile, N, seed=16))
        f.write(turtle_header(records[0].namespaces))
        for r in records:
            f.write(record_to_turtle(r))
            (cases / f"{r.name}.ttl").write_text(turtle_header(r.namespaces) + record_to_turtle(r))
    out = folder / "results"
    code = main(["cohort", "evaluate", str(cohort), "--out", str(out), "--shard-size", "15"])
    rec = folder / "recommend.json"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rec_code = main(["recommend", str(cases), "--format", "json"])
    rec.write_text(buffer.getvalue())
    return {"code": code, "out": out, "recommend": json.loads(buffer.getvalue()), "rec_code": rec_code}


def _rows(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [row for p in manifest["partitions"] for row in pq.read_table(out / p["results"]).to_pylist()]


def test_manifest_lists_every_partition_with_its_rows(run) -> None:
    out = run["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["index"] for p in manifest["partitions"]] == [0, 1, 2]  # 40 cases in shards of 15
    for p in manifest["partitions"]:
        assert pq.read_metadata(out / p["results"]).num_rows == p["rows"]
    assert manifest["cases"] == N and manifest["valid"] + manifest["invalid"] == N
    assert not list(out.rglob("*.tmp"))


def test_every_row_equals_recommend(run) -> None:
    """Status, urgency, scope and conflicts of every valid case and statement as `recommend` gives them; the
    invalid cases are the ones recommend refuses."""
    expected = {}
    for case in run["recommend"]["cases"]:
        conflicts: dict[str, set[str]] = {}
        for c in case["conflicts"]:
            conflicts.setdefault(c["for"], set()).add(c["against"].rsplit("/", 1)[-1])
            conflicts.setdefault(c["against"], set()).add(c["for"].rsplit("/", 1)[-1])
        for r in case["recommendations"]:
            expected[(case["case"], r["id"].rsplit("/", 1)[-1])] = (
                r["status"], r["urgent"], case["scope"]["status"], sorted(conflicts.get(r["id"], [])))
    got = {(row["case"], row["statement"]): (row["status"], row["urgent"], row["scope"], row["conflict"])
           for row in _rows(run["out"])}
    assert got == expected
    refused = {c["case"] for c in run["recommend"]["invalid_cases"]}
    invalid = {row["case"] for row in pq.read_table(run["out"] / "invalid").to_pylist()}
    assert refused and invalid == refused
    assert run["code"] == 1 and run["rec_code"] == 1  # some cases invalid: both say so


def test_duckdb_patients_undetermined_for_lack_of_a_monitoring_plan(run) -> None:
    """"How many patients are undetermined for L17 (line 17: a monitoring strategy before long-term opioids) for
    lack of a monitoring plan?" from the table, against the count of recommend's missing-data texts that ask
    about the monitoring strategy. Line 16 (extended-release opioids) has no monitoring condition: none."""
    expected = Counter()
    for case in run["recommend"]["cases"]:
        for r in case["recommendations"]:
            if r["status"] == "undetermined" and any("monitoring side effects" in m for m in r["missing"]):
                expected[r["id"].rsplit("/", 1)[-1]] += 1
    assert expected["L17"] > 0 and "L16" not in expected
    manifest = json.loads((run["out"] / "manifest.json").read_text())
    files = [str(run["out"] / p["results"]) for p in manifest["partitions"]]
    con = duckdb.connect()
    query = ("SELECT statement, count(DISTINCT patient) FROM read_parquet(?) WHERE status = 'undetermined' "
             "AND list_contains(missing, ?) GROUP BY statement ORDER BY statement")
    got = dict(con.execute(query, [files, MONITORING]).fetchall())
    assert got == dict(expected)


def test_summary_is_counted_from_the_table(run, capsys) -> None:
    """--summary on the columnar output: the per-statement counts equal recommend's, case by case."""
    out = run["out"].parent / "again"
    code = main(["cohort", "evaluate", str(run["out"].parent / "cohort.ttl"), "--out", str(out), "--shard-size",
                 "15", "--summary", "--summary-format", "json"])
    assert code == 1
    summary = json.loads(capsys.readouterr().out)
    expected: dict[str, Counter] = {}
    for case in run["recommend"]["cases"]:
        for r in case["recommendations"]:
            expected.setdefault(r["id"], Counter())[r["status"]] += 1
    assert summary["statements"] == {sid: dict(c) for sid, c in expected.items()}
    assert summary["valid"] == len(run["recommend"]["cases"])
    assert summary["in_scope"] == sum(c["scope"]["status"] == "in" for c in run["recommend"]["cases"])


def test_a_folder_that_is_not_a_dataset_is_refused_untouched(tmp_path: Path, run) -> None:
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["cohort", "evaluate", str(run["out"].parent / "cohort.ttl"), "--out", str(other)]) == 2
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_input_error_fails_the_run_without_a_manifest(tmp_path: Path) -> None:
    """A file without case markers is one shard; when it does not parse, the run fails (exit 2) and leaves
    no partition and no manifest."""
    bad = tmp_path / "bad.ttl"
    bad.write_text("<https://w3id.org/guideline-kg/case/x1> a <https://w3id.org/guideline-kg/ontology#Patient\n")
    out = tmp_path / "out"
    assert main(["cohort", "evaluate", str(bad), "--out", str(out)]) == 2
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.parquet"))
