"""The patient page's endpoints and the other pages of `serve` (service.pages), driven in-process by FastAPI's
TestClient: a case pasted as text goes through the one reader and the gate; an invalid case gets its violations
only; the case form comes from the case shapes of whichever guideline is served. The expectations are read from
the guidelines' sources (guidelines/plbp/source/guideline.txt, tests/fixtures/mini-guideline/source.txt) and
their case shapes. The same pages in a real browser: tests/test_page_browser.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import MINI_HOME, REPO
from guideline_kg.cases.reader import load_cases
from guideline_kg.core.namespaces import PREFIXES
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.service.app import ServerConfig, create_app

PROJECT = Project.at()
CASES = PROJECT.cases_dir
PLBP = "https://w3id.org/guideline-kg/plbp/"
GKO = "https://w3id.org/guideline-kg/ontology#"
MINI_NS = "https://w3id.org/guideline-kg/test/mini/"
SERVED = ["c06-opioid-no-relief.ttl", "c04-urgent-deficit.ttl"]


def _unused(*_: object) -> None:
    raise AssertionError("the patient page runs no SPARQL endpoint query")


@pytest.fixture(scope="module")
def client(knowledge: Any) -> TestClient:
    cases = load_cases([CASES / n for n in SERVED], PROJECT)
    config = ServerConfig(PROJECT, knowledge, _unused, cases=cases, max_body=256 * 1024)
    return TestClient(create_app(config), base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def mini_client() -> TestClient:
    project = Project.at(REPO, kg=MINI_HOME)
    return TestClient(create_app(ServerConfig(project, load_knowledge(project), _unused)))


def _text(name: str) -> str:
    return (CASES / name).read_text(encoding="utf-8")


def _statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["id"].removeprefix(PLBP): r["status"] for r in result["recommendations"]}


# ------------------------------------------------------------------ evaluate and explain

@pytest.mark.slow
def test_pasted_turtle_c06_gets_the_opioid_conflict(client: TestClient) -> None:
    resp = client.post("/evaluate", json={"text": _text("c06-opioid-no-relief.ttl"), "name": "c06"})
    assert resp.status_code == 200
    out = resp.json()
    statuses = _statuses(out["result"])
    # line 16 (extended-release opioids after other treatments failed) and line 19 (no meaningful relief within a
    # month: longer-term use unlikely to help) both apply to c06 (6 weeks of opioids, 10 % relief): a conflict
    assert statuses["L16"] == statuses["L19"] == "applicable"
    assert [(c["for"], c["against"]) for c in out["result"]["conflicts"]] == [(PLBP + "L16", PLBP + "L19")]
    assert statuses["L04"] == "not-applicable"  # post-operative imaging was obtained (an MRI)
    assert out["result"]["scope"]["status"] == "in" and out["result"]["urgent"] == []
    # grouped by the guideline's sections: line 16 sits under "Opioid considerations" (line 15), in
    # "Pharmacologic Management" (13), "First-Line Approaches" (8), "Treatment Algorithm" (7)
    assert out["sections"][PLBP + "L16"]["trail"] == ["Treatment Algorithm", "First-Line Approaches",
                                                       "Pharmacologic Management", "Opioid considerations"]
    assert out["sections"][PLBP + "L04"]["trail"] == ["Initial Evaluation"]  # line 3
    assert out["svg"] is None or out["svg"].lstrip().startswith(("<?xml", "<svg", "<!--"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["c06-opioid-no-relief.ttl", "fhir-c04-urgent-deficit.fhir.json",
                                  "c17-routine-repeat-imaging.jsonld"])
def test_counts_agree_with_recommend(client: TestClient, name: str) -> None:
    out = client.post("/evaluate", json={"text": _text(name)}).json()
    cli = subprocess.run([str(Path(sys.executable).with_name("guideline-kg")), "recommend", str(CASES / name),
                          "--format", "json"], capture_output=True, text=True, check=False)
    [case] = json.loads(cli.stdout)["cases"]
    counts: dict[str, int] = {}
    for r in case["recommendations"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    assert out["counts"] == counts
    assert sum(out["counts"].values()) == len(out["result"]["recommendations"])
    assert not any(r["id"] == case.get("guideline") for r in out["result"]["recommendations"])


@pytest.mark.slow
def test_fhir_c04_gets_the_urgent_finding_and_its_action(client: TestClient) -> None:
    out = client.post("/evaluate", json={"text": _text("fhir-c04-urgent-deficit.fhir.json")}).json()
    [urgent] = out["result"]["urgent"]
    # line 5: progressive neurological deficits "would require prompt surgical intervention"
    assert "neurological deficit" in urgent["finding"] and "surgical" in urgent["action"]


@pytest.mark.slow
def test_explain_gives_the_why_not(client: TestClient) -> None:
    body = {"text": _text("c06-opioid-no-relief.ttl"), "statement": PLBP + "L04"}
    out = client.post("/explain", json=body).json()
    assert out["status"] == "not-applicable" and out["source_lines"] == [4]
    assert any(c["state"] == "failed" for c in out["conditions"]) and "imaging" in " ".join(out["because"])
    assert client.post("/explain", json={**body, "statement": PLBP + "nope"}).status_code == 400


def test_an_invalid_case_gets_its_violations_and_no_result(client: TestClient) -> None:
    text = (f"@prefix gk: <{GKO}> .\n<https://w3id.org/guideline-kg/case/x> a gk:Patient ; gk:ageYears 300 .\n")
    resp = client.post("/evaluate", json={"text": text})
    assert resp.status_code == 422
    out = resp.json()
    assert out["valid"] is False and "result" not in out and "svg" not in out
    paths = {v["path"] for v in out["violations"]}
    assert {"gk:assessmentDate", "gk:ageYears"} <= paths  # no assessment date; an age above 120
    explained = client.post("/explain", json={"text": text, "statement": PLBP + "L04"})
    assert explained.status_code == 422 and "conditions" not in explained.json()


@pytest.mark.parametrize("body,status,message", [
    ({"text": "@prefix : <urn:x#> .\n:a :b :c .\n"}, 400, "pasted.ttl: no gk:Patient"),
    ({"text": "garbage {{"}, 400, "pasted.ttl:1:"),
    ({"text": "{\"resourceType\": \"Patient\"}"}, 400, "pasted.fhir.json"),
    ({"text": "x", "format": "rdfxml"}, 400, "format must be one of"),
    ({"text": "x", "name": "../etc/passwd"}, 400, "name must be"),
    ({"text": ""}, 400, "send {\"text\""),
])
def test_unreadable_input_is_400_naming_the_place(client: TestClient, body: dict[str, Any], status: int,
                                                  message: str) -> None:
    resp = client.post("/evaluate", json=body)
    assert resp.status_code == status and message in resp.json()["error"], resp.text
    assert "gkg-page-" not in resp.text  # the temporary folder is not shown


def test_the_body_limit_applies(client: TestClient) -> None:
    resp = client.post("/evaluate", content=b'{"text": "' + b"#" * (300 * 1024) + b'"}',
                       headers={"content-type": "application/json"})
    assert resp.status_code == 413


# ------------------------------------------------------------------ the form from the case shapes

def _field(fields: list[dict[str, Any]], path: str) -> dict[str, Any]:
    [f] = [f for f in fields if f["path"] == path]
    return f


def test_the_form_follows_the_plbp_case_shapes(client: TestClient) -> None:
    form = client.get("/case-form").json()
    root = form["root"]
    assert root["class"] == GKO + "Patient"
    date = _field(root["fields"], GKO + "assessmentDate")  # minCount 1, xsd:date
    assert date["required"] and date["datatypes"] == ["http://www.w3.org/2001/XMLSchema#date"]
    age = _field(root["fields"], GKO + "ageYears")
    assert (age["min"], age["max"], age["required"]) == (0, 120, False)
    surgery = _field(root["fields"], GKO + "hadIndexSurgery")
    assert surgery["kind"] == "node" and not surgery["many"]
    assert {GKO + "Laminectomy", GKO + "Foraminotomy"} <= {t["iri"] for t in surgery["types"]}
    finding = _field(root["fields"], GKO + "hasFinding")
    assert finding["many"] and GKO + "ProgressiveNeurologicalDeficit" in {t["iri"] for t in finding["types"]}
    status = _field(form["nodes"][finding["node"]]["fields"], GKO + "assessmentStatus")
    assert [o["iri"] for o in status["options"]] == [GKO + "AssessedPresent", GKO + "AssessedAbsent",
                                                     GKO + "NotAssessed"]  # sh:in, in its order
    episode = _field(root["fields"], GKO + "hadTreatment")
    action = _field(form["nodes"][episode["node"]]["fields"], GKO + "careAction")
    assert action["kind"] == "choice" and GKO + "ExtendedReleaseOralOpioidTherapy" in {o["iri"] for o in
                                                                                      action["options"]}


def test_the_mini_guideline_gets_its_own_form(mini_client: TestClient) -> None:
    form = mini_client.get("/case-form").json()
    fields = form["root"]["fields"]
    ottawa = _field(fields, MINI_NS + "ottawaRulesResult")
    assert {o["iri"] for o in ottawa["options"]} == {MINI_NS + "OttawaPositive", MINI_NS + "OttawaNegative"}
    injury = _field(fields, MINI_NS + "hasAnkleInjury")
    assert injury["kind"] == "node" and not injury["many"]  # sh:maxCount 1
    assert MINI_NS + "AnkleSprain" in {t["iri"] for t in injury["types"]}
    [date] = form["nodes"][injury["node"]]["fields"]
    assert date["path"] == MINI_NS + "injuryDate"
    assert not any(f["path"].startswith(PLBP) or "hadIndexSurgery" in f["path"] for f in fields)


@pytest.mark.slow
def test_a_case_as_the_form_writes_it_is_evaluated(mini_client: TestClient) -> None:
    """The Turtle the form's script writes (full IRIs, one triple a line): an adult's ankle sprain with negative
    Ottawa rules; line 3 of the mini source: avoid routine radiography when the rules are negative."""
    base, xsd = "https://w3id.org/guideline-kg/case/", "http://www.w3.org/2001/XMLSchema#"
    rdf = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
    text = "\n".join([
        f"<{base}f1> <{rdf}> <{GKO}Patient> .",
        f'<{base}f1> <{GKO}assessmentDate> "2026-03-02"^^<{xsd}date> .',
        f'<{base}f1> <{GKO}ageYears> "45"^^<{xsd}integer> .',
        f"<{base}f1> <{MINI_NS}ottawaRulesResult> <{MINI_NS}OttawaNegative> .",
        f"<{base}f1> <{MINI_NS}hasAnkleInjury> <{base}f1-hasAnkleInjury-1> .",
        f"<{base}f1-hasAnkleInjury-1> <{rdf}> <{MINI_NS}AnkleSprain> ."]) + "\n"
    out = mini_client.post("/evaluate", json={"text": text, "format": "turtle", "name": "f1"}).json()
    statuses = {r["id"].removeprefix(MINI_NS): r["status"] for r in out["result"]["recommendations"]}
    assert statuses["L3"] == "applicable"


# ------------------------------------------------------------------ pages

def test_pages_load_nothing_from_outside_and_run_no_inline_script(client: TestClient) -> None:
    for path in ("/", "/patient", "/query", "/algorithm", f"/resource?iri={PLBP}L16"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-security-policy"].startswith("default-src 'self'")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", resp.text), path
        for tag in re.findall(r"<script[^>]*>", resp.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path, tag)
        for name in re.findall(r'(?:src|href)="/static/([^"]+)"', resp.text):
            static = client.get(f"/static/{name}")
            assert static.status_code == 200, name
            assert not re.search(r"""(fetch\(|src=|href=|url\(|import )\s*["'`]?(https?:)?//""", static.text), name
    assert client.get("/static/..%2Fpages.py").status_code == 404


def test_the_query_page_puts_competency_questions_first_with_whole_labels(client: TestClient) -> None:
    text = client.get("/query").text
    data = json.loads(re.search(r'<script type="application/json" id="query-data">(.*?)</script>', text,
                                re.S).group(1).replace("<\\/", "</"))
    groups = data["groups"]
    assert groups[0]["label"] == "Competency questions"
    cq = PROJECT.parts("competency_questions")[0]
    names = {p.stem for p in cq.glob("*.rq")}
    assert {q["name"] for q in groups[0]["queries"]} == names
    assert not any(q["name"] in names for g in groups[1:] for q in g["queries"])
    for q in groups[0]["queries"]:  # whole first comment line, never cut
        first = next(line for line in (cq / f"{q['name']}.rq").read_text().splitlines() if line.startswith("#"))
        assert q["purpose"] == first.lstrip("#").strip()
    assert {"xsd", "sh", "sssom", "plbp", "gk"} <= set(data["prefixes"]) and data["prefixes"].keys() == PREFIXES.keys()
    assert {g["label"] for g in groups} >= {"Checks", "Exports"}


def test_old_query_page_links_still_work(client: TestClient) -> None:
    resp = client.get("/?example=cites-reference&run=1", follow_redirects=False)
    assert resp.status_code == 307 and resp.headers["location"] == "/query?example=cites-reference&run=1"


def test_resource_page_shows_a_statement_with_its_source_line(client: TestClient) -> None:
    text = client.get("/resource", params={"iri": PLBP + "L19"}).text
    assert "source line 19" in text
    assert "Patients who do not experience meaningful pain relief within 1 month of opioid treatment" in text
    assert 'href="/resource?iri=https%3A%2F%2Fw3id.org%2Fguideline-kg%2Fontology%23' in text  # linked qnames


def test_resource_page_escapes_the_iri(client: TestClient) -> None:
    text = client.get("/resource", params={"iri": "urn:x<script>alert(1)</script>"}).text
    assert "<script>alert" not in text and "&lt;script&gt;" in text


def test_served_cases_and_their_sources(client: TestClient) -> None:
    cases = {c["name"]: c for c in client.get("/cases").json()}
    assert set(cases) == {"c06-opioid-no-relief", "c04-urgent-deficit"}
    source = client.get("/cases/c06-opioid-no-relief").json()
    assert source["format"] == "turtle" and "case:c06 a gk:Patient" in source["text"]
    assert client.get("/cases/..%2F..%2Fguideline.toml").status_code == 404


@pytest.mark.slow
def test_algorithm_svg_draws_a_served_case(client: TestClient) -> None:
    plain = client.get("/algorithm.svg")
    if plain.status_code != 200:
        pytest.skip("Graphviz cannot draw here: " + plain.text)
    overlay = client.get("/algorithm.svg", params={"case": "c06-opioid-no-relief"})
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/svg+xml"
    other = client.get("/algorithm.svg", params={"case": "c04-urgent-deficit"})
    assert len({plain.content, overlay.content, other.content}) == 3  # each case its own overlay
    overview = client.get("/algorithm.svg", params={"case": "c06-opioid-no-relief", "view": "overview"})
    assert overview.status_code == 200 and overview.content != overview_of_nothing(client)
    assert client.get("/algorithm.svg", params={"view": "poster"}).status_code == 400
    missing = client.get("/algorithm.svg", params={"case": "nope"})
    assert missing.status_code == 404 and "c06-opioid-no-relief" in missing.text


def overview_of_nothing(client: TestClient) -> bytes:
    return client.get("/algorithm.svg", params={"view": "overview"}).content
