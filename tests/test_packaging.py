"""Packaging: the wheel carries the data folders as package data (guideline_kg.data) and the Java source, and an
installed, non-editable copy finds them with importlib.resources from any directory; default_home's order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

import guideline_kg.core.project as project_module
from conftest import REPO
from guideline_kg.core.errors import InputError
from guideline_kg.core.project import default_home

CASE = REPO / "guidelines" / "plbp" / "cases" / "c04-urgent-deficit.ttl"


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_the_listed_packages_are_exactly_the_code_packages_of_src() -> None:
    listed = set(_setuptools()["packages"]) - {"guideline_kg.data"}
    found = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    assert listed == found


def test_the_data_package_maps_the_data_folders_of_the_checkout() -> None:
    config = _setuptools()
    assert config["package-dir"]["guideline_kg.data"] == "."
    folders = {glob.split("/")[0] for glob in config["package-data"]["guideline_kg.data"]}
    assert folders == {"ontology", "shapes", "queries", "guidelines"}
    assert all((REPO / f).is_dir() for f in folders)


def _fake_package(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """importlib.resources answers that guideline_kg lives at root/guideline_kg."""
    package = root / "guideline_kg"
    package.mkdir(parents=True)
    monkeypatch.delenv("GUIDELINE_KG_HOME", raising=False)
    monkeypatch.setattr(project_module.importlib.resources, "files", lambda name: package)
    return package


def test_default_home_prefers_the_installed_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = _fake_package(tmp_path / "site-packages", monkeypatch)
    (package / "data" / "ontology").mkdir(parents=True)
    assert default_home() == (package / "data").resolve()


def test_default_home_is_the_checkout_of_an_editable_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path / "src", monkeypatch)
    (tmp_path / "ontology").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    assert default_home() == tmp_path.resolve()


def test_default_home_without_data_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path / "lib", monkeypatch)
    with pytest.raises(InputError, match="GUIDELINE_KG_HOME") as err:
        default_home()
    assert err.value.exit_code == 2


def test_guideline_kg_home_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUIDELINE_KG_HOME", str(tmp_path))
    assert default_home() == tmp_path.resolve()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout installed (not editable) into a fresh venv; the dependencies come from the test
    venv through a .pth line, so nothing else is downloaded (the build backend may be, by pip's build isolation)."""
    tmp = tmp_path_factory.mktemp("packaging")
    wheels = tmp / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, check=False, cwd=tmp)
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("guideline_kg-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--no-deps", "--quiet", str(wheel)], capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stderr
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(venv / "bin" / "python"), "-c", where], capture_output=True, text=True,
                          check=True).stdout.strip()
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def _run(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GUIDELINE_KG_HOME", "PYTHONPATH")}
    env["XDG_CACHE_HOME"] = str(cwd / "cache")
    return subprocess.run([str(venv / "bin" / "guideline-kg"), *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600, check=False)


@pytest.mark.slow
def test_the_wheel_carries_the_data_and_finds_it_by_importlib_resources(installed: Path, tmp_path: Path) -> None:
    probe = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import guideline_kg, json; from guideline_kg.core.project import Project; "
                            "p = Project.at(); print(json.dumps([guideline_kg.__file__, str(p.home), str(p.kg_dir)]))"],
                           capture_output=True, text=True, cwd=tmp_path, check=False,
                           env={k: v for k, v in os.environ.items() if k != "GUIDELINE_KG_HOME"})
    assert probe.returncode == 0, probe.stderr
    module, home, package = json.loads(probe.stdout)
    assert Path(module).is_relative_to(installed) and not Path(module).is_relative_to(REPO)
    assert Path(home) == Path(module).parent / "data"
    for folder in ("ontology", "shapes", "queries", "guidelines/plbp"):
        shipped = sorted(p.relative_to(REPO / folder) for p in (REPO / folder).rglob("*") if p.is_file())
        assert shipped and all((Path(home) / folder / rel).is_file() for rel in shipped), folder
    assert Path(package).is_relative_to(home)
    assert (Path(module).parent / "reasoning" / "java" / "ProfileCheck.java").is_file()
    static = REPO / "src" / "guideline_kg" / "service" / "static"  # the pages' scripts and style, served by serve
    shipped = sorted(p.name for p in static.iterdir() if p.is_file())
    assert shipped and all((Path(module).parent / "service" / "static" / name).is_file() for name in shipped)


@pytest.mark.slow
@pytest.mark.hermit
def test_the_installed_command_builds_and_recommends_from_any_directory(installed: Path, tmp_path: Path) -> None:
    built = _run(installed, tmp_path, "build", "--out", str(tmp_path / "out"))
    assert built.returncode == 0, built.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["merged.jsonld", "merged.nt", "merged.rdf",
                                                                    "merged.ttl"]
    rec = _run(installed, tmp_path, "recommend", str(CASE), "--format", "json")
    assert rec.returncode == 0, rec.stderr
    [result] = json.loads(rec.stdout)["cases"]
    expected = json.loads(CASE.with_suffix(".expected.json").read_text(encoding="utf-8"))["statuses"]
    got = {r["id"].rsplit("/", 1)[-1]: r["status"] for r in result["recommendations"]}
    assert {k: got.get(k) for k in expected} == expected
