"""A patient case: the RDF graph of one patient's facts, where it came from, and notes made while reading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rdflib import Graph, URIRef

__all__ = ["Case"]


@dataclass
class Case:
    """One patient case: its name, source file, RDF graph, the patient node, and notes (e.g. unmapped codes)."""

    name: str
    source: Path | None
    graph: Graph
    patient: URIRef
    notes: list[str] = field(default_factory=list)
