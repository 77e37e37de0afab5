"""Drawing the treatment algorithm: a layered flowchart (Graphviz ``dot``) and exports for other tools.

Everything drawn comes from the algorithm graph (:mod:`algorithm`); this module only decides how it looks:
decisions as diamonds, actions as boxes, steps as headers, colour by line of therapy (by the line's
``gk:order``, so a second guideline gets colours without code changes), advice against with a red dashed border,
announced-but-empty lists as dashed notes. A :class:`CaseView` overlays one patient's derivation on it.
"""

from __future__ import annotations

import json
import textwrap
from collections import deque
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import networkx as nx
from rdflib import Graph, URIRef

from guideline_kg.cases.reader import Case
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.knowledge.algorithm import ordered_nodes
from guideline_kg.reasoning.derive import Evaluator
from guideline_kg.store.stores import EmbeddedStore

__all__ = [
    "FORMATS",
    "CaseView",
    "case_view",
    "node_label",
    "render",
    "to_agraph",
    "to_cytoscape",
    "to_dot",
    "to_graphml",
    "to_mermaid",
    "wrap",
]

FORMATS = ("svg", "png", "dot", "mermaid", "graphml", "cytoscape")

#: Fill colours by the gk:order of a line of therapy (0 = whole pathway): (node fill, step header fill).
PALETTE = [("#eeeeee", "#bdbdbd"), ("#deebf7", "#9ecae1"), ("#e5f5e0", "#a1d99b"), ("#fff5cc", "#f7d86a"),
           ("#fde4d0", "#f4a582"), ("#ece2f0", "#c2a5cf")]
FADED = "#c8c8c8"
GREEN, ORANGE, RED = "#1a7f37", "#c2410c", "#c00000"
FONT = "DejaVu Sans"
#: Offered actions per row under a step.
COLUMNS = 2


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters (words are not split unless longer than a line)."""
    words = " ".join(str(text).split())
    return textwrap.wrap(words, width=width, break_long_words=True, break_on_hyphens=False) or [""]


def _colours(attrs: dict[str, Any]) -> tuple[str, str]:
    order = attrs.get("line_order")
    return PALETTE[order % len(PALETTE)] if isinstance(order, int) else ("#ffffff", "#dddddd")


# ---- case view --------------------------------------------------------------------------------------------------
@dataclass
class CaseView:
    """One case laid over the algorithm: statement statuses from derive, edge conditions met/failed/unknown,
    and which nodes lie on the case's path (``path``), might (``possible``) or do not (``off``)."""

    case: str
    in_scope: bool
    scope_reason: str | None
    status: dict[str, str] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    edges: dict[tuple[str, str], str | None] = field(default_factory=dict)
    reach: dict[str, str] = field(default_factory=dict)
    urgent: list[str] = field(default_factory=list)
    #: statements by status over the whole result (as `recommend` counts them), drawn on the chart or not
    counts: dict[str, int] = field(default_factory=dict)

    descendants: dict[str, set[str]] = field(default_factory=dict)

    def applicable(self) -> set[str]:
        """The statements derive finds applicable."""
        return {n for n, s in self.status.items() if s == "applicable"}

    def leads_to_applicable(self, node: str) -> bool:
        """Whether an applicable statement lies below ``node`` (such a step or decision is not faded)."""
        return bool(self.descendants.get(node, set()) & self.applicable())


def _reach(graph: nx.DiGraph, edges: dict[tuple[str, str], str | None]) -> dict[str, str]:
    """Nodes reached from the entry over edges not failed: ``path`` if every condition on the way is met (or
    there is none), ``possible`` if some is unknown, else ``off``."""
    rank = {"path": 2, "possible": 1}
    reach: dict[str, str] = {}
    entry = graph.graph.get("entry")
    queue: deque[tuple[str, str]] = deque([(entry, "path")] if entry in graph else [])
    while queue:
        node, how = queue.popleft()
        if rank.get(reach.get(node, ""), 0) >= rank[how]:
            continue
        reach[node] = how
        for _, succ in graph.out_edges(node):
            state = edges.get((node, succ))
            if state == "failed":
                continue
            queue.append((succ, how if state in (None, "met") else "possible"))
    return {n: reach.get(n, "off") for n in graph}


def case_view(graph: nx.DiGraph, knowledge: Graph, project: Project, case: Case,
              reasoner: str = "fast", *, evaluator: Any = None, result: Any = None) -> CaseView:
    """Lay the derivation of ``case`` over the algorithm graph: ``result`` (a derive.CaseResult) and the
    ``evaluator`` that made it, as the gate (checks.gate) gives them; without them, derive here."""
    evaluator = evaluator or Evaluator(knowledge, project)
    result = result or evaluator.evaluate(case, reasoner=reasoner)
    view = CaseView(case.name, result.in_scope, result.scope_reason, urgent=list(result.urgent))
    for r in result.results:
        view.counts[r.status] = view.counts.get(r.status, 0) + 1
        sid = r.statement["id"]
        if sid in graph:
            view.status[sid] = r.status
            view.missing[sid] = r.missing
    store = EmbeddedStore.from_graph(case.graph)

    def member(cls: str | None) -> bool:
        if not cls or URIRef(cls) not in evaluator.patterns:
            return False
        return str(case.patient) in evaluator.witnesses(store, URIRef(cls), case.patient)

    for u, v, data in graph.edges(data=True):
        cond = data.get("condition")
        if not cond:
            view.edges[(u, v)] = None
        elif member(data.get("negation")):
            view.edges[(u, v)] = "failed"
        elif member(cond):
            view.edges[(u, v)] = "met"
        else:
            view.edges[(u, v)] = "unknown"
    view.reach = _reach(graph, view.edges)
    view.descendants = {n: nx.descendants(graph, n) for n in graph}
    if not view.in_scope:
        view.reach = {n: "off" for n in graph}
    return view


# ---- Graphviz -------------------------------------------------------------------------------------------------
def _node_lines(attrs: dict[str, Any]) -> tuple[str, list[str], str]:
    """Header, wrapped body and footer of a node's label."""
    kind, name = attrs["kind"], attrs.get("name", "")
    lines = "lines " if len(attrs.get("source_lines") or []) > 1 else "line "
    where = (lines + ", ".join(map(str, attrs.get("source_lines") or [])) if attrs.get("source_lines")
             else "no source line")
    refs = " · ref " + ", ".join(map(str, attrs["citations"])) if attrs.get("citations") else ""
    if kind == "step":
        return "STEP", wrap(attrs["label"], 26), where
    if kind == "decision":
        return "", wrap(attrs["label"], 22), where
    if kind == "gap":
        return f"{name} · NOT SPECIFIED", [*wrap(attrs["label"], 28), "(the source gives no content here)"], where
    head = f"{name} · {(attrs.get('direction') or '').upper()} · {attrs.get('strength') or ''}".strip(" ·")
    body = wrap(attrs["label"], 30)
    if attrs.get("unspecified"):
        body.append("(the list it announces is empty in the source)")
    return head, body, where + refs


def node_label(attrs: dict[str, Any], prefix: str | None = None) -> str:
    """The text of a node's box: the optional prefix, the heading, the wrapped label and the source lines."""
    head, body, foot = _node_lines(attrs)
    parts = ([prefix] if prefix else []) + ([head] if head else []) + body + ([foot] if foot else [])
    return "\n".join(parts)


def _legend_html(graph: nx.DiGraph, view: CaseView | None) -> str:
    rows = []
    lines = sorted({(a.get("line_order"), a.get("line_label")) for _, a in graph.nodes(data=True)
                    if a.get("line_label")}, key=lambda x: (x[0] is None, x[0]))
    for order, label in lines:
        fill = PALETTE[order % len(PALETTE)][0] if isinstance(order, int) else "#ffffff"
        rows.append(f'<TR><TD BGCOLOR="{fill}" WIDTH="28"> </TD><TD ALIGN="LEFT">{_esc(label)}</TD></TR>')
    def row(cell: str, text: str) -> str:
        return f'<TR><TD{cell} WIDTH="28" HEIGHT="14"> </TD><TD ALIGN="LEFT">{text}</TD></TR>'

    rows += [
        row(' BORDER="1" COLOR="#555555"', "box: action (id · FOR/AGAINST · strength as worded)"),
        row(' BORDER="1" COLOR="#555555" STYLE="rounded" BGCOLOR="#dddddd"', "rounded header: step of the algorithm"),
        row(' BORDER="0"', "diamond: decision point"),
        row(' BORDER="1" COLOR="#888888" STYLE="dashed"', "dashed grey: list announced, empty in the source"),
        row(f' BORDER="2" COLOR="{RED}" STYLE="dashed"', "red dashed border: advice AGAINST an action"),
        row(f' BORDER="2" COLOR="{RED}"', "red border / red arrow: urgent"),
        row(' BORDER="0"', "bold blue arrow: escalation; grey arrow: offers"),
    ]
    if view is not None:
        rows += [
            row(f' BORDER="3" COLOR="{GREEN}"', "✔ APPLIES to this case (green)"),
            row(f' BORDER="2" COLOR="{ORANGE}" STYLE="dashed"', "? UNDETERMINED: data missing (orange)"),
            row(f' BORDER="1" COLOR="{FADED}" BGCOLOR="#f7f7f7"', "faded: does not apply / off the path"),
            row(f' BORDER="4" COLOR="{RED}" BGCOLOR="#ffd6d6"', "!!! URGENT for this case"),
        ]
    return ('<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3" COLOR="#999999">'
            '<TR><TD COLSPAN="2"><B>Legend</B></TD></TR>' + "".join(rows) + "</TABLE>>")


def _title_html(title: str | None, view: CaseView | None) -> str:
    """The chart title as a Graphviz HTML label; a case's urgent findings in bold red under it."""
    lines = [f"<B>{_esc(t)}</B>" for t in (title or "").splitlines()]
    if view is not None and view.urgent:
        for finding in view.urgent:
            text = "<BR/>".join(_esc(t) for t in wrap("URGENT: " + finding, 110))
            lines.append(f'<FONT COLOR="{RED}" POINT-SIZE="18"><B>{text}</B></FONT>')
    return "<" + "<BR/>".join(lines) + ">" if lines else ""


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _node_style(attrs: dict[str, Any], view: CaseView | None, node: str) -> dict[str, Any]:
    fill, header = _colours(attrs)
    kind = attrs["kind"]
    style: dict[str, Any] = {"fontname": FONT, "fontsize": 11, "style": "filled", "fillcolor": fill,
                             "color": "#555555", "penwidth": 1.2, "margin": "0.12,0.06"}
    if kind == "step":
        style.update(shape="box", style="filled,rounded,bold", fillcolor=header, fontsize=14, penwidth=2,
                     margin="0.25,0.1")
    elif kind == "decision":
        style.update(shape="diamond", margin="0.02,0.02", fontsize=11)
    elif kind == "gap":
        style.update(shape="note", style="filled,dashed", fillcolor="#fafafa", fontcolor="#666666",
                     color="#888888")
    else:
        style.update(shape="box")
        if attrs.get("direction") == "against":
            style.update(style="filled,dashed", color=RED, penwidth=2.5)
        if attrs.get("urgent"):
            style.update(color=RED, penwidth=2.5)
    prefix = None
    if view is not None:
        status = view.status.get(node)
        reach = view.reach.get(node, "off")
        faded = (status == "not-applicable") or (status is None and reach == "off"
                                                  and not view.leads_to_applicable(node))
        if status == "applicable":
            urgent = attrs.get("urgent")
            style.update(color=RED if urgent else GREEN, penwidth=5 if urgent else 3.5)
            if urgent:
                style.update(fillcolor="#ffd6d6")
            prefix = "!!! URGENT — APPLIES !!!" if urgent else "✔ APPLIES"
        elif status == "undetermined":
            style.update(color=ORANGE, penwidth=2.5, style=style["style"].replace("dashed", "") + ",dashed")
            prefix = "? UNDETERMINED (data missing)"
        elif status == "not-applicable":
            prefix = "✘ does not apply"
        if faded:
            style.update(fillcolor="#f7f7f7", fontcolor="#a0a0a0", color=FADED, penwidth=1)
        elif status is None and reach == "path":
            style.update(penwidth=max(float(style["penwidth"]), 3.0), color="#222222")
        elif status is None and reach == "possible":
            style.update(color=ORANGE)
    style["label"] = node_label(attrs, prefix)
    if view is not None and view.missing.get(node):
        style["tooltip"] = "missing: " + "; ".join(view.missing[node])
    return style


def _edge_style(data: dict[str, Any], state: str | None, target_faded: bool, view: CaseView | None
                ) -> dict[str, Any]:
    kind = data.get("kind")
    text = "\n".join("  " + t for t in wrap(data["condition_text"], 24)) if data.get("condition_text") else ""
    style: dict[str, Any] = {"fontname": FONT, "fontsize": 10, "color": "#444444", "penwidth": 1.3,
                             "arrowsize": 0.8, "label": text}
    if kind == "offers":
        style.update(color="#8c8c8c", penwidth=1.0)
    elif kind == "escalation":
        style.update(penwidth=2.6, color="#1f3b73", fontcolor="#1f3b73")
    elif kind == "urgent":
        style.update(penwidth=3.0, color=RED, fontcolor=RED)
    if view is not None:
        if state == "failed" or (state is None and target_faded):
            style.update(color=FADED, fontcolor="#b0b0b0", style="dotted", penwidth=1.0)
        elif state == "met":
            style.update(color=RED if kind == "urgent" else GREEN, penwidth=3.5,
                         label=("✔ " + text) if text else "")
        elif state == "unknown":
            style.update(color=ORANGE, fontcolor=ORANGE, style="dashed", label=("? " + text) if text else "?")
    return style


def to_agraph(graph: nx.DiGraph, view: CaseView | None = None, title: str | None = None) -> Any:
    """The styled pygraphviz graph (top-down, layered) of the algorithm, optionally with a case laid over it."""
    # pygraphviz loads Graphviz's C libraries; only the drawn formats need it (mermaid and graphml do not).
    import pygraphviz as pgv  # noqa: PLC0415 - heavy dependency, see above

    ag = pgv.AGraph(directed=True, strict=False, name="algorithm")
    ag.graph_attr.update(rankdir="TB", fontname=FONT, fontsize=16, labelloc="t", nodesep=0.35, ranksep=0.55,
                         newrank="true", splines="spline", pad=0.3, label=_title_html(title, view),
                         outputorder="edgesfirst")
    ag.node_attr.update(fontname=FONT)
    names = {n: graph.nodes[n].get("name") or n for n in graph}
    spine = {n for n in graph if graph.nodes[n]["kind"] in ("step", "decision")}
    for node in ordered_nodes(graph):
        extra = {"group": "spine"} if node in spine else {}
        style = {"tooltip": node, **_node_style(graph.nodes[node], view, node)}
        ag.add_node(names[node], id=names[node], URL=node, **extra, **style)
    faded = {names[n] for n in graph if ag.get_node(names[n]).attr.get("fontcolor") == "#a0a0a0"}
    for u, v, data in sorted(graph.edges(data=True), key=lambda e: (e[2].get("order", 0), e[0], e[1])):
        state = view.edges.get((u, v)) if view else None
        ag.add_edge(names[u], names[v], key=data.get("id"), tooltip=data.get("label") or "",
                    weight=10 if u in spine and v in spine else 1,
                    **_edge_style(data, state, names[v] in faded, view))
    for parent in graph:  # offered actions in rows of at most COLUMNS, so the chart stays portrait
        offered = [v for _, v, d in sorted(graph.out_edges(parent, data=True), key=lambda e: e[2].get("order", 0))
                   if d.get("kind") == "offers" and v not in spine]
        for a, b in zip(offered, offered[COLUMNS:], strict=False):  # each action above the one a row below
            ag.add_edge(names[a], names[b], style="invis", weight=5)
    ag.add_node("legend", shape="plaintext", label=_legend_html(graph, view), fontsize=10, fontname=FONT)
    entry = graph.graph.get("entry")
    if entry in graph:
        ag.add_subgraph([names[entry], "legend"], rank="same")
        ag.add_edge(names[entry], "legend", style="invis")
    return ag


def to_dot(graph: nx.DiGraph, view: CaseView | None = None, title: str | None = None) -> str:
    """The styled flowchart as Graphviz DOT text."""
    return to_agraph(graph, view, title).string()


# ---- other formats ----------------------------------------------------------------------------------------------
def _mm_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def _mm_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def to_mermaid(graph: nx.DiGraph, view: CaseView | None = None, title: str | None = None) -> str:
    """A Mermaid ``flowchart TD`` of the algorithm (decisions as rhombi, steps as subroutines, gaps dashed)."""
    out = []
    if view is not None and view.urgent:
        title = (title or "") + "\nURGENT: " + "; ".join(view.urgent)
    if title:
        out += ["---", "title: " + " — ".join(title.replace(":", " -").splitlines()), "---"]
    out.append("flowchart TD")
    classes: dict[str, list[str]] = {}
    for node in ordered_nodes(graph):
        a = graph.nodes[node]
        nid = _mm_id(a.get("name") or node)
        prefix = None
        if view is not None and node in view.status:
            prefix = {"applicable": "APPLIES", "not-applicable": "does not apply",
                      "undetermined": "UNDETERMINED"}[view.status[node]]
        text = _mm_text(node_label(a, prefix))
        shape = {"decision": ('{"', '"}'), "step": ('[["', '"]]'), "gap": ('>"', '"]')}.get(a["kind"], ('["', '"]'))
        out.append(f"    {nid}{shape[0]}{text}{shape[1]}")
        order = a.get("line_order")
        classes.setdefault(f"line{order}" if isinstance(order, int) else "lineNone", []).append(nid)
        if a.get("direction") == "against":
            classes.setdefault("against", []).append(nid)
        if a["kind"] == "gap":
            classes.setdefault("gap", []).append(nid)
        if view is not None:
            status = view.status.get(node)
            if status:
                classes.setdefault(status.replace("-", ""), []).append(nid)
            elif view.reach.get(node) == "off":
                classes.setdefault("notapplicable", []).append(nid)
        if a.get("urgent"):
            classes.setdefault("urgent", []).append(nid)
    for u, v, d in sorted(graph.edges(data=True), key=lambda e: (e[2].get("order", 0), e[0], e[1])):
        arrow = "==>" if d.get("kind") in ("urgent", "escalation") else "-->"
        text = d.get("condition_text")
        label = f'|"{_mm_text(text)}"|' if text else ""
        source, target = _mm_id(graph.nodes[u].get("name") or u), _mm_id(graph.nodes[v].get("name") or v)
        out.append(f"    {source} {arrow}{label} {target}")
    defs = {f"line{i}": f"fill:{fill},stroke:#555555" for i, (fill, _) in enumerate(PALETTE)}
    defs.update(lineNone="fill:#ffffff,stroke:#555555", against=f"stroke:{RED},stroke-width:2px,stroke-dasharray:5 3",
                gap="fill:#fafafa,stroke:#888888,stroke-dasharray:4 3,color:#666666",
                urgent=f"stroke:{RED},stroke-width:3px",
                applicable=f"stroke:{GREEN},stroke-width:4px",
                undetermined=f"stroke:{ORANGE},stroke-width:2px,stroke-dasharray:5 3",
                notapplicable=f"fill:#f7f7f7,stroke:{FADED},color:#a0a0a0")
    for name in classes:
        out.append(f"    classDef {name} {defs[name]}")
    for name, ids in classes.items():
        out.append(f"    class {','.join(ids)} {name}")
    return "\n".join(out) + "\n"


def _flat(graph: nx.DiGraph, view: CaseView | None) -> nx.DiGraph:
    """A copy with scalar attributes only (lists joined by spaces, None dropped), plus the case overlay."""
    flat = nx.DiGraph()
    flat.graph.update({k: v for k, v in graph.graph.items() if v is not None})
    for n, a in graph.nodes(data=True):
        attrs = {k: (" ".join(map(str, v)) if isinstance(v, list) else v) for k, v in a.items() if v is not None}
        if view is not None:
            if n in view.status:
                attrs["status"] = view.status[n]
            attrs["reach"] = view.reach.get(n, "off")
        flat.add_node(n, **attrs)
    for u, v, a in graph.edges(data=True):
        attrs = {k: (" ".join(map(str, x)) if isinstance(x, list) else x) for k, x in a.items() if x is not None}
        if view is not None and view.edges.get((u, v)):
            attrs["condition_state"] = view.edges[(u, v)]
        flat.add_edge(u, v, **attrs)
    return flat


def to_graphml(graph: nx.DiGraph, view: CaseView | None = None) -> str:
    """GraphML (networkx) with every node and edge attribute."""
    buf = BytesIO()
    nx.write_graphml(_flat(graph, view), buf, encoding="utf-8")
    return buf.getvalue().decode("utf-8")


def to_cytoscape(graph: nx.DiGraph, view: CaseView | None = None) -> dict[str, Any]:
    """Cytoscape.js JSON (networkx ``cytoscape_data``): elements with every attribute."""
    return nx.cytoscape_data(_flat(graph, view), name="name", ident="id")


def render(graph: nx.DiGraph, fmt: str, view: CaseView | None = None, title: str | None = None) -> bytes:
    """The algorithm in ``fmt`` (one of :data:`FORMATS`) as bytes."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt in ("svg", "png"):
        ag = to_agraph(graph, view, title)
        if fmt == "png":
            ag.graph_attr.update(dpi=110)
        return ag.draw(format=fmt, prog="dot")
    if fmt == "dot":
        return to_dot(graph, view, title).encode("utf-8")
    if fmt == "mermaid":
        return to_mermaid(graph, view, title).encode("utf-8")
    if fmt == "graphml":
        return to_graphml(graph, view).encode("utf-8")
    return (json.dumps(to_cytoscape(graph, view), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
