"""Reports of derivation results for people: text for a clinician, grouped by step of the algorithm."""

from __future__ import annotations

import textwrap
from typing import Any

from rdflib import URIRef

from guideline_kg.core.namespaces import GK, RDFS, SKOS, local_name, qname
from guideline_kg.core.queries import load_query
from guideline_kg.reasoning.derive import CaseResult, Evaluator, StatementResult

__all__ = ["case_header", "json_report", "summary_table", "text_report"]

_MARK = {"applicable": "[x]", "not-applicable": "[ ]", "undetermined": "[?]"}


def json_report(evaluator: Evaluator, results: list[CaseResult]) -> dict[str, Any]:
    """The `recommend --format json` document."""
    return {"guideline": str(evaluator.guideline), "cases": [r.to_json() for r in results]}


def _wrap(text: str, indent: str, hang: int = 0) -> str:
    return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=" " * (len(indent) + hang))


def _step(evaluator: Evaluator, result: StatementResult) -> str:
    """The line-of-therapy notation of a statement (also for cautions and evidence, which have no action)."""
    line = evaluator.knowledge.value(URIRef(result.statement["id"]), GK.lineOfTherapy)
    return str(evaluator.knowledge.value(line, SKOS.notation)) if line is not None else ""


def _lines(statement: dict) -> str:
    lines = statement.get("source_lines") or []
    return f"line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}" if lines else ""


def case_header(cr: CaseResult) -> list[str]:
    """Scope (said once), urgent findings and conflicts: what a clinician must see before the statements."""
    out: list[str] = []
    if cr.scope_status == "in":
        out.append(_wrap("SCOPE: in the guideline's population, since " + "; ".join(cr.scope_reasons), "", 7))
    elif cr.scope_status == "out":
        out.append(_wrap("OUT OF SCOPE: " + "; ".join(cr.scope_reasons), "", 14))
    else:
        out.append(_wrap("SCOPE NOT KNOWN: the case does not say whether the patient is in the guideline's "
                         "population. " + " ".join(cr.scope.missing), "", 17))
    for u in cr.urgent_findings:
        action = f" -> {u['action']}" if u["action"] else ""
        out.append(_wrap(f"!!! URGENT ({local_name(u['statement'])}): {u['finding']}{action}", "", 4))
    for c in cr.conflicts:
        text = (f"!!! CONFLICT: {local_name(c['for'])} advises for and {local_name(c['against'])} advises against "
                f"{c['action'] or 'the same action'}, and both apply. {local_name(c['for'])}: \"{c['for_text']}\" "
                f"{local_name(c['against'])}: \"{c['against_text']}\"")
        text += f" Resolution: {c['resolution']}" if c["resolution"] else " The graph records no resolution."
        out.append(_wrap(text, "", 4))
    return out


def text_report(evaluator: Evaluator, results: list[CaseResult], show_all: bool = True) -> str:
    """A clinician's report per case: scope, urgent findings and conflicts first, then statements grouped by
    algorithm step, then the options the guideline names without content that concern the patient.
    ``show_all=False`` shows the applicable statements only."""
    rows = evaluator.tbox_store.select(load_query(evaluator.project.queries_dir, "lines-of-therapy").text)
    steps = [(str(r["notation"]), str(r["label"])) for r in rows.dicts()]
    title = evaluator.knowledge.value(evaluator.guideline, RDFS.label) or evaluator.guideline
    out: list[str] = []
    for cr in results:
        out += ["=" * 100, f"Case {cr.case}  <{cr.patient}>  [{cr.reasoner} path]", f"Guideline: {title}", ""]
        out += case_header(cr)
        counts = {s: sum(1 for r in cr.results if r.status == s) for s in _MARK}
        out += ["", f"{counts['applicable']} applicable, {counts['not-applicable']} not applicable, "
                    f"{counts['undetermined']} undetermined   ([x] applies  [ ] does not  [?] undetermined)"]
        ordered = [r for r in cr.ordered() if show_all or r.status == "applicable"]
        groups = [("URGENT", [r for r in ordered if r.urgent])]
        groups += [(label, [r for r in ordered if not r.urgent and _step(evaluator, r) == key]) for key, label in steps]
        for label, group in groups:
            if not group:
                continue
            out += ["", f"-- {label} " + "-" * max(0, 95 - len(label))]
            for r in group:
                s = r.statement
                head = f"{_MARK[r.status]} {local_name(s['id'])}  ({_lines(s)}"
                head += f"; {s['direction']}, {s['strength']})" if s["direction"] else ")"
                out.append(head)
                cites = f" [{', '.join(map(str, s['citations']))}]" if s["citations"] else ""
                out.append(_wrap(s["text"] + cites, "      "))
                out += [_wrap(b, "      because: ", 0) for b in r.because]
                out += [_wrap(m, "      missing: ") for m in r.missing]
                out += [_wrap(f"{t.label}: {t.value} (an interpretation, defined by {qname(t.name)})",
                              "      threshold: ") for t in r.thresholds]
                if r.conflicts_with:
                    out.append(_wrap("conflicts with " + ", ".join(local_name(x) for x in r.conflicts_with)
                                     + " (see CONFLICT above)", "      !!! "))
                if r.note:
                    out.append(_wrap(r.note, "      note: "))
        options = cr.unspecified_options
        if options:
            out += ["", "-- options the guideline names without saying more " + "-" * 47]
            for o in options:
                heading = o.section or o.statement["text"]
                out.append(f"[i] {local_name(o.statement['id'])}  ({_lines(o.statement)}) {heading}")
                out.append(_wrap(f"concerns this patient: {'; '.join(o.because)}; the guideline names this option "
                                 "without saying more (no recommendation)", "      "))
    return "\n".join(out) + "\n"


def summary_table(results: list[CaseResult]) -> str:
    """One line per case: scope, counts by status, and urgent findings (the main job's overview)."""
    out = [f"{'case':<40} {'scope':<13} {'applicable':>10} {'not-appl.':>9} {'undeterm.':>9}  urgent"]
    for cr in results:
        counts = {s: sum(1 for r in cr.results if r.status == s) for s in _MARK}
        scope = "in scope" if cr.in_scope else "OUT OF SCOPE"
        out.append(f"{cr.case:<40} {scope:<13} {counts['applicable']:>10} {counts['not-applicable']:>9} "
                   f"{counts['undetermined']:>9}  {'YES: ' + cr.urgent[0].split(' (')[0] if cr.urgent else ''}")
    return "\n".join(out) + "\n"
