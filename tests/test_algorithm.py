"""The algorithm graph follows from the knowledge graph, and its checks fire on broken fixtures only."""

from __future__ import annotations

import shutil
from pathlib import Path

import networkx as nx
import pytest
from rdflib import Graph, Literal

from conftest import PLBP
from guideline_kg.core.namespaces import GK, PROV, RDF, RDFS
from guideline_kg.core.project import Project
from guideline_kg.knowledge.algorithm import NODE_KINDS, build_graph, check, ordered_nodes
from guideline_kg.knowledge.graph import load_knowledge

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph(knowledge: Graph, project: Project) -> nx.DiGraph:
    return build_graph(knowledge, project)


def _copy(g: Graph) -> Graph:
    out = Graph()
    for t in g:
        out.add(t)
    return out


def _names(g: nx.DiGraph) -> set[str]:
    return {g.nodes[n]["name"] for n in g}


def test_edges_are_exactly_the_transitions_of_the_knowledge_graph(knowledge: Graph, graph: nx.DiGraph) -> None:
    expected = {(str(knowledge.value(t, GK.fromNode)), str(knowledge.value(t, GK.toNode)))
                for t in knowledge.subjects(RDF.type, GK.Transition)}
    assert set(graph.edges) == expected
    assert set(graph.nodes) == {n for e in expected for n in e}


def test_entry_is_the_guidelines_entry_point(knowledge: Graph, graph: nx.DiGraph) -> None:
    assert graph.graph["entry"] == str(knowledge.value(PLBP.guideline, GK.entryPoint))


@pytest.mark.parametrize("name, kind, line, lines", [
    ("sec-initial-evaluation", "step", "initial-evaluation", [3]),
    ("sec-advanced", "step", "refractory", [29]),
    ("dp-red-flags", "decision", "initial-evaluation", [5]),
    ("dp-refractory", "decision", "second-line", [29, 32]),
    ("L05-urgent", "action", "initial-evaluation", [5]),
    ("L32", "action", "refractory", [32]),
    ("L26", "gap", "second-line", [26]),
])
def test_node_attributes_come_from_the_graph(graph: nx.DiGraph, name: str, kind: str, line: str,
                                             lines: list[int]) -> None:
    attrs = graph.nodes[str(PLBP[name])]
    assert (attrs["kind"], attrs["line_of_therapy"], attrs["source_lines"]) == (kind, line, lines)


def test_action_attributes(graph: nx.DiGraph) -> None:
    urgent = graph.nodes[str(PLBP["L05-urgent"])]
    assert urgent["urgent"] and urgent["direction"] == "for" and urgent["strength"] == "would require"
    assert urgent["citations"] == [1]
    assert graph.nodes[str(PLBP.L14)]["unspecified"] is True and graph.nodes[str(PLBP.L14)]["kind"] == "action"
    assert {a["kind"] for _, a in graph.nodes(data=True)} == set(NODE_KINDS)


def test_edge_attributes(graph: nx.DiGraph) -> None:
    edge = graph.edges[str(PLBP["dp-red-flags"]), str(PLBP["L05-urgent"])]
    assert edge["kind"] == "urgent"
    assert edge["condition"] == str(PLBP.RedFlagsPresent) and edge["negation"] == str(PLBP.NoRedFlags)
    assert "progressive neurological deficit" in edge["condition_text"]
    escalation = graph.edges[str(PLBP["dp-first-line-response"]), str(PLBP["sec-second-line"])]
    assert escalation["kind"] == "escalation" and escalation["condition"] == str(PLBP.FirstLineCareFailed)


def test_every_transition_has_a_label_and_provenance(knowledge: Graph) -> None:
    for t in knowledge.subjects(RDF.type, GK.Transition):
        assert knowledge.value(t, RDFS.label) is not None, t
        assert list(knowledge.objects(t, PROV.wasDerivedFrom)), t


def test_changing_a_transition_in_the_data_changes_the_graph(tmp_path: Path, project: Project) -> None:
    kg = tmp_path / "kg"
    shutil.copytree(project.kg_dir, kg)
    text = (kg / "algorithm.ttl").read_text(encoding="utf-8")
    changed = text.replace("gk:fromNode plbp:sec-advanced ; gk:toNode plbp:L32 ;",
                           "gk:fromNode plbp:sec-advanced ; gk:toNode plbp:L31 ;")
    assert changed != text
    (kg / "algorithm.ttl").write_text(changed, encoding="utf-8")
    fixture = Project.at(project.home, kg=kg)
    g = build_graph(load_knowledge(fixture), fixture)
    assert (str(PLBP["sec-advanced"]), str(PLBP.L31)) in g.edges
    assert str(PLBP.L32) not in g
    assert g.nodes[str(PLBP.L31)]["kind"] == "action" and g.nodes[str(PLBP.L31)]["source_lines"] == [31]


def test_reading_order_starts_at_the_entry(graph: nx.DiGraph) -> None:
    order = [graph.nodes[n]["name"] for n in ordered_nodes(graph)]
    assert order[0] == "sec-initial-evaluation" and set(order) == _names(graph)
    assert order.index("sec-first-line") < order.index("sec-second-line") < order.index("sec-advanced")


# ---- checks ------------------------------------------------------------------------------------------------------
def test_the_real_algorithm_passes_every_check(graph: nx.DiGraph) -> None:
    assert check(graph) == []


def test_check_accepts_the_knowledge_graph(knowledge: Graph, project: Project) -> None:
    assert check(knowledge, project) == []


def _add_transition(g: Graph, name: str, source: str, target: str, cycle: bool = False) -> None:
    t = PLBP[name]
    g.add((t, RDF.type, GK.Transition))
    g.add((t, GK.fromNode, PLBP[source]))
    g.add((t, GK.toNode, PLBP[target]))
    g.add((t, GK.transitionKind, GK.Sequence))
    if cycle:
        g.add((t, GK.declaredCycle, Literal(True)))


def _findings(knowledge: Graph, project: Project, mutate) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    g = _copy(knowledge)
    mutate(g)
    return [(f.kind, (f.focus or "").rsplit("/", 1)[-1], f.message) for f in check(g, project)]


def test_unreachable_node_is_reported(knowledge: Graph, project: Project) -> None:
    found = _findings(knowledge, project, lambda g: g.remove((PLBP["tr-escalate-advanced"], None, None)))
    unreachable = {focus for kind, focus, msg in found if kind == "unreachable" and "unreachable node" in msg}
    assert unreachable == {"sec-advanced", "L30", "L32"}
    assert all(kind == "unreachable" for kind, _, _ in found)


def test_dead_end_is_reported(knowledge: Graph, project: Project) -> None:
    found = _findings(knowledge, project, lambda g: g.remove((PLBP.L04, GK.isTerminal, None)))
    assert found == [("unreachable", "L04", found[0][2])]
    assert "dead end" in found[0][2] and "L04" in found[0][2]


def test_undeclared_cycle_is_reported(knowledge: Graph, project: Project) -> None:
    found = _findings(knowledge, project, lambda g: _add_transition(g, "tr-loop", "L17", "sec-first-line"))
    assert [(k, f) for k, f, _ in found] == [("unreachable", "sec-first-line")]
    assert "undeclared cycle" in found[0][2] and "L17" in found[0][2]


def test_declared_cycle_is_accepted(knowledge: Graph, project: Project) -> None:
    found = _findings(knowledge, project,
                      lambda g: _add_transition(g, "tr-loop", "L17", "sec-first-line", cycle=True))
    assert found == []


def test_node_without_source_lines_is_unsupported(knowledge: Graph, project: Project) -> None:
    def mutate(g: Graph) -> None:
        g.add((PLBP["dp-invented"], RDF.type, GK.DecisionPoint))
        g.add((PLBP["dp-invented"], RDFS.label, Literal("Invented decision?")))
        _add_transition(g, "tr-invented", "sec-advanced", "dp-invented")
        _add_transition(g, "tr-invented-out", "dp-invented", "L30")

    found = _findings(knowledge, project, mutate)
    assert [(k, f) for k, f, _ in found] == [("unsupported", "dp-invented")]


def test_missing_entry_point_is_reported(knowledge: Graph, project: Project) -> None:
    found = _findings(knowledge, project, lambda g: g.remove((None, GK.entryPoint, None)))
    assert found[0][0] == "unreachable" and "no entry point" in found[0][2]
