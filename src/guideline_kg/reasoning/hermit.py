"""The reference reasoner: HermiT through owlready2 (consistency, unsatisfiable classes, classification)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from rdflib import Graph, Literal, URIRef
from rdflib.namespace import OWL, RDF, XSD

from guideline_kg.core.errors import GuidelineKGError

__all__ = [
    "OWL2_DATATYPES",
    "ReasonerResult",
    "ReasonerUnavailable",
    "check_consistency",
    "classify",
    "reasoner_input",
    "run_hermit",
]

#: The OWL 2 datatype map (OWL 2 Syntax, section 4); literals of other datatypes cannot be given to HermiT.
_OWL2_XSD_NAMES = [
    "decimal", "integer", "nonNegativeInteger", "nonPositiveInteger", "positiveInteger", "negativeInteger", "long",
    "int", "short", "byte", "unsignedLong", "unsignedInt", "unsignedShort", "unsignedByte", "double", "float",
    "string", "normalizedString", "token", "language", "Name", "NCName", "NMTOKEN", "boolean", "hexBinary",
    "base64Binary", "anyURI", "dateTime", "dateTimeStamp",
]
OWL2_DATATYPES = {XSD[n] for n in _OWL2_XSD_NAMES} | {
    RDF.PlainLiteral, RDF.XMLLiteral, URIRef("http://www.w3.org/2000/01/rdf-schema#Literal"), RDF.langString}


class ReasonerUnavailable(GuidelineKGError):
    """Java or HermiT could not be started."""


@dataclass
class ReasonerResult:
    """What HermiT concluded: consistency, unsatisfiable named classes, inferred types of individuals."""

    consistent: bool
    unsatisfiable: list[str] = field(default_factory=list)
    types: dict[str, set[str]] = field(default_factory=dict)


def reasoner_input(graph: Graph) -> tuple[Graph, int]:
    """A copy of ``graph`` that HermiT accepts: no owl:imports (the graph is already merged) and no
    literals outside the OWL 2 datatype map (such as xsd:date, which SHACL checks instead)."""
    out = Graph()
    dropped = 0
    for s, p, o in graph:
        if p == OWL.imports:
            continue
        if isinstance(o, Literal) and o.datatype is not None and o.datatype not in OWL2_DATATYPES:
            dropped += 1
            continue
        out.add((s, p, o))
    return out, dropped


def run_hermit(graph: Graph, individuals: Iterable[URIRef] = (), extra: Graph | None = None) -> ReasonerResult:
    """Run HermiT on ``graph`` (+ ``extra``); report consistency, unsatisfiable classes and the inferred
    named types (direct and indirect) of ``individuals``."""
    import owlready2  # noqa: PLC0415 - heavy (~0.2 s, sets up its quadstore); only HermiT runs need it

    data, _dropped = reasoner_input(graph + extra if extra is not None else graph)
    with tempfile.TemporaryDirectory(prefix="gkg-hermit-") as tmp:
        path = os.path.join(tmp, "merged.nt")
        data.serialize(destination=path, format="nt", encoding="utf-8")
        world = owlready2.World()
        sink = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            onto = world.get_ontology("file://" + path).load(format="ntriples")
            try:
                with onto:
                    owlready2.sync_reasoner_hermit(world, infer_property_values=False, debug=0)
            except owlready2.base.OwlReadyInconsistentOntologyError:
                world.close()
                return ReasonerResult(consistent=False)
            except FileNotFoundError as exc:
                raise ReasonerUnavailable(f"cannot start Java for HermiT: {exc}") from None
            except Exception as exc:  # owlready2 wraps Java failures in CalledProcessError
                out = getattr(exc, "output", b"")
                detail = out.decode("utf-8", "replace").strip().splitlines()[:3] if isinstance(out, bytes) else []
                raise ReasonerUnavailable("HermiT failed: " + (" ".join(detail) or str(exc))) from None
        unsat = sorted(c.iri for c in world.inconsistent_classes() if hasattr(c, "iri")
                       and c.iri != str(OWL.Nothing))
        types: dict[str, set[str]] = {}
        for ind in individuals:
            entity = world[str(ind)]
            if entity is None:
                types[str(ind)] = set()
                continue
            types[str(ind)] = {c.iri for c in entity.INDIRECT_is_a
                               if isinstance(c, owlready2.ThingClass) and c.iri != str(OWL.Thing)}
        world.close()
        return ReasonerResult(consistent=True, unsatisfiable=unsat, types=types)


def check_consistency(graph: Graph) -> ReasonerResult:
    """HermiT's verdict on the merged graph: consistent, and which named classes are unsatisfiable."""
    return run_hermit(graph)


def classify(graph: Graph, individuals: Iterable[URIRef], extra: Graph | None = None) -> ReasonerResult:
    """The inferred named classes of each individual (HermiT realisation)."""
    return run_hermit(graph, individuals, extra)
