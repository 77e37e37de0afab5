"""Reports of derivation results for people: text for a clinician, grouped by step of the algorithm."""

from __future__ import annotations

import textwrap

from rdflib import URIRef

from guideline_kg.core.namespaces import GK, RDFS, SKOS
from guideline_kg.core.queries import load_query
from guideline_kg.reasoning.derive import CaseResult, Evaluator, StatementResult

__all__ = ["json_report", "summary_table", "text_report"]

_MARK = {"applicable": "[x]", "not-applicable": "[ ]", "undetermined": "[?]"}


def json_report(evaluator: Evaluator, results: list[CaseResult]) -> dict[str, object]:
    """The `recommend --format json` document."""
    return {"guideline": str(evaluator.guideline), "cases": [r.to_json() for r in results]}


def _wrap(text: str, indent: str, hang: int = 0) -> str:
    return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=" " * (len(indent) + hang))


def _step(evaluator: Evaluator, result: StatementResult) -> str:
    """The line-of-therapy notation of a statement (also for cautions and evidence, which have no action)."""
    line = evaluator.knowledge.value(URIRef(result.statement["id"]), GK.lineOfTherapy)
    return str(evaluator.knowledge.value(line, SKOS.notation)) if line is not None else ""


def text_report(evaluator: Evaluator, results: list[CaseResult], show_all: bool = True) -> str:
    """A clinician's report per case: urgent findings first, then statements grouped by algorithm step."""
    rows = evaluator.tbox_store.select(load_query(evaluator.project.queries_dir, "lines-of-therapy").text)
    steps = [(str(r["notation"]), str(r["label"])) for r in rows.dicts()]
    title = evaluator.knowledge.value(evaluator.guideline, RDFS.label) or evaluator.guideline
    out: list[str] = []
    for cr in results:
        out += ["=" * 100, f"Case {cr.case}  <{cr.patient}>  [{cr.reasoner} path]", f"Guideline: {title}"]
        if cr.urgent:
            out += ["", _wrap("!!! URGENT: " + " | ".join(cr.urgent), "")]
        if not cr.in_scope:
            out += ["", _wrap(f"OUT OF SCOPE: {cr.scope_reason}", "")]
        counts = {s: sum(1 for r in cr.results if r.status == s) for s in _MARK}
        out.append(f"{counts['applicable']} applicable, {counts['not-applicable']} not applicable, "
                   f"{counts['undetermined']} undetermined   ([x] applies  [ ] does not  [?] undetermined)")
        ordered = [r for r in cr.ordered() if show_all or r.status != "not-applicable"]
        groups = [("URGENT", [r for r in ordered if r.urgent])]
        groups += [(label, [r for r in ordered if not r.urgent and _step(evaluator, r) == key]) for key, label in steps]
        for label, group in groups:
            if not group:
                continue
            out += ["", f"-- {label} " + "-" * max(0, 95 - len(label))]
            for r in group:
                s = r.statement
                head = f"{_MARK[r.status]} L{','.join(map(str, s['source_lines']))} {s['id'].rsplit('/', 1)[-1]}"
                if s["direction"]:
                    head += f"  ({s['direction']}, {s['strength']})"
                out.append(head)
                cites = f" [{', '.join(map(str, s['citations']))}]" if s["citations"] else ""
                out.append(_wrap(s["text"] + cites, "      "))
                out += [_wrap(b, "      because: ", 0) for b in r.because]
                out += [_wrap(m, "      missing: ") for m in r.missing]
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
