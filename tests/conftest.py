"""Session-wide fixtures shared by every test module: the project, its merged graph, a store and one HermiT run.

The graph and store are shared: tests must not change them (copy with ``Graph() + knowledge`` first).
Add further shared fixtures here only when more than one test module needs them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rdflib import Graph, Namespace

from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.reasoning.hermit import ReasonerResult, check_consistency
from guideline_kg.store.stores import EmbeddedStore

#: The repository root (tests/..).
REPO = Path(__file__).resolve().parents[1]
#: This guideline's namespace, as its manifest (guidelines/plbp/guideline.toml) declares it.
PLBP = Namespace("https://w3id.org/guideline-kg/plbp/")
#: The second, tiny guideline that proves no guideline content hides in Python.
MINI_HOME = REPO / "tests" / "fixtures" / "mini-guideline"


def source_path() -> Path:
    """The guideline source text: $GUIDELINE_SOURCE (another copy), else the package's own copy, as its manifest
    names it (guidelines/plbp/source/guideline.txt)."""
    env = os.environ.get("GUIDELINE_SOURCE")
    return Path(env) if env else Project.at(REPO).require("source", "the content tests")


@pytest.fixture(scope="session")
def project() -> Project:
    """The project of this checkout."""
    return Project.at(REPO)


@pytest.fixture(scope="session")
def knowledge(project: Project) -> Graph:
    """The merged ontology and content graph (read-only for tests)."""
    return load_knowledge(project)


@pytest.fixture(scope="session")
def store(knowledge: Graph) -> EmbeddedStore:
    """An embedded pyoxigraph store holding the merged graph (read-only for tests)."""
    return EmbeddedStore.from_graph(knowledge)


@pytest.fixture(scope="session")
def hermit_result(knowledge: Graph) -> ReasonerResult:
    """HermiT's verdict on the merged graph, computed once per session (about a second)."""
    return check_consistency(knowledge)


_CONTENT_LINE = re.compile(r"^(?:- )?(?P<text>.*?)(?:\s+(?P<refs>\d+(?:\s+\d+)*))?\s*$")


def expected_content(path: Path) -> dict[int, tuple[str, list[int]]]:
    """Each non-empty source line by number: its text less a leading "- " and trailing reference numbers,
    and those numbers (the rule gk:verbatimText and gk:cites follow)."""
    if not path.exists():
        pytest.fail(f"guideline source not found at {path} (set GUIDELINE_SOURCE)")
    out: dict[int, tuple[str, list[int]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            m = _CONTENT_LINE.match(line)
            assert m is not None
            out[n] = (m.group("text"), [int(x) for x in (m.group("refs") or "").split()])
    return out


@pytest.fixture(scope="session")
def expected_lines() -> dict[int, tuple[str, list[int]]]:
    """The guideline's content lines: verbatim text and citations expected of the graph, by line number."""
    return expected_content(source_path())


@pytest.fixture(scope="session")
def mini_project() -> Project:
    """The tiny second guideline package (its own guideline.toml), with the shared ontology and queries."""
    return Project.at(REPO, kg=MINI_HOME)


@pytest.fixture(scope="session")
def mini_expected_lines() -> dict[int, tuple[str, list[int]]]:
    """The tiny guideline's content lines, read from its own source.txt."""
    return expected_content(MINI_HOME / "source.txt")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_running(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``guideline-kg *argv --port P`` (argv includes ``serve``) on a free loopback port, its output in ``log``;
    yield its URL once /health answers, stop it afterwards. The fixtures that test a real server share it."""
    port = free_port()
    exe = Path(sys.executable).with_name("guideline-kg")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), *argv, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail("the server stopped: " + log.read_text())
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not start: " + log.read_text())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def oxigraph_url(tmp_path_factory: pytest.TempPathFactory):
    """A fresh, empty `oxigraph serve` (the PyPI server) on a free loopback port, stopped after the module."""
    local = Path(sys.executable).with_name("oxigraph")
    exe = str(local) if local.exists() else shutil.which("oxigraph")
    if exe is None:
        pytest.fail("the oxigraph server is not installed (pip install oxigraph; a test dependency)")
    port = free_port()
    proc = subprocess.Popen([exe, "serve", "--location", str(tmp_path_factory.mktemp("oxigraph")),
                             "--bind", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/query", params={"query": "ASK {}"}, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("oxigraph did not start: " + proc.stderr.read().decode())
    yield url
    proc.terminate()
    proc.wait(10)
