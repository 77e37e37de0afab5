"""`cohort evaluate --scheduler tcp://...`: the shards as tasks on a real Dask cluster (a `dask scheduler` and two
`dask worker` processes of this environment on 127.0.0.1, started and stopped here). The cluster's tables equal
the in-process tables row for row; a worker killed mid-run changes nothing (its shards are run again, no row lost
or doubled); an input error fails the run with exit 2 and no manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from distributed import Client

from guideline_kg.cohort.generate import generate, load_profile, write_cohort

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CLI = [str(BIN / "guideline-kg")]
N, SHARD = 120, 8  # 15 tasks


def _start(args: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("wb")
    return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict]:
    """A scheduler on a free port of 127.0.0.1 (port 0, its address read from the scheduler file) and two
    single-threaded workers."""
    folder = tmp_path_factory.mktemp("dask")
    sched_file = folder / "scheduler.json"
    scheduler = _start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(sched_file)], folder / "scheduler.log")
    workers: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            workers.append(_start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard",
                                   "--host", "127.0.0.1", "--name", f"w{i}"], folder / f"worker{i}.log"))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield {"address": address, "workers": workers, "folder": folder}
    finally:
        for w in workers:
            _stop(w)
        _stop(scheduler)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, project) -> Path:
    path = tmp_path_factory.mktemp("cohort") / "c.ttl"
    profile = load_profile(project.kg_dir / "cohort-profile.json")
    profile.data = dict(profile.data, invalid=dict(profile["invalid"], rate=0.1))
    with path.open("w") as f:
        write_cohort(generate(profile, N, seed=21), f, "turtle")
    return path


def _evaluate(cohort: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "cohort", "evaluate", str(cohort), "--out", str(out), "--shard-size", str(SHARD),
                           *extra], check=False, capture_output=True, text=True, timeout=600)


def _tables(out: Path) -> tuple[list[dict], list[dict]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [r for p in manifest["partitions"] for r in pq.read_table(out / p["results"]).to_pylist()]
    invalid = [r for p in manifest["partitions"] if p["invalid"] for r in pq.read_table(out / p["invalid"]).to_pylist()]
    key = lambda r: (r["case"], r.get("statement", ""))  # noqa: E731
    return sorted(rows, key=key), sorted(invalid, key=key)


@pytest.fixture(scope="module")
def in_process(cohort, tmp_path_factory) -> tuple[list[dict], list[dict]]:
    out = tmp_path_factory.mktemp("local") / "r"
    done = _evaluate(cohort, out)
    assert done.returncode in (0, 1), done.stderr
    return _tables(out)


def test_cluster_rows_equal_in_process_rows(cluster, cohort, in_process, tmp_path: Path) -> None:
    out = tmp_path / "r"
    done = _evaluate(cohort, out, "--scheduler", cluster["address"])
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    rows, invalid = _tables(out)
    assert len(rows) == len(in_process[0]) > 0
    assert rows == in_process[0] and invalid == in_process[1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["index"] for p in manifest["partitions"]] == list(range(N // SHARD))
    assert manifest["engine"] == f"dask {cluster['address']}"


def test_a_worker_killed_mid_run_changes_nothing(cluster, cohort, in_process, tmp_path: Path) -> None:
    """One of the two workers is killed (SIGKILL) once the first partitions are written; the scheduler runs its
    shards on the other; the tables are the in-process ones, each row once."""
    out = tmp_path / "r"
    proc = subprocess.Popen([*CLI, "cohort", "evaluate", str(cohort), "--out", str(out), "--shard-size", str(SHARD),
                             "--scheduler", cluster["address"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    victim = cluster["workers"][0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "results").glob("part-*.parquet")) if (out / "results").is_dir() else []) >= 2:
            break
        time.sleep(0.05)
    written_before = len(list((out / "results").glob("part-*.parquet")))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), err
    assert written_before < N // SHARD, "the worker must die mid-run (before every partition is written)"
    rows, invalid = _tables(out)
    assert rows == in_process[0] and invalid == in_process[1]


def test_input_error_on_the_cluster_exits_2_without_output(cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ttl"
    bad.write_text("<https://w3id.org/guideline-kg/case/x1> a <https://w3id.org/guideline-kg/ontology#Patient\n")
    out = tmp_path / "r"
    done = _evaluate(bad, out, "--scheduler", cluster["address"])
    assert done.returncode == 2, done.stderr
    assert "bad.ttl" in done.stderr and "line 1" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.parquet"))


def test_a_local_cluster_of_two_workers_gives_the_in_process_rows(cohort, in_process, tmp_path: Path) -> None:
    """--workers 2 starts (and stops) its own LocalCluster; same tables; the manifest names the engine."""
    out = tmp_path / "r"
    done = _evaluate(cohort, out, "--workers", "2")
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr
    assert _tables(out) == in_process
    assert json.loads((out / "manifest.json").read_text())["engine"] == "dask local cluster, 2 workers"


def test_cluster_options_need_a_folder(cohort, tmp_path: Path) -> None:
    done = _evaluate(cohort, tmp_path / "r.jsonl", "--workers", "2")
    assert done.returncode == 2 and "--out DIR" in done.stderr and not (tmp_path / "r.jsonl").exists()
