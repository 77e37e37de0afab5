"""The ontology (ontology/guideline-kg.ttl): it parses, every gk: term has a label and a definition, reused terms
are declared, and the OWL 2 DL hygiene that can be checked in Python holds for the merged graph."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from rdflib import BNode, Graph, Literal, URIRef

from conftest import REPO
from guideline_kg.core.namespaces import GK, OWL, RDF, RDFS, SKOS, XSD
from guideline_kg.core.rdfio import read_graph
from guideline_kg.reasoning.hermit import OWL2_DATATYPES

ONTOLOGY_FILE = REPO / "ontology" / "guideline-kg.ttl"
ONTOLOGY = read_graph(ONTOLOGY_FILE)
ONTOLOGY_IRI = URIRef("https://w3id.org/guideline-kg/ontology")
DECLARATIONS = (OWL.Class, OWL.ObjectProperty, OWL.DatatypeProperty, OWL.AnnotationProperty, OWL.NamedIndividual)
#: Terms OWL 2 itself defines: used without declaration.
BUILT_IN_PROPERTIES = {RDF.type, RDF.first, RDF.rest, RDFS.subClassOf, RDFS.subPropertyOf, RDFS.domain, RDFS.range,
                       RDFS.label, RDFS.comment, RDFS.seeAlso, RDFS.isDefinedBy}
BUILT_IN_NAMESPACES = (str(OWL), str(XSD))


def gk_terms(graph: Graph) -> list[URIRef]:
    """Every term declared in the gk: namespace."""
    return sorted({s for d in DECLARATIONS for s in graph.subjects(RDF.type, d)
                   if isinstance(s, URIRef) and str(s).startswith(str(GK))})


def test_ontology_parses_and_names_itself() -> None:
    assert (ONTOLOGY_IRI, RDF.type, OWL.Ontology) in ONTOLOGY
    assert ONTOLOGY.value(ONTOLOGY_IRI, OWL.versionIRI) is not None


def test_ontology_covers_the_vocabulary_the_brief_asks_for() -> None:
    expected = ["Guideline", "AlgorithmStep", "RecommendationFor", "RecommendationAgainst", "EvidenceStatement",
                "Caution", "PrognosticStatement", "UnspecifiedHeading", "CareActionType", "StrengthWording",
                "LineOfTherapy", "Reference", "Quantity", "PercentageRange", "DurationRange", "Patient",
                "TreatmentEpisode", "Finding", "AssessmentStatus", "ImagingStudy"]
    missing = [n for n in expected if (GK[n], RDF.type, OWL.Class) not in ONTOLOGY]
    assert missing == []


@pytest.mark.parametrize("term", gk_terms(ONTOLOGY), ids=lambda t: str(t).rsplit("#", 1)[-1])
def test_every_gk_term_has_label_and_definition(term: URIRef) -> None:
    assert ONTOLOGY.value(term, RDFS.label) is not None, "no rdfs:label"
    assert str(ONTOLOGY.value(term, SKOS.definition) or "").strip(), "no skos:definition"


def test_gk_terms_in_other_files_have_label_and_definition(knowledge: Graph) -> None:
    lacking = [str(t) for t in gk_terms(knowledge)
               if knowledge.value(t, RDFS.label) is None or knowledge.value(t, SKOS.definition) is None]
    assert lacking == []


def _used_properties(graph: Graph) -> set[URIRef]:
    used = set(graph.predicates())
    used |= {p for p in graph.objects(None, OWL.onProperty) if isinstance(p, URIRef)}
    return used


def _declared_properties(graph: Graph) -> set[URIRef]:
    return {s for kind in (OWL.ObjectProperty, OWL.DatatypeProperty, OWL.AnnotationProperty)
            for s in graph.subjects(RDF.type, kind)}


def test_reused_terms_are_declared() -> None:
    reused = {t for t in _used_properties(ONTOLOGY)
              if not str(t).startswith((str(GK), *BUILT_IN_NAMESPACES)) and t not in BUILT_IN_PROPERTIES}
    assert reused, "the ontology reuses SKOS, Dublin Core and PROV-O terms"
    assert sorted(reused - _declared_properties(ONTOLOGY)) == []


def test_every_property_used_in_the_merged_graph_is_declared(knowledge: Graph) -> None:
    used = {t for t in _used_properties(knowledge)
            if not str(t).startswith(BUILT_IN_NAMESPACES) and t not in BUILT_IN_PROPERTIES}
    assert sorted(used - _declared_properties(knowledge)) == []


def test_every_class_used_is_declared(knowledge: Graph) -> None:
    places = (RDFS.subClassOf, RDFS.domain, OWL.someValuesFrom, OWL.allValuesFrom, OWL.disjointWith)
    used = {o for p in places for o in knowledge.objects(None, p) if isinstance(o, URIRef)}
    used |= {o for s, o in knowledge.subject_objects(RDF.type)
             if isinstance(o, URIRef) and not str(o).startswith((str(OWL), str(RDFS), str(RDF)))}
    used |= {o for s, o in knowledge.subject_objects(RDFS.range)
             if (s, RDF.type, OWL.ObjectProperty) in knowledge}
    used = {c for c in used if not str(c).startswith(BUILT_IN_NAMESPACES) and c != RDFS.Literal}
    named_datatypes = set(knowledge.subjects(RDF.type, RDFS.Datatype))  # thresholds, checked below
    assert sorted(c for c in used if (c, RDF.type, OWL.Class) not in knowledge and c not in named_datatypes) == []


def test_every_named_datatype_is_defined_and_used_as_a_data_range(knowledge: Graph) -> None:
    """The interpretation thresholds are named OWL 2 datatypes: each has a definition (owl:equivalentClass to a data
    range), a label, and is used only as a data range (never as a class)."""
    named = {d for d in knowledge.subjects(RDF.type, RDFS.Datatype) if isinstance(d, URIRef)}
    assert {d.rsplit("/", 1)[-1] for d in named} >= {"ChronicPainDuration", "PainDurationBelowChronic",
                                                      "MeaningfulPainRelief", "LessThanMeaningfulPainRelief",
                                                      "OpioidTrialLength", "HigherChronicityStage",
                                                      "LowerChronicityStage"}
    for d in named:
        definition = knowledge.value(d, OWL.equivalentClass)
        assert definition is not None and (definition, RDF.type, RDFS.Datatype) in knowledge, d
        assert knowledge.value(d, RDFS.label) is not None, d
        assert (d, RDF.type, OWL.Class) not in knowledge, d


def test_each_interpretation_number_is_written_once(knowledge: Graph) -> None:
    """A threshold's number is a facet of its named datatype only: no other facet in the graph has the same number
    on the same property path (the former design wrote 3 months in a condition and again in its negation)."""
    facets = [(p, o) for s, p, o in knowledge if str(p).startswith(str(XSD)) and isinstance(o, Literal)
              and p in (XSD.minInclusive, XSD.maxInclusive, XSD.minExclusive, XSD.maxExclusive)]
    assert sorted((str(p), float(o)) for p, o in facets) == sorted([
        (str(XSD.minInclusive), 3.0), (str(XSD.minInclusive), 30.0), (str(XSD.minInclusive), 4.0),
        (str(XSD.minInclusive), 2.0)])


@pytest.mark.parametrize("pair", [(OWL.ObjectProperty, OWL.DatatypeProperty),
                                  (OWL.ObjectProperty, OWL.AnnotationProperty),
                                  (OWL.DatatypeProperty, OWL.AnnotationProperty)],
                         ids=["object-datatype", "object-annotation", "datatype-annotation"])
def test_no_property_has_two_kinds(knowledge: Graph, pair: tuple[URIRef, URIRef]) -> None:
    both = set(knowledge.subjects(RDF.type, pair[0])) & set(knowledge.subjects(RDF.type, pair[1]))
    assert sorted(both) == []


def test_datatype_ranges_are_in_the_owl2_datatype_map(knowledge: Graph) -> None:
    ranges = {(p, r) for p in knowledge.subjects(RDF.type, OWL.DatatypeProperty)
              for r in knowledge.objects(p, RDFS.range) if isinstance(r, URIRef)}
    assert ranges
    assert sorted((str(p), str(r)) for p, r in ranges if r not in OWL2_DATATYPES) == []


def test_datatype_restrictions_use_owl2_datatypes(knowledge: Graph) -> None:
    used = set(knowledge.objects(None, OWL.onDatatype))
    assert sorted(str(d) for d in used if d not in OWL2_DATATYPES) == []


def test_literals_in_the_merged_graph_are_owl2_datatypes(knowledge: Graph) -> None:
    odd = sorted({str(o.datatype) for o in knowledge.objects() if isinstance(o, Literal)
                  and o.datatype is not None and o.datatype not in OWL2_DATATYPES})
    assert odd == []


def test_object_properties_take_no_literals(knowledge: Graph) -> None:
    bad = sorted({str(p) for p in knowledge.subjects(RDF.type, OWL.ObjectProperty)
                  for o in knowledge.objects(None, p) if isinstance(o, Literal)})
    assert bad == []


def test_datatype_properties_take_only_literals(knowledge: Graph) -> None:
    bad = sorted({str(p) for p in knowledge.subjects(RDF.type, OWL.DatatypeProperty)
                  for o in knowledge.objects(None, p) if isinstance(o, (URIRef, BNode))})
    assert bad == []


def test_population_is_an_annotation_so_statements_stay_individuals() -> None:
    assert (GK.population, RDF.type, OWL.AnnotationProperty) in ONTOLOGY
    assert (GK.population, RDF.type, OWL.ObjectProperty) not in ONTOLOGY


def test_date_properties_range_over_rdfs_literal() -> None:
    for prop in (GK.performedOn, GK.assessmentDate, GK.startDate, GK.birthDate):
        assert ONTOLOGY.value(prop, RDFS.range) == RDFS.Literal, prop


def _catalog(folder: str) -> dict[str, str]:
    root = ET.parse(REPO / folder / "catalog-v001.xml").getroot()
    return {e.get("name"): e.get("uri") for e in root if e.tag.endswith("uri")}


@pytest.mark.parametrize("folder", ["ontology", "guidelines/plbp"])
def test_protege_catalog_maps_every_imported_iri_to_the_local_ontology_file(folder: str) -> None:
    catalog = _catalog(folder)
    imported = {str(o) for p in (REPO / folder).glob("*.ttl") for o in read_graph(p).objects(None, OWL.imports)}
    wanted = imported | {str(ONTOLOGY_IRI), str(ONTOLOGY.value(ONTOLOGY_IRI, OWL.versionIRI))}
    assert wanted <= set(catalog)
    for iri in wanted:
        target = (REPO / folder / catalog[iri]).resolve()
        assert target.is_file(), iri
        # the file the catalog names is the ontology of that IRI (or, for a version IRI, of its ontology)
        declared = {str(s) for s in read_graph(target).subjects(RDF.type, OWL.Ontology)}
        declared |= {str(v) for v in read_graph(target).objects(None, OWL.versionIRI)}
        assert iri in declared, iri


def test_the_package_catalog_resolves_the_package_vocabulary() -> None:
    catalog = _catalog("guidelines/plbp")
    assert (REPO / "guidelines" / "plbp" / catalog["https://w3id.org/guideline-kg/plbp/vocabulary"]).resolve() == \
        (REPO / "guidelines" / "plbp" / "vocabulary.ttl").resolve()
    assert (REPO / "guidelines" / "plbp" / catalog[str(ONTOLOGY_IRI)]).resolve() == ONTOLOGY_FILE.resolve()
