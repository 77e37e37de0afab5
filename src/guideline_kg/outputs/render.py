"""Drawing the treatment algorithm: a layered flowchart (Graphviz ``dot``) and exports for other tools.

Everything drawn comes from the algorithm graph (:mod:`algorithm`); this module only decides how it looks:
decisions as diamonds, actions as boxes, steps as headers, colour by line of therapy (by the line's
``gk:order``, so a second guideline gets colours without code changes), advice against with a red dashed border,
announced-but-empty lists as dashed notes. A :class:`CaseView` overlays one patient's derivation on it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import textwrap
import threading
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
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
    "LEGEND",
    "RENDITIONS",
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
    """One case laid over the algorithm, all of it read from the one patient result (``derive.CaseResult``):
    statement statuses, edge conditions met/failed/unknown, which nodes lie on the case's path (``path``), might
    (``possible``) or do not (``off``), the urgent findings with their actions, the conflicts, and the questions
    whose answers are missing (each with the statements it decides)."""

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
    #: CaseResult.urgent_findings: {statement, finding, action}
    urgent_actions: list[dict[str, Any]] = field(default_factory=list)
    #: CaseResult.conflicts: {for, against, action, for_text, against_text, resolution}
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    #: each missing question (scope and every statement, drawn or not) -> the statements (local names) it decides
    questions: dict[str, list[str]] = field(default_factory=dict)

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


def _local(iri: str) -> str:
    return iri.rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def case_view(graph: nx.DiGraph, knowledge: Graph, project: Project, case: Case,
              reasoner: str = "fast", *, evaluator: Any = None, result: Any = None) -> CaseView:
    """Lay the derivation of ``case`` over the algorithm graph: ``result`` (a derive.CaseResult) and the
    ``evaluator`` that made it, as the gate (checks.gate) gives them; without them, derive here."""
    evaluator = evaluator or Evaluator(knowledge, project)
    result = result or evaluator.evaluate(case, reasoner=reasoner)
    view = CaseView(case.name, result.in_scope, result.scope_reason, urgent=list(result.urgent),
                    urgent_actions=list(result.urgent_findings), conflicts=list(result.conflicts))
    for question in result.scope.missing:
        view.questions.setdefault(question, []).append("scope")
    for r in result.results:
        view.counts[r.status] = view.counts.get(r.status, 0) + 1
        sid = r.statement["id"]
        for question in r.missing:
            view.questions.setdefault(question, []).append(_local(sid))
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
#: The renditions of the chart: the detailed one (every statement's words) and the overview (short labels, a
#: column per sub-heading, large type: legible at README width).
RENDITIONS = ("detailed", "overview")

#: Every style the chart can use, in legend order: key -> (legend cell attributes, legend text). The legend
#: lists exactly the keys the drawing used (each node and edge carries its key as its SVG class).
LEGEND: dict[str, tuple[str, str]] = {
    "step": (' BORDER="1" COLOR="#555555" STYLE="rounded" BGCOLOR="#dddddd"',
             "rounded header: step (its box: the sub-headings)"),
    "decision": (' BORDER="1" COLOR="#555555"', "diamond: decision point"),
    "action-for": (' BORDER="1" COLOR="#555555"', "box: recommendation FOR an action"),
    "action-against": (f' BORDER="3" COLOR="{RED}" STYLE="dashed"', "red dashed box: advice AGAINST an action"),
    "action-implied": (f' BORDER="3" COLOR="{RED}"', "red box: implied urgent action (named, with its line)"),
    "note": (' BORDER="1" COLOR="#7a7a7a" BGCOLOR="#fcfcf0"', "folded note: evidence or caution, attached"),
    "gap": (' BORDER="1" COLOR="#888888" STYLE="dashed" BGCOLOR="#fafafa"',
            "dashed grey note: list announced, empty"),
    "silent": (' BORDER="1" COLOR="#888888" STYLE="dotted"', "dotted: branch the source leaves silent"),
    "edge-flow": (' BORDER="0"', "black arrow: next (with its condition)"),
    "edge-escalation": (' BORDER="0"', "bold blue arrow: escalation"),
    "edge-urgent": (' BORDER="0"', "bold red arrow: urgent"),
    "edge-offers": (' BORDER="0"', "grey arrow: a step offers an action"),
    "edge-annotates": (' BORDER="0"', "dotted grey line: attached note"),
    "edge-silent": (' BORDER="0"', "dotted grey arrow: source silent"),
    "applicable": (f' BORDER="3" COLOR="{GREEN}"', "✔ APPLIES to this case (green; advice against: red)"),
    "urgent": (f' BORDER="4" COLOR="{RED}" BGCOLOR="#ffd6d6"', "!!! URGENT for this case"),
    "undetermined": (f' BORDER="2" COLOR="{ORANGE}" STYLE="dashed"', "? UNDETERMINED: data missing (orange)"),
    "not-applicable": (f' BORDER="1" COLOR="{FADED}" BGCOLOR="#f7f7f7"', "faded: does not apply / off the path"),
    "on-path": (' BORDER="3" COLOR="#222222"', "bold black border: step or decision on the case's path"),
    "maybe-path": (f' BORDER="2" COLOR="{ORANGE}"', "orange border: step or decision the case may reach"),
    "edge-met": (' BORDER="0"', "green arrow: condition met by the case"),
    "edge-unknown": (' BORDER="0"', "orange dashed arrow: condition not known"),
    "edge-failed": (' BORDER="0"', "grey dotted arrow: condition not met"),
    "conflict": (f' BORDER="3" COLOR="{RED}" BGCOLOR="#fff0f0"', "⚠ red double arrow: CONFLICT (for vs against)"),
    "missing": (f' BORDER="2" COLOR="{ORANGE}" BGCOLOR="#fff7ed"', "orange box: the data missing, as questions"),
}
#: The swatch line drawn for an edge style in the legend: (colour, style).
EDGE_SWATCH = {"edge-flow": ("#333333", "solid"), "edge-escalation": ("#1f3b73", "bold"),
               "edge-urgent": (RED, "bold"), "edge-offers": ("#8c8c8c", "solid"),
               "edge-annotates": ("#9a9a9a", "dotted"), "edge-silent": ("#9a9a9a", "dotted"),
               "edge-met": (GREEN, "bold"), "edge-unknown": (ORANGE, "dashed"), "edge-failed": (FADED, "dotted")}

#: Fontconfig warnings about files of its template folder (conf.avail), which fontconfig only lists and never
#: loads: the older fontconfig bundled in the pygraphviz wheel does not know elements newer Debian templates
#: use (``<reset-dirs>``). Nothing drawn depends on those files; every other line on stderr is kept.
_TEMPLATE_WARNING = re.compile(r'^Fontconfig warning: "[^"]*/conf\.avail/[^"]*", line \d+: unknown element "[^"]*"$')
_FONTS_READY = threading.Lock()
_FONTS_INITIALISED: list[bool] = []  # one item once fontconfig has been initialised in this process


def _graphviz() -> Any:
    """pygraphviz, with fontconfig initialised once per process (see :data:`_TEMPLATE_WARNING`)."""
    # pygraphviz loads Graphviz's C libraries; only the drawn formats need it (mermaid and graphml do not).
    import pygraphviz as pgv  # noqa: PLC0415 - heavy dependency, see above

    with _FONTS_READY:
        if not _FONTS_INITIALISED:
            sys.stderr.flush()
            saved = os.dup(2)
            with tempfile.TemporaryFile() as captured:
                os.dup2(captured.fileno(), 2)
                try:
                    probe = pgv.AGraph()
                    probe.add_node("a", fontname=FONT)
                    probe.draw(format="svg", prog="dot")
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
                captured.seek(0)
                text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if line and not _TEMPLATE_WARNING.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
            _FONTS_INITIALISED.append(True)
    return pgv


def _node_lines(attrs: dict[str, Any]) -> tuple[str, list[str], str]:
    """Header, wrapped body and footer of a node's label (detailed rendition)."""
    kind, name = attrs["kind"], attrs.get("name", "")
    lines = "lines " if len(attrs.get("source_lines") or []) > 1 else "line "
    where = (lines + ", ".join(map(str, attrs.get("source_lines") or [])) if attrs.get("source_lines")
             else "no source line")
    refs = " · ref " + ", ".join(map(str, attrs["citations"])) if attrs.get("citations") else ""
    if kind == "step":
        return "STEP", wrap(attrs["label"], 26), where
    if kind == "decision":
        return "", wrap(attrs["label"], 22), where
    if kind == "silent":
        return "SOURCE SILENT", wrap(attrs["label"].removeprefix("source silent: "), 26), where
    if kind == "gap":
        return f"{name} · NOT SPECIFIED", [*wrap(attrs["label"], 28), "(the source gives no content here)"], where
    if kind == "note":
        return f"{name} · {(attrs.get('type_label') or 'note').upper()}", wrap(attrs["label"], 30), where + refs
    if attrs.get("implied_by"):  # an implied statement: named by its action, with the words it is read from
        head = f"{name} · IMPLIED · {attrs.get('strength') or ''}".strip(" ·")
        action = str(attrs.get("action_label") or "")
        body = wrap(action[:1].upper() + action[1:], 30)
        body += wrap(f"(implied by line {attrs['implied_by']}: \u201c{attrs['label']}\u201d)", 34)
        return head, body, where + refs
    head = f"{name} · {(attrs.get('direction') or '').upper()} · {attrs.get('strength') or ''}".strip(" ·")
    body = wrap(attrs["label"], 30)
    if attrs.get("unspecified"):
        body.append("(the list it announces is empty in the source)")
    return head, body, where + refs


def _short_lines(attrs: dict[str, Any]) -> list[str]:
    """A node's label in the overview: id and action in a few words."""
    kind, name = attrs["kind"], attrs.get("name", "")
    action = str(attrs.get("action_label") or "")
    if kind == "step":
        return wrap(attrs["label"], 20)
    if kind == "decision":
        return wrap(attrs["label"], 18)
    if kind == "silent":
        return ["source silent"]
    if kind == "gap":
        return [name, *wrap(action or attrs["label"], 20), "(not specified)"]
    if kind == "note":
        return [f"{name} {(attrs.get('type_label') or 'note').split()[0]}:", *wrap(action, 20)]
    if attrs.get("implied_by"):
        return [f"{name} (line {attrs['implied_by']})", *wrap(action.upper(), 20)]
    if attrs.get("direction") == "against":
        return [f"{name} AGAINST", *wrap(action, 20)]
    return [name, *wrap(action, 20)]


def node_label(attrs: dict[str, Any], prefix: str | None = None, rendition: str = "detailed") -> str:
    """The text of a node's box: the optional prefix, the heading, the wrapped label and the source lines (the
    overview: the prefix, the id and the action in a few words)."""
    if rendition == "overview":
        return "\n".join(([prefix] if prefix else []) + _short_lines(attrs))
    head, body, foot = _node_lines(attrs)
    parts = ([prefix] if prefix else []) + ([head] if head else []) + body + ([foot] if foot else [])
    return "\n".join(parts)


def _legend_html(used: list[str], lines: list[tuple[int | None, str]], columns: int = 2) -> str:
    """The legend: the colours of the lines of therapy, then exactly the styles ``used``, in ``columns``."""
    cells = []
    for order, label in lines:
        fill = PALETTE[order % len(PALETTE)][0] if isinstance(order, int) else "#ffffff"
        cells.append(f'<TD BGCOLOR="{fill}" WIDTH="28"> </TD><TD ALIGN="LEFT">{_esc(label)}</TD>')
    for key, (cell, text) in LEGEND.items():
        if key not in used:
            continue
        if key in EDGE_SWATCH:
            colour, how = EDGE_SWATCH[key]
            glyph = {"dotted": "· · · ·", "dashed": "- - - -", "bold": "━━━━", "solid": "────"}[how]
            swatch = f'<TD WIDTH="28"><FONT COLOR="{colour}">{glyph}</FONT></TD>'
        else:
            swatch = f'<TD{cell} WIDTH="28" HEIGHT="14"> </TD>'
        cells.append(f'{swatch}<TD ALIGN="LEFT">{_esc(text)}</TD>')
    per = -(-len(cells) // columns)  # filled column by column
    rows = []
    for i in range(per):
        row = [cells[c * per + i] if c * per + i < len(cells) else "<TD></TD><TD></TD>" for c in range(columns)]
        rows.append("<TR>" + "".join(row) + "</TR>")
    return ('<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3" COLOR="#999999">'
            f'<TR><TD COLSPAN="{2 * columns}"><B>Legend</B></TD></TR>' + "".join(rows) + "</TABLE>>")


def _title_html(title: str | None, view: CaseView | None, graph: nx.DiGraph, size: int) -> str:
    """The chart title as a Graphviz HTML label; a case's urgent findings, with the action they call for and
    its source line, in bold red under it; the case's counts as `recommend` gives them."""
    lines = [f'<FONT POINT-SIZE="{size}"><B>{_esc(t)}</B></FONT>' for t in (title or "").splitlines()]
    if view is not None:
        counts = ", ".join(f"{view.counts.get(s, 0)} {s.replace('-', ' ')}"
                           for s in ("applicable", "undetermined", "not-applicable"))
        lines.append(f"{_esc(counts)} (all statements, as `recommend` counts them)")
        for u in view.urgent_actions:
            attrs = graph.nodes[u["statement"]] if u["statement"] in graph else {}
            where = f" (line {attrs.get('implied_by') or ', '.join(map(str, attrs.get('source_lines') or []))})"
            text = "<BR/>".join(_esc(t) for t in wrap(f"URGENT: {u['finding']} \u2192 {u['action']}{where}", 110))
            lines.append(f'<FONT COLOR="{RED}" POINT-SIZE="{size + 2}"><B>{text}</B></FONT>')
    return "<" + "<BR/>".join(lines) + ">" if lines else ""


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _node_style(attrs: dict[str, Any], view: CaseView | None, node: str, rendition: str,
                conflicts: dict[str, list[str]], conditions: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The Graphviz attributes of a node and the legend keys it uses."""
    fill, header = _colours(attrs)
    kind = attrs["kind"]
    big = rendition == "overview"
    style: dict[str, Any] = {"fontname": FONT, "fontsize": 14 if big else 11, "style": "filled",
                             "fillcolor": fill, "color": "#555555", "penwidth": 1.2, "margin": "0.12,0.06"}
    keys: list[str] = []
    if kind == "step":
        style.update(shape="box", style="filled,rounded,bold", fillcolor=header, fontsize=16 if big else 14,
                     penwidth=2, margin="0.25,0.1")
        keys.append("step")
    elif kind == "decision":
        style.update(shape="diamond", margin="0.02,0.02")
        keys.append("decision")
    elif kind == "gap":
        style.update(shape="note", style="filled,dashed", fillcolor="#fafafa", fontcolor="#555555",
                     color="#888888")
        keys.append("gap")
    elif kind == "note":
        style.update(shape="note", fillcolor="#fcfcf0", color="#7a7a7a", fontcolor="#333333")
        keys.append("note")
    elif kind == "silent":
        style.update(shape="box", style="rounded,dotted", color="#888888", fontcolor="#555555")
        keys.append("silent")
    else:
        style.update(shape="box")
        if attrs.get("direction") == "against":
            style.update(style="filled,dashed", color=RED, penwidth=3)
            keys.append("action-against")
        elif attrs.get("implied_by"):
            style.update(color=RED, penwidth=3)
            keys.append("action-implied")
        else:
            keys.append("action-for")
    prefix = []
    if view is not None:
        status = view.status.get(node)
        reach = view.reach.get(node, "off")
        faded = (status == "not-applicable") or (status is None and reach == "off"
                                                  and not view.leads_to_applicable(node)
                                                  and kind not in ("silent",))
        if status == "applicable":
            urgent = attrs.get("urgent")
            against = attrs.get("direction") == "against"  # advice against keeps its red dashed border
            style.update(color=RED if urgent or against else GREEN, penwidth=5 if urgent or against else 3.5)
            if urgent:
                style.update(fillcolor="#ffd6d6")
            prefix.append("!!! URGENT — APPLIES !!!" if urgent else
                          "✔ APPLIES: advice AGAINST" if against else "✔ APPLIES")
            keys.append("urgent" if urgent else "applicable")
        elif status == "undetermined":
            style.update(color=ORANGE, penwidth=2.5, style=style["style"].replace(",dashed", "") + ",dashed")
            prefix.append("? UNDETERMINED (data missing)")
            keys.append("undetermined")
        elif status == "not-applicable":
            prefix.append("✘ does not apply")
        if faded:
            style.update(fillcolor="#f7f7f7", fontcolor="#a0a0a0", color=FADED, penwidth=1)
            keys.append("not-applicable")
        elif status is None and kind in ("step", "decision") and reach == "path":
            style.update(penwidth=max(float(style["penwidth"]), 3.0), color="#222222")
            keys.append("on-path")
        elif status is None and kind in ("step", "decision") and reach == "possible":
            style.update(color=ORANGE, penwidth=max(float(style["penwidth"]), 2.0))
            keys.append("maybe-path")
        for other in conflicts.get(node, []):
            prefix.append(f"⚠ CONFLICT with {other}")
            style.update(fillcolor="#fff0f0", fontcolor="#000000")
    if conditions.get(node) and rendition == "detailed":
        prefix.append("when: " + conditions[node])
    style["label"] = node_label(attrs, "\n".join(prefix) or None, rendition)
    if view is not None and view.missing.get(node):
        style["tooltip"] = "missing: " + "; ".join(view.missing[node])
    return style, keys


def _edge_style(data: dict[str, Any], state: str | None, target_faded: bool, view: CaseView | None,
                rendition: str) -> tuple[dict[str, Any], str]:
    """The Graphviz attributes of a visible edge and its legend key."""
    kind = data.get("kind")
    width = 20 if rendition == "overview" else 26
    text = "\n".join(wrap(data["condition_text"], width)) if data.get("condition_text") else ""
    style: dict[str, Any] = {"fontname": FONT, "fontsize": 14 if rendition == "overview" else 10,
                             "color": "#333333", "penwidth": 1.4, "arrowsize": 0.8, "label": text}
    key = "edge-flow"
    if kind == "offers":
        style.update(color="#8c8c8c", penwidth=1.0)
        key = "edge-offers"
    elif kind == "escalation":
        style.update(penwidth=2.6, color="#1f3b73", fontcolor="#1f3b73")
        key = "edge-escalation"
    elif kind == "urgent":
        style.update(penwidth=3.0, color=RED, fontcolor=RED)
        key = "edge-urgent"
    elif kind == "annotates":
        style.update(color="#9a9a9a", style="dotted", dir="none", penwidth=1.2, label="")
        key = "edge-annotates"
    elif kind == "silent":
        style.update(color="#9a9a9a", fontcolor="#666666", style="dotted", penwidth=1.2)
        key = "edge-silent"
    if view is not None and kind != "annotates":
        if state == "failed" or (state is None and target_faded):
            style.update(color=FADED, fontcolor="#a0a0a0", style="dotted", penwidth=1.0)
            key = "edge-failed"
        elif state == "met":
            style.update(color=RED if kind == "urgent" else GREEN, fontcolor=RED if kind == "urgent" else GREEN,
                         penwidth=3.5)
            key = "edge-urgent" if kind == "urgent" else "edge-met"
        elif state == "unknown":
            style.update(color=ORANGE, fontcolor=ORANGE, style="dashed")
            key = "edge-unknown"
    return style, key


def _missing_label(view: CaseView, rendition: str) -> str:
    """The questions whose answers are missing, each with the statements it decides (an HTML table)."""
    width = 60 if rendition == "overview" else 80
    rows = [f'<TR><TD ALIGN="LEFT"><B>Missing data: {len(view.questions)} question'
            f'{"s" if len(view.questions) != 1 else ""} to answer</B></TD></TR>']
    for question, statements in view.questions.items():
        text = question.split(" (decides: ")[0]
        lines = wrap(f"• {text}  [for {', '.join(dict.fromkeys(statements))}]", width)
        rows.append('<TR><TD ALIGN="LEFT">' + "<BR ALIGN=\"LEFT\"/>".join(_esc(x) for x in lines)
                    + '<BR ALIGN="LEFT"/></TD></TR>')
    return '<<TABLE BORDER="0" CELLSPACING="1" CELLPADDING="2">' + "".join(rows) + "</TABLE>>"


def _conflict_label(graph: nx.DiGraph, view: CaseView, rendition: str) -> str:
    width = 60 if rendition == "overview" else 80
    rows = ['<TR><TD ALIGN="LEFT"><B>⚠ Conflicts</B></TD></TR>']
    for c in view.conflicts:
        head = f"{_local(c['for'])} (for) vs {_local(c['against'])} (against): {c['action']}"
        lines = wrap(head, width) + wrap("Reading: " + str(c.get("resolution") or "none given"), width)
        rows.append('<TR><TD ALIGN="LEFT">' + "<BR ALIGN=\"LEFT\"/>".join(_esc(x) for x in lines)
                    + '<BR ALIGN="LEFT"/></TD></TR>')
    return '<<TABLE BORDER="0" CELLSPACING="1" CELLPADDING="2">' + "".join(rows) + "</TABLE>>"


def _sort_key(graph: nx.DiGraph, node: str) -> tuple[int, str]:
    lines = graph.nodes[node].get("source_lines") or [10**6]
    return (min(lines), node)


def to_agraph(graph: nx.DiGraph, view: CaseView | None = None, title: str | None = None,
              rendition: str = "detailed") -> Any:
    """The styled pygraphviz graph (top-down, layered) of the algorithm, optionally with a case laid over it.

    Steps are clusters headed by their step box, with a cluster per sub-heading of the source inside; an
    action a step offers unconditionally sits in the step's box (the containment is the edge, drawn invisibly);
    decisions and their branches (silent ones too) run between the clusters. ``rendition`` is ``detailed``
    (every statement's words, source lines and conditions) or ``overview`` (short labels, one column per
    sub-heading, large type)."""
    if rendition not in RENDITIONS:
        raise InputError(f"unknown rendition {rendition!r} (expected one of {', '.join(RENDITIONS)})")
    pgv = _graphviz()
    big = rendition == "overview"
    ag = pgv.AGraph(directed=True, strict=False, name="algorithm")
    ag.graph_attr.update(rankdir="TB", fontname=FONT, fontsize=14 if big else 13, labelloc="t",
                         nodesep=0.2 if big else 0.3, ranksep=0.4 if big else 0.45, newrank="true",
                         splines="spline", pad=0.2, compound="true", outputorder="edgesfirst",
                         label=_title_html(title, view, graph, 18 if big else 16))
    ag.node_attr.update(fontname=FONT)
    ag.edge_attr.update(fontname=FONT)
    ag.add_node("legend", shape="plaintext")  # first, so that it goes to the left (its label is set below)
    names = {n: graph.nodes[n].get("name") or n for n in graph}
    steps = {n for n in graph if graph.nodes[n]["kind"] == "step"}
    home = {n: graph.nodes[n].get("step") for n in graph}  # the step whose box a node sits in
    for u, v, data in graph.edges(data=True):  # a decision sits in the box of the step that leads to it
        if u in steps and data.get("kind") == "decides":
            home[v] = u
    for u, v, data in graph.edges(data=True):  # a silent end beside its decision, a stray note beside its node
        if data.get("kind") == "silent" or (data.get("kind") == "annotates" and not home.get(v) and u not in steps):
            home[v] = home.get(u)
    # an edge from a step to a node in its own box is shown by the containment; its condition goes in the box
    contained = {(u, v) for u, v, d in graph.edges(data=True)
                 if u in steps and home.get(v) == u and d.get("kind") in ("offers", "annotates")}
    conditions = {v: graph.edges[u, v]["condition_text"] for u, v in contained
                  if graph.edges[u, v].get("condition_text")}
    conflicts: dict[str, list[str]] = {}
    if view is not None:
        for c in view.conflicts:
            if c["for"] in graph and c["against"] in graph:
                conflicts.setdefault(c["for"], []).append(_local(c["against"]))
                conflicts.setdefault(c["against"], []).append(_local(c["for"]))
    used: list[str] = []
    styles: dict[str, dict[str, Any]] = {}
    for node in ordered_nodes(graph):
        style, keys = _node_style(graph.nodes[node], view, node, rendition, conflicts, conditions)
        used += keys
        styles[node] = {"tooltip": node, "URL": node, "id": names[node], "class": " ".join(keys), **style}
    # clusters: a step's box, and a box per sub-heading inside it
    members: dict[str, list[str]] = {}
    for node in graph:
        step = node if node in steps else home.get(node)
        if step in graph:
            members.setdefault(str(step), []).append(node)
    placed: set[str] = set()
    chains: list[list[str]] = []
    stacks: list[tuple[str, str]] = []
    for step in sorted(members, key=lambda s: (graph.nodes[s].get("line_order") or 0, s)):
        fill = PALETTE[graph.nodes[step].get("line_order") % len(PALETTE)][0] \
            if isinstance(graph.nodes[step].get("line_order"), int) else "#ffffff"
        outer = ag.add_subgraph(name=f"cluster_{names[step]}", label="", style="rounded,filled",
                                fillcolor=fill, color="#b0b0b0", penwidth=1)
        outer.add_node(names[step], **styles[step])
        placed.add(step)
        subs: dict[str, list[str]] = {}
        loose: list[str] = []
        stacked: list[str] = []
        for node in sorted(members[step], key=lambda n: _sort_key(graph, n)):
            if node == step:
                continue
            cluster = graph.nodes[node].get("cluster")
            (subs.setdefault(cluster, []) if cluster else loose).append(node)
        for node in loose:
            outer.add_node(names[node], **styles[node])
            placed.add(node)
        chains.append([n for n in loose if (step, n) in contained])
        for cluster in sorted(subs, key=lambda c: (graph.nodes[subs[c][0]].get("cluster_order") or 0, c)):
            attrs = graph.nodes[subs[cluster][0]]
            where = attrs.get("cluster_lines") or []
            label = attrs.get("cluster_label") or _local(cluster)
            if where and not big:
                label += f"  (line {', '.join(map(str, where))})"
            inner = outer.add_subgraph(name=f"cluster_{_local(cluster)}", label=label, labeljust="l",
                                       style="rounded,filled", fillcolor="#ffffff", color="#9a9a9a",
                                       fontname=FONT, fontsize=14 if big else 12, margin=8)
            for node in subs[cluster]:
                inner.add_node(names[node], **styles[node])
                placed.add(node)
            chains.append([n for n in subs[cluster] if (step, n) in contained])
            if big and stacked:  # the overview: sub-headings one under the other, so the chart stays narrow
                stacks.append((stacked[-1], chains[-1][0] if chains[-1] else subs[cluster][0]))
            stacked = chains[-1] or subs[cluster]
    for node in ordered_nodes(graph):
        if node not in placed:
            ag.add_node(names[node], **styles[node])
    faded = {n for n in graph if styles[n].get("fontcolor") == "#a0a0a0"}
    spine = {n for n in graph if graph.nodes[n]["kind"] in ("step", "decision")}
    for u, v, data in sorted(graph.edges(data=True), key=lambda e: (e[2].get("order", 0), e[0], e[1])):
        common = {"key": data.get("id"), "tooltip": data.get("label") or "", "id": _local(str(data.get("id")))}
        if (u, v) in contained:
            ag.add_edge(names[u], names[v], style="invis", weight=1, **common)
            continue
        state = view.edges.get((u, v)) if view else None
        style, key = _edge_style(data, state, v in faded, view, rendition)
        used.append(key)
        weight = 100 if u in spine and v in spine else 2
        ag.add_edge(names[u], names[v], weight=weight, **{"class": key}, **style, **common)
    # a decision a step leads to sits below the whole of the step's box (but above what it leads to itself)
    for u, v, data in graph.edges(data=True):
        if u in steps and data.get("kind") == "decides":
            below = nx.descendants(graph, v)
            for member in members.get(u, []):
                if member != u and member not in below:
                    ag.add_edge(names[member], names[v], style="invis", weight=0)
    # the next step's box starts below the whole of the box of the step before it (disjoint ranks, no staircase)
    for u, v in graph.edges:
        if v in steps and home.get(u) in steps and home.get(u) != v:
            after = nx.descendants(graph, v) | {v}
            for member in members.get(home[u], []):
                if member not in after and member not in spine:
                    ag.add_edge(names[member], names[v], style="invis", weight=0)
    for a, b in stacks:
        if b not in nx.ancestors(graph, a):
            ag.add_edge(names[a], names[b], style="invis", weight=1)
    columns = 1 if big else COLUMNS
    for chain in chains:  # each box's members in rows of at most `columns`, so the chart stays portrait
        for a, b in zip(chain, chain[columns:], strict=False):
            if not graph.has_edge(a, b) and not graph.has_edge(b, a):
                ag.add_edge(names[a], names[b], style="invis", weight=4)
    if view is not None:
        for c in view.conflicts:
            if c["for"] in graph and c["against"] in graph:
                ag.add_edge(names[c["for"]], names[c["against"]], color=RED, penwidth=3, style="bold",
                            dir="both", arrowhead="tee", arrowtail="tee", constraint="false",
                            label="CONFLICT", fontcolor=RED, fontsize=14 if big else 11,
                            id=f"conflict-{_local(c['for'])}-{_local(c['against'])}", **{"class": "conflict"})
                used.append("conflict")
        boxes = []
        if view.conflicts:
            ag.add_node("conflicts", shape="box", style="rounded,filled", fillcolor="#fff0f0", color=RED,
                        penwidth=2, fontname=FONT, fontsize=14 if big else 11,
                        label=_conflict_label(graph, view, rendition), **{"class": "conflict"})
            used.append("conflict")
            boxes.append("conflicts")
        if view.questions:
            ag.add_node("missing", shape="box", style="rounded,filled", fillcolor="#fff7ed", color=ORANGE,
                        penwidth=2, fontname=FONT, fontsize=14 if big else 11,
                        label=_missing_label(view, rendition), **{"class": "missing"})
            used.append("missing")
            boxes.append("missing")
        last_step = max(steps, key=lambda s: (graph.nodes[s].get("line_order") or 0, s), default=None)
        for box in boxes:  # under the chart, not among its boxes
            for node in [n for n in members.get(str(last_step), []) if graph.out_degree(n) == 0] or list(graph):
                ag.add_edge(names[node], box, style="invis", weight=0)
    lines = sorted({(a.get("line_order"), a.get("line_label")) for _, a in graph.nodes(data=True)
                    if a.get("line_label")}, key=lambda x: (x[0] is None, x[0]))
    ag.get_node("legend").attr.update(label=_legend_html(list(dict.fromkeys(used)), lines, 1 if big else 2),
                                      fontsize=14 if big else 10, fontname=FONT)
    # the legend under the chart (beside the entry, its height opened a gap in the first box)
    last = max(steps, key=lambda s: (graph.nodes[s].get("line_order") or 0, s), default=None)
    bottom = [n for n in members.get(str(last), []) if graph.out_degree(n) == 0] or \
        [n for n in graph if graph.out_degree(n) == 0]
    for node in bottom:
        ag.add_edge(names[node], "legend", style="invis", weight=0)
    return ag


def to_dot(graph: nx.DiGraph, view: CaseView | None = None, title: str | None = None,
           rendition: str = "detailed") -> str:
    """The styled flowchart as Graphviz DOT text."""
    return to_agraph(graph, view, title, rendition).string()


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
        shape = {"decision": ('{"', '"}'), "step": ('[["', '"]]'), "gap": ('>"', '"]'), "note": ('>"', '"]'),
                 "silent": ('("', '")')}.get(a["kind"], ('["', '"]'))
        out.append(f"    {nid}{shape[0]}{text}{shape[1]}")
        order = a.get("line_order")
        classes.setdefault(f"line{order}" if isinstance(order, int) else "lineNone", []).append(nid)
        if a.get("direction") == "against":
            classes.setdefault("against", []).append(nid)
        if a["kind"] in ("gap", "note", "silent"):
            classes.setdefault(a["kind"], []).append(nid)
        if view is not None:
            status = view.status.get(node)
            if status:
                classes.setdefault(status.replace("-", ""), []).append(nid)
            elif view.reach.get(node) == "off":
                classes.setdefault("notapplicable", []).append(nid)
        if a.get("urgent"):
            classes.setdefault("urgent", []).append(nid)
    for u, v, d in sorted(graph.edges(data=True), key=lambda e: (e[2].get("order", 0), e[0], e[1])):
        arrow = {"urgent": "==>", "escalation": "==>", "annotates": "-.-", "silent": "-.->"}.get(d.get("kind"), "-->")
        text = d.get("condition_text")
        label = f'|"{_mm_text(text)}"|' if text else ""
        source, target = _mm_id(graph.nodes[u].get("name") or u), _mm_id(graph.nodes[v].get("name") or v)
        out.append(f"    {source} {arrow}{label} {target}")
    defs = {f"line{i}": f"fill:{fill},stroke:#555555" for i, (fill, _) in enumerate(PALETTE)}
    defs.update(lineNone="fill:#ffffff,stroke:#555555", against=f"stroke:{RED},stroke-width:2px,stroke-dasharray:5 3",
                gap="fill:#fafafa,stroke:#888888,stroke-dasharray:4 3,color:#666666",
                note="fill:#fcfcf0,stroke:#7a7a7a", silent="fill:#ffffff,stroke:#888888,stroke-dasharray:2 2",
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


GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"


def _xml_id(text: str, taken: set[str]) -> str:
    """An XML name (NCName) from ``text``, unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", text) or "n"
    if not re.match(r"[A-Za-z_]", base):
        base = "n_" + base
    candidate, i = base, 1
    while candidate in taken:
        i += 1
        candidate = f"{base}_{i}"
    taken.add(candidate)
    return candidate


def _graphml_value(value: Any) -> tuple[str, str]:
    """The GraphML ``attr.type`` and text of a value (booleans as xs:boolean, lower case)."""
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, int):
        return "long", str(value)
    if isinstance(value, float):
        return "double", repr(value)
    return "string", str(value)


def to_graphml(graph: nx.DiGraph, view: CaseView | None = None) -> str:
    """GraphML with every node and edge attribute: node and edge ids are XML names (a node's local name, an
    edge's transition name), the IRIs are data (key ``iri``); booleans are ``true``/``false``."""
    flat = _flat(graph, view)
    taken: set[str] = set()
    node_ids = {n: _xml_id(str(flat.nodes[n].get("name") or _local(str(n))), taken) for n in flat}
    edge_ids = {(u, v): _xml_id(_local(str(d.get("id") or f"{u}-{v}")), taken) for u, v, d in flat.edges(data=True)}
    keys: dict[tuple[str, str], tuple[str, str]] = {}

    def key(domain: str, name: str, value: Any) -> str:
        kind, _ = _graphml_value(value)
        if (domain, name) not in keys:
            keys[(domain, name)] = (f"{domain[0]}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}", kind)
        return keys[(domain, name)][0]

    body = ET.Element("graph", id="algorithm", edgedefault="directed")
    for name, value in sorted(flat.graph.items()):
        el = ET.SubElement(body, "data", key=key("graph", name, value))
        el.text = _graphml_value(value)[1]
    for n, attrs in flat.nodes(data=True):
        node = ET.SubElement(body, "node", id=node_ids[n])
        for name, value in [("iri", str(n)), *attrs.items()]:
            ET.SubElement(node, "data", key=key("node", name, value)).text = _graphml_value(value)[1]
    for u, v, attrs in flat.edges(data=True):
        edge = ET.SubElement(body, "edge", id=edge_ids[(u, v)], source=node_ids[u], target=node_ids[v])
        for name, value in attrs.items():
            field_name = "iri" if name == "id" else name
            ET.SubElement(edge, "data", key=key("edge", field_name, value)).text = _graphml_value(value)[1]
    root = ET.Element("graphml", {"xmlns": GRAPHML_NS, "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                                  "xsi:schemaLocation": f"{GRAPHML_NS} {GRAPHML_NS}/1.0/graphml.xsd"})
    for (domain, name), (kid, kind) in keys.items():
        ET.SubElement(root, "key", {"id": kid, "for": domain, "attr.name": name, "attr.type": kind})
    root.append(body)
    ET.indent(root)
    return "<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(root, encoding="unicode") + "\n"


def to_cytoscape(graph: nx.DiGraph, view: CaseView | None = None) -> dict[str, Any]:
    """Cytoscape.js JSON (networkx ``cytoscape_data``): elements with every attribute."""
    return nx.cytoscape_data(_flat(graph, view), name="name", ident="id")


def render(graph: nx.DiGraph, fmt: str, view: CaseView | None = None, title: str | None = None,
           rendition: str = "detailed") -> bytes:
    """The algorithm in ``fmt`` (one of :data:`FORMATS`) as bytes; ``rendition`` (one of :data:`RENDITIONS`)
    chooses the detailed chart or the overview for the drawn formats (svg, png, dot)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt in ("svg", "png"):
        ag = to_agraph(graph, view, title, rendition)
        if fmt == "png":
            ag.graph_attr.update(dpi=110)
        return ag.draw(format=fmt, prog="dot")
    if fmt == "dot":
        return to_dot(graph, view, title, rendition).encode("utf-8")
    if fmt == "mermaid":
        return to_mermaid(graph, view, title).encode("utf-8")
    if fmt == "graphml":
        return to_graphml(graph, view).encode("utf-8")
    return (json.dumps(to_cytoscape(graph, view), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
