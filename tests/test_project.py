"""Where a project's data lives, with folder overrides and the environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from guideline_kg.core.project import Project, default_home

from conftest import REPO


def test_default_folders_sit_under_home(tmp_path: Path) -> None:
    project = Project.at(tmp_path)
    assert (project.ontology_dir, project.kg_dir, project.shapes_dir, project.queries_dir, project.cases_dir) == (
        tmp_path / "ontology", tmp_path / "guidelines" / "plbp", tmp_path / "shapes", tmp_path / "queries",
        tmp_path / "guidelines" / "plbp" / "cases")


def test_overrides_replace_single_folders_and_cases_follow_kg(tmp_path: Path) -> None:
    project = Project.at(tmp_path, kg=tmp_path / "other")
    assert project.kg_dir == tmp_path / "other" and project.cases_dir == tmp_path / "other" / "cases"
    assert project.ontology_dir == tmp_path / "ontology"


def test_home_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GUIDELINE_KG_HOME", str(tmp_path))
    assert default_home() == tmp_path.resolve() and Project.at().home == tmp_path.resolve()


def test_default_home_is_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUIDELINE_KG_HOME", raising=False)
    assert default_home() == REPO


def test_knowledge_files_are_ontology_then_content_without_cases(tmp_path: Path) -> None:
    for rel in ("ontology/b.ttl", "ontology/a.ttl", "guidelines/plbp/z.ttl", "guidelines/plbp/cases/c.ttl", "guidelines/plbp/notes.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    names = [str(p.relative_to(tmp_path)) for p in Project.at(tmp_path).knowledge_files()]
    assert names == ["ontology/a.ttl", "ontology/b.ttl", "guidelines/plbp/z.ttl"]
