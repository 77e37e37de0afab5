"""`guideline-kg statements`: every statement of the guideline, as text or JSON."""

from __future__ import annotations

import argparse
import textwrap

from guideline_kg.cli.common import emit, emit_json, project_of
from guideline_kg.core.errors import EXIT_OK
from guideline_kg.core.namespaces import local_name
from guideline_kg.knowledge.graph import guideline_iri, load_knowledge
from guideline_kg.knowledge.statements import list_statements
from guideline_kg.store.stores import EmbeddedStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("statements", help="list every statement of the guideline",
                       description="List every statement with its source line, verbatim text, citations, kind, "
                                   "section and, for actions, action, direction, strength and line of therapy.")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    project = project_of(args)
    knowledge = load_knowledge(project)
    guideline_iri(knowledge)  # no gk:Guideline means the wrong folders: an error, not an empty list
    store = EmbeddedStore.from_graph(knowledge)
    statements = list_statements(store, project)
    if args.format == "json":
        emit_json(statements)
        return EXIT_OK
    for s in statements:
        lines = ",".join(str(n) for n in s["source_lines"])
        cites = f" [{', '.join(str(c) for c in s['citations'])}]" if s["citations"] else ""
        head = f"L{lines:<3} {s['kind']:<23} {local_name(s['id'])}"
        emit(head)
        emit(textwrap.indent(textwrap.fill(s["text"] + cites, 96), "      "))
        if s["action"]:
            emit(f"      -> {s['direction']} {', '.join(local_name(a) for a in s['action'])}; "
                 f"strength: {s['strength']}; line: {s['line_of_therapy']}")
    emit(f"{len(statements)} statements")
    return EXIT_OK
