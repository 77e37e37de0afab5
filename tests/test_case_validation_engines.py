"""The compiled case validation (used by `recommend`) finds exactly the violations pySHACL finds (used by
`validate`), on every example case and every invalid case of the test data."""

from __future__ import annotations

from pathlib import Path

import pytest

from guideline_kg.cases.reader import load_cases
from guideline_kg.checks.validate import validate_case
from guideline_kg.core.project import Project

PROJECT = Project.at()
INVALID = Path(__file__).with_name("data") / "invalid-cases"
# malformed-* files are rejected before validation (exit 2); tests/test_validate.py covers them
FILES = sorted(p for p in list(PROJECT.cases_dir.iterdir()) + list(INVALID.iterdir())
               if p.is_file() and not p.name.endswith(".expected.json") and not p.name.startswith("malformed-"))


def cases_of(path: Path):
    return load_cases([path])


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.slow
def test_compiled_validation_equals_pyshacl(path: Path) -> None:
    for case in cases_of(path):
        key = lambda fs: {(f.focus, f.severity) for f in fs}  # noqa: E731
        reference = validate_case(case.graph, PROJECT, engine="pyshacl")
        compiled = validate_case(case.graph, PROJECT, engine="compiled")
        assert key(compiled) == key(reference)


def test_invalid_examples_are_refused_by_the_compiled_engine_too() -> None:
    refused = [p.name for p in FILES if p.parent == INVALID
               for c in cases_of(p) if any(f.severity == "Violation"
                                           for f in validate_case(c.graph, PROJECT, engine="compiled"))]
    assert len(refused) >= 15
