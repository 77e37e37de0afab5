"""The ontology reference in Markdown, generated from the ontology graph itself (so it can never drift from it)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from rdflib import Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.term import Identifier, Node

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import DCTERMS, GK, OWL, PREFIXES, RDF, RDFS, SKOS, bind_prefixes
from guideline_kg.core.project import Project
from guideline_kg.core.rdfio import read_graphs

__all__ = ["CPG", "load_ontology", "ontology_reference"]

#: The annotation that records a term's HL7 CPG-on-FHIR correspondence.
CPG = GK.cpgCorrespondence
_KINDS = [(OWL.ObjectProperty, "Object properties"), (OWL.DatatypeProperty, "Datatype properties"),
          (OWL.AnnotationProperty, "Annotation properties")]


def _sorted_terms(nodes: Iterable[Node]) -> list[Identifier]:
    """RDF terms in rdflib's term order (graph-valued nodes, which never occur here, left out)."""
    return sorted(n for n in nodes if isinstance(n, Identifier))


def load_ontology(project: Project) -> Graph:
    """The ontology files of ``project`` (ontology/*.ttl) parsed into one graph, without the content."""
    files = sorted(project.ontology_dir.glob("*.ttl"))
    if not files:
        raise InputError("no ontology files (*.ttl) found", path=str(project.ontology_dir))
    return read_graphs(files, bind_prefixes(Graph()))


def _curie(iri: Node) -> str:
    text = str(iri)
    for prefix, ns in sorted(PREFIXES.items(), key=lambda kv: -len(str(kv[1]))):
        if text.startswith(str(ns)) and len(text) > len(str(ns)):
            return f"{prefix}:{text[len(str(ns)):]}"
    return f"<{text}>"


def _anchor(iri: Node) -> str:
    return _curie(iri).replace(":", "-").strip("<>")  # case kept: gk:Direction and gk:direction differ


def _link(iri: Node, own: set[URIRef]) -> str:
    return f"[`{_curie(iri)}`](#{_anchor(iri)})" if iri in own else f"`{_curie(iri)}`"


def _text(graph: Graph, node: Node, prop: URIRef) -> str:
    values = sorted(str(v) for v in graph.objects(node, prop) if isinstance(v, Literal))
    return "; ".join(" ".join(v.split()) for v in values)


def _expression(graph: Graph, node: Node, own: set[URIRef]) -> str:
    """A short readable form of a class expression (named classes, oneOf, unionOf, intersectionOf)."""
    if isinstance(node, URIRef):
        return _link(node, own)
    for prop, word in ((OWL.oneOf, "one of"), (OWL.unionOf, "union of"), (OWL.intersectionOf, "intersection of")):
        head = graph.value(node, prop)
        if head is not None:
            return f"{word} " + ", ".join(_expression(graph, m, own) for m in Collection(graph, head))
    return "a class expression"


def _own_namespace(graph: Graph) -> tuple[URIRef, str]:
    ontologies = sorted(o for o in graph.subjects(RDF.type, OWL.Ontology) if isinstance(o, URIRef))
    if not ontologies:
        raise InputError("the ontology files declare no owl:Ontology")
    iri = ontologies[0]
    return iri, str(iri)


def _entry(graph: Graph, term: URIRef, own: set[URIRef], level: str = "###") -> list[str]:
    label = _text(graph, term, RDFS.label) or _curie(term)
    lines = [f'<a id="{_anchor(term)}"></a>', f"{level} {label} (`{_curie(term)}`)", ""]
    definition = _text(graph, term, SKOS.definition)
    lines.append(definition or "*No definition.*")
    lines.append("")
    facts: list[tuple[str, str]] = []
    supers = sorted(s for s in graph.objects(term, RDFS.subClassOf) if isinstance(s, URIRef))
    if supers:
        facts.append(("Subclass of", ", ".join(_link(s, own) for s in supers)))
    subs = sorted(s for s in graph.subjects(RDFS.subClassOf, term) if isinstance(s, URIRef))
    if subs:
        facts.append(("Subclasses", ", ".join(_link(s, own) for s in subs)))
    for eq in graph.objects(term, OWL.equivalentClass):
        facts.append(("Equivalent to", _expression(graph, eq, own)))
    disjoint = _sorted_terms(set(graph.objects(term, OWL.disjointWith)) | set(graph.subjects(OWL.disjointWith, term)))
    if disjoint:
        facts.append(("Disjoint with", ", ".join(_link(d, own) for d in disjoint if isinstance(d, URIRef))))
    for prop, name in ((RDFS.subPropertyOf, "Subproperty of"), (RDFS.domain, "Domain"), (RDFS.range, "Range")):
        values = _sorted_terms(graph.objects(term, prop))
        if values:
            facts.append((name, ", ".join(_expression(graph, v, own) for v in values)))
    if (term, RDF.type, OWL.FunctionalProperty) in graph:
        facts.append(("Characteristics", "functional"))
    types = _sorted_terms(t for t in graph.objects(term, RDF.type) if t != OWL.NamedIndividual and not
                          str(t).startswith(str(OWL)))
    if types and (term, RDF.type, OWL.NamedIndividual) in graph:
        facts.append(("Type", ", ".join(_link(t, own) for t in types)))
    for prop, name in ((SKOS.notation, "Notation"), (CPG, "CPG-on-FHIR"), (SKOS.scopeNote, "Scope note")):
        value = _text(graph, term, prop)
        if value:
            facts.append((name, f"`{value}`" if prop == SKOS.notation else value))
    for prop, name in ((SKOS.exactMatch, "Exact match"), (SKOS.closeMatch, "Close match"),
                       (SKOS.broader, "Broader")):
        values = _sorted_terms(graph.objects(term, prop))
        if values:
            facts.append((name, ", ".join(_link(v, own) if v in own else f"<{v}>" for v in values)))
    lines += [f"- **{name}:** {value}" for name, value in facts]
    return lines + ([""] if facts else [])


def _tree(graph: Graph, classes: set[URIRef], own: set[URIRef]) -> list[str]:
    children: dict[URIRef, list[URIRef]] = defaultdict(list)
    roots = []
    for c in sorted(classes):
        parents = [p for p in graph.objects(c, RDFS.subClassOf) if isinstance(p, URIRef) and p in classes]
        for p in parents:
            children[p].append(c)
        if not parents:
            roots.append(c)
    out: list[str] = []

    def walk(c: URIRef, depth: int) -> None:
        outside = sorted(_curie(p) for p in graph.objects(c, RDFS.subClassOf)
                         if isinstance(p, URIRef) and p not in classes)
        extra = f" (⊑ {', '.join(f'`{o}`' for o in outside)})" if outside else ""
        out.append(f"{'  ' * depth}- {_link(c, own)} {_text(graph, c, RDFS.label)}{extra}")
        for child in sorted(children[c]):
            walk(child, depth + 1)

    for r in roots:
        walk(r, 0)
    return out


def ontology_reference(graph: Graph) -> str:
    """The Markdown reference of the ontology in ``graph``: classes with their hierarchy, properties with domain
    and range, individuals grouped by class, each with label, definition, notation and CPG correspondence."""
    iri, ns = _own_namespace(graph)
    declared = {s for kind in (OWL.Class, OWL.ObjectProperty, OWL.DatatypeProperty, OWL.AnnotationProperty,
                               OWL.NamedIndividual) for s in graph.subjects(RDF.type, kind) if isinstance(s, URIRef)}
    own = {t for t in declared if str(t).startswith(ns) and str(t) != ns}
    classes = {c for c in own if (c, RDF.type, OWL.Class) in graph}
    title = _text(graph, iri, DCTERMS.title) or str(iri)
    lines = [f"# Ontology reference: {title}", "",
             "<!-- Generated by `guideline-kg reference --out docs/ontology-reference.md` from ontology/*.ttl. "
             "Do not edit by hand; tests/test_reference.py checks it is up to date. -->", "",
             f"- **Ontology IRI:** `{iri}`",
             f"- **Version:** {_text(graph, iri, OWL.versionInfo) or 'unversioned'}"
             + (f" (`{graph.value(iri, OWL.versionIRI)}`)" if graph.value(iri, OWL.versionIRI) else ""),
             f"- **Licence:** {graph.value(iri, DCTERMS.license) or 'not stated'}",
             f"- **Terms:** {len(classes)} classes, "
             + ", ".join(f"{len([t for t in own if (t, RDF.type, k) in graph])} {n.lower()}" for k, n in _KINDS)
             + f", {len([t for t in own if (t, RDF.type, OWL.NamedIndividual) in graph])} named individuals", "",
             _text(graph, iri, DCTERMS.description), "", _text(graph, iri, RDFS.comment), "",
             "## Contents", "", "- [Class hierarchy](#class-hierarchy)", "- [Classes](#classes)"]
    lines += [f"- [{n}](#{n.lower().replace(' ', '-')})" for _, n in _KINDS]
    lines += ["- [Individuals by class](#individuals-by-class)", "- [Reused terms](#reused-terms)", "",
              "## Class hierarchy", ""]
    lines += [*_tree(graph, classes, own), "", "## Classes", ""]
    for c in sorted(classes, key=_curie):
        lines += _entry(graph, c, own)
    for kind, name in _KINDS:
        lines += [f"## {name}", ""]
        for p in sorted((t for t in own if (t, RDF.type, kind) in graph), key=_curie):
            lines += _entry(graph, p, own)
    lines += ["## Individuals by class", ""]
    by_class: dict[URIRef, list[URIRef]] = defaultdict(list)
    for ind in own:
        if (ind, RDF.type, OWL.NamedIndividual) in graph:
            for t in graph.objects(ind, RDF.type):
                if t != OWL.NamedIndividual and isinstance(t, URIRef) and not str(t).startswith(str(OWL)):
                    by_class[t].append(ind)
    for cls in sorted(by_class, key=_curie):
        lines += [f"### Instances of {_text(graph, cls, RDFS.label) or _curie(cls)} (`{_curie(cls)}`)", ""]
        for ind in sorted(by_class[cls], key=_curie):
            lines += _entry(graph, ind, own, level="####")
    lines += ["## Reused terms", "", "Terms of other vocabularies that the ontology declares and uses.", "",
              "| Term | Kind | Label |", "|---|---|---|"]
    for t in sorted(declared - own - {iri}, key=_curie):
        kinds = sorted(_curie(k).split(":")[1] for k in graph.objects(t, RDF.type) if str(k).startswith(str(OWL)))
        lines.append(f"| `{_curie(t)}` | {', '.join(kinds)} | {_text(graph, t, RDFS.label)} |")
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"
