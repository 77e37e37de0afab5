"""Columnar cohort runs, in-process or as tasks on a Dask distributed cluster.

The file is cut into shards by a byte scan on the machine that starts the run (:func:`shards.plan_shards`); each
shard is one task that reads its byte range from the path (which every worker must see), validates, derives and
writes its partition (:func:`columnar.evaluate_partition`). Partition names follow the shard's index, and each file
is renamed into place only when complete, so a task run twice (its worker was lost and the scheduler ran it
again elsewhere) writes the same file again: no row is lost or doubled. The manifest is written by the starting
process when every task has finished; an input error in any shard cancels the rest, removes the partitions
written, and fails the run (exit 2) with the shard's file and line.

Each worker prepares the guideline once (the compiled shapes and derivation queries, a few seconds) and keeps it
for the next tasks of the same project.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guideline_kg.cohort.columnar import (
    ColumnarWriter,
    Partition,
    commit,
    discard,
    evaluate_partition,
    prepare_output,
    summary_from_dataset,
)
from guideline_kg.cohort.evaluate import CohortEvaluator, CohortSummary
from guideline_kg.cohort.shards import ShardSpec, plan_shards
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge

__all__ = ["project_key", "run_columnar"]

_PREPARED: dict[tuple[str, ...], tuple[CohortEvaluator, ColumnarWriter]] = {}
_LOCK = threading.Lock()


def project_key(project: Project) -> tuple[str, ...]:
    """The folders that name a project (what a worker needs to open the same one)."""
    return (str(project.home), str(project.ontology_dir), str(project.kg_dir), str(project.shapes_dir),
            str(project.queries_dir))


def _prepared(key: tuple[str, ...]) -> tuple[CohortEvaluator, ColumnarWriter]:
    with _LOCK:
        hit = _PREPARED.get(key)
        if hit is None:
            home, ontology, kg, shapes, queries = key
            project = Project.at(home, ontology=ontology, kg=kg, shapes=shapes, queries=queries)
            ce = CohortEvaluator(load_knowledge(project), project)
            hit = _PREPARED[key] = (ce, ColumnarWriter(ce))
        return hit


def shard_task(spec: ShardSpec, out_dir: str, key: tuple[str, ...]) -> Partition:
    """One shard on a worker: its partition written, or its input error returned (never raised: an error
    travels back as data, whatever the cluster's serialisation)."""
    try:
        ce, writer = _prepared(key)
        return evaluate_partition(ce, writer, spec, Path(out_dir))
    except InputError as exc:
        return Partition(spec.index, error=str(exc))


def run_columnar(project: Project, path: Path, out_dir: Path, shard_size: int = 10_000,
                 progress: Callable[[int], None] | None = None, *, scheduler: str | None = None,
                 workers: int | None = None, ce: CohortEvaluator | None = None,
                 on_partition: Callable[[Partition], None] | None = None) -> tuple[CohortSummary, dict[str, Any]]:
    """Evaluate the cohort in ``path`` into the columnar dataset ``out_dir``; its summary (computed from the
    tables) and manifest. ``scheduler`` (tcp://host:port) runs the shards on that Dask cluster, ``workers`` on a
    new local cluster of that many processes; neither: in this process (``ce`` if given)."""
    path, out_dir = Path(path).resolve(), Path(out_dir)
    specs = plan_shards(path, shard_size)
    created = not out_dir.exists()
    prepare_output(out_dir)
    key = project_key(project)
    started = time.perf_counter()
    done: list[Partition] = []
    try:
        if scheduler is None and workers is None:
            ce, writer = _prepared(key) if ce is None else (ce, ColumnarWriter(ce))
            seen: dict[str, int] = {}
            for spec in specs:
                part = evaluate_partition(ce, writer, spec, out_dir, seen)
                _take(part, spec, done, progress, on_partition)
        else:
            _on_cluster(specs, out_dir, key, scheduler, workers, done, progress, on_partition)
    except BaseException:
        discard(out_dir, [s.index for s in specs])
        if created:  # a folder this run made holds nothing now: leave no trace
            for folder in (out_dir / "results", out_dir / "invalid", out_dir):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    engine = (f"dask {scheduler}" if scheduler else f"dask local cluster, {workers} workers" if workers
              else "in-process")
    shorts = (ColumnarWriter(ce) if ce is not None else _prepared(key)[1]).short  # as the tasks name them
    manifest = commit(out_dir, done, {
        "input": str(path), "engine": engine, "shard_size": shard_size,
        "statements": {short: sid for sid, short in shorts.items()},
        "seconds": round(time.perf_counter() - started, 3)})
    return summary_from_dataset(out_dir), manifest


def _take(part: Partition, spec: ShardSpec, done: list[Partition], progress: Callable[[int], None] | None,
          on_partition: Callable[[Partition], None] | None) -> None:
    if part.error is not None:
        raise InputError(f"{part.error} (shard {spec.index}, from line {spec.line})")
    done.append(part)
    if progress is not None:
        progress(part.cases)
    if on_partition is not None:
        on_partition(part)


def _on_cluster(specs: list[ShardSpec], out_dir: Path, key: tuple[str, ...], scheduler: str | None,
                workers: int | None, done: list[Partition], progress: Callable[[int], None] | None,
                on_partition: Callable[[Partition], None] | None) -> None:
    from distributed import Client, LocalCluster, as_completed  # noqa: PLC0415 - only cluster runs pay the import

    cluster = None
    try:
        if scheduler is not None:
            client = Client(scheduler, timeout=15)
        else:
            if workers is None or workers < 1:
                raise InputError(f"--workers must be at least 1 (got {workers})")
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, host="127.0.0.1", silence_logs=logging.ERROR)
            client = Client(cluster)
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        by_index = {s.index: s for s in specs}
        # pure=False: a task is never taken from a cache of an earlier run; retries: a task that raised is run
        # again (a worker lost mid-task is rescheduled by the scheduler itself)
        futures = [client.submit(shard_task, spec, str(out_dir.resolve()), key, pure=False, retries=2,
                                 key=f"guideline-kg-shard-{spec.index:05d}-{time.time_ns()}") for spec in specs]
        try:
            for future in as_completed(futures):
                part = future.result()
                _take(part, by_index[part.index], done, progress, on_partition)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
