"""The pages of `guideline-kg serve` in a real browser: headless Chromium (Debian's, driven by Playwright) on a
started server. The expectations are the guideline's (guidelines/plbp/source/guideline.txt, the mini fixture's
source.txt); screenshots go to build/screenshots/ for review (docs/serve.md shows one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, serve_running
from guideline_kg.core.project import Project

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "build" / "screenshots"
PROJECT = Project.at()
MINI = REPO / "tests" / "fixtures" / "mini-guideline"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="the browser tests drive Debian's chromium "
                                 "(apt-get install -y chromium); /usr/bin/chromium is absent")]



def _serve(args: list[str], log: Path, options: tuple[str, ...] = ()) -> Iterator[str]:
    yield from serve_running([*options, "serve", *args], log)

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`guideline-kg serve guidelines/plbp/cases` on a free port."""
    yield from _serve([str(PROJECT.cases_dir)], tmp_path_factory.mktemp("serve") / "serve.log")


@pytest.fixture(scope="module")
def mini_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`guideline-kg serve --kg tests/fixtures/mini-guideline` (no cases): the second guideline's pages."""
    yield from _serve([], tmp_path_factory.mktemp("serve-mini") / "serve.log", ("--kg", str(MINI)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - heavy, only these tests

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that records console errors (a CSP refusal of the server's own script or style is one)."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    context.close()


def _shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _evaluate(pg: Any, url: str, text: str) -> None:
    pg.goto(url + "/")
    pg.fill("#case", text)
    pg.click("#evaluate")
    pg.wait_for_selector("#result:not([hidden]) h2", timeout=60000)


def _status(pg: Any, line: str) -> str:
    return str(pg.get_attribute(f"#stmt-{line}", "data-status"))


def test_paste_c06_shows_the_opioid_conflict_and_the_statuses(server: str, page: Any) -> None:
    _evaluate(page, server, (PROJECT.cases_dir / "c06-opioid-no-relief.ttl").read_text(encoding="utf-8"))
    page.wait_for_selector("#statements")
    # line 16 permits extended-release opioids after failed first-line care; line 19 says a month without
    # meaningful relief (c06: 6 weeks, 10 %) makes longer-term use unlikely to help: both apply, in conflict
    assert _status(page, "L16") == "applicable" and _status(page, "L19") == "applicable"
    conflict = page.inner_text("#conflicts")
    assert "line 16" in conflict and "line 19" in conflict and "opioid" in conflict.lower()
    # imaging was obtained after surgery (c06 has an MRI), so line 4's "obtain MRI or CT" does not apply
    assert _status(page, "L04") == "not-applicable"
    assert page.inner_text("#scope .scope-status") == "in"
    assert page.query_selector("#urgent") is None  # no deficit, no serious sign
    # the pathway overlay is inline and scaled to its column
    box = page.query_selector("#pathway svg").bounding_box()
    column = page.query_selector("#pathway").bounding_box()
    assert box and column and box["width"] <= column["width"] + 1 and box["height"] > 100
    _shot(page, "patient-c06")
    assert not [e for e in page.errors if "Content Security Policy" in e or "Refused" in e], page.errors


def test_paste_fhir_c04_shows_the_urgent_banner(server: str, page: Any) -> None:
    _evaluate(page, server, (PROJECT.cases_dir / "fhir-c04-urgent-deficit.fhir.json").read_text(encoding="utf-8"))
    page.wait_for_selector("#urgent")
    banner = page.inner_text("#urgent")
    # line 5: progressive neurological deficits "would require prompt surgical intervention"
    assert "URGENT" in banner and "surgical" in banner.lower() and "neurological deficit" in banner.lower()
    assert "source line 5" in banner
    _shot(page, "patient-fhir-c04")


def test_explain_a_statement_on_click_gives_the_why_not(server: str, page: Any) -> None:
    _evaluate(page, server, (PROJECT.cases_dir / "c06-opioid-no-relief.ttl").read_text(encoding="utf-8"))
    page.click("#stmt-L04 button.explain")
    page.wait_for_selector("#stmt-L04 .explanation table")
    text = page.inner_text("#stmt-L04 .explanation")
    # why not: the case already has post-operative imaging, the condition of line 4 failed
    assert "Why not" in text and "imaging" in text.lower() and "failed" in text
    assert "Would become applies" in text
    _shot(page, "patient-explain")


def test_pick_an_example_case(server: str, page: Any) -> None:
    page.goto(server + "/")
    page.wait_for_selector("#example option[value='c04-urgent-deficit']", state="attached")
    page.select_option("#example", "c04-urgent-deficit")
    page.wait_for_selector("#urgent", timeout=60000)
    assert "c04" in page.input_value("#case")


def test_upload_a_json_ld_case(server: str, page: Any) -> None:
    page.goto(server + "/")
    page.set_input_files("#upload", str(PROJECT.cases_dir / "c17-routine-repeat-imaging.jsonld"))
    page.wait_for_function("document.getElementById('case').value.includes('@context')")
    assert page.input_value("#format") == "jsonld"
    page.click("#evaluate")
    page.wait_for_selector("#statements", timeout=60000)
    # imaging already obtained and no new indication: line 37 (avoid routine imaging) applies, line 4 does not
    assert _status(page, "L37") == "applicable" and _status(page, "L04") == "not-applicable"
    assert "c17-routine-repeat-imaging" in page.inner_text("#result h2")


def test_an_invalid_case_shows_its_violations_and_no_statement(server: str, page: Any) -> None:
    text = ('@prefix gk: <https://w3id.org/guideline-kg/ontology#> .\n'
            '<https://w3id.org/guideline-kg/case/x> a gk:Patient ; gk:ageYears 300 .\n')
    _evaluate(page, server, text)
    page.wait_for_selector("#violations")
    assert "assessment date" in page.inner_text("#violations")
    assert page.query_selector("#statements") is None and page.query_selector(".stmt") is None


def test_a_label_with_a_script_stays_text(server: str, page: Any) -> None:
    text = (PROJECT.cases_dir / "c06-opioid-no-relief.ttl").read_text(encoding="utf-8").replace(
        "gk:ageYears 58", "gk:ageYears 58 ; rdfs:comment \"x\"").replace(
        "case:c06-pain a gk:PostoperativePain", "case:c06-pain rdfs:label \"<img src=x onerror=alert(1)>\" ;\n"
        " a gk:PostoperativePain")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server + "/")
    page.fill("#case", text)
    page.click("#evaluate")
    page.wait_for_selector("#result:not([hidden]) h2", timeout=60000)
    assert not dialogs and page.query_selector("#result img") is None
    # a value the shapes refuse is shown in the violations table: as text
    _evaluate(page, server, '@prefix gk: <https://w3id.org/guideline-kg/ontology#> .\n'
              '<https://w3id.org/guideline-kg/case/x> a gk:Patient ; gk:assessmentDate "2026-01-01"^^'
              '<http://www.w3.org/2001/XMLSchema#date> ; gk:ageYears "<img src=x onerror=alert(1)>" .\n')
    page.wait_for_selector("#violations")
    assert "<img src=x onerror=alert(1)>" in page.inner_text("#violations")
    assert not dialogs and page.query_selector("#result img") is None


def test_the_form_from_the_case_shapes_builds_and_evaluates_a_case(server: str, page: Any) -> None:
    page.goto(server + "/")
    page.click("#form-box summary")
    page.wait_for_selector("#case-form .node-field")
    page.fill("#p-assessmentDate", "2026-03-10")
    page.click(".node-field[data-path$='#hadIndexSurgery'] button.add")
    page.select_option(".node-field[data-path$='#hadIndexSurgery'] .node-type", label="laminectomy")
    page.click(".node-field[data-path$='#hasPostoperativePain'] button.add")
    page.fill(".node-field[data-path$='#hasPostoperativePain'] input[id$='-painDurationMonths']", "9")
    page.click(".node-field[data-path$='#hasFinding'] button.add")
    page.select_option(".node-field[data-path$='#hasFinding'] .node-type", label="progressive neurological deficit")
    page.select_option(".node-field[data-path$='#hasFinding'] select[id$='-assessmentStatus']",
                       label="assessed, present")
    _shot(page, "patient-form")
    page.click("#form-evaluate")
    page.wait_for_selector("#result:not([hidden]) h2", timeout=60000)
    # chronic pain 9 months after a laminectomy: the guideline's population; a progressive deficit: line 5's
    # prompt surgical intervention
    assert page.inner_text("#scope .scope-status") == "in"
    assert "surgical" in page.inner_text("#urgent").lower()
    assert "hadIndexSurgery" in page.input_value("#case")  # the case the form built is shown


def test_the_second_guideline_gets_its_own_form(mini_server: str, page: Any) -> None:
    page.goto(mini_server + "/")
    page.click("#form-box summary")
    page.wait_for_selector("#case-form .node-field")
    page.fill("#p-assessmentDate", "2026-03-02")
    page.fill("#p-ageYears", "45")
    page.select_option("#p-ottawaRulesResult", label="Ottawa ankle rules negative")
    page.click(".node-field[data-path$='/hasAnkleInjury'] button.add")
    page.select_option(".node-field[data-path$='/hasAnkleInjury'] .node-type", label="ankle sprain")
    page.click("#form-evaluate")
    page.wait_for_selector("#statements", timeout=60000)
    # line 3: avoid routine radiography when the Ottawa ankle rules are negative
    assert _status(page, "L3") == "applicable"
    _shot(page, "patient-mini-form")


def test_query_page_lists_competency_questions_first_and_links_iris(server: str, page: Any) -> None:
    page.goto(server + "/query?example=cites-reference&run=1")
    page.wait_for_selector("#results a.iri")
    groups = page.eval_on_selector_all("#examples section", "s => s.map(x => x.dataset.group)")
    assert groups[0] == "Competency questions"
    first = page.eval_on_selector_all("#examples section:first-child .purpose", "s => s.map(x => x.textContent)")
    assert all(p.startswith("CQ") for p in first)
    link = page.query_selector("#results a.iri")
    assert link.inner_text().startswith("plbp:")
    _shot(page, "query-page")
    link.click()
    page.wait_for_selector("main.resource blockquote.source")
    assert "source line" in page.inner_text("main.resource")
    _shot(page, "resource-page")


def test_algorithm_page_scales_the_chart(server: str, page: Any) -> None:
    page.goto(server + "/algorithm?case=c06-opioid-no-relief")
    page.wait_for_function("document.getElementById('chart-img').complete && "
                           "document.getElementById('chart-img').naturalWidth > 0", timeout=60000)
    img = page.query_selector("#chart-img").bounding_box()
    assert img and img["width"] <= 1500 and img["height"] <= 1000
    _shot(page, "algorithm-page")
