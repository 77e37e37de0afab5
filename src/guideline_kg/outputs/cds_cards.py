"""CDS Hooks cards (patient-view) for a case's applicable statements, with the explanation in Markdown.

The indicator comes from the graph (``queries/export-cards.rq``): ``critical`` for statements flagged
``gk:urgent true``, ``warning`` for cautions and for advice against an action, ``info`` otherwise.
"""

from __future__ import annotations

import uuid
from typing import Any

from rdflib import Graph

from guideline_kg.core.namespaces import GK
from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.store.stores import EmbeddedStore

__all__ = ["CARD_NAMESPACE", "SUMMARY_LIMIT", "cards_for"]

#: CDS Hooks: a card's summary is at most 140 characters.
SUMMARY_LIMIT = 140
#: UUID namespace of card uuids (uuid5 of case and statement), so a card keeps its uuid across calls.
CARD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, str(GK) + "cds-card")

_facts_cache: dict[tuple[int, int, str], tuple[str, dict[str, dict[str, Any]]]] = {}


def _facts(graph: Graph, project: Project) -> tuple[str, dict[str, dict[str, Any]]]:
    """Guideline title and, per statement, kind, urgency and direction (cached per graph and size)."""
    key = (id(graph), len(graph), str(project.queries_dir))
    if key not in _facts_cache:
        store = EmbeddedStore.from_graph(graph)
        rows = store.select(load_query(project.queries_dir, "export-guideline").text)
        title = next((str(r["title"]) for r in rows.dicts()), "guideline")
        facts: dict[str, dict[str, Any]] = {}
        for r in store.select(load_query(project.queries_dir, "export-cards").text).dicts():
            f = facts.setdefault(str(r["statement"]), {"kind": str(r["kind"]), "urgent": False,
                                                       "direction": None})
            f["urgent"] = f["urgent"] or str(r["urgent"]).lower() == "true"
            f["direction"] = f["direction"] or (str(r["direction"]) if r["direction"] else None)
        _facts_cache.clear()
        _facts_cache[key] = (title, facts)
    return _facts_cache[key]


def _indicator(fact: dict[str, Any], rec: dict[str, Any]) -> str:
    if fact.get("urgent"):
        return "critical"
    if fact.get("kind") == "caution" or (rec.get("direction") or fact.get("direction")) == "against":
        return "warning"
    return "info"


def _summary(text: str, urgent: bool) -> str:
    summary = ("URGENT: " if urgent else "") + " ".join(text.split())
    return summary if len(summary) <= SUMMARY_LIMIT else summary[: SUMMARY_LIMIT - 1].rstrip() + "\u2026"


def _detail(rec: dict[str, Any], kind: str) -> str:
    lines = ", ".join(str(n) for n in rec["source_lines"])
    head = f"**{kind.replace('-', ' ').capitalize()}** (source line {lines})"
    candidates = [f"direction: {rec['direction']}" if rec.get("direction") else None,
                  f"strength as worded: *{rec['strength']}*" if rec.get("strength") else None,
                  f"line of therapy: {rec['line_of_therapy']}" if rec.get("line_of_therapy") else None]
    facts = [f for f in candidates if f]
    out = [head + (": " + "; ".join(facts) if facts else ""), "", f"> {rec['text']}", ""]
    out.append("**Why this applies to the patient**")
    out += [f"- {b}" for b in rec.get("because") or ["every condition of its population is met"]]
    if rec.get("citations"):
        out += ["", "**Evidence:** " + ", ".join(f"Reference {n}" for n in rec["citations"])]
    return "\n".join(out)


def cards_for(case_result: Any, knowledge_graph: Graph, project: Project | None = None) -> dict[str, Any]:
    """``{"cards": [...]}``: one CDS Hooks card per applicable statement of ``case_result``.

    ``case_result`` is a :class:`derive.CaseResult` (or its ``to_json()`` dict); urgent cards come first.
    """
    project = project or Project.at()
    title, facts = _facts(knowledge_graph, project)
    data = case_result.to_json() if hasattr(case_result, "to_json") else case_result
    cards: list[dict[str, Any]] = []
    for rec in data["recommendations"]:
        if rec["status"] != "applicable":
            continue
        fact = facts.get(rec["id"], {})
        indicator = _indicator(fact, rec)
        cites = ", ".join(f"Reference {n}" for n in rec.get("citations") or [])
        card = {
            "uuid": str(uuid.uuid5(CARD_NAMESPACE, f"{data['case']}|{rec['id']}")),
            "summary": _summary(rec["text"], indicator == "critical"),
            "detail": _detail(rec, fact.get("kind", "statement")),
            "indicator": indicator,
            "source": {"label": f"{title}" + (f" ({cites})" if cites else "")},
        }
        cards.append(card)
    order = {"critical": 0, "warning": 1, "info": 2}
    cards.sort(key=lambda c: order[c["indicator"]])  # stable: source-line order within an indicator
    return {"cards": cards}
