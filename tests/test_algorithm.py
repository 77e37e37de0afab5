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


#: The statements of the source that name a care action (read from source/guideline.txt): the overarching line 2;
#: imaging, the red-flag assessment (and the prompt surgical evaluation it implies) and the facet evaluation of
#: lines 4-6; active physical therapy, activity and the physical-therapy evidence (10-12); non-opioid medication,
#: extended-release opioids, monitoring, the tolerance caution and the failed opioid trial (14, 16-19); CBT,
#: biofeedback and relaxation, and supportive psychotherapy (22, 23); the three empty interventional headings
#: (26-28); endoscopic decompression, multidisciplinary rehabilitation and repeat surgery (30-32); routine imaging,
#: chronic opioid use and multidisciplinary treatment among the considerations (37, 40, 41).
ACTION_STATEMENTS = {"L02", "L04", "L05", "L05-urgent", "L06", "L10", "L11", "L12", "L14", "L16", "L17", "L18",
                     "L19", "L22", "L23", "L26", "L27", "L28", "L30", "L31", "L32", "L37", "L40", "L41"}


def test_every_statement_naming_a_care_action_is_a_node(knowledge: Graph, graph: nx.DiGraph) -> None:
    statements = {g for g in _names(graph) if g.startswith("L")}
    assert statements == ACTION_STATEMENTS
    in_data = {str(s).rsplit("/", 1)[-1] for p in (GK.recommendsAction, GK.aboutAction)
               for s in knowledge.subjects(p, None) if str(s).startswith(str(PLBP))}
    assert in_data == ACTION_STATEMENTS


@pytest.mark.parametrize("name, kind, cluster, label", [
    ("L10", "action", "sec-physical-restorative", "Physical and Restorative Therapy"),   # line 9
    ("L12", "note", "sec-physical-restorative", "Physical and Restorative Therapy"),
    ("L19", "action", "sec-pharmacologic", "Pharmacologic Management"),                  # line 13 (opioids: 15)
    ("L22", "note", "sec-psychological", "Psychological Treatment"),                     # line 21
    ("L27", "gap", "sec-interventional", "Interventional Procedures"),                   # line 25
    ("L30", "action", None, None),                                                        # under line 29 itself
])
def test_sub_headings_of_the_source_are_clusters(graph: nx.DiGraph, name: str, kind: str, cluster: str | None,
                                                 label: str | None) -> None:
    attrs = graph.nodes[str(PLBP[name])]
    assert (attrs["kind"], attrs["cluster"], attrs["cluster_label"]) == (
        kind, str(PLBP[cluster]) if cluster else None, label)


def test_each_decision_draws_both_branches_silent_ones_as_such(knowledge: Graph, graph: nx.DiGraph) -> None:
    """Every condition leaving a decision has its negation leaving it too; where the source says nothing, the
    branch ends in a gk:SilentBranchEnd (lines 8/20: adequate response; 29/32: not refractory)."""
    for node, attrs in graph.nodes(data=True):
        if attrs["kind"] != "decision":
            continue
        out = [d for _, _, d in graph.out_edges(node, data=True)]
        conditions = {d["condition"] for d in out if d["condition"]}
        assert {d["negation"] for d in out if d["condition"]} <= conditions, attrs["name"]
    silent = {(graph.nodes[u]["name"], graph.nodes[v]["name"], d["condition_text"])
              for u, v, d in graph.edges(data=True) if d["kind"] == "silent"}
    assert silent == {("dp-first-line-response", "silent-first-line-response", "yes: adequate response"),
                      ("dp-refractory", "silent-refractory", "no: not refractory")}
    assert graph.nodes[str(PLBP["silent-refractory"])]["source_lines"] == [29, 32]


def test_the_urgent_branch_names_its_implied_action(graph: nx.DiGraph) -> None:
    urgent = graph.nodes[str(PLBP["L05-urgent"])]
    assert (urgent["action_label"], urgent["implied_by"]) == ("prompt surgical evaluation", 5)


def test_advice_against_hangs_where_it_applies(graph: nx.DiGraph) -> None:
    """Line 19 follows an opioid trial of line 16; line 37 is the complement of line 4's imaging."""
    assert graph.edges[str(PLBP.L16), str(PLBP.L19)]["condition"] == str(PLBP.OpioidTrialWithoutMeaningfulRelief)
    imaging = graph.edges[str(PLBP["sec-initial-evaluation"]), str(PLBP.L37)]
    assert imaging["condition"] == str(PLBP.PostoperativeImagingObtained)
    assert imaging["negation"] == graph.edges[str(PLBP["sec-initial-evaluation"]), str(PLBP.L04)]["condition"]
    assert {graph.nodes[n]["direction"] for n in (str(PLBP.L19), str(PLBP.L37))} == {"against"}


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
    assert g.nodes[str(PLBP.L31)]["kind"] == "note" and g.nodes[str(PLBP.L31)]["source_lines"] == [31]


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
    assert unreachable == {"sec-advanced", "L30", "L31", "L32", "L41"}
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
