"""OWL 2 DL profile check, with the OWL API that ships inside owlready2's HermiT.jar (no extra download)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rdflib import Graph
from rdflib.namespace import OWL

from guideline_kg.reasoning.hermit import ReasonerUnavailable

__all__ = ["owl2_dl_violations"]

_SOURCE = Path(__file__).with_name("java") / "ProfileCheck.java"


def _hermit_jar() -> Path:
    import owlready2

    return Path(owlready2.__file__).with_name("hermit") / "HermiT.jar"


def _compiled(workdir: Path) -> Path:
    """Compile ProfileCheck.java once per cache folder (javac comes with the JDK the reasoner needs)."""
    target = workdir / "ProfileCheck.class"
    if not target.exists() or target.stat().st_mtime < _SOURCE.stat().st_mtime:
        javac = shutil.which("javac")
        if javac is None:
            raise ReasonerUnavailable("javac not found: the OWL 2 DL profile check needs a JDK")
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([javac, "-nowarn", "-cp", str(_hermit_jar()), "-d", str(workdir), str(_SOURCE)],
                       check=True, capture_output=True)
    return workdir


def owl2_dl_violations(graph: Graph, cache: Path | None = None) -> list[str]:
    """The OWL 2 DL profile violations of ``graph`` as reported by the OWL API (empty when in profile)."""
    cache = cache or Path(tempfile.gettempdir()) / "guideline-kg-java"
    classes = _compiled(cache)
    data = Graph()
    for t in graph:
        if t[1] != OWL.imports:  # the graph is already merged
            data.add(t)
    with tempfile.TemporaryDirectory(prefix="gkg-profile-") as tmp:
        path = os.path.join(tmp, "merged.rdf")
        data.serialize(destination=path, format="xml")
        proc = subprocess.run(["java", "-cp", f"{_hermit_jar()}{os.pathsep}{classes}", "ProfileCheck", path],
                              capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise ReasonerUnavailable("OWL API profile check failed: " + proc.stderr.strip()[:500])
    return [line for line in proc.stdout.splitlines() if line.strip()]
