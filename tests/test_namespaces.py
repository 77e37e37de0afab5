"""Namespaces: declared once, bound the same on every graph, and the same as the Turtle files' prefixes."""

from __future__ import annotations

import re

import pytest
from rdflib import Graph

from conftest import REPO
from guideline_kg.core.namespaces import (
    GENERIC_PREFIXES,
    GK,
    PREFIXES,
    bind_prefixes,
    declare_namespace,
    sparql_prologue,
)
from guideline_kg.core.project import Project


def test_bind_prefixes_binds_every_project_prefix() -> None:
    bound = dict(bind_prefixes(Graph()).namespaces())
    assert all(str(bound[p]) == str(ns) for p, ns in PREFIXES.items())


def test_sparql_prologue_declares_each_prefix_once() -> None:
    lines = sparql_prologue().splitlines()
    assert len(lines) == len(PREFIXES)
    assert f"PREFIX gk: <{GK}>" in lines


def test_namespaces_are_stable_w3id_iris() -> None:
    assert str(GK) == "https://w3id.org/guideline-kg/ontology#"
    assert Project.at(REPO).namespace == ("plbp", "https://w3id.org/guideline-kg/plbp/")


def test_no_guideline_namespace_is_generic() -> None:
    assert all(str(ns).startswith(("https://w3id.org/guideline-kg/ontology", "https://w3id.org/guideline-kg/case",
                                   "https://w3id.org/guideline-kg/result")) or "guideline-kg" not in str(ns)
               for ns in GENERIC_PREFIXES.values())


def test_opening_a_package_declares_its_namespace_for_graphs_and_queries() -> None:
    Project.at(REPO)
    assert str(PREFIXES["plbp"]) == "https://w3id.org/guideline-kg/plbp/"
    assert "PREFIX plbp: <https://w3id.org/guideline-kg/plbp/>" in sparql_prologue().splitlines()
    assert str(dict(bind_prefixes(Graph()).namespaces())["plbp"]) == "https://w3id.org/guideline-kg/plbp/"


def test_a_generic_prefix_cannot_be_taken_by_a_guideline() -> None:
    with pytest.raises(ValueError):
        declare_namespace("gk", "https://w3id.org/other/")


@pytest.mark.parametrize("path", sorted((REPO / "ontology").glob("*.ttl")) + sorted((REPO / "guidelines" / "plbp").glob("*.ttl")),
                         ids=lambda p: p.name)
def test_turtle_prefixes_agree_with_the_module(path) -> None:
    declared = dict(re.findall(r"@prefix\s+([\w-]*):\s*<([^>]*)>", path.read_text(encoding="utf-8")))
    clashes = {p: iri for p, iri in declared.items() if p in PREFIXES and iri != str(PREFIXES[p])}
    assert clashes == {}
