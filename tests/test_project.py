"""Where a project's data lives, with folder overrides and the environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import Project, default_home


def test_default_folders_sit_under_home(tmp_path: Path) -> None:
    (tmp_path / "guidelines" / "plbp").mkdir(parents=True)
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


# ---------------------------------------------------------------- the package manifest (docs/guideline-package.md)

def _package(tmp_path: Path, manifest: str, files: tuple[str, ...] = ("content.ttl",)) -> Path:
    pkg = tmp_path / "pkg"
    for rel in files:
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("")
    (pkg / "guideline.toml").write_text(manifest)
    return pkg


def test_this_checkout_has_a_manifest_naming_its_parts(project: Project) -> None:
    assert project.manifest.path == REPO / "guidelines" / "plbp" / "guideline.toml"
    assert project.namespace == ("plbp", "https://w3id.org/guideline-kg/plbp/")
    assert project.part("algorithm") == REPO / "guidelines" / "plbp" / "algorithm.ttl"
    assert project.cases_dir == REPO / "guidelines" / "plbp" / "cases"
    assert REPO / "guidelines" / "plbp" / "guideline.ttl" in project.knowledge_files()


def test_manifest_parts_resolve_inside_the_package(tmp_path: Path) -> None:
    pkg = _package(tmp_path, '[guideline]\nprefix = "x"\nnamespace = "https://w3id.org/x/"\n'
                             '[parts]\ncontent = ["b.ttl", "a.ttl"]\nalgorithm = "flow/alg.ttl"\n',
                  ("a.ttl", "b.ttl", "flow/alg.ttl", "other.ttl"))
    project = Project.at(tmp_path, kg=pkg)
    assert project.parts("content") == [pkg / "b.ttl", pkg / "a.ttl"]
    assert project.part("algorithm") == pkg / "flow" / "alg.ttl"
    assert project.part("jsonld_context") is None
    # manifest order after the ontology; other.ttl is not named, so it is not knowledge
    assert project.knowledge_files() == [pkg / "b.ttl", pkg / "a.ttl", pkg / "flow" / "alg.ttl"]


@pytest.mark.parametrize("manifest, message", [
    ('[parts]\ncontent = "content.ttl"\nalgoritm = "a.ttl"\n', "[parts] algoritm: unknown part"),
    ('[guideline]\nname = "x"\n[parts]\ncontent = "content.ttl"\n', "[guideline] name: unknown key"),
    ('[extra]\n[parts]\ncontent = "content.ttl"\n', "unknown table or key 'extra'"),
    ('[parts]\ncontent = "content.ttl"\nalgorithm = "algorithm.ttl"\n', "[parts] algorithm: no file 'algorithm.ttl'"),
    ('[parts]\ncontent = "content.ttl"\ncases = "content.ttl"\n', "[parts] cases: no folder 'content.ttl'"),
    ('[parts]\ncontent = "../content.ttl"\n', "[parts] content: '../content.ttl' must be a path inside"),
    ('[parts]\nalgorithm = ["content.ttl"]\ncontent = "content.ttl"\n', "[parts] algorithm: must be one relative"),
    ('[guideline]\nprefix = "x"\n[parts]\ncontent = "content.ttl"\n', "prefix and namespace go together"),
    ('[guideline]\nid = "x"\n', "needs a [parts] table"),
    ('[parts]\nalgorithm = "content.ttl"\n', "[parts] content is required"),
    ('[parts\n', "not valid TOML"),
])
def test_manifest_defects_name_the_file_and_key_and_exit_2(tmp_path: Path, manifest: str, message: str) -> None:
    pkg = _package(tmp_path, manifest)
    with pytest.raises(InputError) as err:
        Project.at(tmp_path, kg=pkg)
    assert str(err.value).startswith(str(pkg / "guideline.toml") + ": ") and message in str(err.value)
    assert err.value.exit_code == 2


def test_a_missing_optional_part_is_a_clear_input_error(tmp_path: Path) -> None:
    pkg = _package(tmp_path, '[parts]\ncontent = "content.ttl"\n')
    project = Project.at(tmp_path, kg=pkg)
    with pytest.raises(InputError) as err:
        project.require("algorithm", "`render`")
    assert str(err.value) == (f"the guideline package at {pkg} names no algorithm (guideline.toml [parts] algorithm); "
                              "`render` needs one")


def test_a_package_without_manifest_follows_the_old_conventions(tmp_path: Path) -> None:
    pkg = tmp_path / "old"
    for rel in ("b.ttl", "algorithm.ttl", "context.jsonld", "cases/c.ttl"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("")
    project = Project.at(tmp_path, kg=pkg)
    assert project.manifest.path is None and project.namespace is None
    assert project.parts("content") == [pkg / "algorithm.ttl", pkg / "b.ttl"]
    assert project.part("algorithm") == pkg / "algorithm.ttl" and project.part("jsonld_context") == pkg / "context.jsonld"
    assert project.part("cohort_profile") is None and project.cases_dir == pkg / "cases"


def test_the_default_package_is_the_one_under_guidelines(tmp_path: Path) -> None:
    assert Project.at(tmp_path).kg_dir == tmp_path / "guidelines"  # none: commands needing content say so
    (tmp_path / "guidelines" / "one").mkdir(parents=True)
    assert Project.at(tmp_path).kg_dir == tmp_path / "guidelines" / "one"
    (tmp_path / "guidelines" / "two").mkdir()
    (tmp_path / "guidelines" / "two" / "content.ttl").write_text("")
    (tmp_path / "guidelines" / "two" / "guideline.toml").write_text('[parts]\ncontent = "content.ttl"\n')
    assert Project.at(tmp_path).kg_dir == tmp_path / "guidelines" / "two"  # the one with a manifest
    (tmp_path / "guidelines" / "one" / "content.ttl").write_text("")
    (tmp_path / "guidelines" / "one" / "guideline.toml").write_text('[parts]\ncontent = "content.ttl"\n')
    with pytest.raises(InputError, match="2 guideline packages \\(one, two\\): choose one with --kg"):
        Project.at(tmp_path)
