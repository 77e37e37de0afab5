"""A guideline package without an optional part: every command that needs the part says which manifest key is
missing and exits 2, writing nothing (never an empty output with exit 0). docs/guideline-package.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO
from guideline_kg.cli.main import main

PACKAGE = REPO / "guidelines" / "plbp"
C01 = PACKAGE / "cases" / "c01-first-visit.ttl"
FHIR_C01 = PACKAGE / "cases" / "fhir-c01-first-visit.fhir.json"


def _without(tmp_path: Path, key: str) -> Path:
    """A copy of this guideline's package whose manifest does not name ``key``."""
    kg = tmp_path / "pkg"
    shutil.copytree(PACKAGE, kg)
    manifest = kg / "guideline.toml"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    kept = [ln for ln in lines if not ln.startswith(key + " ")]
    assert len(kept) == len(lines) - 1, f"the manifest names {key} once"
    manifest.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return kg


@pytest.mark.parametrize("key, command, purpose", [
    ("algorithm", ["render", "--format", "dot"], "`render`"),
    ("algorithm", ["export", "--format", "graphml"], "`export --format graphml`"),
    ("algorithm", ["export", "--format", "cytoscape"], "`export --format cytoscape`"),
    ("jsonld_context", ["export", "--format", "jsonld"], "`export --format jsonld`"),
    ("cohort_profile", ["cohort", "generate", "--n", "3"], "`cohort generate`"),
    ("fhir_case_mapping", ["recommend", str(FHIR_C01)], "reading a FHIR case"),
])
def test_a_missing_part_is_named_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str,
                                             command: list[str], purpose: str) -> None:
    kg = _without(tmp_path, key)
    out = tmp_path / "out" / "result"
    code = main(["--kg", str(kg), *command, "--out", str(out)] if command[0] != "recommend"
                else ["--kg", str(kg), *command])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    what = key.replace("_", " ")
    assert f"the guideline package at {kg} names no {what} (guideline.toml [parts] {key}); {purpose} needs one" \
        in captured.err
    assert captured.out == "" and not out.exists()
    assert "Traceback" not in captured.err


def test_with_the_part_the_same_commands_write_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "algorithm.graphml"
    assert main(["export", "--format", "graphml", "--out", str(out)]) == 0
    assert "<node " in out.read_text(encoding="utf-8")
