"""OWL 2 DL profile check, with the OWL API that ships inside owlready2's HermiT.jar (no extra download).

The check is a small Java class (``java/ProfileCheck.java``), compiled once with the JDK's ``javac`` into a per-user
cache folder, ``$XDG_CACHE_HOME/guideline-kg/java-<hash>`` (default ``~/.cache/guideline-kg/...``), keyed by a hash
of the source and of the jar it compiles against, so a new source or a new owlready2 gets its own build. The build
goes to a temporary folder beside it and is renamed into place, so concurrent runs never see half a build. A missing
``javac`` or a failed compilation is a :class:`ReasonerUnavailable` (exit 2) with the reason, never a traceback.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rdflib import Graph
from rdflib.namespace import OWL, RDF

from guideline_kg.reasoning.hermit import ReasonerUnavailable

__all__ = ["cache_root", "owl2_dl_violations"]

#: The Java source, package data of this package (pyproject.toml [tool.setuptools.package-data]).
_SOURCE = Path(str(importlib.resources.files("guideline_kg.reasoning") / "java" / "ProfileCheck.java"))
_CLASS = "ProfileCheck.class"


def _hermit_jar() -> Path:
    """owlready2's HermiT.jar, found without importing owlready2 (a heavy import the check does not need)."""
    spec = importlib.util.find_spec("owlready2")
    if spec is None or spec.origin is None:
        raise ReasonerUnavailable("owlready2 is not installed: the OWL 2 DL profile check uses its HermiT.jar")
    return Path(spec.origin).with_name("hermit") / "HermiT.jar"


def cache_root() -> Path:
    """This user's cache folder of guideline-kg: ``$XDG_CACHE_HOME/guideline-kg``, else ``~/.cache/guideline-kg``
    (a relative $XDG_CACHE_HOME is ignored, as the XDG specification says)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "guideline-kg"


@functools.lru_cache(maxsize=4)
def _build_key(source: Path, jar: Path, mtimes: tuple[int, int]) -> str:
    """A short hash of the Java source and the jar's bytes (recomputed only when either file changes)."""
    digest = hashlib.sha256(source.read_bytes())
    digest.update(jar.read_bytes())
    return digest.hexdigest()[:16]


def _compiled(cache: Path | None = None) -> Path:
    """The folder holding ProfileCheck.class, compiled on first use (``cache`` overrides the per-user folder)."""
    jar = _hermit_jar()
    try:
        key = _build_key(_SOURCE, jar, (_SOURCE.stat().st_mtime_ns, jar.stat().st_mtime_ns))
    except OSError as exc:
        raise ReasonerUnavailable(f"cannot read {exc.filename}: {exc.strerror} (the OWL 2 DL profile check needs "
                                  "its Java source and owlready2's HermiT.jar)") from None
    root = cache or cache_root()
    target = root / f"java-{key}"
    if (target / _CLASS).is_file():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise ReasonerUnavailable("javac not found on PATH: the OWL 2 DL profile check compiles a small Java class "
                                  "and needs a JDK (e.g. Debian's default-jdk-headless), not only a JRE")
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    except OSError as exc:
        raise ReasonerUnavailable(f"cannot create the Java build folder in {root}: {exc.strerror} "
                                  "(set XDG_CACHE_HOME to a writable folder)") from None
    try:
        proc = subprocess.run([javac, "-nowarn", "-cp", str(jar), "-d", str(work), str(_SOURCE)],
                              check=False, capture_output=True, text=True)
        if proc.returncode != 0 or not (work / _CLASS).is_file():
            detail = " ".join((proc.stderr or proc.stdout).split())[:500] or "no output"
            raise ReasonerUnavailable(f"javac failed (exit {proc.returncode}) compiling {_SOURCE} against {jar}: "
                                      f"{detail}")
        try:
            work.rename(target)  # atomic; fails when another run put its build there first, which is as good
        except OSError:
            if not (target / _CLASS).is_file():
                raise ReasonerUnavailable(f"cannot move the compiled profile check into {target}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def owl2_dl_violations(graph: Graph, cache: Path | None = None) -> list[str]:
    """The OWL 2 DL profile violations of ``graph`` as reported by the OWL API (empty when in profile).
    ``cache`` is the folder for the compiled check (default: :func:`cache_root`).

    The graph is checked as it is, nothing stripped. It must be one ontology that holds what it imports (a merge
    closed by :func:`outputs.build.close_imports`): the OWL API would fetch an import, and the check never fetches,
    so a graph with an ``owl:imports`` or with several ontology headers gets those as its violations and is not
    handed to the OWL API."""
    headers = sorted(str(h) for h in graph.subjects(RDF.type, OWL.Ontology))
    found = [f"owl:imports <{o}> of <{s}>: the check does not fetch imports; check a graph that holds them "
             "(one ontology, its imports closed in it)" for s, o in sorted(graph.subject_objects(OWL.imports))]
    if len(headers) > 1:
        found.append(f"{len(headers)} ontology headers ({', '.join(headers)}): one file is one ontology")
    if found:
        return found
    classes = _compiled(cache)
    with tempfile.TemporaryDirectory(prefix="gkg-profile-") as tmp:
        path = os.path.join(tmp, "merged.rdf")
        graph.serialize(destination=path, format="xml")
        try:
            proc = subprocess.run(["java", "-cp", f"{_hermit_jar()}{os.pathsep}{classes}", "ProfileCheck", path],
                                  check=False, capture_output=True, text=True)
        except OSError as exc:
            raise ReasonerUnavailable(f"cannot start Java for the OWL 2 DL profile check: {exc.strerror}") from None
    if proc.returncode not in (0, 1):
        raise ReasonerUnavailable("OWL API profile check failed: " + proc.stderr.strip()[:500])
    return [line for line in proc.stdout.splitlines() if line.strip()]
