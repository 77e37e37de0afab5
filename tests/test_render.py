"""Every export of the algorithm parses and shows every node; the case view marks what derive finds applicable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path
from typing import Any

import networkx as nx
import pygraphviz as pgv
import pytest
from rdflib import Graph

from guideline_kg.cases.reader import load_cases
from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.knowledge.algorithm import build_graph
from guideline_kg.outputs.render import _TEMPLATE_WARNING, LEGEND, case_view, node_label, render, to_mermaid
from guideline_kg.reasoning.derive import Evaluator

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
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


NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")


def test_graphml_has_xml_ids_iris_as_data_and_lower_case_booleans(graph: nx.DiGraph) -> None:
    text = render(graph, "graphml").decode("utf-8")
    root = ET.fromstring(text)
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    ids = [e.get("id", "") for e in root.iter() if e.tag.endswith(("}node", "}edge", "}key", "}graph"))]
    assert [i for i in ids if not NCNAME.match(i)] == [] and len(ids) == len(set(ids))
    booleans = {k.get("id") for k in root.iterfind("g:key", ns) if k.get("attr.type") == "boolean"}
    values = {d.text for d in root.iter("{http://graphml.graphdrawing.org/xmlns}data") if d.get("key") in booleans}
    assert booleans and values == {"true", "false"}
    back = nx.read_graphml(BytesIO(text.encode("utf-8")))
    iri = {n: a["iri"] for n, a in back.nodes(data=True)}
    assert set(iri.values()) == set(graph.nodes)
    assert {(iri[u], iri[v]) for u, v in back.edges} == set(graph.edges)
    node = next(n for n in back if iri[n].endswith("/L05-urgent"))
    assert node == "L05-urgent" and back.nodes[node]["urgent"] is True and back.nodes[node]["source_lines"] == "5"


def test_svg_is_xml_and_shows_every_node_label(graph: nx.DiGraph) -> None:
    root = ET.fromstring(render(graph, "svg"))
    texts = {" ".join("".join(t.itertext()).split()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    for _node, attrs in graph.nodes(data=True):
        lines = [" ".join(line.split()) for line in node_label(attrs).splitlines()]
        assert [line for line in lines if line not in texts] == [], attrs["name"]
        assert " ".join(lines).count(" ") >= len(attrs["label"].split()) - 1


def _subgraphs(ag: Any) -> dict[str, Any]:
    out = {}
    for sub in ag.subgraphs():
        out[sub.name] = sub
        out.update(_subgraphs(sub))
    return out


def test_dot_reads_back_with_every_node_and_edge_of_the_graph(graph: nx.DiGraph) -> None:
    ag = pgv.AGraph(string=render(graph, "dot").decode("utf-8"))
    names = {_name(graph, n) for n in graph}
    assert set(ag.nodes()) == names | {"legend"}
    drawn = {(u, v): ag.get_edge(u, v) for u, v in ag.edges()}
    assert {(_name(graph, u), _name(graph, v)) for u, v in graph.edges} <= set(drawn)
    boxes = _subgraphs(ag)
    for u, v, d in graph.edges(data=True):
        edge = drawn[(_name(graph, u), _name(graph, v))]
        if edge.attr.get("style") == "invis":  # a step offering what sits in its box: the box is the edge
            assert graph.nodes[u]["kind"] == "step" and d["kind"] in ("offers", "annotates")
            assert _name(graph, v) in boxes[f"cluster_{_name(graph, u)}"].nodes()
    shapes = {n: ag.get_node(n).attr["shape"] for n in names}
    assert shapes["dp-red-flags"] == "diamond" and shapes["L04"] == "box" and shapes["L26"] == "note"
    assert shapes["L12"] == "note"


@pytest.mark.parametrize("cluster, heading, members", [  # the sub-headings of the source, lines 9, 13, 21, 25
    ("sec-physical-restorative", "Physical and Restorative Therapy", {"L10", "L11", "L12"}),
    ("sec-pharmacologic", "Pharmacologic Management", {"L14", "L16", "L17", "L18", "L19"}),
    ("sec-psychological", "Psychological Treatment", {"L22", "L23"}),
    ("sec-interventional", "Interventional Procedures", {"L26", "L27", "L28"}),
])
def test_sub_headings_are_clusters(graph: nx.DiGraph, cluster: str, heading: str, members: set[str]) -> None:
    for rendition in ("detailed", "overview"):
        ag = pgv.AGraph(string=render(graph, "dot", rendition=rendition).decode("utf-8"))  # outlives its boxes
        box = _subgraphs(ag)[f"cluster_{cluster}"]
        assert set(box.nodes()) == members and box.graph_attr["label"].startswith(heading)


def test_advice_against_silent_branches_and_the_urgent_action_are_drawn(graph: nx.DiGraph) -> None:
    ag = pgv.AGraph(string=render(graph, "dot").decode("utf-8"))
    against = {n for n in ag.nodes() if "action-against" in ag.get_node(n).attr.get("class", "")}
    assert against == {"L19", "L37"}
    assert all("dashed" in ag.get_node(n).attr["style"] for n in against)
    for decision, silent, label in [("dp-first-line-response", "silent-first-line-response", "yes: adequate"),
                                    ("dp-refractory", "silent-refractory", "no: not refractory")]:
        edge = ag.get_edge(decision, silent)
        assert edge.attr["class"] == "edge-silent" and label in edge.attr["label"].replace("\\n", " ")
        assert "SOURCE SILENT" in ag.get_node(silent).attr["label"]
    urgent = ag.get_node("L05-urgent").attr["label"]
    assert "Prompt surgical evaluation" in urgent and "implied by line 5" in urgent
    overarching = ag.get_node("L02").attr["label"]
    assert "strongly recommended" in overarching and ag.get_edge("sec-initial-evaluation", "L02").attr["dir"] == "none"


def _classes(root: ET.Element) -> set[str]:
    used: set[str] = set()
    for g in root.iter(f"{SVG}g"):
        used |= set((g.get("class") or "").split()) - {"node", "edge", "cluster", "graph"}
    return used


def _legend_texts(root: ET.Element) -> set[str]:
    legend = next(g for g in root.iter(f"{SVG}g") if g.findtext(f"{SVG}title") == "legend")
    return {"".join(t.itertext()) for t in legend.iter(f"{SVG}text")}


@pytest.mark.parametrize("case, rendition", [(None, "detailed"), (None, "overview"),
                                             ("c06-opioid-no-relief", "detailed"),
                                             ("c04-urgent-deficit", "overview")])
def test_legend_lists_exactly_the_styles_used(graph: nx.DiGraph, knowledge: Graph, project: Project,
                                              case: str | None, rendition: str) -> None:
    view = case_view(graph, knowledge, project, load_cases([CASES / f"{case}.ttl"])[0]) if case else None
    root = ET.fromstring(render(graph, "svg", view, rendition=rendition))
    used, texts = _classes(root), _legend_texts(root)
    assert used <= set(LEGEND)
    assert {key for key, (_, text) in LEGEND.items() if text in texts} == used
    assert {"action-against", "silent", "note", "gap", "decision", "step"} <= used
    if case == "c06-opioid-no-relief":
        assert {"conflict", "missing", "applicable", "undetermined"} <= used


def test_overview_is_legible_at_readme_width(graph: nx.DiGraph) -> None:
    """Scaled to 900 px wide, the smallest text of the overview is at least 10 px high."""
    root = ET.fromstring(render(graph, "svg", title="Management of Persistent Chronic Lower Back Pain After "
                                "Laminectomy and Foraminotomies\ntreatment algorithm", rendition="overview"))
    width = float(root.get("viewBox", "").split()[2])
    assert float(root.get("width", "").removesuffix("pt")) == pytest.approx(width, abs=1)
    smallest = min(float(t.get("font-size", "0")) for t in root.iter(f"{SVG}text") if "".join(t.itertext()).strip())
    assert smallest * 900 / width >= 10
    words = " ".join("".join(t.itertext()) for t in ET.fromstring(render(graph, "svg")).iter(f"{SVG}text"))
    assert "Extended-release oral opioids may" in words  # the source's words are in the detailed chart
    assert "Extended-release oral opioids may" not in " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


MERMAID_LINE = re.compile(
    r'^(flowchart TD'
    r'|    n_\w+(\["[^"]*"\]|\{"[^"]*"\}|\[\["[^"]*"\]\]|>"[^"]*"\]|\("[^"]*"\))'
    r'|    n_\w+ (-->|==>|-\.->|-\.-)(\|"[^"]*"\|)? n_\w+'
    r'|    classDef \w+ [\w#:,.\- ]+'
    r'|    class n_\w+(,n_\w+)* \w+'
    r'|---|title: [^:]*)$')


def test_mermaid_follows_the_flowchart_grammar(graph: nx.DiGraph) -> None:
    text = render(graph, "mermaid", title="Treatment algorithm").decode("utf-8")
    bad = [line for line in text.splitlines() if not MERMAID_LINE.match(line)]
    assert bad == []
    edges = re.findall(r"^    (n_\w+) (?:-->|==>|-\.->|-\.-)(?:\|\"[^\"]*\"\|)? (n_\w+)$", text, re.M)
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


# ---- the case overlay draws the one patient result -----------------------------------------------------------------
def test_c06_shows_the_conflict_the_failed_trial_and_the_missing_data(graph: nx.DiGraph, knowledge: Graph,
                                                                       project: Project, evaluator: Evaluator) -> None:
    """c06: first-line care failed, then a month of opioids without meaningful relief: line 16 (may use
    extended-release opioids) and line 19 (unlikely to benefit from longer-term use) both apply and conflict."""
    case = load_cases([CASES / "c06-opioid-no-relief.ttl"])[0]
    view = case_view(graph, knowledge, project, case)
    ag = pgv.AGraph(string=render(graph, "dot", view).decode("utf-8"))
    l19 = ag.get_node("L19").attr["label"]
    assert "APPLIES" in l19 and "CONFLICT with L16" in l19
    assert "meaningful pain relief within 1 month of opioid treatment" in " ".join(l19.split())
    assert "CONFLICT with L19" in ag.get_node("L16").attr["label"]
    conflict = ag.get_edge("L16", "L19", key="conflict-L16-L19") if ag.has_edge("L16", "L19", "conflict-L16-L19") \
        else next(e for e in ag.out_edges("L16") if e.attr.get("class") == "conflict")
    assert conflict.attr["label"] == "CONFLICT"
    assert "L16 (for) vs L19 (against)" in ag.get_node("conflicts").attr["label"]
    # the missing data are in the picture: every question of the result, with the statements it decides
    result = evaluator.evaluate(case)
    questions = {q.split(" (decides: ")[0] for r in result.results for q in r.missing}
    missing = re.sub(r"<[^>]*>|\s+", " ", ag.get_node("missing").attr["label"]).replace("&gt;", ">")
    missing = " ".join(missing.split())
    assert questions and all(" ".join(q.split()) in missing for q in questions)
    assert "[for L17]" in missing  # L17 (monitoring before long-term opioids) waits on whether they are considered
    assert "✔" not in " ".join(e.attr.get("label") or "" for e in ag.edges())  # no "✔ no:" clutter


def test_c04_names_prompt_surgical_evaluation(graph: nx.DiGraph, knowledge: Graph, project: Project) -> None:
    view = case_view(graph, knowledge, project, load_cases([CASES / "c04-urgent-deficit.ttl"])[0])
    ag = pgv.AGraph(string=render(graph, "dot", view, rendition="overview").decode("utf-8"))
    title = re.sub(r"<[^>]*>", " ", ag.graph_attr["label"])
    assert "URGENT" in title and "prompt surgical evaluation (line 5)" in " ".join(title.split())
    node = ag.get_node("L05-urgent").attr
    assert "urgent" in node["class"].split() and "PROMPT SURGICAL" in node["label"]


def test_fontconfig_template_warning_is_the_only_line_dropped() -> None:
    known = ('Fontconfig warning: "/usr/share/fontconfig/conf.avail/05-reset-dirs-sample.conf", line 6: '
             'unknown element "reset-dirs"')
    assert _TEMPLATE_WARNING.match(known)
    for real in ('Fontconfig warning: "/etc/fonts/conf.d/99-local.conf", line 3: unknown element "x"',
                 "Fontconfig error: Cannot load default config file", "Warning: node a, port b unrecognized"):
        assert not _TEMPLATE_WARNING.match(real)


def test_render_prints_no_fontconfig_warning(tmp_path: Path) -> None:
    """A fresh process (fontconfig is initialised once per process) renders with nothing on stderr but the note."""
    out = tmp_path / "a.svg"
    done = subprocess.run([sys.executable, "-m", "guideline_kg.cli.main", "--home", str(ROOT), "render",
                           "--view", "overview", "--out", str(out)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"wrote {out} (svg, 33 nodes, 32 transitions)"]
