"""One gate (checks.gate): every entry point that touches a case refuses every invalid example case.

Each case of tests/data/invalid-cases/ (Turtle, JSON-LD, FHIR; its <name>.expected.json says exit 1 with the
findings, or exit 2 with the file and line of a read error) goes through `recommend`, `validate`, `render --case`,
`query --results` and `--inferred`, `serve` (SPARQL dataset, /health, the query page, CDS Hooks), `export
careplan|cds-cards` and `cohort evaluate`. Each must report the case's file and violation, exit 1 (2 for an
unreadable file), and show no derived output for it: no recommendation, card, CarePlan, overlay or query row.
The gate itself, `recommend`, `export` and `query --results` run in the fast loop; the rest is marked slow
(about a minute: one CLI run per case for `render`, HermiT for `--inferred`, a served app, two cohorts).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from rdflib import Graph

from guideline_kg.cases.reader import load_cases
from guideline_kg.checks.gate import INVALID_SEVERITY, Gate, exit_code, is_invalid
from guideline_kg.checks.validate import validate_case
from guideline_kg.cli.main import main
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.service.app import CDS_SERVICE_ID

INVALID = Path(__file__).with_name("data") / "invalid-cases"
FILES = sorted(p for p in INVALID.iterdir() if p.is_file() and not p.name.endswith(".expected.json"))
READABLE = [p for p in FILES if not p.name.startswith("malformed-")]
FHIR = [p for p in FILES if p.name.endswith(".fhir.json")]
VALID = "c04-urgent-deficit.ttl"  # a valid case beside the invalid ones shows what "derived" looks like


def expected(path: Path) -> dict[str, Any]:
    stem = path.name.removesuffix(".fhir.json") if path.name.endswith(".fhir.json") else path.name.rsplit(".", 1)[0]
    return json.loads((INVALID / f"{stem}.expected.json").read_text(encoding="utf-8"))


def case_name(path: Path) -> str:
    return path.name.removesuffix(".fhir.json") if path.name.endswith(".fhir.json") else path.stem


def assert_reported(path: Path, err: str) -> None:
    """The message names the case file and each expected violation (focus and property), and no traceback."""
    assert "Traceback" not in err
    exp = expected(path)
    if exp["exit_code"] == 2:
        assert f"{path.name}:{exp['error']['line']}:" in err, err
        return
    block = err[err.index(str(path)):]
    assert "INVALID case" in block.splitlines()[0], err
    for f in exp["findings"]:
        line = next((x for x in block.splitlines()[1:] if x.startswith("  - " + f["focus"] + " ")
                     or x.startswith("  - " + f["focus"] + ":")), None)
        assert line is not None, f"{f['focus']} not reported: {err}"
        if f.get("property"):
            assert f["property"] in line, line


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ the gate itself

def test_every_invalid_file_is_readable_or_expected_unreadable() -> None:
    assert len(READABLE) >= 20 and len(FHIR) == 2
    assert {p.suffix for p in FILES} >= {".ttl", ".jsonld", ".json"}
    assert all(expected(p)["exit_code"] == 1 for p in READABLE)


@pytest.fixture(scope="module")
def gate(knowledge: Graph, project: Project) -> Gate:
    return Gate(knowledge, project)


@pytest.mark.parametrize("path", READABLE, ids=lambda p: p.name)
def test_gate_refuses_with_the_expected_violations(path: Path, gate: Gate) -> None:
    [gated] = gate.read([path])
    assert not gated.valid and gated.result is None and gated.case is None
    assert gated.source == path and gated.name == case_name(path)
    assert all(is_invalid(v.severity) for v in gated.violations)
    got = [(v.to_json()["focus"], v.to_json()["path"]) for v in gated.violations]
    assert got == [(f["focus"], f.get("property")) for f in expected(path)["findings"]]
    assert all(v.message and v.shape and v.severity == INVALID_SEVERITY for v in gated.violations)
    assert all(v.shape.startswith("http") for v in gated.violations)  # a named shape, not a blank node


@pytest.mark.slow
@pytest.mark.parametrize("path", READABLE, ids=lambda p: p.name)
def test_gate_finds_what_pyshacl_finds(path: Path, gate: Gate, project: Project) -> None:
    [gated] = gate.read([path])
    [case] = load_cases([path])
    reference = validate_case(case.graph, project, engine="pyshacl")
    assert {(f.focus, f.severity) for f in gated.findings()} == {(f.focus, f.severity) for f in reference}


def test_a_valid_case_is_derived(gate: Gate, project: Project) -> None:
    [gated] = gate.read([project.cases_dir / VALID])
    assert gated.valid and gated.violations == [] and gated.result is not None
    assert gated.result.statuses()  # the derivation happened


def test_a_blank_node_focus_is_a_violation_too(tmp_path: Path, gate: Gate,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The pain of pain-score-out-of-range.ttl as a blank node: the violation must still stop the case."""
    text = (INVALID / "pain-score-out-of-range.ttl").read_text(encoding="utf-8")
    text = text.replace("gk:hasPostoperativePain case:inv07-pain ;", "gk:hasPostoperativePain _:pain ;") \
        .replace("case:inv07-pain a gk:PostoperativePain", "_:pain a gk:PostoperativePain")
    assert "case:inv07-pain" not in text
    path = tmp_path / "blank-pain.ttl"
    path.write_text(text, encoding="utf-8")
    [gated] = gate.read([path])
    assert not gated.valid and [v.to_json()["path"] for v in gated.violations] == ["gk:painScore"]
    code, out, err = run(capsys, "recommend", str(path))
    assert code == 1 and "Case blank-pain" not in out and f"{path}: INVALID case" in err
    # the compiled engine of checks.validate (compared with pySHACL elsewhere) keeps it too
    [case] = load_cases([path])
    compiled = [f for f in validate_case(case.graph, gate.project, engine="compiled") if f.severity == "Violation"]
    assert len(compiled) == 1 and "pain" in compiled[0].message.lower()


# ------------------------------------------------------------------ command-line entry points
# Commands that take several cases get the valid case and every readable invalid case at once (what a folder
# of cases gives): the valid one shows what derived output looks like, and none of it may be an invalid case's.
# Each unreadable file goes through each command alone (exit 2, nothing on stdout).

UNREADABLE = [p for p in FILES if p not in READABLE]
COUNT = ("SELECT (COUNT(DISTINCT ?p) AS ?patients) (COUNT(DISTINCT ?r) AS ?results) WHERE { "
         "{ ?p a gk:Patient } UNION { ?r a gk:RecommendationResult } }")


def mixed(project: Project) -> list[str]:
    return [str(project.cases_dir / VALID), *map(str, READABLE)]


def invalid_patients() -> set[str]:
    """The patient IRIs of the readable invalid cases."""
    return {str(c.patient) for p in READABLE for c in load_cases([p])}


@pytest.mark.slow
def test_recommend(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "recommend", "--format", "json", *mixed(project))
    assert code == 1
    for path in READABLE:
        assert_reported(path, err)
    doc = json.loads(out)
    assert [c["case"] for c in doc["cases"]] == ["c04-urgent-deficit"]
    assert {c["file"] for c in doc["invalid_cases"]} == {str(p) for p in READABLE}
    for inv in doc["invalid_cases"]:
        assert inv["valid"] is False and "recommendations" not in inv
        path = Path(inv["file"])
        assert {v["focus"] for v in inv["violations"]} == {f["focus"] for f in expected(path)["findings"]}
    code, out, err = run(capsys, "recommend", *mixed(project))
    assert code == 1 and out.count("\nCase ") + out.startswith("Case ") == 1 and "Case c04-urgent-deficit" in out


@pytest.mark.slow
def test_recommend_only_invalid_prints_no_case(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "recommend", "--format", "turtle", *map(str, READABLE))
    assert code == 1 and "RecommendationResult" not in out


@pytest.mark.slow
@pytest.mark.parametrize("path", READABLE, ids=lambda p: p.name)
def test_render_case(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pathway.dot"
    code, out, err = run(capsys, "render", "--case", str(path), "--format", "dot", "--out", str(target))
    assert code == 1
    assert_reported(path, err)
    assert not target.exists() and out == "" and not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["careplan", "cds-cards"])
@pytest.mark.slow
def test_export(fmt: str, project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "export", "--format", fmt, *(x for p in mixed(project) for x in ("--case", p)))
    assert code == 1
    for path in READABLE:
        assert_reported(path, err)
    doc = json.loads(out)  # one valid case: its CarePlan, or its cards
    if fmt == "careplan":
        assert doc["resourceType"] == "CarePlan" and doc["subject"]
        assert not any(p.rsplit("/", 1)[-1] in json.dumps(doc) for p in invalid_patients())
    else:
        assert doc["cards"] and doc["cards"][0]["indicator"] == "critical"
    # only invalid cases: nothing at all (not an empty Bundle)
    folder = tmp_path / "out"
    code, out, err = run(capsys, "export", "--format", fmt, "--out", str(folder),
                         *(x for p in READABLE for x in ("--case", str(p))))
    assert code == 1 and out == "" and not folder.exists() and "nothing to export" in err


def test_query_results(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "query", "--results", "--format", "csv", "--query", COUNT, *map(str, READABLE))
    assert code == 1
    for path in READABLE:
        assert_reported(path, err)
    assert out.split() == ["patients,results", "0,0"]  # no fact of any invalid case and no result


@pytest.mark.hermit
@pytest.mark.slow
def test_query_inferred_and_results(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """One HermiT run for all: only the valid case's patient, results and inferences are in the data."""
    query = ("SELECT DISTINCT ?p WHERE { { ?p a gk:Patient } UNION { ?r gk:forCase ?p } UNION "
             "{ ?p ?x ?y FILTER(STRSTARTS(STR(?p), STR(case:))) } }")
    code, out, err = run(capsys, "query", "--results", "--inferred", "--format", "csv", "--query", query,
                         *mixed(project))
    assert code == 1
    for path in READABLE:
        assert_reported(path, err)
    [valid] = load_cases([project.cases_dir / VALID])
    rows = out.split()[1:]
    assert rows and all(r.startswith(str(valid.patient)) for r in rows), rows


@pytest.mark.slow
def test_validate(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "--no-reasoner", "--format", "json", *mixed(project))
    assert code == 1
    for path in READABLE:
        assert_reported(path, err)
    doc = json.loads(out)
    violations = {(f["kind"], f["focus"]) for f in doc["findings"] if f["severity"] == "Violation"}
    assert violations == {("shape", f["focus"]) for p in READABLE for f in expected(p)["findings"]}
    # the case-level checks run on derivation results: on the valid case only
    conflicts = {f["focus"] for f in doc["findings"] if f["kind"] == "case-conflict"}
    assert not conflicts & {"case:" + p.rsplit("/", 1)[-1] for p in invalid_patients()}


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["recommend"], ["validate", "--no-reasoner"], ["render", "--case"],
                                  ["query", "--results", "--inferred", "--query", "ASK {}"],
                                  ["export", "--format", "careplan", "--case"],
                                  ["export", "--format", "cds-cards", "--case"], ["serve", "--port", free_port()]],
                         ids=lambda a: "-".join(a[:2]))
@pytest.mark.parametrize("path", UNREADABLE, ids=lambda p: p.name)
def test_unreadable_case_exit_2(path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv, str(path))
    assert code == 2 and out == ""
    assert_reported(path, err)


# ------------------------------------------------------------------ cohort evaluate

@pytest.mark.slow
def test_cohort_evaluate_refuses_what_the_gate_refuses(tmp_path: Path, knowledge: Graph, project: Project,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A Turtle cohort of every Turtle and JSON-LD invalid case (the malformed Turtle as an unreadable record)
    plus one valid case, and an NDJSON cohort of the FHIR ones: every invalid case gets an invalid line and no
    derived line; the valid one is derived."""
    records = [(project.cases_dir / VALID).read_text(encoding="utf-8")]
    names = {"c04": True}
    for path in FILES:
        if path.suffix == ".ttl":
            records.append(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonld" and path in READABLE:
            records.append(Graph().parse(path, format="json-ld").serialize(format="turtle"))
    ttl = tmp_path / "cohort.ttl"
    ttl.write_text("".join(f"# case r{i}\n{text}\n" for i, text in enumerate(records)), encoding="utf-8")
    code, out, err = run(capsys, "cohort", "evaluate", str(ttl))
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and "Traceback" not in err
    derived = {d["case"] for d in lines if not d.get("invalid")}
    invalid = {d["case"] for d in lines if d.get("invalid")}
    assert derived == set(names)
    assert len(invalid) == len(records) - 1
    assert all(d["violations"] and d["violations"][0]["message"] for d in lines if d.get("invalid"))

    ndjson = tmp_path / "cohort.ndjson"
    bundles = [json.loads(p.read_text(encoding="utf-8")) for p in FHIR]
    ndjson.write_text("".join(json.dumps(b) + "\n" for b in bundles), encoding="utf-8")
    code, out, err = run(capsys, "cohort", "evaluate", str(ndjson))
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and len(lines) == len(FHIR) and all(d.get("invalid") for d in lines)
    assert all("recommendations" not in d for d in lines)


# ------------------------------------------------------------------ serve: dataset, pages, CDS Hooks

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`guideline-kg serve` on a valid case and every readable invalid case; uvicorn.run is replaced so that
    the very app the command builds is driven by FastAPI's TestClient."""
    captured: dict[str, Any] = {}
    project = Project.at()

    def fake_run(app: Any, **_: Any) -> None:
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:  # serve checks the Host header
            captured["health"] = client.get("/health").json()
            captured["page"] = client.get("/").text
            captured["sparql"] = client.get("/sparql", params={"query": COUNT},
                                            headers={"accept": "application/sparql-results+json"}).json()
            captured["cds"] = {}
            for path in [*FHIR, project.cases_dir / "fhir-c04-urgent-deficit.fhir.json"]:
                body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                        "context": {"patientId": case_name(path), "userId": "Practitioner/1"},
                        "prefetch": {"bundle": json.loads(path.read_text(encoding="utf-8"))}}
                resp = client.post(f"/cds-services/{CDS_SERVICE_ID}", json=body)
                captured["cds"][path.name] = (resp.status_code, resp.json())

    mp = pytest.MonkeyPatch()
    mp.setattr(uvicorn, "run", fake_run)
    try:
        code = main(["serve", "--port", free_port(), str(project.cases_dir / VALID), *map(str, READABLE)])
    finally:
        mp.undo()
    captured["code"] = code
    return captured


@pytest.mark.slow
def test_serve_leaves_invalid_cases_out_of_the_dataset(served: dict[str, Any]) -> None:
    [row] = served["sparql"]["results"]["bindings"]
    assert row["patients"]["value"] == "1"  # the valid case only
    assert int(row["results"]["value"]) > 0  # its derivation results
    assert served["code"] == 1


@pytest.mark.slow
def test_serve_lists_invalid_cases_on_health_and_the_page(served: dict[str, Any]) -> None:
    health = served["health"]
    assert health["cases"] == ["c04-urgent-deficit"]
    listed = {d["file"]: d for d in health["invalid_cases"]}
    assert set(listed) == {str(p) for p in READABLE}
    for path in READABLE:
        assert {v["focus"] for v in listed[str(path)]["violations"]} == \
            {f["focus"] for f in expected(path)["findings"]}
    assert f"{len(READABLE)} invalid cases left out" in served["page"]


@pytest.mark.slow
@pytest.mark.parametrize("path", FHIR, ids=lambda p: p.name)
def test_cds_hooks_invalid_bundle_gets_no_cards(path: Path, served: dict[str, Any]) -> None:
    # one card saying why (the violations summarised), no recommendation, never an urgent card
    status, body = served["cds"][path.name]
    [card] = body["cards"]
    assert status == 200 and card["indicator"] == "warning" and "suggestions" not in card
    findings = expected(path)["findings"]
    assert f"fails {len(findings)} check" in card["summary"]
    assert all(f"(`{f['property']}`)" in card["detail"] for f in findings)


@pytest.mark.slow
def test_cds_hooks_valid_bundle_gets_cards(served: dict[str, Any]) -> None:
    status, body = served["cds"]["fhir-c04-urgent-deficit.fhir.json"]
    assert status == 200 and body["cards"] and body["cards"][0]["indicator"] == "critical"


# ------------------------------------------------------------------ a folder with malformed files
# One malformed file does not stop the rest: it is reported (file, place, defect), every other case is read,
# validated and derived, and the run then exits 2. The folder holds a valid case, an invalid one, a malformed
# Turtle file and a FHIR Bundle with three defects.

BAD_BUNDLE = {"resourceType": "Bundle", "type": "collection", "timestamp": "2026-03-10T09:00:00Z", "entry": [
    {"resource": {"resourceType": "Patient", "id": "p", "birthDate": "1967-08-20"}},
    {"resource": {"resourceType": "Procedure", "id": "s", "status": "completed", "performedDateTime": "last summer",
                  "code": {"coding": [{"system": "http://snomed.info/sct", "code": "387731002"}]}}},
    {"resource": {"resourceType": "Condition", "id": "c", "code": "M96.1"}},
    {"fullUrl": "urn:uuid:0b7c4d1e-3f7a-4a55-9c5e-2d1f0e9a8b7c"}]}
INVALID_TTL = next(p for p in READABLE if p.suffix == ".ttl")
BAD_DEFECTS = ['entry 1 (Procedure/s): performedDateTime: expected a date (YYYY-MM-DD), got "last summer"',
               'entry 2 (Condition/c): code: expected a CodeableConcept object, got "M96.1"',
               "entry 3: no resource object"]


@pytest.fixture()
def folder(tmp_path: Path, project: Project) -> Path:
    d = tmp_path / "cases"
    d.mkdir()
    (d / VALID).write_text((project.cases_dir / VALID).read_text(encoding="utf-8"), encoding="utf-8")
    (d / INVALID_TTL.name).write_text(INVALID_TTL.read_text(encoding="utf-8"), encoding="utf-8")
    (d / "broken.ttl").write_text((INVALID / "malformed-turtle.ttl").read_text(encoding="utf-8"), encoding="utf-8")
    (d / "three-defects.fhir.json").write_text(json.dumps(BAD_BUNDLE), encoding="utf-8")
    return d


def test_gate_reads_every_case_of_a_folder_beside_unreadable_files(folder: Path, gate: Gate) -> None:
    results = gate.read([folder])
    by_name = {g.name: g for g in results}
    assert set(by_name) == {"c04-urgent-deficit", INVALID_TTL.stem, "broken", "three-defects"}
    assert not by_name[INVALID_TTL.stem].valid and by_name[INVALID_TTL.stem].violations
    assert by_name["c04-urgent-deficit"].valid and by_name["c04-urgent-deficit"].result is not None
    bad = by_name["three-defects"]
    assert bad.unreadable and not bad.valid and bad.result is None and bad.case is None
    assert bad.source == folder / "three-defects.fhir.json"
    assert [f"{e['place']}: {e['message']}" for e in bad.input_errors()] == BAD_DEFECTS
    assert bad.to_json()["unreadable"] is True and bad.to_json()["violations"] == []
    line = expected(INVALID / "malformed-turtle.ttl")["error"]["line"]
    assert by_name["broken"].unreadable and by_name["broken"].input_errors()[0]["place"].startswith(f"{line}:")
    assert exit_code(results) == 2 and exit_code([by_name["c04-urgent-deficit"]]) == 0


def test_gate_raises_when_no_file_can_be_read(folder: Path, gate: Gate) -> None:
    with pytest.raises(InputError, match="none of the 2 case files can be read"):
        gate.read([folder / "broken.ttl", folder / "three-defects.fhir.json"])
    with pytest.raises(InputError, match="no such file or folder"):
        gate.read([folder / "nope.ttl"])


def test_recommend_folder_with_malformed_files(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "recommend", "--format", "json", str(folder))
    assert code == 2 and "Traceback" not in err
    doc = json.loads(out)
    assert [c["case"] for c in doc["cases"]] == ["c04-urgent-deficit"]
    unreadable = {c["case"]: c for c in doc["invalid_cases"] if c.get("unreadable")}
    assert set(unreadable) == {"broken", "three-defects"}
    assert [f"{e['place']}: {e['message']}" for e in unreadable["three-defects"]["input_errors"]] == BAD_DEFECTS
    assert next(c for c in doc["invalid_cases"] if not c.get("unreadable"))["violations"]
    for defect in BAD_DEFECTS:
        assert defect in err
    assert f"{folder / 'broken.ttl'}: UNREADABLE case file" in err and f"{folder / 'broken.ttl'}:" in err
    # several CASE arguments behave as the folder does; the text report shows the valid case
    code, out, err = run(capsys, "recommend", str(folder / "three-defects.fhir.json"), str(folder / VALID))
    assert code == 2 and "Case c04-urgent-deficit" in out and "three-defects" in err


@pytest.mark.slow
def test_validate_folder_with_malformed_files(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "--no-reasoner", "--format", "json", str(folder))
    assert code == 2 and "Traceback" not in err
    doc = json.loads(out)
    shapes = {f["focus"] for f in doc["findings"] if f["kind"] == "shape" and f["severity"] == "Violation"}
    assert shapes == {f["focus"] for f in expected(INVALID_TTL)["findings"]}  # the invalid case was still validated
    assert f"{folder / INVALID_TTL.name}: INVALID case" in err
    for defect in BAD_DEFECTS:
        assert defect in err
    assert f"{folder / 'broken.ttl'}: UNREADABLE case file" in err


def test_reader_notes_reach_the_gate_result_with_their_place(tmp_path: Path, gate: Gate, project: Project) -> None:
    data = json.loads((project.cases_dir / "fhir-c04-urgent-deficit.fhir.json").read_text(encoding="utf-8"))
    data["entry"].append({"fullUrl": "urn:uuid:5d0c7f4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                          "resource": {"resourceType": "Procedure", "id": "p3", "status": "completed",
                                       "code": {"text": "physio"}}})
    path = tmp_path / "with-text.fhir.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    [gated] = gate.read([path])
    assert gated.valid
    note = {"place": "Procedure/p3 .code",
            "message": "text 'physio' has no coding the mapping knows (text is not matched to codes); not recorded"}
    assert gated.input_notes() == [note] and gated.to_json()["input_notes"] == [note]
