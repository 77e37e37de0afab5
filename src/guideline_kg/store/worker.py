"""Queries with a time limit: a child process holds a copy of the embedded store and is killed (and
restarted) when a query overruns, since a running pyoxigraph query cannot be interrupted in its thread."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import threading
from typing import Any

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GENERIC_PREFIXES, PREFIXES, declare_namespace
from guideline_kg.store.results import QueryResult, QueryTimeout, ResultTooLarge
from guideline_kg.store.stores import EmbeddedStore, SparqlSyntaxError

__all__ = ["QueryWorker"]

_ERRORS = {"syntax": SparqlSyntaxError, "too_large": ResultTooLarge, "error": InputError}


def _serve(conn: Any, ntriples: bytes, prefixes: dict[str, str]) -> None:
    """The child: declare the guideline's prefixes (a spawned process starts with the generic ones only), load
    the data, then answer (query, limit) messages until None arrives."""
    for prefix, iri in prefixes.items():
        declare_namespace(prefix, iri)
    store = EmbeddedStore()
    store.add_ntriples(ntriples)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        query, limit = msg
        try:
            res = store.result(query, limit)
            conn.send(("ok", res.kind, res.data, res.count))
        except SparqlSyntaxError as exc:
            conn.send(("syntax", str(exc), exc.line, exc.column))
        except ResultTooLarge as exc:
            conn.send(("too_large", str(exc), None, None))
        except InputError as exc:
            conn.send(("error", str(exc), None, None))
        except Exception as exc:  # pyoxigraph evaluation errors (e.g. a failed SERVICE call)
            conn.send(("error", f"{type(exc).__name__}: {exc}", None, None))


class QueryWorker:
    """One child process answering queries on a copy of the data, one query at a time (a lock queues
    the rest); a query over the time limit kills the child and a fresh one is started."""

    def __init__(self, ntriples: bytes, start_timeout: float = 60.0) -> None:
        self._data = ntriples
        # the guideline's prefixes declared in this process, so that queries read the same in the child
        self._prefixes = {p: str(ns) for p, ns in PREFIXES.items() if p not in GENERIC_PREFIXES}
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._ctx = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(child, self._data, self._prefixes), daemon=True,
                                 name="gkg-query-worker")
        proc.start()
        child.close()
        if not parent.poll(self._start_timeout):
            proc.kill()
            raise InputError("the query worker did not start")
        parent.recv()
        self._proc, self._conn = proc, parent

    def run(self, query: str, timeout: float, limit: int | None = None) -> QueryResult:
        """The result of ``query``; QueryTimeout after ``timeout`` seconds, ResultTooLarge above ``limit``."""
        with self._lock:
            if not self._proc.is_alive():
                self._start()
            self._conn.send((query, limit))
            if not self._conn.poll(timeout):
                self._proc.kill()
                self._proc.join()
                self._start()
                raise QueryTimeout(f"the query ran longer than the time limit ({timeout:g} s) and was stopped")
            msg = self._conn.recv()
        if msg[0] == "ok":
            return QueryResult(msg[1], msg[2], msg[3])
        err = _ERRORS[msg[0]](msg[1])
        if msg[0] == "syntax":
            err.line, err.column = msg[2], msg[3]
        raise err

    def close(self) -> None:
        """Stop the child process."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._proc.join(2)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
