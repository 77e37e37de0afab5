"""Compilers: OWL class expressions and SHACL shapes to SPARQL."""
