"""The OWL 2 DL profile check's Java build: a per-user cache folder keyed by source and jar, built atomically,
and a clear error (exit 2, no traceback) when javac is missing or fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rdflib import Graph

from guideline_kg.reasoning.hermit import ReasonerUnavailable
from guideline_kg.reasoning.owl_profile import cache_root, owl2_dl_violations

#: A graph the OWL API must refuse (an undeclared class), so a run proves the compiled class really ran.
UNDECLARED = """
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
<https://w3id.org/guideline-kg/test/p> a owl:Ontology .
<https://w3id.org/guideline-kg/test/p#C> a owl:Class ; rdfs:subClassOf <https://w3id.org/guideline-kg/test/p#D> .
"""


def _bin(tmp_path: Path, javac: str | None = None, java: bool = False) -> str:
    """A PATH of one folder holding (optionally) a fake javac script and a link to the real java."""
    folder = tmp_path / "bin"
    folder.mkdir()
    if javac is not None:
        script = folder / "javac"
        script.write_text("#!/bin/sh\n" + javac + "\n")
        script.chmod(0o755)
    if java:
        real = shutil.which("java")
        assert real, "java is needed by the reasoner tests"
        (folder / "java").symlink_to(real)
    return str(folder)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh per-user cache folder: $XDG_CACHE_HOME points into tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "guideline-kg"


def test_cache_root_follows_xdg_cache_home_else_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "guideline-kg"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "guideline-kg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == tmp_path / "home" / ".cache" / "guideline-kg"


def test_missing_javac_is_a_clear_error(empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _bin(tmp_path))
    with pytest.raises(ReasonerUnavailable, match=r"javac not found on PATH.*needs a JDK") as err:
        owl2_dl_violations(Graph())
    assert err.value.exit_code == 2


def test_javac_failure_is_a_clear_error_and_leaves_no_half_build(empty_cache: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _bin(tmp_path, javac="echo 'ProfileCheck.java:1: error: broken JDK' >&2; exit 3"))
    with pytest.raises(ReasonerUnavailable, match=r"javac failed \(exit 3\) compiling .*ProfileCheck.java.*"
                                                  r"broken JDK") as err:
        owl2_dl_violations(Graph())
    assert err.value.exit_code == 2
    assert list(empty_cache.iterdir()) == []  # the temporary build folder is gone, nothing renamed into place


def test_javac_that_writes_no_class_is_a_failure(empty_cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _bin(tmp_path, javac="exit 0"))
    with pytest.raises(ReasonerUnavailable, match=r"javac failed \(exit 0\)"):
        owl2_dl_violations(Graph())
    assert list(empty_cache.iterdir()) == []


def test_unwritable_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setenv("PATH", _bin(tmp_path, javac="exit 0"))  # a javac, so the build gets as far as the folder
    with pytest.raises(ReasonerUnavailable, match=r"cannot create the Java build folder.*XDG_CACHE_HOME"):
        owl2_dl_violations(Graph())


@pytest.mark.hermit
def test_compiles_once_into_the_per_user_cache_keyed_by_a_hash(empty_cache: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    violations = owl2_dl_violations(Graph().parse(data=UNDECLARED, format="turtle"))
    assert any("Use of undeclared class" in v and "p#D" in v for v in violations)
    builds = list(empty_cache.iterdir())
    assert len(builds) == 1 and builds[0].name.startswith("java-") and len(builds[0].name) == len("java-") + 16
    assert (builds[0] / "ProfileCheck.class").is_file()
    # The second run uses the cached class: it needs no javac any more, only java.
    monkeypatch.setenv("PATH", _bin(tmp_path, java=True))
    assert owl2_dl_violations(Graph().parse(data=UNDECLARED, format="turtle")) == violations
    assert list(empty_cache.iterdir()) == builds


@pytest.mark.hermit
@pytest.mark.slow
def test_build_command_without_javac_exits_2_with_a_message(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=_bin(tmp_path, java=True), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    proc = subprocess.run([sys.executable, "-m", "guideline_kg.cli.main", "build", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "javac not found on PATH" in proc.stderr and "Traceback" not in proc.stderr
