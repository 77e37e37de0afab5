"""The HTTP service: SPARQL 1.1 Protocol endpoint, query page, CDS Hooks."""
