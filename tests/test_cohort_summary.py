"""The `cohort evaluate` summary: per statement the count and share of valid cases in each status, with the start of
the statement's text; invalid cases counted by defect; `--list-invalid N`; the cheap count behind the progress bar.

The cohort is generated from the mini guideline's profile (tests/fixtures/mini-guideline) with every value fixed,
group by group, so its composition is known; the expected figures are worked out from the mini guideline's source
(source.txt: line 2 Ottawa rules and line 4 functional support for adults with an ankle sprain, line 3 no routine
radiography when the Ottawa rules are negative; definitions.ttl: an adult is 18 or older) and its case shapes
(an age from 0 to 120, at most one ankle injury)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from guideline_kg.cli.main import main
from guideline_kg.cohort.evaluate import CohortEvaluator, shorten
from guideline_kg.cohort.generate import generate, load_profile, write_cohort
from guideline_kg.cohort.shards import count_records
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge

MINI = Path(__file__).resolve().parent / "fixtures" / "mini-guideline"
MINI_ID = "https://w3id.org/guideline-kg/test/mini/"
AGE_MESSAGE = "The age must be one whole number of years from 0 to 120 (gk:ageYears)."
INJURY_MESSAGE = "The case records at most one ankle injury (mini:hasAnkleInjury)."

# (seed, cases, age or None for missing, Ottawa rules result, planted defect or None)
GROUPS = [
    (1, 5, 30, "mini:OttawaNegative", None),   # adults, sprain, rules negative: L2, L3, L4 apply
    (2, 3, 30, "mini:OttawaPositive", None),   # adults, sprain, rules positive: L2, L4 apply; L3 does not
    (3, 2, 12, "mini:OttawaNegative", None),   # minors: out of scope, nothing applies
    (4, 1, None, "mini:OttawaNegative", None),  # age unknown: all undetermined
    (5, 2, 30, "mini:OttawaNegative", "age-out-of-range"),  # age 130: invalid
    (6, 1, 30, "mini:OttawaNegative", "two-injuries"),       # two ankle injuries: invalid
]
CASES, VALID = 14, 11


def _profile(tmp: Path, seed: int, age: int | None, rules: str, defect: str | None) -> Path:
    """The mini profile with every draw fixed: the age (or none), a sprain with no date, the rules' result, and
    the defect planted in every record (or none)."""
    data: dict[str, Any] = copy.deepcopy(json.loads((MINI / "cohort-profile.json").read_text(encoding="utf-8")))
    patient, injury, ottawa = data["record"]
    patient["properties"] = [p for p in patient["properties"] if p["property"] != "gk:ageYears"]
    if age is not None:
        patient["properties"].append({"property": "gk:ageYears", "datatype": "xsd:integer", "value": {"const": age}})
    injury.pop("missing", None)
    injury["properties"] = [{"property": "rdf:type", "value": {"const": "mini:AnkleSprain"}}]
    data["record"][2] = {"subject": ottawa["subject"], "property": ottawa["property"], "value": {"const": rules}}
    if defect is None:
        data.pop("invalid")
    else:
        data["invalid"] = {"rate": 1, "defects": {defect: dict(data["invalid"]["defects"][defect], weight=1)}}
    path = tmp / f"profile-{seed}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_controlled_cohort(folder: Path, fmt: str = "turtle") -> Path:
    """The 14-case mini cohort of GROUPS as one file (one seed per group, so the case names differ)."""
    def records():  # a generator of the generator's records
        for seed, n, age, rules, defect in GROUPS:
            yield from generate(load_profile(_profile(folder, seed, age, rules, defect)), n, seed)

    path = folder / ("cohort.ttl" if fmt == "turtle" else "cohort.nt" if fmt == "ntriples" else "cohort.ndjson")
    with path.open("w", encoding="utf-8") as handle:
        write_cohort(records(), handle, fmt, project=Project.at(kg=MINI) if fmt == "fhir-ndjson" else None)
    return path


@pytest.fixture(scope="module")
def mini_cohort(tmp_path_factory) -> Path:
    return write_controlled_cohort(tmp_path_factory.mktemp("mini-cohort"))


@pytest.fixture(scope="module")
def mini_run(mini_cohort) -> tuple[CohortEvaluator, Any]:
    project = Project.at(kg=MINI)
    ce = CohortEvaluator(load_knowledge(project), project)
    return ce, ce.run(mini_cohort, io.StringIO(), shard_size=4)


def test_the_counts_and_shares_per_statement_are_the_cohorts_composition(mini_run) -> None:
    _, summary = mini_run
    assert (summary.cases, summary.valid, len(summary.invalid), summary.in_scope, summary.urgent) == (14, 11, 3, 8, 0)
    assert {sid.removeprefix(MINI_ID): dict(c) for sid, c in summary.status.items()} == {
        "L2": {"applicable": 8, "not-applicable": 2, "undetermined": 1},
        "L3": {"applicable": 5, "not-applicable": 5, "undetermined": 1},
        "L4": {"applicable": 8, "not-applicable": 2, "undetermined": 1},
    }


def test_the_table_shows_labels_and_percentages_of_the_valid_cases(mini_run) -> None:
    ce, summary = mini_run
    table = summary.table(ce.lines, ce.texts)
    assert table.splitlines()[0] == ("14 cases: 11 valid (78.6%), 3 invalid (21.4%, skipped); of the valid: 8 in scope "
                                     "(72.7%), 0 with urgent findings (0.0%); 0 warnings")
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith("L")}
    # 8/11 = 72.7%, 2/11 = 18.2%, 1/11 = 9.1%; 5/11 = 45.5%
    assert rows["L2"].split()[:8] == ["L2", "2", "8", "72.7%", "2", "18.2%", "1", "9.1%"]
    assert rows["L3"].split()[:8] == ["L3", "3", "5", "45.5%", "5", "45.5%", "1", "9.1%"]
    # the start of the statement's text (source.txt line 3, 66 characters), cut at a word within 60
    assert rows["L3"].endswith("  Avoid routine radiography when the Ottawa ankle rules are…")
    assert rows["L4"].endswith("  Functional support should be used rather than immobilisation")  # 61: whole


def test_invalid_cases_are_counted_by_defect_not_listed(mini_run) -> None:
    ce, summary = mini_run
    assert [(d["cases"], d["message"]) for d in summary.by_defect()] == [(2, AGE_MESSAGE), (1, INJURY_MESSAGE)]
    table = summary.table(ce.lines, ce.texts)
    section = table.split("invalid cases by defect (3 cases", 1)[1]
    counted = [line.split(None, 1) for line in section.splitlines()[2:4]]
    assert [(n, rest.split(None, 2)[-1]) for n, rest in counted] == [("2", AGE_MESSAGE), ("1", INJURY_MESSAGE)]
    assert "mini5-p0000001" not in table  # no case is listed without --list-invalid
    listed = summary.table(ce.lines, ce.texts, list_invalid=2)
    assert "the first 2 of 3 invalid cases (--list-invalid 2):" in listed
    assert listed.count("\n  mini") == 2 and "mini5-p0000001: mini5-p0000001: " + AGE_MESSAGE in listed


def test_cli_summary_and_list_invalid(mini_cohort, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    code = main(["--kg", str(MINI), "cohort", "evaluate", str(mini_cohort), "--out", str(out), "--list-invalid", "1"])
    stdout, _ = capsys.readouterr()
    assert code == 1 and len(out.read_text().splitlines()) == CASES
    assert "72.7%" in stdout
    # age 130 breaks the shape's sh:maxInclusive 120 (shapes/case-shapes.ttl)
    assert next(" ".join(line.split()) for line in stdout.splitlines() if line.endswith(AGE_MESSAGE)) == \
        f"2 ageYears MaxInclusive {AGE_MESSAGE}"
    assert "the first 1 of 3 invalid cases" in stdout
    code = main(["--kg", str(MINI), "cohort", "evaluate", str(mini_cohort), "--out", str(tmp_path / "j.jsonl"),
                 "--summary", "--summary-format", "json"])
    doc = json.loads(capsys.readouterr()[0])
    assert [(d["cases"], d["message"], d["path"]) for d in doc["invalid_by_defect"]] == [
        (2, AGE_MESSAGE, "https://w3id.org/guideline-kg/ontology#ageYears"),
        (1, INJURY_MESSAGE, MINI_ID + "hasAnkleInjury")]
    assert main(["cohort", "evaluate", str(mini_cohort), "--list-invalid", "-1"]) == 2


@pytest.mark.parametrize("fmt", ["turtle", "ntriples", "fhir-ndjson"])
def test_the_progress_total_is_the_number_of_records(tmp_path: Path, fmt: str) -> None:
    assert count_records(write_controlled_cohort(tmp_path, fmt)) == CASES


def test_the_progress_total_of_files_without_markers_and_with_blank_lines(tmp_path: Path) -> None:
    patient = "<https://w3id.org/guideline-kg/ontology#Patient>"
    unmarked = tmp_path / "u.ttl"
    unmarked.write_text(f"<urn:x:a> a {patient} .\n<urn:x:b> a {patient} .\n<urn:x:b> a {patient} .\n")
    assert count_records(unmarked) == 2  # two subjects typed gk:Patient
    ndjson = tmp_path / "b.ndjson"
    ndjson.write_bytes(b'\n{"resourceType":"Bundle"}\n\n\n{"resourceType":"Bundle"}')  # no newline at the end
    assert count_records(ndjson) == 2
    assert count_records(tmp_path / "c.csv") is None


def test_shorten_cuts_at_a_word() -> None:
    assert shorten("Avoid routine radiography when the rules are negative", 30) == "Avoid routine radiography…"
    assert shorten("short", 30) == "short"
