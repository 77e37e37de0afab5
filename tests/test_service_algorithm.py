"""`/algorithm.svg` draws the served guideline (the knowledge `serve --kg` loaded), not a file under build/, and
renders it once per process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph, Literal
from rdflib.namespace import RDF, RDFS

import guideline_kg.service.pages as service_pages
from conftest import REPO
from guideline_kg.core.namespaces import GK
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.service.app import ServerConfig, create_app

ALGORITHM = REPO / "guidelines" / "plbp" / "algorithm.ttl"
#: A label no guideline uses, put on a decision point of a copy of the graph.
MARKER = "Zyxwvutsrq"


def _no_queries(*_: object) -> None:
    raise AssertionError("the algorithm route runs no SPARQL endpoint query")


def _client(project: Project, knowledge: Graph) -> TestClient:
    return TestClient(create_app(ServerConfig(project=project, knowledge=knowledge, run_query=_no_queries)))


@pytest.fixture
def stale_home(tmp_path: Path) -> Project:
    """This checkout's data, but a home whose build/algorithm.svg is some other drawing."""
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "algorithm.svg").write_text("<svg><text>STALE</text></svg>")
    return Project.at(tmp_path, kg=REPO / "guidelines" / "plbp", ontology=REPO / "ontology",
                      shapes=REPO / "shapes", queries=REPO / "queries")


def test_algorithm_svg_draws_the_served_guideline(stale_home: Project, knowledge: Graph) -> None:
    resp = _client(stale_home, knowledge).get("/algorithm.svg")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/svg+xml"
    assert "STALE" not in resp.text
    decisions = set(Graph().parse(ALGORITHM).subjects(RDF.type, GK.DecisionPoint))
    assert len(decisions) >= 3  # the guideline's decision points, each a linked node of the drawing
    for node in decisions:
        assert f'xlink:href="{node}"' in resp.text


def test_algorithm_svg_follows_the_served_knowledge_not_the_checkout(stale_home: Project, knowledge: Graph) -> None:
    decision = sorted(Graph().parse(ALGORITHM).subjects(RDF.type, GK.DecisionPoint))[0]
    changed = Graph() + knowledge
    changed.remove((decision, RDFS.label, None))
    changed.add((decision, RDFS.label, Literal(MARKER, lang="en")))
    assert MARKER in _client(stale_home, changed).get("/algorithm.svg").text
    assert MARKER not in _client(stale_home, knowledge).get("/algorithm.svg").text


def test_algorithm_svg_is_rendered_once_per_process(stale_home: Project, knowledge: Graph,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = service_pages.build_graph

    def counting(*args: object, **kw: object) -> object:
        calls.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(service_pages, "build_graph", counting)
    client = _client(stale_home, knowledge)
    first, second = client.get("/algorithm.svg"), client.get("/algorithm.svg")
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert len(calls) == 1


def test_a_guideline_without_an_algorithm_gets_404_saying_so(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(REPO / "guidelines" / "plbp", package)
    manifest = package / "guideline.toml"
    manifest.write_text("".join(line for line in manifest.read_text().splitlines(keepends=True)
                                if not line.startswith("algorithm")))
    (package / "algorithm.ttl").unlink()
    project = Project.at(REPO, kg=package)
    resp = _client(project, load_knowledge(project)).get("/algorithm.svg")
    assert resp.status_code == 404
    assert str(package) in resp.text and "no treatment algorithm" in resp.text


def test_every_page_links_the_algorithm_page_which_links_the_drawing(stale_home: Project, knowledge: Graph) -> None:
    client = _client(stale_home, knowledge)
    for path in ("/", "/query"):
        assert 'href="/algorithm"' in client.get(path).text
    assert 'href="/algorithm.svg?view=detailed"' in client.get("/algorithm").text


