"""`guideline-kg cohort`: generate a synthetic population; validate and derive every case of a population file."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guideline_kg.cli.common import emit, note, project_inputs, project_of, refuse_overwriting_inputs
from guideline_kg.cohort.evaluate import CohortEvaluator, CohortSummary
from guideline_kg.cohort.generate import FORMATS, generate, load_profile, write_cohort
from guideline_kg.cohort.shards import count_records, is_url
from guideline_kg.core.errors import EXIT_FAILED, EXIT_OK, InputError
from guideline_kg.core.files import atomic_output
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.store.stores import RemoteStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cohort", help="synthetic populations; validate and derive a whole population",
                       description="Population-scale runs. `generate` writes a synthetic cohort; `evaluate` "
                                   "validates every case and derives every statement's status on the fast path.")
    csub = p.add_subparsers(dest="cohort_command", metavar="ACTION")
    g = csub.add_parser("generate", help="write a synthetic cohort (streamed; deterministic for a seed)",
                        description="Write N synthetic cases drawn from the cohort profile (distributions and rates "
                                    "of synthetic data named by the package's manifest, [parts] cohort_profile). "
                                    "Exit 0 written, 2 bad input.")
    g.add_argument("--n", type=int, required=True, help="number of cases")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--format", choices=[*FORMATS, "fhir-bulk"], default="turtle",
                   help="fhir-bulk: a FHIR Bulk Data export folder (--out names the folder): manifest.json and "
                        "NDJSON files per resource type")
    g.add_argument("--per-file", type=int, default=50_000, metavar="N",
                   help="fhir-bulk: resources per NDJSON file (default 50000; a type with more gets several files)")
    g.add_argument("--profile", type=Path, help="cohort profile JSON (default: the package's [parts] cohort_profile)")
    g.add_argument("--out", type=Path, required=True, help="output file (a new folder for fhir-bulk)")
    g.set_defaults(handler=run_generate)
    e = csub.add_parser("evaluate", help="validate and derive every case of a cohort file; Parquet or JSON Lines out",
                        description="Validate every case with the case shapes (compiled to SPARQL) and derive every "
                                    "statement's status on the fast path, shard by shard. --out DIR writes a "
                                    "partitioned Parquet dataset (one row per case and statement: status, urgent, "
                                    "conflict, scope, the properties of the missing data; a table of invalid cases; "
                                    "manifest.json written last), in this process or, with --scheduler or "
                                    "--workers, as tasks on a Dask cluster. --explain, an --out ending in .jsonl, or "
                                    "no --out: one JSON line per case "
                                    "(the object of a case in `recommend --format json`; invalid cases get "
                                    "{\"case\", \"invalid\": true, \"violations\"}). Exit 0 all valid, 1 some cases "
                                    "invalid (reported and skipped), 2 unreadable input. On a terminal a progress "
                                    "bar shows cases done, the total and the time left: the total is counted "
                                    "before the run, cheaply (the `# case` marker lines of a Turtle or N-Triples "
                                    "cohort, or its subjects typed gk:Patient when it has no markers; the "
                                    "non-blank lines of NDJSON), and the bar moves after each stage of a shard.")
    e.add_argument("input", type=_input_arg, metavar="INPUT",
                   help="cohort file: .ttl, .nt or .ndjson (FHIR Bundles), or a FHIR Bulk Data export folder "
                        "(manifest.json); with --out DIR also an fsspec URL every worker can read (file://, or a "
                        "protocol whose fsspec package is installed; http(s) and memory:// are refused)")
    e.add_argument("--out", type=Path, help="a folder: the columnar (Parquet) results; a .jsonl/.json/.ndjson "
                                            "file: JSON Lines (default: JSON Lines to stdout)")
    e.add_argument("--explain", action="store_true",
                   help="JSON Lines with every explanation (because, missing in words), as before; slower and "
                        "~15 KB a case")
    e.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the shards as tasks on this running Dask distributed cluster (columnar --out DIR; the "
                        "input path must be readable by every worker)")
    e.add_argument("--workers", type=int, metavar="N",
                   help="start a local Dask cluster of N worker processes for the run (columnar --out DIR)")
    e.add_argument("--connect-timeout", type=float, default=30.0, metavar="S",
                   help="seconds an fsspec URL input has to answer before the run gives up (default 30)")
    e.add_argument("--summary", action="store_true",
                   help="print, per statement (id, source lines, start of its text), the number and share of "
                        "valid cases in each status, and the invalid cases counted by defect (to stderr when the "
                        "JSON Lines go to stdout)")
    e.add_argument("--list-invalid", type=int, default=0, metavar="N",
                   help="in the summary, also list the first N invalid cases with their reasons (implies "
                        "--summary; default 0: only the counts by defect)")
    e.add_argument("--summary-format", choices=["text", "json"], default="text")
    e.add_argument("--shard-size", type=int, default=10_000, help="cases per store (default 10000)")
    e.add_argument("--store", metavar="URL", help="run validation and derivation on an external SPARQL 1.1 server "
                                                  "(its query endpoint; the default graph must be empty: each shard "
                                                  "is put there and cleared afterwards)")
    e.add_argument("--store-data", metavar="URL", help="the server's Graph Store Protocol endpoint (default: "
                                                       "Oxigraph's /store beside /query)")
    e.add_argument("--store-timeout", type=float, default=300.0, metavar="S",
                   help="seconds to wait for one request to the server (default 300)")
    e.set_defaults(handler=run_evaluate)
    p.set_defaults(handler=lambda args: (p.print_help(sys.stderr), 2)[1])


def _progress(total: int | None, unit: str, mininterval: float = 0.1) -> tuple[Any, Callable[[int], None] | None]:
    """A tqdm bar on a terminal, nothing otherwise; redrawn at most every ``mininterval`` seconds."""
    if not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm  # noqa: PLC0415 - only on a terminal; tqdm's import is slow and every command would pay it

    bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=mininterval)
    return bar, bar.update


def run_generate(args: argparse.Namespace) -> int:
    project = project_of(args)
    profile = load_profile(args.profile or project.require("cohort_profile", "`cohort generate`"))
    if args.n < 0:
        raise InputError(f"--n must not be negative (got {args.n})")
    refuse_overwriting_inputs(args.out, [*project_inputs(project), *([args.profile] if args.profile else [])])
    bar, update = _progress(args.n, "case")
    try:
        if args.format == "fhir-bulk":
            counts = _generate_bulk(args, profile, project, update)
        else:
            with atomic_output(args.out) as handle:
                counts = write_cohort(generate(profile, args.n, args.seed), handle, args.format, update, project)
    finally:
        if bar is not None:  # tqdm has no truth value without a total
            bar.close()
    note(f"wrote {counts['cases']} cases ({counts['triples']} triples, {counts['invalid']} with a planted defect) "
         f"to {args.out}")
    lost = counts.get("unexpressed") or {}
    if lost:
        note(f"{sum(lost.values())} facts have no FHIR form under the package's FHIR case mapping and are not in "
             "the Bundles (docs/cohort.md, FHIR NDJSON): "
             + ", ".join(f"{p.rsplit('#', 1)[-1].rsplit('/', 1)[-1]} {n}" for p, n in sorted(lost.items())))
    return EXIT_OK


_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def _generate_bulk(args: argparse.Namespace, profile: Any, project: Any, update: Any) -> dict[str, Any]:
    """The cohort as a Bulk Data export folder, written to a temporary folder beside --out and renamed."""
    from guideline_kg.cohort.bulk import write_export  # noqa: PLC0415 - only this format needs it

    if args.per_file < 1:
        raise InputError(f"--per-file must be at least 1 (got {args.per_file})")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise InputError("--format fhir-bulk writes a new folder; this one exists and is not empty", path=str(args.out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        counts = write_export(generate(profile, args.n, args.seed), tmp, project, args.per_file, update)
        if args.out.is_dir():
            args.out.rmdir()
        tmp.rename(args.out)
        args.out.chmod(0o755)  # mkdtemp made it private
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    note(f"{sum(counts['resources'].values())} resources: "
         + ", ".join(f"{t} {n}" for t, n in sorted(counts["resources"].items())))
    return counts


def _group_bulk(args: argparse.Namespace, project: Any, staging: Path) -> Path:
    """A Bulk Data export folder grouped by patient into one NDJSON cohort in ``staging``; what was left out
    reported per resource type."""
    from guideline_kg.cohort.bulk import group_export  # noqa: PLC0415

    grouped = staging / "cohort.ndjson"
    report = group_export(args.input, grouped, project)
    note(f"{args.input}: {report.resources} resources in {report.files} files, {report.patients} patients "
         f"(grouped in {report.buckets} buckets)")
    for line in report.lines():
        note(line)
    return grouped


def _input_arg(text: str) -> Path | str:
    """INPUT: a URL (``scheme://...``) stays a string (a Path would fold its ``//``); anything else is a path."""
    return text if is_url(text) else Path(text)


def _run_bulk_cluster(args: argparse.Namespace, project: Any, staging: Path) -> int:
    """A Bulk Data export on a Dask cluster: partitioned by patient and evaluated by the workers."""
    from guideline_kg.cohort.cluster import run_bulk  # noqa: PLC0415
    from guideline_kg.cohort.columnar import MANIFEST  # noqa: PLC0415

    if args.scheduler and args.workers is not None:
        raise InputError("give either --scheduler (a running cluster) or --workers (a local one), not both")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1 (got {args.workers})")
    refuse_overwriting_inputs(args.out, project_inputs(project))
    ce = CohortEvaluator(load_knowledge(project), project)
    summary, manifest, report = run_bulk(project, args.input, args.out, staging, args.shard_size,
                                         scheduler=args.scheduler, workers=args.workers, ce=ce)
    note(f"{args.input}: {report.resources} resources in {report.files} files, {report.patients} patients "
         f"(grouped in {report.buckets} buckets on the cluster)")
    for line in report.lines():
        note(line)
    note(f"{manifest['rows']} rows in {len(manifest['partitions'])} partitions, {manifest['bytes']:,} bytes "
         f"({manifest['bytes'] / max(manifest['cases'], 1):.0f} per case); {args.out / MANIFEST} lists them")
    return _report(args, summary, ce.lines, ce.texts, f"see {args.out / 'invalid'}")


def run_evaluate(args: argparse.Namespace) -> int:
    if isinstance(args.input, str):  # a URL: file:// is a path; another protocol is read by the workers
        from guideline_kg.cohort.cluster import resolve_input  # noqa: PLC0415

        resolved = resolve_input(args.input, args.connect_timeout)
        return (run_evaluate if isinstance(resolved, Path) else _run_evaluate)(
            argparse.Namespace(**{**vars(args), "input": resolved}))
    if args.input.is_dir():
        from guideline_kg.cohort.bulk import is_export  # noqa: PLC0415

        if not is_export(args.input):
            raise InputError("a folder given as INPUT must be a FHIR Bulk Data export (with manifest.json)",
                             path=str(args.input))
        columnar = args.out is not None and not args.explain and args.out.suffix.lower() not in _JSON_SUFFIXES
        # beside the results (which every worker writes) or in a private temporary folder
        staging = (Path(tempfile.mkdtemp(prefix=f".{args.out.name}.bulk-", dir=args.out.resolve().parent))
                   if columnar and args.out.resolve().parent.is_dir() else Path(tempfile.mkdtemp(prefix="gk-bulk-")))
        try:
            refuse_overwriting_inputs(args.out, [args.input])
            if columnar and (args.scheduler or args.workers is not None):
                return _run_bulk_cluster(args, project_of(args), staging)
            grouped = _group_bulk(args, project_of(args), staging)
            return _run_evaluate(argparse.Namespace(**{**vars(args), "input": grouped}))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _run_evaluate(args)


def _run_evaluate(args: argparse.Namespace) -> int:
    project = project_of(args)
    url = isinstance(args.input, str)  # an fsspec URL (checked by resolve_input)
    if not url and not args.input.is_file():
        raise InputError("no such file", path=str(args.input))
    refuse_overwriting_inputs(args.out, [*project_inputs(project), *([] if url else [args.input])])
    if args.list_invalid < 0:
        raise InputError(f"--list-invalid must not be negative (got {args.list_invalid})")
    columnar = args.out is not None and not args.explain and args.out.suffix.lower() not in _JSON_SUFFIXES
    if (args.scheduler or args.workers is not None) and not columnar:
        raise InputError("--scheduler and --workers write the columnar results: give --out DIR (a folder), "
                         "without --explain")
    if args.scheduler and args.workers is not None:
        raise InputError("give either --scheduler (a running cluster) or --workers (a local one), not both")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1 (got {args.workers})")
    if url and not columnar:
        raise InputError("a URL input is read by the columnar run only: give --out DIR (a folder), without "
                         "--explain", path=args.input)
    if columnar and args.store:
        raise InputError("--store runs with the JSON Lines output only (--explain, or --out FILE.jsonl)")
    if columnar:
        return _run_columnar(args, project)
    remote = None
    if args.store:
        remote = RemoteStore(args.store, args.store_data, args.store_timeout)
    elif args.store_data:
        raise InputError("--store-data needs --store URL")
    runner = lambda ce, out, update: ce.run(args.input, out, args.shard_size, update, remote)  # noqa: E731
    ce = CohortEvaluator(load_knowledge(project), project)
    # evaluate moves the bar four times a shard (after each stage): draw every move
    bar, update = _progress(count_records(args.input) if sys.stderr.isatty() else None, "case", mininterval=0)
    try:
        if args.out:
            with atomic_output(args.out) as handle:
                summary = runner(ce, handle, update)
        else:
            summary = runner(ce, sys.stdout, update)
    finally:
        _close(bar)
        if remote is not None:
            remote.close()
    return _report(args, summary, ce.lines, ce.texts, "see their JSON lines")


def _close(bar: Any) -> None:
    if bar is not None:  # tqdm has no truth value without a total
        if bar.total is not None and bar.n != bar.total:  # the cheap count was off (a record without a case)
            bar.total = bar.n
            bar.refresh()
        bar.close()


def _report(args: argparse.Namespace, summary: CohortSummary, lines: dict[str, str], texts: dict[str, str],
            where: str) -> int:
    if args.summary or args.list_invalid:
        text = (json.dumps(summary.to_json(), indent=2) if args.summary_format == "json"
                else summary.table(lines, texts, args.list_invalid))
        if args.out:
            emit(text)
        else:
            note(text)
    elif summary.invalid:
        note(f"{len(summary.invalid)} invalid cases skipped ({where}, or --summary)")
    note(f"{summary.cases} cases, {summary.valid} valid, {len(summary.invalid)} invalid"
         + (f"; results in {args.out}" if args.out else ""))
    return EXIT_FAILED if summary.invalid else EXIT_OK


def _run_columnar(args: argparse.Namespace, project: Any) -> int:
    # pyarrow (and dask, for a cluster) are imported by the runs that write Parquet only
    from guideline_kg.cohort.cluster import run_columnar  # noqa: PLC0415
    from guideline_kg.cohort.columnar import MANIFEST  # noqa: PLC0415

    # prepared here too on a cluster run: the summary's source lines and texts, the manifest's statement ids
    ce = CohortEvaluator(load_knowledge(project), project)
    counted = count_records(args.input) if sys.stderr.isatty() and isinstance(args.input, Path) else None
    bar, update = _progress(counted, "case", mininterval=0)
    try:
        summary, manifest = run_columnar(project, args.input, args.out, args.shard_size, update,
                                         scheduler=args.scheduler, workers=args.workers, ce=ce)
    finally:
        _close(bar)
    note(f"{manifest['rows']} rows in {len(manifest['partitions'])} partitions, {manifest['bytes']:,} bytes "
         f"({manifest['bytes'] / max(manifest['cases'], 1):.0f} per case); {args.out / MANIFEST} lists them")
    return _report(args, summary, ce.lines, ce.texts, f"see {args.out / 'invalid'}")
