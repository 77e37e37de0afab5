"""`guideline-kg recommend` through the command line: formats, exit codes, bad input."""

from __future__ import annotations

import hashlib
import json

import pytest
from rdflib import Graph

from guideline_kg.cli.main import main
from guideline_kg.core.namespaces import GK
from guideline_kg.core.project import Project

CASES = Project.at().cases_dir


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_json_for_a_folder_lists_every_case(capsys) -> None:
    code, out, _ = run(capsys, "recommend", str(CASES), "--format", "json")
    doc = json.loads(out)
    assert code == 0
    assert doc["guideline"] == "https://w3id.org/guideline-kg/plbp/guideline"
    assert {c["case"] for c in doc["cases"]} >= {"c01-first-visit", "c04-urgent-deficit"}


def test_text_report_leads_with_urgent_findings_and_groups_by_step(capsys) -> None:
    code, out, _ = run(capsys, "recommend", str(CASES / "c04-urgent-deficit.ttl"))
    assert code == 0
    assert out.index("!!! URGENT") < out.index("-- URGENT") < out.index("-- initial evaluation")
    assert "[x] L05-urgent  (line 5; for, would require)" in out


def test_turtle_output_is_rdf_with_results(capsys) -> None:
    code, out, _ = run(capsys, "recommend", str(CASES / "c06-opioid-no-relief.ttl"), "--format", "turtle")
    g = Graph().parse(data=out, format="turtle")
    assert code == 0 and len(set(g.subjects(GK.status, GK.Applicable))) >= 5


def test_malformed_case_exits_2_names_the_place_and_leaves_the_file_alone(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text("@prefix gk: <https://w3id.org/guideline-kg/ontology#> .\ngk:a gk:b .\n")
    before = hashlib.sha256(bad.read_bytes()).hexdigest()
    code, out, err = run(capsys, "recommend", str(bad), "--format", "json")
    assert code == 2 and out == ""
    assert "bad.ttl:" in err and "Traceback" not in err
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == before


@pytest.mark.hermit
@pytest.mark.slow
def test_hermit_path_gives_the_same_json_as_fast_path(capsys) -> None:
    case = str(CASES / "c10-nerve-entrapment.ttl")
    _, fast, _ = run(capsys, "recommend", case, "--format", "json")
    _, hermit, _ = run(capsys, "recommend", case, "--format", "json", "--reasoner", "hermit")
    statuses = lambda doc: {r["id"]: r["status"] for r in json.loads(doc)["cases"][0]["recommendations"]}  # noqa: E731
    assert statuses(fast) == statuses(hermit)


@pytest.mark.slow
def test_summary_has_one_line_per_case_with_scope_and_urgency(capsys) -> None:
    code, out, _ = run(capsys, "recommend", str(CASES), "--summary")
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln.strip()}
    assert code == 0
    assert "OUT OF SCOPE" in lines["c02-out-of-scope-discectomy"]
    assert "YES: progressive neurological deficit" in lines["c04-urgent-deficit"]
    assert "YES" not in lines["c01-first-visit"]
