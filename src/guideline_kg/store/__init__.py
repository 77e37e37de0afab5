"""Stores: the embedded pyoxigraph store, a remote SPARQL 1.1 server, query results, the killable query worker."""
