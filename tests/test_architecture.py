"""docs/architecture.md names every package and module of src/guideline_kg, and its layers are the contract."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch

from conftest import REPO

SRC = REPO / "src" / "guideline_kg"
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def _modules() -> set[str]:
    return {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if p.name != "__init__.py"}


def _named() -> set[str]:
    return set(re.findall(r"^\| `([\w/*]+\.py)` \|", DOC, re.M))


def _doc_layers() -> list[str]:
    block = DOC.split("### `core`")[0].split("## Packages and layers")[1]
    diagram = block.split("```")[1]
    return [line.split("  ")[0].strip() for line in diagram.strip().splitlines()]


def _contract_layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return list(contract["layers"])


def test_every_module_is_described() -> None:
    patterns = _named()
    undescribed = sorted(m for m in _modules() if not any(fnmatch(m, p) for p in patterns))
    assert undescribed == []


def test_every_described_module_exists() -> None:
    modules = _modules()
    missing = sorted(p for p in _named() if not any(fnmatch(m, p) for m in modules))
    assert missing == []


def test_the_documented_layers_are_the_import_linter_contract() -> None:
    assert _doc_layers() == _contract_layers()


def test_every_package_is_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    layered = {name.strip() for layer in _contract_layers() for name in layer.split("|")}
    assert packages == layered
