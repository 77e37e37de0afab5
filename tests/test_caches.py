"""Module-level caches are bounded: a long-running process (serve, cohort) that sees many file versions keeps at
most a few of them, and a cached value is still the same object while its files are unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

from guideline_kg.cases import fhir_in, fhir_out
from guideline_kg.checks import validate
from guideline_kg.core.project import Project


def _rules_copies(project: Project, tmp_path: Path, n: int) -> list[Path]:
    """``n`` copies of the package's FHIR mapping rules with the files they name, each in its own folder."""
    rules = project.require("fhir_case_mapping", "this test")
    for i in range(n):
        shutil.copytree(rules.parent, tmp_path / f"copy{i}")
    return [tmp_path / f"copy{i}" / rules.name for i in range(n)]


def test_mapping_rules_and_their_reverse_index_are_cached_and_bounded(project: Project, tmp_path: Path) -> None:
    first = project.require("fhir_case_mapping", "this test")
    assert fhir_in.load_rules(first) is fhir_in.load_rules(first)
    assert fhir_out.reverse_rules(path=first) is fhir_out.reverse_rules(path=first)
    for path in _rules_copies(project, tmp_path, fhir_in.RULES_CACHE_SIZE + 3):
        assert fhir_out.reverse_rules(path=path).rules is fhir_in.load_rules(path)
    assert fhir_in._load_rules.cache_info().currsize == fhir_in.RULES_CACHE_SIZE
    assert len(fhir_out._REVERSE_CACHE) == fhir_in.RULES_CACHE_SIZE


def test_parsed_shapes_and_compiled_case_shapes_are_bounded(project: Project) -> None:
    assert validate.load_shapes(project) is validate.load_shapes(project)
    for cache in (validate._parsed, validate._compiled_case_shapes):
        assert cache.cache_info().maxsize == validate.CACHE_SIZE
