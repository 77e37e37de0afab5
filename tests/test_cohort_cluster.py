"""`cohort evaluate --scheduler tcp://...`: the shards as tasks on a real Dask cluster (a `dask scheduler` and two
`dask worker` processes of this environment on 127.0.0.1, started and stopped here). The cluster's tables equal
the in-process tables row for row; a worker killed mid-run changes nothing (its shards are run again, no row lost
or doubled); an input error fails the run with exit 2 and no manifest."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from distributed import Client

from guideline_kg.cohort.cluster import plan_url_shards
from guideline_kg.cohort.generate import generate, load_profile, write_cohort
from guideline_kg.cohort.shards import plan_shards

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


def _evaluate(cohort: Path | str, out: Path, *extra: str) -> subprocess.CompletedProcess:
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
    assert "Warning" not in done.stderr, "Dask's own warnings (a busy port 8787) stay off stderr"
    assert _tables(out) == in_process
    assert json.loads((out / "manifest.json").read_text())["engine"] == "dask local cluster, 2 workers"


def test_cluster_options_need_a_folder(cohort, tmp_path: Path) -> None:
    done = _evaluate(cohort, tmp_path / "r.jsonl", "--workers", "2")
    assert done.returncode == 2 and "--out DIR" in done.stderr and not (tmp_path / "r.jsonl").exists()


# ---- inputs named by fsspec URLs ------------------------------------------------------------------------------
def test_a_file_url_on_the_cluster_gives_the_in_process_rows(cluster, cohort, in_process, tmp_path: Path) -> None:
    out = tmp_path / "r"
    done = _evaluate(f"file://{cohort}", out, "--scheduler", cluster["address"])
    assert done.returncode in (0, 1), done.stderr
    assert _tables(out) == in_process


def test_a_zip_url_is_read_by_range_on_the_workers(cluster, cohort, in_process, tmp_path: Path) -> None:
    """zip:// (an fsspec protocol installed with fsspec, readable by every process): the starting process plans the
    shards by a streamed scan and each worker reads its byte range through fsspec; same rows; the manifest names
    the URL."""
    archive = tmp_path / "cohort.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(cohort, "c.ttl")
    url = f"zip://c.ttl::file://{archive}"
    out = tmp_path / "r"
    done = _evaluate(url, out, "--scheduler", cluster["address"])
    assert done.returncode in (0, 1), done.stderr
    assert _tables(out) == in_process
    assert json.loads((out / "manifest.json").read_text())["input"] == url


@pytest.mark.parametrize(("size", "chunk"), [(1, 13), (8, 64), (8, 1 << 20), (1000, 7)])
def test_the_url_planner_cuts_where_the_path_planner_cuts(cohort, tmp_path: Path, size: int, chunk: int) -> None:
    """Shards planned through fsspec in small chunks (markers and lines straddling chunk ends) are the shards the
    memory-mapped scan of the same file finds: same byte ranges, first lines and Turtle prefixes."""
    archive = tmp_path / "cohort.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(cohort, "c.ttl")
    by_url = plan_url_shards(f"zip://c.ttl::file://{archive}", size, chunk)
    by_path = plan_shards(cohort, size)
    assert len(by_path) == -(-N // size)
    assert [(s.start, s.end, s.line, s.header) for s in by_url] == [(s.start, s.end, s.line, s.header) for s in by_path]


@pytest.mark.parametrize(("url", "words"), [
    ("https://data.example.test/cohort.ttl", "https:// URLs are refused"),
    ("http://127.0.0.1:9/cohort.ttl", "http:// URLs are refused"),
    ("simplecache::https://data.example.test/c.ttl", "https:// URLs are refused"),
    ("memory://cohort.ttl", "memory:// lives in one process's memory"),
    ("nosuchproto://x/cohort.ttl", "fsspec knows no protocol 'nosuchproto'"),
])
def test_urls_refused_by_name(url: str, words: str, tmp_path: Path) -> None:
    done = _evaluate(url, tmp_path / "r", "--workers", "2")
    assert done.returncode == 2 and words in done.stderr and url in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists()


def test_a_store_that_never_answers_fails_within_the_timeout(tmp_path: Path) -> None:
    """ftp:// (fsspec's FTP implementation uses the standard library: installed) to a loopback port that accepts
    the connection and never speaks: exit 2 after --connect-timeout, naming the URL; no hang, no output."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"ftp://127.0.0.1:{silent.getsockname()[1]}/cohort.ttl"
        started = time.monotonic()
        done = _evaluate(url, tmp_path / "r", "--connect-timeout", "2")
        took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert f"{url}: no answer within 2 s" in done.stderr and "Traceback" not in done.stderr
    # the message is the proof that the limit fired (FTP's own timeout is 30 s); the time only guards a hang
    assert took < 120 and not (tmp_path / "r").exists()


# ---- a patient in two places ------------------------------------------------------------------------------------
def test_a_case_in_two_shards_is_an_input_error_naming_both_places(cluster, cohort, tmp_path: Path) -> None:
    """The record of the third case is copied to the end of the file (another shard): on the cluster no worker
    sees both, so the starting process finds the case in two partitions and fails the run (exit 2) naming the
    file and line of each record; no manifest, no partition."""
    text = cohort.read_text()
    records = text.split("\n# case ")
    third = "# case " + records[3] + "\n"
    name = records[3].split("\n", 1)[0]
    doubled = tmp_path / "doubled.ttl"
    doubled.write_text(text + third)
    first_line = text[: text.index(f"# case {name}\n")].count("\n") + 1
    copy_line = text.count("\n") + 1
    out = tmp_path / "r"
    done = _evaluate(doubled, out, "--scheduler", cluster["address"])
    assert done.returncode == 2, done.stderr
    assert f"the case '{name}' is in {doubled}:{first_line} (shard 0) and in {doubled}:{copy_line} (shard" \
        in done.stderr, done.stderr
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.parquet"))


def test_a_spawned_process_reports_its_own_peak_memory_not_its_parents() -> None:
    """Linux keeps ru_maxrss across exec, so a worker spawned by a client holding a big mapped input used to report
    the client's peak as its own (2.6 GB for every worker of the 1,000,000-case run); peak_mb reads VmHWM."""
    big = bytearray(400 * 1024 * 1024)
    big[::4096] = b"\1" * len(big[::4096])  # touch every page: the parent's resident set is now > 400 MB
    code = "from guideline_kg.cohort.cluster import peak_mb; print(peak_mb())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout) < 300, done.stdout
    del big
