"""The guideline's statements as plain records (the `statements` command and its JSON)."""

from __future__ import annotations

from typing import Any

from guideline_kg.core.project import Project
from guideline_kg.core.queries import load_query
from guideline_kg.store.stores import Store

__all__ = ["list_statements"]


def _ints(text: Any) -> list[int]:
    return sorted(int(x) for x in str(text or "").split())


def list_statements(store: Store, project: Project) -> list[dict[str, Any]]:
    """Every statement, one dict each with exactly the keys users script against."""
    rows = store.select(load_query(project.queries_dir, "statements").text)
    out: dict[str, dict[str, Any]] = {}
    for r in rows.dicts():
        iri = str(r["statement"])
        rec = out.get(iri)
        if rec is None:
            actions = sorted(str(r["actions"]).split()) if r["actions"] else []
            rec = out[iri] = {
                "id": iri,
                "source_lines": [],
                "text": str(r["text"]),
                "citations": _ints(r["citations"]),
                "kind": str(r["kind"]),
                "section": str(r["section"]),
                "action": actions or None,
                "direction": str(r["direction"]) if r["direction"] else None,
                "strength": str(r["strength"]) if r["strength"] else None,
                "line_of_therapy": str(r["lineOfTherapy"]) if actions and r["lineOfTherapy"] else None,
            }
        line = int(str(r["line"]))
        if line not in rec["source_lines"]:
            rec["source_lines"].append(line)
    return sorted(out.values(), key=lambda s: (s["source_lines"], s["id"]))
