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

The input is a path or an fsspec URL every worker can read (:func:`resolve_input`): ``file://`` is a path;
``http(s)`` is refused by name (nothing is fetched, docs/security.md) and ``memory://`` because it lives in one
process; another protocol is accepted when fsspec has an implementation installed and the file answers within a
time limit. A patient whose records are in two places (two shards, or a shard's table and its invalid table) is
an input error naming both places (:func:`check_duplicates`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import resource
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from guideline_kg.cohort.bulk import (
    BUCKET_BYTES,
    BulkReport,
    bucket_count,
    export_files,
    export_time,
    group_bucket,
    partition_file,
    readable_types,
)
from guideline_kg.cohort.columnar import (
    ColumnarWriter,
    Partition,
    commit,
    discard,
    evaluate_partition,
    evaluate_partitions,
    prepare_output,
    summary_from_dataset,
)
from guideline_kg.cohort.evaluate import CohortEvaluator, CohortSummary
from guideline_kg.cohort.generate import MARKER
from guideline_kg.cohort.shards import ShardSpec, cohort_format, is_url, plan_shards, read_url_range
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge

__all__ = ["check_duplicates", "plan_url_shards", "project_key", "resolve_input", "run_bulk", "run_columnar"]

#: protocols refused by name: a URL on the web is never fetched (docs/security.md)
REFUSED = ("http", "https")
#: protocols whose files live in one process's memory: other processes (the workers) cannot see them
PRIVATE = ("memory",)
_MARK = MARKER.encode()

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


def resolve_input(url: str, timeout: float = 30.0) -> Path | str:
    """An input named by a URL: a ``file://`` URL as its path; another fsspec URL as itself once fsspec has an
    implementation for its protocol(s) and the file answers within ``timeout`` seconds. Refused (InputError,
    exit 2) by name: http(s) (nothing is fetched) and memory:// (one process's memory, which no worker sees)."""
    import fsspec  # type: ignore[import-untyped]  # noqa: PLC0415 - only URL inputs need it (it comes with dask)

    protocols = [part.split("://", 1)[0].lower() for part in url.split("::")]  # a chain: a::b://...
    for proto in protocols:
        if proto in REFUSED:
            raise InputError(f"{proto}:// URLs are refused: guideline-kg fetches nothing from the web "
                             "(docs/security.md); copy the file to a path or to storage every worker reads "
                             "(file://, or an fsspec protocol such as s3:// with its package installed)", path=url)
        if proto in PRIVATE:
            raise InputError(f"{proto}:// lives in one process's memory: Dask workers are other processes and "
                             "cannot see it; give a path or a URL every worker can read", path=url)
    if protocols in (["file"], ["local"]):
        return Path(url.split("://", 1)[1])
    for proto in protocols:
        try:
            fsspec.get_filesystem_class(proto)
        except ValueError:
            raise InputError(f"fsspec knows no protocol {proto!r}", path=url) from None
        except ImportError as exc:
            raise InputError(f"the fsspec protocol {proto!r} needs a package that is not installed ({exc})",
                             path=url) from None
    found: dict[str, Any] = {}

    def probe() -> None:  # in a daemon thread: a server that never answers must not hold the run
        try:
            fs, inner = fsspec.core.url_to_fs(url)
            found["info"] = fs.info(inner)
        except Exception as exc:  # any failure of any fsspec implementation is the message
            found["error"] = exc

    worker = threading.Thread(target=probe, name="guideline-kg-url-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise InputError(f"no answer within {timeout:g} s (--connect-timeout); is the storage reachable from "
                         "here and from every worker?", path=url)
    if "error" in found:
        failed = found["error"]
        raise InputError(f"cannot be read: {type(failed).__name__}: {failed}", path=url)
    if found["info"].get("type") == "directory":
        raise InputError("a URL input must name a cohort file (a Bulk Data export folder must be a path)", path=url)
    return url


def plan_url_shards(url: str, size: int = 10_000, chunk: int = 8 << 20) -> list[ShardSpec]:
    """The shards of the cohort file at an fsspec URL, as :func:`shards.plan_shards` finds them in a local file
    (every ``size``-th ``# case`` marker line, every ``size``-th NDJSON line), by one streamed scan in chunks of
    ``chunk`` bytes (memory: a chunk and the line that straddles it)."""
    import fsspec  # noqa: PLC0415 - only URL inputs need it

    if size < 1:
        raise InputError(f"--shard-size must be at least 1 (got {size})")
    ndjson = cohort_format(Path(url.split("::", 1)[0].rsplit("/", 1)[-1])) == "fhir-ndjson"
    starts: list[int] = []
    lines: list[int] = []
    header: list[bytes] = []
    buf, buf_pos, buf_line, records = b"", 0, 1, 0  # buf starts at a line start: its offset and line number
    needle = b"\n" if ndjson else b"\n" + _MARK

    def take(start: int, line: int) -> None:
        nonlocal records
        if records % size == 0:
            starts.append(start)
            lines.append(line)
        records += 1

    try:
        with fsspec.open(url, "rb") as handle:
            while True:
                block = handle.read(chunk)
                buf += block
                # decide the line starts before the last (maybe incomplete) line; all of them at the end
                cut = len(buf) if not block else buf.rfind(b"\n") + 1
                line, counted = buf_line, 0
                at = 0 if ndjson or buf.startswith(_MARK) else (nl + 1 if (nl := buf.find(needle)) >= 0 else -1)
                while 0 <= at < cut:
                    line += buf.count(b"\n", counted, at)
                    counted = at
                    if not ndjson and not starts:
                        header.append(buf[:at])  # the bytes before the first marker: the Turtle prefixes
                    take(buf_pos + at, line)
                    at = nl + 1 if (nl := buf.find(needle, at)) >= 0 else -1
                if not ndjson and not starts:
                    header.append(buf[:cut])
                buf_line += buf.count(b"\n", 0, cut)
                buf, buf_pos = buf[cut:], buf_pos + cut
                if not block:
                    break
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(f"cannot be read: {type(exc).__name__}: {exc}", path=url) from None
    total = buf_pos
    if total == 0:
        return []
    if not starts:
        raise InputError("a cohort read from a URL must have `# case` marker lines (as `cohort generate` writes) "
                         "or be NDJSON; a file without markers can only be read from a path", path=url)
    fmt = "fhir-ndjson" if ndjson else cohort_format(Path(url.split("::", 1)[0].rsplit("/", 1)[-1]))
    head = b"" if ndjson else b"".join(header)
    ends = [*starts[1:], total]
    return [ShardSpec(url, i, fmt, s, e, ln, head) for i, (s, e, ln) in enumerate(zip(starts, ends, lines,
                                                                                       strict=True))]


def check_duplicates(out_dir: Path, done: list[Partition], specs: list[ShardSpec], limit: int = 5) -> None:
    """Fail (InputError, exit 2) when a case is in two places of the run's tables: in two partitions (its records
    in two shards, which no worker sees together), or in one partition's results and its invalid table (a second
    record of a patient in the same shard). Each duplicate is named with the line of each record (a search of
    the shard's bytes for the case's name); at most ``limit`` are listed. Cost: one column of each partition."""
    where: dict[str, list[int]] = defaultdict(list)
    for part in sorted(done, key=lambda p: p.index):
        for name in (part.results, part.invalid):
            if name:
                for case in pc.unique(pq.read_table(out_dir / name, columns=["case"])["case"]).to_pylist():
                    where[case].append(part.index)
    twice = [(case, places) for case, places in where.items() if len(places) > 1]
    if not twice:
        return
    by_index = {s.index: s for s in specs}
    said = [f"the case {case!r} is in " + " and in ".join(_place(by_index[i], case) for i in places)
            for case, places in sorted(twice)[:limit]]
    more = f" (and {len(twice) - limit} more)" if len(twice) > limit else ""
    raise InputError(f"{len(twice)} patient(s) have records in two places, which would be evaluated twice or "
                     f"merged: {'; '.join(said)}{more}. Each patient must be one record; merge or remove the "
                     "duplicates")


def _place(spec: ShardSpec, case: str) -> str:
    """Where a case's record is: the file and the line of its name's first occurrence in the shard."""
    data = read_url_range(spec.path, spec.start, spec.end) if is_url(spec.path) else _read_range(spec)
    at = data.find(_MARK + case.encode() + b"\n")
    at = data.find(case.encode()) if at < 0 else at
    line = spec.line + data.count(b"\n", 0, at) if at >= 0 else spec.line
    return f"{spec.path}:{line} (shard {spec.index})"


def _read_range(spec: ShardSpec) -> bytes:
    with Path(spec.path).open("rb") as handle:
        handle.seek(spec.start)
        return handle.read(spec.end - spec.start)


def peak_mb() -> float:
    """This process's peak resident memory in MB: Linux's VmHWM of its own address space, else ru_maxrss (KB).
    On Linux ru_maxrss survives exec: a worker spawned by a client that had mapped a 2.5 GB input reported the
    client's 2.6 GB as its own peak; VmHWM starts afresh with the new program."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_columnar(project: Project, path: Path | str, out_dir: Path, shard_size: int = 10_000,
                 progress: Callable[[int], None] | None = None, *, scheduler: str | None = None,
                 workers: int | None = None, ce: CohortEvaluator | None = None,
                 on_partition: Callable[[Partition], None] | None = None) -> tuple[CohortSummary, dict[str, Any]]:
    """Evaluate the cohort in ``path`` into the columnar dataset ``out_dir``; its summary (computed from the
    tables) and manifest. ``scheduler`` (tcp://host:port) runs the shards on that Dask cluster, ``workers`` on a
    new local cluster of that many processes; neither: in this process (``ce`` if given)."""
    if isinstance(path, str) and is_url(path):
        specs = plan_url_shards(path, shard_size)
    else:
        path = Path(path).resolve()
        specs = plan_shards(path, shard_size)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    prepare_output(out_dir)
    key = project_key(project)
    started = time.perf_counter()
    done: list[Partition] = []
    peaks: dict[str, Any] = {}
    try:
        if scheduler is None and workers is None:
            ce, writer = _prepared(key) if ce is None else (ce, ColumnarWriter(ce))
            # each shard on its own, as on a cluster (duplicates are found below, for both); the next one read
            # on a thread meanwhile
            for spec, part in evaluate_partitions(ce, writer, specs, out_dir):
                _take(part, spec, done, progress, on_partition)
        else:
            peaks = _on_cluster(specs, out_dir, key, scheduler, workers, done, progress, on_partition)
        check_duplicates(out_dir, done, specs)
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
        "seconds": round(time.perf_counter() - started, 3),
        "peak_mb": {"client": peak_mb(), **peaks}})
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


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A Dask client of the running cluster at ``scheduler``, or of a new local cluster of ``workers``
    single-threaded processes (closed on leaving)."""
    import dask  # noqa: PLC0415 - only cluster runs pay the import
    from distributed import Client, LocalCluster  # noqa: PLC0415

    cluster = None
    try:
        if scheduler is not None:
            client = Client(scheduler, timeout=15)
        else:
            if workers is None or workers < 1:
                raise InputError(f"--workers must be at least 1 (got {workers})")
            # the workers' statistical profiler samples the task's stack every 10 ms (it holds the GIL): ~9% more
            # CPU a case, measured; a local cluster has no dashboard to show it (a running cluster keeps its own
            # configuration: DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False on its workers, docs/cohort.md)
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                # no dashboard; the scheduler's HTTP routes (health, metrics) on a free loopback port, not on
                # 8787, which another cluster may hold (Dask then warns on stderr). Dask's own logs stay off
                # stderr up to ERROR: it logs what it recovers from (a heartbeat late on a loaded machine) with a
                # traceback; what it cannot recover from reaches this process as a task's error
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1", silence_logs=logging.CRITICAL,
                                       scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
            client = Client(cluster)
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _peaks(client: Any) -> dict[str, Any]:
    """The peak memory (MB) of the scheduler and of each worker still alive."""
    try:
        return {"scheduler": client.run_on_scheduler(peak_mb), "workers": client.run(peak_mb)}
    except (OSError, TimeoutError):  # the figures are a report, not a result: a run never fails for them
        return {}


def _gather(client: Any, futures: list[Any]) -> Iterator[Any]:
    """The futures' results as they finish; on any failure the rest are cancelled."""
    from distributed import as_completed  # noqa: PLC0415

    try:
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _on_cluster(specs: list[ShardSpec], out_dir: Path, key: tuple[str, ...], scheduler: str | None,
                workers: int | None, done: list[Partition], progress: Callable[[int], None] | None,
                on_partition: Callable[[Partition], None] | None) -> dict[str, Any]:
    """The tasks run on the cluster; the peak memory (MB) of the scheduler and of each worker still alive."""
    with _client(scheduler, workers) as client:
        by_index = {s.index: s for s in specs}
        # pure=False: a task is never taken from a cache of an earlier run; retries: a task that raised is run
        # again (a worker lost mid-task is rescheduled by the scheduler itself)
        futures = [client.submit(shard_task, spec, str(out_dir.resolve()), key, pure=False, retries=2,
                                 key=f"guideline-kg-shard-{spec.index:05d}-{time.time_ns()}") for spec in specs]
        for part in _gather(client, futures):
            _take(part, by_index[part.index], done, progress, on_partition)
        return _peaks(client)


# ---- FHIR Bulk Data on the cluster ----------------------------------------------------------------------------
#: partition index of a bucket's shard j: bucket * BUCKET_PARTS + j (deterministic: a retried task rewrites them)
BUCKET_PARTS = 10_000


def bulk_map_task(number: int, declared: str, path: str, work: str, buckets: int, key: tuple[str, ...]) -> BulkReport:
    """Pass 1 for one file of the export, on a worker: its lines to ``work/bNNN/fMMMM.ndjson`` (its own piece of
    each bucket, rewritten whole by a retry)."""
    readable = readable_types(_prepared(key)[0].project)
    folders = [Path(work) / f"b{b:03d}" for b in range(buckets)]
    sinks = []
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            sinks.append((folder / f"f{number:04d}.ndjson").open("wb"))
        report = partition_file(declared, Path(path), sinks, readable)
    finally:
        for h in sinks:
            h.close()
    report.files = 1
    return report


def bulk_reduce_task(bucket: int, work: str, stamp: str | None, shard_size: int, out_dir: str,
                     key: tuple[str, ...]) -> tuple[int, list[Partition], list[ShardSpec]]:
    """Pass 2 and the evaluation of one bucket, on a worker: its pieces grouped by patient into one NDJSON file
    of Bundles, read in shards of ``shard_size`` and written as partitions ``bucket * BUCKET_PARTS + j``; the
    number of patients, the partitions and their shards."""
    ce, writer = _prepared(key)
    folder = Path(work) / f"b{bucket:03d}"
    grouped = Path(work) / f"bucket-{bucket:03d}.ndjson"
    with grouped.open("w", encoding="utf-8") as sink:
        patients = group_bucket(sorted(folder.glob("f*.ndjson")), sink, stamp)
    specs = [dataclasses.replace(s, index=bucket * BUCKET_PARTS + s.index) for s in plan_shards(grouped, shard_size)]
    parts = []
    for spec in specs:
        try:
            part = evaluate_partition(ce, writer, spec, Path(out_dir))
        except InputError as exc:
            part = Partition(spec.index, error=str(exc))
        parts.append(part)
        if part.error is not None:
            break
    return patients, parts, specs


def run_bulk(project: Project, folder: Path, out_dir: Path, work: Path, shard_size: int = 10_000,
             progress: Callable[[int], None] | None = None, *, scheduler: str | None = None,
             workers: int | None = None, ce: CohortEvaluator | None = None,
             bucket_bytes: int = BUCKET_BYTES) -> tuple[CohortSummary, dict[str, Any], BulkReport]:
    """A FHIR Bulk Data export evaluated on a Dask cluster into the columnar dataset ``out_dir``: one task per
    NDJSON file partitions its lines by patient into hash buckets (``work``, a folder every worker sees), then one
    task per bucket groups its patients into Bundles and evaluates them (docs/cohort.md, Bulk Data on a
    cluster). At least two buckets per worker, so that every worker has work."""
    files = export_files(folder)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    prepare_output(out_dir)
    key = project_key(project)
    started, wall = time.perf_counter(), time.time() - 1
    done: list[Partition] = []
    all_specs: list[ShardSpec] = []
    report = BulkReport()
    try:
        with _client(scheduler, workers) as client:
            slots = sum(client.nthreads().values()) or 1
            buckets = bucket_count(sum(p.stat().st_size for _, p in files), bucket_bytes, 2 * slots)
            report.buckets = buckets
            stamp = export_time(folder)
            run = time.time_ns()
            maps = [client.submit(bulk_map_task, i, declared, str(path.resolve()), str(work.resolve()), buckets, key,
                                  pure=False, retries=2, key=f"guideline-kg-bulk-file-{i:04d}-{run}")
                    for i, (declared, path) in enumerate(files)]
            for r in client.gather(maps):  # in export order: each first place is the export's first
                report.add(r)
            reduces = [client.submit(bulk_reduce_task, b, str(work.resolve()), stamp, shard_size,
                                     str(out_dir.resolve()), key, pure=False, retries=2,
                                     key=f"guideline-kg-bulk-bucket-{b:03d}-{run}") for b in range(buckets)]
            for patients, parts, specs in _gather(client, reduces):
                report.patients += patients
                all_specs += specs
                by_index = {s.index: s for s in specs}
                for part in parts:
                    _take(part, by_index[part.index], done, progress, None)
            peaks = _peaks(client)
        check_duplicates(out_dir, done, all_specs)
    except BaseException:
        for f in out_dir.glob("*/part-*.parquet"):  # this run's partitions (the bucket tasks name them)
            if f.stat().st_mtime >= wall:
                f.unlink()
        if created:
            for sub in (out_dir / "results", out_dir / "invalid", out_dir):
                with contextlib.suppress(OSError):
                    sub.rmdir()
        raise
    engine = f"dask {scheduler}" if scheduler else f"dask local cluster, {workers} workers"
    shorts = (ColumnarWriter(ce) if ce is not None else _prepared(key)[1]).short
    manifest = commit(out_dir, done, {
        "input": str(folder.resolve()), "engine": engine, "shard_size": shard_size, "buckets": buckets,
        "statements": {short: sid for sid, short in shorts.items()},
        "seconds": round(time.perf_counter() - started, 3),
        "peak_mb": {"client": peak_mb(), **peaks},
        "left_out": [{"type": t, "why": why, "count": n, "first": report.first[(t, why)]}
                     for (t, why), n in sorted(report.unmappable.items())]})
    return summary_from_dataset(out_dir), manifest, report
