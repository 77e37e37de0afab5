"""`guideline-kg explain CASE STATEMENT`: why one statement applies or not to one case, and what would change it."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from guideline_kg.checks.gate import Gate
from guideline_kg.cli.common import emit, emit_json, project_of, report_gate
from guideline_kg.core.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK, InputError
from guideline_kg.core.namespaces import PREFIXES, qname
from guideline_kg.knowledge.graph import load_knowledge

_STATE = {"met": "met", "failed": "NOT met", "unknown": "not known"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="why one statement applies or not to one case, and what would change it",
                       description="Validate the case (as recommend does), then show for one statement every "
                                   "condition of its population with the facts that met or failed it, the "
                                   "questions that would decide the unknown ones, the thresholds that decided it, "
                                   "and the smallest sets of facts that would change its status. STATEMENT is an id "
                                   "(L19), a prefixed name (plbp:L19) or an IRI. Exit 0 explained, 1 the case fails "
                                   "validation, 2 unreadable input or unknown statement.")
    p.add_argument("case", type=Path, metavar="CASE", help="one case file (Turtle, JSON-LD or FHIR R4 Bundle)")
    p.add_argument("statement", metavar="STATEMENT")
    p.add_argument("--reasoner", choices=["fast", "hermit"], default="fast")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=run)


def _statement_iri(text: str, known: list[str]) -> str:
    """The IRI of a statement given as an IRI, a prefixed name, or an id (the end of one known IRI)."""
    if "://" in text:
        return text
    prefix, colon, local = text.partition(":")
    if colon and prefix in PREFIXES:
        return str(PREFIXES[prefix]) + local
    matches = [iri for iri in known if iri.endswith(("/" + text, "#" + text))]
    return matches[0] if len(matches) == 1 else text


def run(args: argparse.Namespace) -> int:
    project = project_of(args)
    knowledge = load_knowledge(project)
    gate = Gate(knowledge, project)
    gated = gate.read([args.case], reasoner=args.reasoner)
    if len(gated) != 1:
        raise InputError(f"explain takes one case; {args.case} holds {len(gated)}", path=str(args.case))
    if report_gate(gated, "no explanation"):
        if args.format == "json":
            emit_json({"invalid_cases": [g.to_json() for g in gated]})
        return EXIT_FAILED
    result = gated[0].result
    if result is None:  # unreadable: the gate has reported it
        return EXIT_ERROR
    doc = result.explain(_statement_iri(args.statement, [r.statement["id"] for r in result.results]))
    if args.format == "json":
        emit_json(doc)
    else:
        emit(text(doc))
    return EXIT_OK


def _wrap(line: str, indent: str, hang: int = 2) -> str:
    return textwrap.fill(line, 100, initial_indent=indent, subsequent_indent=indent + " " * hang)


def text(doc: dict[str, Any]) -> str:
    """The explanation for people."""
    short = doc["statement"].rsplit("/", 1)[-1]
    lines = [f"{short} (line {', '.join(map(str, doc['source_lines']))}) for case {doc['case']}: "
             f"{doc['status'].upper()}{'  !!! URGENT' if doc['urgent'] else ''}  [{doc['reasoner']} path]",
             _wrap(f"\"{doc['text']}\"", "  ", 1), "", "Conditions of its population:"]
    for c in doc["conditions"]:
        where = " (the guideline's scope)" if c["scope"] else ""
        lines.append(_wrap(f"[{_STATE[c['state']]}] {c['label']}{where}", "  ", 4))
        lines += [_wrap(f"facts: {f}", "      ", 4) for f in c["facts"]]
        lines += [_wrap(f"to decide: {q}", "      ", 4) for q in c["questions"]]
        lines += [_wrap(f"threshold: {t['label']}: {t['value']} ({qname(t['name'])})", "      ", 4)
                  for t in c["thresholds"]]
    if doc["conflicts_with"]:
        lines += ["", _wrap("!!! CONFLICT with " + ", ".join(x.rsplit("/", 1)[-1] for x in doc["conflicts_with"])
                            + ": both apply and advise for and against the same action", "")]
    if doc["note"]:
        lines += ["", _wrap(f"Note: {doc['note']}", "")]
    lines += ["", "What would change it:"]
    for change in doc["would_change"]:
        sets = change["any_of"]
        if not sets:
            lines.append(f"  to {change['to'].upper()}: nothing the structure of its conditions shows")
            continue
        lines.append(f"  to {change['to'].upper()}, any one of:")
        for alt in sets:
            kinds = {g["kind"] for g in alt}
            tag = "(a recorded value would have to differ) " if "change" in kinds else ""
            lines.append(_wrap("- " + tag + " AND ".join(g["question"] for g in alt), "    ", 2))
    return "\n".join(lines) + "\n"
