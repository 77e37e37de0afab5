"""The treatment algorithm as a networkx graph, built from the knowledge graph by SPARQL, and its checks.

Nodes and edges come only from ``queries/algorithm-nodes.rq`` and ``queries/algorithm-edges.rq`` run on the
embedded store; nothing about the pathway is written here. :func:`check` reports unreachable nodes, dead
ends, undeclared cycles (kind ``unreachable``) and nodes without source lines (kind ``unsupported``).
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from rdflib import Graph, Literal
from rdflib.term import Node

from guideline_kg.core.findings import Finding
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.store.stores import EmbeddedStore

__all__ = ["NODE_KINDS", "build_graph", "check", "ordered_nodes"]

#: The kinds of algorithm nodes (the ``kind`` node attribute): a step (section), a decision point, a statement
#: naming a care action, an announced-but-empty list, a statement attached to a step or action without an action
#: of its own (evidence, caution), and the end of a branch the source leaves silent.
NODE_KINDS = ("step", "decision", "action", "gap", "note", "silent")
SOURCE = "algorithm"


def _text(value: Node | None) -> str | None:
    return None if value is None else str(value)


def _number(value: Node | None, default: int | None = None) -> int | None:
    return int(value.toPython()) if isinstance(value, Literal) else default


def _flag(value: Node | None) -> bool:
    return value is not None and str(value).lower() == "true"


def _labels(value: Node | None) -> str | None:
    """Labels joined by "|" in the query, in a stable (alphabetical) order, joined by commas."""
    return None if value is None else ", ".join(sorted(set(str(value).split("|"))))


def _ints(value: Node | None) -> list[int]:
    return sorted(int(x) for x in str(value or "").split())


def build_graph(knowledge: Graph, project: Project) -> nx.DiGraph:
    """The algorithm graph of ``knowledge``: nodes and edges exactly as the two SPARQL queries return them."""
    store = EmbeddedStore.from_graph(knowledge)
    graph = nx.DiGraph()
    graph.graph["entry"] = None
    for r in store.select(load_query(project.queries_dir, "algorithm-nodes").text).dicts():
        node = str(r["node"])
        graph.add_node(node, **{
            "kind": str(r["kind"]),
            "name": str(r["name"]),
            "label": str(r["label"]),
            "type_label": _text(r["typeLabel"]),
            "action_label": _labels(r["actionLabel"]),
            "implied_by": _number(r["impliedBy"]),
            "direction": _text(r["direction"]),
            "strength": _text(r["strength"]),
            "line_of_therapy": _text(r["lineOfTherapy"]),
            "line_label": _text(r["lineLabel"]),
            "line_order": _number(r["lineOrder"]),
            "source_lines": _ints(r["sourceLines"]),
            "citations": _ints(r["citations"]),
            "urgent": _flag(r["urgent"]),
            "terminal": _flag(r["terminal"]),
            "unspecified": _flag(r["unspecified"]),
            "step": _text(r["step"]),
            "cluster": _text(r["cluster"]),
            "cluster_label": _text(r["clusterLabel"]),
            "cluster_order": _number(r["clusterOrder"]),
            "cluster_lines": _ints(r["clusterLines"]),
        })
        if _flag(r["entry"]):
            graph.graph["entry"] = node
    for r in store.select(load_query(project.queries_dir, "algorithm-edges").text).dicts():
        graph.add_edge(str(r["from"]), str(r["to"]), **{
            "id": str(r["transition"]),
            "kind": _text(r["kind"]),
            "label": _text(r["label"]),
            "condition": _text(r["condition"]),
            "negation": _text(r["negation"]),
            "condition_text": _text(r["conditionText"]),
            "order": _number(r["order"], 0),
            "declared_cycle": _flag(r["declaredCycle"]),
            "derived_from": sorted(str(r["derivedFrom"] or "").split()),
        })
    return graph


def ordered_nodes(graph: nx.DiGraph) -> list[str]:
    """Nodes in a stable reading order: breadth-first from the entry by transition order, then the rest."""
    seen: dict[str, None] = {}
    entry = graph.graph.get("entry")
    queue = [entry] if entry in graph else []
    while queue:
        node = queue.pop(0)
        if node in seen:
            continue
        seen[node] = None
        queue += [v for _, v, _ in sorted(graph.out_edges(node, data=True), key=lambda e: (e[2].get("order", 0), e[1]))]
    return list(seen) + sorted(n for n in graph if n not in seen)


def _name(graph: nx.DiGraph, node: str) -> str:
    return str(graph.nodes[node].get("name") or node)


def _finding(graph: nx.DiGraph, node: str, kind: str, message: str) -> Finding:
    lines = tuple(graph.nodes[node].get("source_lines") or ())
    return Finding(kind, "Violation", message, focus=node, source_lines=lines, source=SOURCE)


def check(graph_or_knowledge: nx.DiGraph | Graph, project: Project | None = None) -> list[Finding]:
    """Check the algorithm: every node reachable from the entry, no dead end except terminal nodes, no cycle
    unless one of its transitions declares it (gk:declaredCycle), every node traceable to source lines."""
    graph = graph_or_knowledge
    if isinstance(graph, Graph):
        graph = build_graph(graph, project or Project.at())
    findings: list[Finding] = []
    if len(graph) == 0:
        return findings
    entry = graph.graph.get("entry")
    if entry is None or entry not in graph:
        findings.append(Finding("unreachable", "Violation", "the treatment algorithm has no entry point "
                                "(gk:entryPoint of the guideline) among its nodes", source=SOURCE))
        reachable: set[str] = set()
    else:
        reachable = nx.descendants(graph, entry) | {entry}
    order = ordered_nodes(graph)
    for node in order:
        attrs: dict[str, Any] = graph.nodes[node]
        name = _name(graph, node)
        if entry is not None and node not in reachable:
            findings.append(_finding(graph, node, "unreachable",
                                     f"unreachable node: {name} cannot be reached from the entry point "
                                     f"{_name(graph, entry)}"))
        if graph.out_degree(node) == 0 and not attrs.get("terminal"):
            findings.append(_finding(graph, node, "unreachable",
                                     f"dead end: {name} ({attrs.get('kind')}) has no outgoing transition and is "
                                     "not marked gk:isTerminal"))
        if not attrs.get("source_lines"):
            findings.append(_finding(graph, node, "unsupported",
                                     f"node without source lines: {name} ({attrs.get('kind')}) traces to no line "
                                     "of the source (gk:sourceLine, or gk:headingStatement of a step)"))
    rank = {n: i for i, n in enumerate(order)}
    for cycle in sorted(nx.simple_cycles(graph), key=lambda c: min(rank[n] for n in c)):
        edges = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
        if any(graph.edges[u, v].get("declared_cycle") for u, v in edges):
            continue
        start = min(cycle, key=lambda n: rank[n])
        i = cycle.index(start)
        loop = cycle[i:] + cycle[:i] + [start]
        findings.append(_finding(graph, start, "unreachable",
                                 "undeclared cycle: " + " -> ".join(_name(graph, n) for n in loop)
                                 + " (mark a transition of it gk:declaredCycle true if the loop is intended)"))
    return findings
