"""Core: errors, namespaces, the project and its manifest, RDF reading/writing, findings, dates, query files."""
