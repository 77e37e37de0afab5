"""A patient case: the RDF graph of one patient's facts, where it came from, and notes made while reading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdflib import Graph, URIRef

__all__ = ["Case", "InputNote"]


class InputNote(str):
    """One thing the reader could not record, with its place in the input (e.g. ``Procedure/p3 .code``) and what
    was not recorded. It is the text ``place: message`` (so it prints and compares as a string), with the two parts
    kept for JSON (:meth:`to_json`: ``{"place", "message"}``)."""

    place: str
    message: str

    def __new__(cls, place: str, message: str) -> InputNote:
        note = super().__new__(cls, f"{place}: {message}" if place else message)
        note.place, note.message = place, message
        return note

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (worker processes) with both parts
        return InputNote, (self.place, self.message)

    def to_json(self) -> dict[str, Any]:
        return {"place": self.place, "message": self.message}


@dataclass
class Case:
    """One patient case: its name, source file, RDF graph, the patient node, and notes (e.g. unmapped codes):
    each an :class:`InputNote` when the reader knows its place, else plain text."""

    name: str
    source: Path | None
    graph: Graph
    patient: URIRef
    notes: list[str] = field(default_factory=list)
