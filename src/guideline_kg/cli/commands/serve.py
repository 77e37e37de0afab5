"""`guideline-kg serve`: a read-only SPARQL 1.1 endpoint, a query page and a CDS Hooks service over HTTP."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
from pathlib import Path

from guideline_kg.cli.common import add_store_arguments, note, project_of
from guideline_kg.core.errors import EXIT_FAILED, EXIT_OK, InputError
from guideline_kg.outputs.dataset import load_into, query_data
from guideline_kg.store.stores import RemoteStore, graph_to_ntriples
from guideline_kg.store.worker import QueryWorker


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the knowledge graph over HTTP: SPARQL endpoint, query page, CDS Hooks",
                       description="Serve the knowledge graph, the given cases and their derivation results: a "
                                   "read-only SPARQL 1.1 Protocol endpoint at /sparql, a query page at /, the "
                                   "algorithm at /algorithm.svg, CDS Hooks at /cds-services, and /health. "
                                   "A case that fails the case shapes is not served (no facts, results or cards); "
                                   "its violations are reported here and on /health. Stop with Ctrl-C. Exit 1 "
                                   "after serving without an invalid case, 2 if the data cannot be read or the "
                                   "port is taken.")
    p.add_argument("cases", nargs="*", type=Path, metavar="CASE", help="case files or folders to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port, 1 to 65535 (default: 8000)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="query time limit in seconds; longer queries are stopped, HTTP 503 (default: 10)")
    p.add_argument("--max-results", type=int, default=10000, metavar="N",
                   help="most solutions or triples a result may have; larger results get HTTP 413 (default: 10000)")
    p.add_argument("--inferred", action="store_true", help="also serve HermiT's inferred rdf:type triples")
    p.add_argument("--max-body", type=_size, default=1024 * 1024, metavar="BYTES",
                   help="largest request body, bytes or with K/M (e.g. 512K); larger bodies get HTTP 413 and are "
                        "not read further (default: 1M)")
    p.add_argument("--query-queue", type=_count, default=8, metavar="N",
                   help="queries that may wait while one runs; more get HTTP 503 with Retry-After (default: 8)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name clients may use in the Host header besides localhost, 127.0.0.1, [::1] and "
                        "--host (repeatable); other names get HTTP 400 (a defence against DNS rebinding)")
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help="require `Authorization: Bearer TOKEN` on every route but /health (HTTP 401 otherwise); "
                        f"better given in the environment variable {TOKEN_ENV}, which other users cannot see "
                        "in the process list")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages of this origin (e.g. https://app.example.net) call the server from a browser "
                        "(repeatable; default: no CORS, no other site's page can read the answers)")
    add_store_arguments(p)
    p.set_defaults(handler=run)


#: The environment variable that holds the bearer token (``serve --token`` wins over it).
TOKEN_ENV = "GUIDELINE_KG_TOKEN"
#: What a bearer token may be made of (RFC 6750 b64token).
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_ORIGIN = re.compile(r"(\*|https?://[^/\s?#]+)")


def _size(text: str) -> int:
    """A size in bytes for argparse: digits, optionally followed by K or M (binary: 1K = 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)[iI]?[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or a number with K or M)")
    size = int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    if size < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return size


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _port(text: str) -> int:
    """A TCP port number for argparse (1..65535); anything else is a usage error (exit 2)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (1 to 65535)")
    return port


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    # The web stack (uvicorn, and FastAPI under service.app) takes about a second to import and only `serve`
    # needs it, so it is imported here rather than by every command.
    import uvicorn  # noqa: PLC0415 - heavy dependency, see above

    from guideline_kg.service.app import ServerConfig, create_app  # noqa: PLC0415 - imports FastAPI, see above

    if args.timeout <= 0 or args.max_results < 0:
        raise InputError("--timeout must be positive and --max-results not negative")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is not None and not _TOKEN.fullmatch(token):
        where = "--token" if args.token is not None else TOKEN_ENV
        raise InputError(f"{where}: a bearer token is letters, digits and - . _ ~ + / (then = at the end), "
                         "not empty and without spaces")
    for origin in args.cors_origin:
        if not _ORIGIN.fullmatch(origin):
            raise InputError(f"--cors-origin {origin!r} is not an origin (scheme://host[:port], no path) or *")
    _check_port(args.host, args.port)
    project = project_of(args)
    data = query_data(project, args.cases, results=True, inferred=args.inferred)
    for n in data.notes:
        note(n)
    worker = None
    if args.store:
        store = RemoteStore(args.store, args.store_data, timeout=args.timeout)
        load_into(store, data)
        run_query = lambda q, t, limit: store.result(q, limit)  # noqa: E731  (the client's timeout applies)
        workers = 4  # a SPARQL server answers several at once
        label, triples = store.url, int(str(store.select("SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }").rows[0][0]))
    else:
        graph = data.knowledge + data.extra
        worker = QueryWorker(graph_to_ntriples(graph))
        run_query, label, triples = worker.run, "embedded", len(graph)
        workers = 1  # one worker process, one query at a time
    config = ServerConfig(project, data.knowledge, run_query, args.timeout, args.max_results, label, data.cases,
                          triples, invalid=data.invalid, max_body=args.max_body,
                          allowed_hosts=(args.host, *args.allowed_host), token=token,
                          cors_origins=tuple(args.cors_origin), query_workers=workers, query_queue=args.query_queue)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    note(f"guideline-kg serve: http://{args.host}:{args.port}/ ({triples} triples, {len(data.cases)} cases, "
         + (f"{len(data.invalid)} invalid cases left out, " if data.invalid else "") + f"store {label}"
         + ("; bearer token required" if token else "") + ")")
    try:
        uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        if worker is not None:
            worker.close()
    return EXIT_FAILED if data.invalid else EXIT_OK
