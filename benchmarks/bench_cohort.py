"""Benchmark: a synthetic cohort through generate, load, validate, derive, write; time and peak memory per stage.

Also, in the same run: pyoxigraph's plain load of the whole file (the issue's yardstick), pySHACL per case on a
slice (scaled to N) against the compiled validation, and rdflib evaluating the same derivation queries on a
slice (scaled to N) against the fast path. Each size runs in a fresh process (peak RSS is per process).
Prints a table of medians. Run: `.venv/bin/python benchmarks/bench_cohort.py [--sizes 1000 10000 100000]
[--runs 3] [--million]`.

`--columnar` (issue 16) measures the columnar (Parquet) path instead, `--runs` runs per size (each in a fresh
process): pyoxigraph's plain load (in its own process), the stages and end to end in this process, bytes on disk
per case, peak RSS, the CPU seconds of both (a shared machine's load stretches wall time, not CPU time) and the
load average around the run; then the same file on a local Dask cluster of `--workers` processes (end to end,
speed-up over in-process, peak RSS of each worker). Each row is one run; the last row of a size is the median
of each column (the ratios are the medians of each run's own ratio).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_run(n: int, slice_n: int) -> dict[str, float]:
    """One measured run in this process (called in a child process per size and run)."""
    import pyshacl
    from rdflib import Graph

    from guideline_kg.cohort.generate import generate, load_profile, write_cohort
    from guideline_kg.cohort.evaluate import CohortEvaluator, case_shapes, hierarchy_context
    from guideline_kg.knowledge.graph import load_knowledge
    from guideline_kg.core.project import Project

    project = Project.at(ROOT)
    out_dir = ROOT / "build" / "bench-cohort"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"cohort-{n}.ttl"
    r: dict[str, float] = {}
    t = time.perf_counter()
    with path.open("w") as f:
        write_cohort(generate(load_profile(project.kg_dir / "cohort-profile.json"), n, seed=1), f, "turtle")
    r["generate"] = time.perf_counter() - t
    # the yardstick (pyoxigraph alone loading the whole file) runs in its own process, so that its memory does
    # not count against the pipeline's peak
    proc = subprocess.run([sys.executable, __file__, "--load-only", str(path)], capture_output=True, text=True,
                          check=True)
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    r["pyoxigraph load"], r["plain load peak MB"] = plain["seconds"], plain["peak MB"]
    knowledge = load_knowledge(project)
    ce = CohortEvaluator(knowledge, project)
    t = time.perf_counter()
    with (out_dir / f"results-{n}.jsonl").open("w") as out:
        summary = ce.run(path, out)
    r["end to end"] = time.perf_counter() - t
    for stage, secs in summary.seconds.items():
        r[stage] = secs
    r["peak MB"] = _rss_mb()
    # comparisons on a slice, scaled to n
    records = list(generate(load_profile(project.kg_dir / "cohort-profile.json"), slice_n, seed=1))
    buf = io.StringIO()
    write_cohort(iter(records), buf, "turtle")
    shapes, ctx = case_shapes(project), hierarchy_context(knowledge)
    t = time.perf_counter()
    for rec in records:
        one = io.StringIO()
        write_cohort(iter([rec]), one, "turtle")
        pyshacl.validate(Graph().parse(data=one.getvalue(), format="turtle") + ctx, shacl_graph=shapes,
                         inference="none")
    r["pySHACL (scaled)"] = (time.perf_counter() - t) * n / slice_n
    g = Graph().parse(data=buf.getvalue(), format="turtle")
    t = time.perf_counter()
    for cls in ce.evaluator.classes:
        for pattern in ce.evaluator.patterns[cls]:
            list(g.query(ce.evaluator._witness_query(pattern, None)))
    r["rdflib derive (scaled)"] = (time.perf_counter() - t) * n / slice_n
    r["cases"] = summary.cases
    return r


def columnar_run(n: int, shard: int, workers: int) -> dict[str, float]:
    """One measured columnar run (issue 16) in this process: in-process, then on a local cluster."""
    from guideline_kg.cohort.cluster import run_columnar
    from guideline_kg.cohort.evaluate import CohortEvaluator
    from guideline_kg.cohort.generate import generate, load_profile, write_cohort
    from guideline_kg.core.project import Project
    from guideline_kg.knowledge.graph import load_knowledge

    project = Project.at(ROOT)
    out_dir = ROOT / "build" / "bench-cohort"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"cohort-{n}.ttl"
    if not path.is_file():
        with path.open("w") as f:
            write_cohort(generate(load_profile(project.kg_dir / "cohort-profile.json"), n, seed=1), f, "turtle")
    r: dict[str, float] = {"load average": os.getloadavg()[0]}
    proc = subprocess.run([sys.executable, __file__, "--load-only", str(path)], capture_output=True, text=True,
                          check=True)
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    r["pyoxigraph load"], r["plain load cpu"] = plain["seconds"], plain["cpu"]
    ce = CohortEvaluator(load_knowledge(project), project)
    t, cpu = time.perf_counter(), time.process_time()
    summary, manifest = run_columnar(project, path, out_dir / f"columnar-{n}", shard, ce=ce)
    r["end to end"], r["cpu"] = time.perf_counter() - t, time.process_time() - cpu
    r["load average after"] = os.getloadavg()[0]
    r.update(summary.seconds)
    r["bytes per case"] = manifest["bytes"] / manifest["cases"]
    r["peak MB"] = _rss_mb()
    r["cases"] = manifest["cases"]
    if workers:
        # the path `cohort evaluate --workers N` takes: the local cluster's start-up, each worker's preparation and
        # the closing are inside the time; the peaks are each process's own (the manifest's peak_mb)
        t = time.perf_counter()
        _, cm = run_columnar(project, path, out_dir / f"columnar-{n}-cluster", shard, workers=workers, ce=ce)
        r["cluster end to end"] = time.perf_counter() - t
        r["worker peak MB"] = max(cm["peak_mb"].get("workers", {}).values(), default=0.0)
    return r


def _columnar_row(label: str, cols: list[str], m: dict[str, float]) -> None:
    cluster = m.get("cluster end to end")
    print(f"{label:>9} " + " ".join(f"{m[c]:>15.2f}" for c in cols)
          + f" {m['e2e/load']:>8.2f}x {m['cpu/cpu']:>7.2f}x {m['write %']:>7.1f}% {m['bytes per case']:>7.0f}"
          f" {m['peak MB']:>8.0f} {m['load average']:>5.1f}/{m['load average after']:<5.1f}"
          + (f" {cluster:>12.2f} {m['speed-up']:>8.2f}x {m['worker peak MB']:>10.0f}" if cluster else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--million", action="store_true", help="also N = 1,000,000 (one run)")
    parser.add_argument("--slice", type=int, default=50, help="cases for the pySHACL and rdflib slices")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load-only", help=argparse.SUPPRESS)
    parser.add_argument("--columnar", action="store_true", help="issue 16: the columnar path, in-process and on a "
                                                                "local Dask cluster (one run per size)")
    parser.add_argument("--shard-size", type=int, default=2500, help="--columnar: cases per shard (default 2500)")
    parser.add_argument("--workers", type=int, default=2, help="--columnar: local cluster size (0: none)")
    parser.add_argument("--columnar-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.columnar_child:
        print(json.dumps(columnar_run(args.columnar_child, args.shard_size, args.workers)))
        return
    if args.columnar:
        print("columnar cohort benchmark (issue 16): seconds; ratios against pyoxigraph's plain load of the same "
              f"file in the same run; shards of {args.shard_size}; peak = peak RSS of the process; cpu = CPU seconds "
              "of the process (all its threads); load = the machine's 1-minute load average before / after the run")
        cols = ["pyoxigraph load", "load", "validate", "derive", "write", "end to end"]
        print(f"{'N':>9} " + " ".join(f"{c:>15}" for c in cols) + f" {'e2e/load':>9} {'cpu/cpu':>8} {'write %':>8} "
              f"{'B/case':>7} {'peak MB':>8} {'load':>11} {'cluster e2e':>12} {'speed-up':>9} {'worker MB':>10}")
        for n in args.sizes:
            runs = []
            for _ in range(args.runs):
                proc = subprocess.run([sys.executable, __file__, "--columnar-child", str(n), "--shard-size",
                                       str(args.shard_size), "--workers", str(args.workers)], capture_output=True,
                                      text=True, check=True)
                m = json.loads(proc.stdout.strip().splitlines()[-1])
                m["e2e/load"] = m["end to end"] / m["pyoxigraph load"]
                m["cpu/cpu"] = m["cpu"] / m["plain load cpu"]
                m["write %"] = 100 * m["write"] / m["end to end"]
                if m.get("cluster end to end"):
                    m["speed-up"] = m["end to end"] / m["cluster end to end"]
                runs.append(m)
                _columnar_row(f"{n}", cols, m)
            if len(runs) > 1:
                _columnar_row("median", cols, {k: statistics.median(r[k] for r in runs) for k in runs[0]})
        return
    if args.load_only:
        import pyoxigraph as ox

        t, cpu = time.perf_counter(), time.process_time()
        ox.Store().bulk_load(path=args.load_only, format=ox.RdfFormat.TURTLE)
        print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - cpu, "peak MB": _rss_mb()}))
        return
    if args.child:
        print(json.dumps(one_run(args.child, args.slice)))
        return
    sizes = args.sizes + ([1_000_000] if args.million else [])
    rows = []
    for n in sizes:
        runs = []
        for _ in range(1 if n >= 1_000_000 else args.runs):
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--slice", str(args.slice)],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.append((n, len(runs), {k: statistics.median(r[k] for r in runs) for k in runs[0]}))
    cols = ["generate", "pyoxigraph load", "load", "validate", "derive", "write", "end to end", "peak MB",
            "plain load peak MB", "pySHACL (scaled)", "rdflib derive (scaled)"]
    print("cohort benchmark: seconds (medians); peak MB = peak RSS of the pipeline's process (generate, evaluate, "
          "slices); plain load peak MB = pyoxigraph alone loading the whole file, in its own process")
    print(f"{'N':>9} {'runs':>4} " + " ".join(f"{c:>14}" for c in cols))
    for n, k, m in rows:
        print(f"{n:>9} {k:>4} " + " ".join(f"{m[c]:>14.2f}" for c in cols))
    print("\nratios and targets (issue 8):")
    for n, _, m in rows:
        load = m["pyoxigraph load"]
        print(f"  N={n}: derive/load {m['derive'] / load:.2f} (target <= 2); end-to-end/load "
              f"{m['end to end'] / load:.2f} (target <= 5); peak {m['peak MB']:.0f} MB (target <= 2048, 1M: 4096); "
              f"pySHACL/compiled validation {m['pySHACL (scaled)'] / m['validate']:.0f}x (target >= 10); "
              f"rdflib/fast derive {m['rdflib derive (scaled)'] / m['derive']:.1f}x")


if __name__ == "__main__":
    main()
