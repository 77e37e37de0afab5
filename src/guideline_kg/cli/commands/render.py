"""`guideline-kg render`: draw the treatment algorithm (whole guideline or one patient's pathway) or export it."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline_kg.cases.reader import load_cases
from guideline_kg.checks.gate import Gate, refuse_many_cases
from guideline_kg.cli.common import emit, note, project_inputs, project_of, refuse_overwriting_inputs, report_gate
from guideline_kg.core.errors import EXIT_FAILED, EXIT_OK, InputError
from guideline_kg.core.files import write_atomic
from guideline_kg.core.namespaces import DCTERMS
from guideline_kg.knowledge.algorithm import build_graph
from guideline_kg.knowledge.graph import guideline_iri, load_knowledge
from guideline_kg.outputs.render import FORMATS, RENDITIONS, case_view, render

EXTENSIONS = {"svg": "svg", "png": "png", "dot": "dot", "mermaid": "mmd", "graphml": "graphml",
              "cytoscape": "cyjs"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="draw the treatment algorithm as a flowchart (SVG, PNG) or export it",
                       description="Build the treatment-algorithm graph from the knowledge graph and draw it as a "
                                   "top-down flowchart (Graphviz dot) or export it as DOT, Mermaid, GraphML or "
                                   "Cytoscape JSON. With --case, the patient's pathway is laid over it: applicable "
                                   "statements stand out, what does not apply is faded, undetermined ones are "
                                   "marked, urgent ones are red. A case that fails the case shapes gets its "
                                   "violations and no drawing. Exit 0 written, 1 the case is invalid, 2 unreadable "
                                   "input.")
    p.add_argument("--case", type=Path, metavar="CASE",
                   help="a patient case (Turtle, JSON-LD or FHIR R4 Bundle) whose pathway to show")
    p.add_argument("--format", choices=FORMATS, default="svg", help="output format (default: svg)")
    p.add_argument("--view", choices=RENDITIONS, default="detailed",
                   help="for svg, png and dot: the detailed chart (every statement's words, source lines and "
                        "conditions; the default) or the overview (short labels, large type: legible at 900 px "
                        "wide)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="output file, '-' for stdout (text formats); default: build/algorithm.<ext> "
                        "(build/algorithm-<case>.<ext> with --case; -overview before the extension with "
                        "--view overview)")
    p.add_argument("--reasoner", choices=["fast", "hermit"], default="fast",
                   help="derivation path for --case (default: fast)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    project = project_of(args)
    refuse_overwriting_inputs(args.out, [*project_inputs(project), *([args.case] if args.case else [])])
    if args.case is not None:  # before anything is parsed: a file of 80,000 cases is refused in seconds
        refuse_many_cases([args.case], limit=1, why="`render --case` draws the pathway of one case")
    algorithm = project.require("algorithm", "`render`")
    knowledge = load_knowledge(project)
    graph = build_graph(knowledge, project)
    if len(graph) == 0:
        raise InputError("the treatment algorithm has no gk:Transition", path=str(algorithm))
    view, title = None, "Treatment algorithm"
    name = knowledge.value(guideline_iri(knowledge), DCTERMS.title)
    if name is not None:
        title = f"{name}\ntreatment algorithm"
    if args.case is not None:
        gate = Gate(knowledge, project)
        cases = load_cases([args.case], project)
        if len(cases) != 1:
            raise InputError(f"expected one patient case, found {len(cases)}", path=str(args.case))
        [gated] = gate.admit(cases, reasoner=args.reasoner)
        if report_gate([gated], "no pathway drawn, nothing written"):
            return EXIT_FAILED
        assert gated.case is not None and gated.result is not None
        view = case_view(graph, knowledge, project, gated.case, args.reasoner, evaluator=gate.evaluator,
                         result=gated.result)
        title = f"Pathway of case {gated.name}"
        if not view.in_scope:
            title += f" (OUTSIDE the guideline's population: {view.scope_reason})"
    data = render(graph, args.format, view, title, rendition=args.view)
    if args.out is not None and str(args.out) == "-":
        if args.format == "png":
            raise InputError("PNG is binary; give --out FILE")
        emit(data.decode("utf-8"))
        return EXIT_OK
    out = args.out or Path("build") / (f"algorithm-{view.case}" if view else "algorithm")
    if args.out is None:
        suffix = "-overview" if args.view == "overview" and args.format in ("svg", "png", "dot") else ""
        out = out.with_name(out.name + suffix + "." + EXTENSIONS[args.format])
    write_atomic(out, data)
    note(f"wrote {out} ({args.format}, {graph.number_of_nodes()} nodes, {graph.number_of_edges()} transitions"
         + (f"; case {view.case}: {view.counts.get('applicable', 0)} applicable, "
            f"{len(view.applicable())} of them on the chart; {view.counts.get('undetermined', 0)} undetermined, "
            f"{len(view.questions)} questions missing, {len(view.conflicts)} conflicts" if view else "") + ")")
    return EXIT_OK

