"""Outputs: text/JSON reports, renders, RDF and graph exports, FHIR CPG, CDS cards, the ontology reference."""
