"""Every export of the algorithm parses and shows every node; the case view marks what derive finds applicable."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path

import networkx as nx
import pygraphviz as pgv
import pytest
from rdflib import Graph

from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.knowledge.algorithm import build_graph
from guideline_kg.outputs.render import case_view, node_label, render, to_mermaid
from guideline_kg.reasoning.derive import Evaluator

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "guidelines" / "plbp" / "cases"
VIEW_CASES = ["c04-urgent-deficit", "c11-refractory-with-target", "c15-first-line-effective",
              "c02-out-of-scope-discectomy"]


@pytest.fixture(scope="module")
def graph(knowledge: Graph, project: Project) -> nx.DiGraph:
    return build_graph(knowledge, project)


@pytest.fixture(scope="module")
def evaluator(knowledge: Graph, project: Project) -> Evaluator:
    return Evaluator(knowledge, project)


def _name(graph: nx.DiGraph, node: str) -> str:
    return graph.nodes[node]["name"]


def test_graphml_reads_back_through_networkx(graph: nx.DiGraph) -> None:
    back = nx.read_graphml(BytesIO(render(graph, "graphml")))
    assert set(back.nodes) == set(graph.nodes) and set(back.edges) == set(graph.edges)
    node = next(n for n in graph if _name(graph, n) == "L05-urgent")
    assert back.nodes[node]["urgent"] is True and back.nodes[node]["source_lines"] == "5"


def test_svg_is_xml_and_shows_every_node_label(graph: nx.DiGraph) -> None:
    root = ET.fromstring(render(graph, "svg"))
    texts = {" ".join("".join(t.itertext()).split()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    for _node, attrs in graph.nodes(data=True):
        lines = [" ".join(line.split()) for line in node_label(attrs).splitlines()]
        assert [line for line in lines if line not in texts] == [], attrs["name"]
        assert " ".join(lines).count(" ") >= len(attrs["label"].split()) - 1


def test_dot_reads_back_with_graphviz(graph: nx.DiGraph) -> None:
    ag = pgv.AGraph(string=render(graph, "dot").decode("utf-8"))
    names = {_name(graph, n) for n in graph}
    assert set(ag.nodes()) == names | {"legend"}
    visible = {(u, v) for u, v in ag.edges() if ag.get_edge(u, v).attr.get("style") != "invis"}
    assert visible == {(_name(graph, u), _name(graph, v)) for u, v in graph.edges}
    shapes = {n: ag.get_node(n).attr["shape"] for n in names}
    assert shapes["dp-red-flags"] == "diamond" and shapes["L04"] == "box" and shapes["L26"] == "note"


MERMAID_LINE = re.compile(
    r'^(flowchart TD'
    r'|    n_\w+(\["[^"]*"\]|\{"[^"]*"\}|\[\["[^"]*"\]\]|>"[^"]*"\])'
    r'|    n_\w+ (-->|==>)(\|"[^"]*"\|)? n_\w+'
    r'|    classDef \w+ [\w#:,.\- ]+'
    r'|    class n_\w+(,n_\w+)* \w+'
    r'|---|title: [^:]*)$')


def test_mermaid_follows_the_flowchart_grammar(graph: nx.DiGraph) -> None:
    text = render(graph, "mermaid", title="Treatment algorithm").decode("utf-8")
    bad = [line for line in text.splitlines() if not MERMAID_LINE.match(line)]
    assert bad == []
    edges = re.findall(r"^    (n_\w+) (?:-->|==>)(?:\|\"[^\"]*\"\|)? (n_\w+)$", text, re.M)
    assert len(edges) == graph.number_of_edges()
    assert text.count('{"') == sum(1 for _, a in graph.nodes(data=True) if a["kind"] == "decision")


def test_cytoscape_json_has_every_element(graph: nx.DiGraph) -> None:
    data = json.loads(render(graph, "cytoscape"))
    assert {n["data"]["id"] for n in data["elements"]["nodes"]} == set(graph.nodes)
    assert len(data["elements"]["edges"]) == graph.number_of_edges()


def test_png_is_a_png(graph: nx.DiGraph) -> None:
    assert render(graph, "png")[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", VIEW_CASES)
def test_case_view_marks_exactly_what_derive_finds_applicable(graph: nx.DiGraph, knowledge: Graph,
                                                              project: Project, evaluator: Evaluator,
                                                              name: str) -> None:
    case = load_cases([CASES / f"{name}.ttl"])[0]
    result = evaluator.evaluate(case)
    expected = {r.statement["id"] for r in result.results if r.status == "applicable"} & set(graph)
    view = case_view(graph, knowledge, project, case)
    assert view.applicable() == expected
    ag = pgv.AGraph(string=render(graph, "dot", view).decode("utf-8"))
    marked = {n for n in ag.nodes() if n != "legend" and "APPLIES" in ag.get_node(n).attr.get("label", "")}
    assert marked == {_name(graph, n) for n in expected}
    undetermined = {n for n in ag.nodes() if n != "legend" and "UNDETERMINED" in ag.get_node(n).attr.get("label", "")}
    assert undetermined == {_name(graph, n) for n, s in view.status.items() if s == "undetermined"}


def test_urgent_case_is_unmissable(graph: nx.DiGraph, knowledge: Graph, project: Project) -> None:
    case = load_cases([CASES / "c04-urgent-deficit.ttl"])[0]
    view = case_view(graph, knowledge, project, case)
    ag = pgv.AGraph(string=render(graph, "dot", view).decode("utf-8"))
    urgent = ag.get_node("L05-urgent").attr
    assert "URGENT" in urgent["label"] and urgent["color"] == "#c00000"
    assert "URGENT" in ag.graph_attr["label"]
    assert view.edges[next((u, v) for u, v in graph.edges if _name(graph, v) == "L05-urgent")] == "met"
    assert "URGENT" in to_mermaid(graph, view).splitlines()[1]


# ---- the command -------------------------------------------------------------------------------------------------
def test_render_command_writes_each_format(tmp_path: Path) -> None:
    for fmt in ("svg", "mermaid"):
        out = tmp_path / f"a.{fmt}"
        assert main(["--home", str(ROOT), "render", "--format", fmt, "--out", str(out)]) == 0
        assert out.stat().st_size > 0 and not (tmp_path / f"a.{fmt}.part").exists()


def test_render_command_case_view(tmp_path: Path) -> None:
    case = CASES / "c11-refractory-with-target.ttl"
    before = case.read_bytes()
    out = tmp_path / "case.dot"
    assert main(["--home", str(ROOT), "render", "--case", str(case), "--format", "dot", "--out", str(out)]) == 0
    assert "APPLIES" in out.read_text(encoding="utf-8") and case.read_bytes() == before


def test_render_command_bad_case_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(ROOT), "render", "--case", str(tmp_path / "missing.ttl")]) == 2
    assert "missing.ttl" in capsys.readouterr().err


def test_render_case_counts_as_recommend_counts(tmp_path, capsys) -> None:
    """The chart draws some statements only; the count it reports is the result's, as `recommend` reports it."""
    case = Path(__file__).resolve().parents[1] / "guidelines" / "plbp" / "cases" / "c06-opioid-no-relief.ttl"
    capsys.readouterr()
    assert main(["recommend", str(case), "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)["cases"][0]["recommendations"]
    applicable = sum(r["status"] == "applicable" for r in recs)
    assert main(["render", "--case", str(case), "--out", str(tmp_path / "c06.svg")]) == 0
    assert f"{applicable} applicable, " in capsys.readouterr().err
