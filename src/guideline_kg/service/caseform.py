"""The case form of the patient page, read from the guideline package's case shapes: which fields a patient has,
of which kind, with which choices, and which linked nodes (a finding, a treatment episode...) it may hold.

Nothing here names a term of a guideline: the fields come from the SHACL property shapes (``sh:path``,
``sh:datatype``, ``sh:or`` of datatypes, ``sh:in``, ``sh:class``, ``sh:minCount``/``sh:maxCount``,
``sh:minInclusive``/``sh:maxInclusive``, ``sh:name``/``sh:description``) of the node shapes that target the
patient class (``sh:targetClass``) and of those that target the objects of a patient property
(``sh:targetObjectsOf``: a linked node, drawn as a repeatable group). Labels and definitions come from the
knowledge graph (``rdfs:label``, ``skos:definition``); the choices of ``sh:class`` are its instances, and the
types a linked node may have are the subclasses of its shape's ``sh:class`` or of the linking property's
``rdfs:range``. A reference from a linked node to another node of the case (a ``sh:class`` with no named
instances, such as a finding's imaging study) is left out: the form makes a patient and its linked nodes, and the
box above it takes any case. A second guideline's shapes give its own form. The page's script turns the filled form into
Turtle and evaluates it through the one reader and the gate like any pasted case (docs/serve.md).
"""

from __future__ import annotations

from typing import Any

from rdflib import Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.term import Node

from guideline_kg.core.namespaces import CASE, RDF, RDFS, SH, SKOS

__all__ = ["form_spec"]

_SH_VIOLATION = SH.Violation
_NUMERIC = ("integer", "decimal", "double", "float", "nonNegativeInteger", "positiveInteger")


def _sh(name: str) -> URIRef:
    return URIRef(SH[name])


def _local(iri: str) -> str:
    return iri.rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def _text(graph: Graph, node: Node, *props: URIRef) -> str | None:
    """The first value of ``props`` on ``node``, English (or untagged) first."""
    for p in props:
        values = list(graph.objects(node, p))
        values.sort(key=lambda v: (not isinstance(v, Literal) or v.language not in (None, "en"), str(v)))
        if values:
            return str(values[0])
    return None


def _label(graph: Graph, node: Node) -> str:
    return _text(graph, node, SKOS.prefLabel, RDFS.label) or _local(str(node))


def _list(graph: Graph, head: Node | None) -> list[Node]:
    return list(Collection(graph, head)) if head is not None else []


def _number(value: Node | None) -> float | None:
    if isinstance(value, Literal):
        try:
            return float(value.toPython())
        except (TypeError, ValueError):
            return None
    return None


def _subclasses(graph: Graph, cls: URIRef) -> list[URIRef]:
    """``cls`` and every named class below it (rdfs:subClassOf*), the most general first then by label."""
    seen: dict[URIRef, int] = {cls: 0}
    queue = [cls]
    while queue:
        c = queue.pop(0)
        for sub in graph.subjects(RDFS.subClassOf, c):
            if isinstance(sub, URIRef) and sub not in seen:
                seen[sub] = seen[c] + 1
                queue.append(sub)
    return sorted(seen, key=lambda c: (seen[c], _label(graph, c).lower()))


def _instances(graph: Graph, cls: URIRef) -> list[URIRef]:
    """The named individuals typed with ``cls`` or a class below it, by label."""
    found = {i for c in _subclasses(graph, cls) for i in graph.subjects(RDF.type, c) if isinstance(i, URIRef)}
    return sorted(found, key=lambda i: _label(graph, i).lower())


def _options(graph: Graph, items: list[Node]) -> list[dict[str, str]]:
    return [{"iri": str(i), "label": _label(graph, i)} for i in items if isinstance(i, URIRef)]


def _field(graph: Graph, shapes: list[Node], path: URIRef, linked: dict[URIRef, URIRef]) -> dict[str, Any]:
    """One form field from every property shape on ``path`` of one node (merged: the tightest bound wins)."""
    datatypes: list[str] = []
    options: list[Node] = []
    classes: list[URIRef] = []
    required = many = False
    single = False
    low = high = None
    name = description = None
    for ps in shapes:
        severity = graph.value(ps, _sh("severity"))
        for d in graph.objects(ps, _sh("datatype")):
            datatypes.append(str(d))
        for alt in _list(graph, graph.value(ps, _sh("or"))):
            datatypes += [str(d) for d in graph.objects(alt, _sh("datatype"))]
        options += _list(graph, graph.value(ps, _sh("in")))
        classes += [c for c in graph.objects(ps, _sh("class")) if isinstance(c, URIRef)]
        minimum = _number(graph.value(ps, _sh("minCount")))
        if minimum and minimum >= 1 and severity in (None, _SH_VIOLATION):
            required = True
        maximum = _number(graph.value(ps, _sh("maxCount")))
        if maximum == 1:
            single = True
        lo, hi = _number(graph.value(ps, _sh("minInclusive"))), _number(graph.value(ps, _sh("maxInclusive")))
        low = lo if lo is not None and (low is None or lo > low) else low
        high = hi if hi is not None and (high is None or hi < high) else high
        name = name or _text(graph, ps, _sh("name"))
        description = description or _text(graph, ps, _sh("description"))
    many = not single
    field: dict[str, Any] = {
        "path": str(path), "name": name or _label(graph, path),
        "description": description or _text(graph, path, SKOS.definition, RDFS.comment) or "",
        "required": required, "many": many, "min": low, "max": high, "datatypes": list(dict.fromkeys(datatypes))}
    if path in linked:
        shape = linked[path]
        types = [c for c in graph.objects(shape, _sh("class")) if isinstance(c, URIRef)]
        types += [r for r in graph.objects(path, RDFS.range) if isinstance(r, URIRef)] if not types else []
        field.update(kind="node", node=str(shape),
                     types=_options(graph, [c for t in types for c in _subclasses(graph, t)]))
    elif options:
        field.update(kind="choice", options=_options(graph, options))
    elif classes:
        field.update(kind="choice", options=_options(graph, [i for c in classes for i in _instances(graph, c)]))
    else:
        field.update(kind="literal")
    return field


def _fields(graph: Graph, node_shapes: list[Node], linked: dict[URIRef, URIRef], nested: bool
            ) -> list[dict[str, Any]]:
    by_path: dict[URIRef, list[Node]] = {}
    for ns in node_shapes:
        for ps in graph.objects(ns, _sh("property")):
            path = graph.value(ps, _sh("path"))
            if isinstance(path, URIRef):  # property paths beyond one IRI are not form fields
                by_path.setdefault(path, []).append(ps)
    if not nested:  # a patient property whose objects a node shape targets is a field even without a property shape
        for path in linked:
            by_path.setdefault(path, [])
    fields = []
    for path, shapes in by_path.items():
        if nested and path in linked:
            continue  # a link from a linked node to another node (e.g. a finding's imaging): not in the form
        f = _field(graph, shapes, path, linked if not nested else {})
        if f["kind"] == "choice" and not f["options"]:
            continue  # a reference to another node of the case (e.g. a finding's imaging): the form cannot make it
        fields.append(f)
    order = {"literal": 0, "choice": 1, "node": 2}
    fields.sort(key=lambda f: (not f["required"], order[f["kind"]], f["name"].lower()))
    return fields


def form_spec(shapes: Graph, knowledge: Graph) -> dict[str, Any]:
    """The form of a case: ``{"root": {"class", "label", "fields"}, "nodes": {shape: {"label", "fields"}},
    "base"}``; every field ``{"path", "name", "description", "kind" (literal | choice | node), "datatypes",
    "required", "many", "min", "max"}`` with ``options`` (choice) or ``node`` and ``types`` (node)."""
    graph = Graph()
    for t in shapes:
        graph.add(t)
    for t in knowledge:
        graph.add(t)
    roots = sorted({c for c in graph.objects(None, _sh("targetClass")) if isinstance(c, URIRef)
                    and any(graph.objects(s, _sh("property")) for s in graph.subjects(_sh("targetClass"), c))})
    if not roots:
        return {"root": None, "nodes": {}, "base": str(CASE)}
    # the class most shapes target is the patient's (one, in every package so far)
    root = max(roots, key=lambda c: len(list(graph.subjects(_sh("targetClass"), c))))
    root_shapes = sorted(graph.subjects(_sh("targetClass"), root), key=str)
    linked: dict[URIRef, URIRef] = {}
    root_paths = {graph.value(ps, _sh("path")) for s in root_shapes for ps in graph.objects(s, _sh("property"))}
    for shape, path in sorted(graph.subject_objects(_sh("targetObjectsOf")), key=lambda t: (str(t[1]), str(t[0]))):
        shaped = any(graph.objects(shape, _sh("property"))) or graph.value(shape, _sh("class")) is not None
        if isinstance(path, URIRef) and isinstance(shape, URIRef) and path not in linked and shaped \
                and (root in set(graph.objects(path, RDFS.domain)) or path in root_paths):
            linked[path] = shape
    nodes = {str(shape): {"label": _label(graph, shape), "fields": _fields(graph, [shape], linked, nested=True)}
             for shape in dict.fromkeys(linked.values())}
    return {"root": {"class": str(root), "label": _label(graph, root_shapes[0]) if root_shapes else _label(graph, root),
                     "fields": _fields(graph, root_shapes, linked, nested=False)},
            "nodes": nodes, "base": str(CASE)}
