"""What stands between the network and the application: the checks every request passes before a route sees
it, and the pools that keep slow work from starving the rest.

- :class:`HostCheck`: the ``Host`` header must name the bound address (or an allowed name), else 400. A page on
  another site that rebinds its DNS name to 127.0.0.1 sends its own name as ``Host``, so it is refused.
- :class:`Limits`: the optional bearer token (401 with ``WWW-Authenticate``; ``/health`` is open) and the request
  body limit (413), enforced while the body is read: at most ``max_body`` bytes are ever held, an announced
  ``Content-Length`` above the limit is refused before reading, and a body that trickles in for longer than
  ``body_timeout`` seconds gets 408. Refusals close the connection, so an endless body is cut off.
- :class:`Pool`: a bounded number of threads for one kind of work (SPARQL queries, CDS derivations), a bounded
  number of requests waiting for them, and a bounded wait; beyond that :class:`Busy` (HTTP 503 with
  ``Retry-After``). Waiting happens on the event loop, not in a thread, so ``/health`` and the pages never wait
  behind a query.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["LOOPBACK_HOSTS", "AccessLog", "Busy", "HostCheck", "Limits", "Pool", "host_name", "nested_deeper_than"]

log = logging.getLogger("guideline_kg.server")

#: The names of the loopback address that are always allowed in ``Host``.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
T = TypeVar("T")


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in a parsed JSON body nest more than ``limit`` deep (walked without recursion,
    so a hostile body cannot exhaust the stack); the CDS and FHIR routes refuse such bodies."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an address, lower case, without port, brackets or a final dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000; anything malformed is returned as it is, matching no name
        bracketed = re.fullmatch(r"\[([0-9a-f:.]+)\](?::\d*)?", value)
        return bracketed.group(1) if bracketed else value
    if value.count(":") == 1:  # name:port (more than one colon: a bare IPv6 address)
        value = value.split(":")[0]
    return value.rstrip(".")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _refuse(scope: Scope, send: Send, status: int, message: str,
                  headers: Iterable[tuple[str, str]] = (), close: bool = False) -> None:
    """Answer ``status`` with a one-line plain-text reason (and log it like the application's requests)."""
    body = (message + "\n").encode("utf-8")
    head = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
    log.info("refused: %s", message)


class AccessLog:
    """ASGI middleware: one log line per request (client, method, path, status, duration), refusals included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("-",)
            log.info("%s %s %s %d %.1fms", client[0], scope.get("method"), scope.get("path"), status,
                     (time.perf_counter() - start) * 1000)
        return None


class HostCheck:
    """ASGI middleware: refuse (400) a request whose ``Host`` is not one of ``allowed`` (names as by
    :func:`host_name`; the port is not compared)."""

    def __init__(self, app: Any, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _header(scope, b"host")
            if host is None:
                return await _refuse(scope, send, 400, "missing Host header")
            if host_name(host) not in self.allowed:
                return await _refuse(
                    scope, send, 400,
                    f"Host {host[:100]!r} is not served here (allowed: {', '.join(sorted(self.allowed))}; "
                    "add a name with `serve --allowed-host NAME`)")
        await self.app(scope, receive, send)


class Limits:
    """ASGI middleware: the bearer token (when ``token`` is set; every path but ``open_paths``) and the
    request-body limit (``max_body`` bytes, read within ``body_timeout`` seconds)."""

    def __init__(self, app: Any, max_body: int, token: str | None = None, body_timeout: float = 30.0,
                 open_paths: Iterable[str] = ("/health",)) -> None:
        self.app = app
        self.max_body = max_body
        self.token = token.encode("utf-8") if token else None
        self.body_timeout = body_timeout
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token is not None and scope.get("path") not in self.open_paths:
            scheme, _, credential = (_header(scope, b"authorization") or "").strip().partition(" ")
            given = credential.strip().encode("utf-8", "replace")
            # compare_digest takes the same time whatever the first differing byte (it still tells the length)
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token):
                challenge, reason = 'Bearer realm="guideline-kg"', (
                    "this server needs a bearer token: send `Authorization: Bearer <token>` (the token given "
                    "to `serve --token` or in GUIDELINE_KG_TOKEN)")
                if scheme.lower() == "bearer":
                    challenge += ', error="invalid_token"'
                    reason = "the bearer token is not this server's"
                return await _refuse(scope, send, 401, reason, [("WWW-Authenticate", challenge)])
        length = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        if length is None and not chunked:
            return await self.app(scope, receive, send)  # no body
        if length is not None:
            if not length.strip().isdigit():
                return await _refuse(scope, send, 400, f"Content-Length {length[:40]!r} is not a number",
                                     close=True)
            if int(length) > self.max_body:
                return await self._too_large(scope, send, f"announces {int(length)} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return await self._too_large(scope, send, f"goes on past {self.max_body} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await _refuse(scope, send, 408, f"the request body did not arrive within "
                                                   f"{self.body_timeout:g} s", close=True)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
        return None

    async def _too_large(self, scope: Scope, send: Send, what: str) -> None:
        await _refuse(scope, send, 413, f"the request body {what}; the limit is {self.max_body} bytes "
                                        "(serve --max-body); it was not read further", close=True)


class Busy(Exception):
    """A pool has no room for another request: HTTP 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class _PoolState:
    slots: anyio.Semaphore
    threads: anyio.CapacityLimiter
    admitted: int = 0


class Pool:
    """At most ``workers`` calls of one kind run at once (each in a thread of this pool's own), at most
    ``queue`` more wait for a turn, each for at most ``wait`` seconds; everything beyond is :class:`Busy`."""

    def __init__(self, name: str, workers: int, queue: int, wait: float) -> None:
        self.name, self.workers, self.queue, self.wait = name, workers, queue, wait
        # per event loop (a test client may run several): the primitives belong to the loop that made them
        self._state: anyio.lowlevel.RunVar[_PoolState] = anyio.lowlevel.RunVar(f"gkg-pool-{name}-{id(self)}")

    def _current(self) -> _PoolState:
        try:
            return self._state.get()
        except LookupError:
            state = _PoolState(anyio.Semaphore(self.workers), anyio.CapacityLimiter(self.workers))
            self._state.set(state)
            return state

    @property
    def admitted(self) -> int:
        """Requests running or waiting in this pool now (on the current event loop)."""
        return self._current().admitted

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the pool's threads, or :class:`Busy` when the pool and its queue are full or
        no thread came free within ``wait`` seconds."""
        state = self._current()
        if state.admitted >= self.workers + self.queue:
            raise Busy(f"the server is busy: {self.workers} {self.name} running and {self.queue} waiting, the "
                       "most it takes; try again later", self.wait)
        state.admitted += 1
        try:
            try:
                with anyio.fail_after(self.wait):
                    await state.slots.acquire()
            except TimeoutError:
                raise Busy(f"the server is busy: no {self.name} slot came free within {self.wait:g} s; "
                           "try again later", self.wait) from None
            try:
                return await anyio.to_thread.run_sync(fn, *args, limiter=state.threads)
            finally:
                state.slots.release()
        finally:
            state.admitted -= 1
