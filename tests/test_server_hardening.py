"""The server under abuse (issue 13, point 5): Host check, bearer token, CORS, body limit, malformed CDS Hooks
requests, and bounded pools so that slow queries never starve /health.

The guards are tested through the whole ASGI stack with Starlette's test client (fast); the behaviours that only
a real socket shows (an endless body cut off, a flood of slow queries) against `guideline-kg serve` started on
127.0.0.1 and a free port (slow)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from rdflib import Graph

from conftest import serve_running
from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.service.app import CDS_SERVICE_ID, MAX_DEPTH, ServerConfig, create_app
from guideline_kg.service.guard import Busy, Pool, host_name
from guideline_kg.store.results import QueryResult

TOKEN = "s3cret-token_1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLOW = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"
CDS = f"/cds-services/{CDS_SERVICE_ID}"


def _answer(query: str, timeout: float, limit: int | None) -> QueryResult:
    return QueryResult("boolean", b'{"head": {}, "boolean": true}', 1)


def client(knowledge: Graph, project: Project, **kw: Any) -> TestClient:
    """A test client on the guarded application, as `serve` builds it (Host check on, bound to 127.0.0.1)."""
    kw.setdefault("allowed_hosts", ("127.0.0.1",))
    return TestClient(create_app(ServerConfig(project, knowledge, _answer, **kw)), base_url="http://127.0.0.1:8000")


# -- Host header -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host,status", [
    ("127.0.0.1:8000", 200), ("localhost:8000", 200), ("LOCALHOST", 200), ("[::1]:8000", 200), ("localhost.", 200),
    ("kg.internal:443", 200),  # --allowed-host
    ("evil.example", 400), ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400),
    ("localhost.evil.example:8000", 400), ("", 400), ("[::1", 400),
])
def test_host_header_is_checked(knowledge: Graph, project: Project, host: str, status: int) -> None:
    c = client(knowledge, project, allowed_hosts=("127.0.0.1", "kg.internal"))
    resp = c.get("/health", headers={"host": host})
    assert resp.status_code == status, resp.text
    if status == 400:
        assert "is not served here" in resp.text and "--allowed-host" in resp.text


def test_host_name() -> None:
    assert [host_name(h) for h in ("[::1]:80", "::1", "Example.ORG.:8080", "a")] == ["::1", "::1", "example.org", "a"]


# -- bearer token ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers,status,challenge", [
    ({}, 401, 'Bearer realm="guideline-kg"'),
    ({"Authorization": "Bearer wrong"}, 401, 'Bearer realm="guideline-kg", error="invalid_token"'),
    ({"Authorization": f"Bearer {TOKEN}x"}, 401, 'Bearer realm="guideline-kg", error="invalid_token"'),
    ({"Authorization": f"Basic {TOKEN}"}, 401, 'Bearer realm="guideline-kg"'),
    ({"Authorization": TOKEN}, 401, 'Bearer realm="guideline-kg"'),
    ({"Authorization": f"Bearer {TOKEN}"}, 200, None),
    ({"Authorization": f"bearer  {TOKEN}"}, 200, None),
])
@pytest.mark.parametrize("path", ["/", "/queries", "/cds-services", "/sparql?query=ASK%7B%7D"])
def test_the_token_guards_every_route_but_health(knowledge: Graph, project: Project, headers: dict[str, str],
                                                 status: int, challenge: str | None, path: str) -> None:
    c = client(knowledge, project, token=TOKEN)
    resp = c.get(path, headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.headers.get("www-authenticate") == challenge
    assert c.get("/health").status_code == 200 and c.get("/health").json()["token"] is True


def test_cds_post_needs_the_token_too(knowledge: Graph, project: Project) -> None:
    c = client(knowledge, project, token=TOKEN)
    assert c.post(CDS, json={}).status_code == 401
    assert c.post(CDS, json={}, headers=AUTH).status_code == 400


# -- CORS --------------------------------------------------------------------------------------------------------

def test_cors_is_off_by_default(knowledge: Graph, project: Project) -> None:
    c = client(knowledge, project)
    resp = c.get("/health", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers
    pre = c.options("/sparql", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_origins_can_be_allowed(knowledge: Graph, project: Project) -> None:
    c = client(knowledge, project, token=TOKEN, cors_origins=("https://app.example.net",))
    ok = {"Origin": "https://app.example.net"}
    resp = c.get("/queries", headers={**ok, **AUTH})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "https://app.example.net"
    # the browser's preflight carries no token; it is answered, and says Authorization may be sent
    pre = c.options("/sparql", headers={**ok, "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 200 and "authorization" in pre.headers["access-control-allow-headers"].lower()
    other = c.get("/queries", headers={"Origin": "https://evil.example", **AUTH})
    assert "access-control-allow-origin" not in other.headers
    assert c.get("/queries", headers=ok).status_code == 401  # CORS does not replace the token


# -- request body ------------------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_413(knowledge: Graph, project: Project) -> None:
    c = client(knowledge, project, max_body=1000)
    query = "ASK {}" + " " * 2000
    resp = c.post("/sparql", content=query, headers={"Content-Type": "application/sparql-query"})
    assert resp.status_code == 413 and "announces 2006 bytes; the limit is 1000 bytes" in resp.text
    assert resp.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read (the test client buffers the
        yield b"ASK {}"                 # request, so this one ends; an endless one is tested on a real socket)
        for _ in range(10):
            yield b" " * 400

    resp = c.post("/sparql", content=chunks(), headers={"Content-Type": "application/sparql-query"})
    assert resp.status_code == 413 and "goes on past 1000 bytes" in resp.text
    ok = c.post("/sparql", content="ASK {}" + " " * 900, headers={"Content-Type": "application/sparql-query"})
    assert ok.status_code == 200, ok.text
    assert c.post(CDS, content=b"[" * 5000).status_code == 413


def test_a_bad_content_length_is_400(knowledge: Graph, project: Project) -> None:
    c = client(knowledge, project)
    resp = c.post("/sparql", content=b"ASK {}", headers={"Content-Length": "six", "Content-Type":
                                                          "application/sparql-query"})
    assert resp.status_code == 400 and "Content-Length" in resp.text


# -- malformed CDS Hooks requests --------------------------------------------------------------------------------

BUNDLE = {"resourceType": "Bundle", "type": "collection",
          "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}]}
GOOD = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"patientId": "p1", "userId": "Practitioner/1"}, "prefetch": {"bundle": BUNDLE}}


def _with(**changes: Any) -> bytes:
    body: dict[str, Any] = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        target, _, leaf = key.partition("__")
        if leaf:
            body[target][leaf] = value
        elif value is ...:
            del body[key]
        else:
            body[key] = value
    return json.dumps(body).encode()


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


CDS_BAD = [
    ("not JSON", b"{not json", "not JSON"),
    ("not UTF-8", b'{"hook": "\xff"}', "not UTF-8"),
    ("empty body", b"", "not JSON"),
    ("an array", b"[]", "must be a JSON object, got an array"),
    ("a string", b'"patient-view"', "must be a JSON object, got a string"),
    ("null", b"null", "must be a JSON object, got null"),
    ("context a string", _with(context="p1"), "context must be a JSON object, got a string"),
    ("context a list", _with(context=["p1"]), "context must be a JSON object, got an array"),
    ("context missing", _with(context=...), "missing context"),
    ("hook missing", _with(hook=...), "missing hook"),
    ("hook another", _with(hook="order-select"), "not 'order-select'"),
    ("hook a number", _with(hook=3), "not '3'"),
    ("hookInstance missing", _with(hookInstance=...), "missing hookInstance"),
    ("hookInstance odd characters", _with(hookInstance="a b<c>"), "hookInstance must be a UUID"),
    ("hookInstance a number", _with(hookInstance=7), "hookInstance must be a UUID (letters"),
    ("hookInstance too long", _with(hookInstance="a" * 200), "hookInstance must be a UUID"),
    ("patientId missing", _with(context={"userId": "x"}), "missing context.patientId"),
    ("patientId odd characters", _with(context__patientId="p 1/<x>"), "context.patientId must be a FHIR id"),
    ("patientId with a newline", _with(context__patientId="p1\n"), "context.patientId must be a FHIR id"),
    ("patientId an object", _with(context__patientId={"id": "p1"}), "got an object"),
    ("patientId a number", _with(context__patientId=1), "got a number"),
    ("userId a list", _with(context__userId=["x"]), "context.userId must be a string"),
    ("fhirServer a number", _with(fhirServer=1), "fhirServer must be a string"),
    ("fhirAuthorization a string", _with(fhirAuthorization="x"), "fhirAuthorization must be an object"),
    ("prefetch a list", _with(prefetch=[BUNDLE]), "prefetch must be a JSON object, got an array"),
    ("prefetch.bundle a string", _with(prefetch={"bundle": "x"}), "must be a FHIR Bundle"),
    ("bundle entry not a list", _with(prefetch={"bundle": {**BUNDLE, "entry": {}}}), "entry must be a list"),
    ("nested beyond the limit", _with(context__extra=_nested(MAX_DEPTH)), "nested too deeply"),
    ("nested beyond the parser", b"[" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize("body,reason", [(b, r) for _, b, r in CDS_BAD], ids=[n for n, _, _ in CDS_BAD])
def test_malformed_cds_requests_are_400_with_a_reason(knowledge: Graph, project: Project, body: bytes,
                                                      reason: str) -> None:
    c = client(knowledge, project, max_body=1024 * 1024)
    resp = c.post(CDS, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and reason in resp.text, resp.text
    assert "Traceback" not in resp.text


#: CDS Hooks 2.0 (CDS Service Response, HTTP Status Codes): 412 when the service cannot get the patient's data,
#: neither from prefetch nor from fhirServer (tests/test_cds_fhir_server.py fetches it from a FHIR server)
CDS_412 = [
    ("prefetch missing", _with(prefetch=...), "no fhirServer with fhirAuthorization"),
    ("bundle without Patient", _with(prefetch={"bundle": {**BUNDLE, "entry": []}}), "no Patient resource"),
]


@pytest.mark.parametrize("body,reason", [(b, r) for _, b, r in CDS_412], ids=[n for n, _, _ in CDS_412])
def test_cds_requests_without_the_patients_data_are_412(knowledge: Graph, project: Project, body: bytes,
                                                        reason: str) -> None:
    resp = client(knowledge, project).post(CDS, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 412 and reason in resp.text, resp.text


def test_several_defects_are_named_together(knowledge: Graph, project: Project) -> None:
    resp = client(knowledge, project).post(CDS, json={"hook": "patient-view", "context": [], "prefetch": []})
    assert resp.status_code == 400
    assert resp.text.count(";") >= 2 and "missing hookInstance" in resp.text and "got an array" in resp.text


# -- pools -------------------------------------------------------------------------------------------------------

def test_a_pool_runs_few_queues_few_and_refuses_the_rest() -> None:
    release = threading.Event()

    def hold(tag: str) -> str:
        release.wait(10)
        return tag

    async def scenario() -> list[object]:
        pool = Pool("queries", workers=1, queue=2, wait=0.3)
        out: list[object] = [None] * 5

        async def call(i: int) -> None:
            try:
                out[i] = await pool.run(hold, f"r{i}")
            except Busy as exc:
                out[i] = exc

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(call, i)
                await anyio.sleep(0.01)
            assert pool.admitted == 3
            await anyio.sleep(0.6)  # the two waiting give up after 0.3 s; r0 still holds the only slot
            release.set()
        out.append(await pool.run(hold, "after"))
        return out

    out = anyio.run(scenario)
    assert out[0] == "r0" and out[5] == "after"
    assert all(isinstance(e, Busy) and "no queries slot came free within 0.3 s" in str(e) for e in out[1:3])
    assert all(isinstance(e, Busy) and "1 queries running and 2 waiting" in str(e) and e.retry_after == 1
               for e in out[3:5])


# -- command-line options ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--token", "two words"], "--token: a bearer token is"),
    (["--token", ""], "--token: a bearer token is"),
    (["--cors-origin", "https://a.example/path"], "is not an origin"),
    (["--max-body", "lots"], "not a size"),
    (["--max-body", "0"], "at least 1 byte"),
    (["--query-queue", "-1"], "is negative"),
])
def test_bad_serve_options_are_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse usage errors exit by themselves
        code = main(["serve", "--port", "1", *argv])
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err, err


def test_a_bad_token_in_the_environment_is_exit_2(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUIDELINE_KG_TOKEN", "has space")
    assert main(["serve", "--port", "1"]) == 2
    assert "GUIDELINE_KG_TOKEN: a bearer token is" in capsys.readouterr().err


# -- a real server on loopback -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`guideline-kg serve` (no cases) with a 2 s time limit, 8 waiting queries at most, a 64 KiB body limit and a
    token from the environment."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    yield from serve_running(["serve", "--timeout", "2", "--query-queue", "8", "--max-body", "64K"], log,
                             env={**os.environ, "GUIDELINE_KG_TOKEN": TOKEN})


def _raw(url: str, request: bytes) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    return sock


@pytest.mark.slow
def test_an_announced_huge_body_is_refused_before_it_is_sent(server: str) -> None:
    sock = _raw(server, b"POST /sparql HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nContent-Type: application/sparql-query\r\nContent-Length: 1000000000\r\n\r\nASK {")
    received = b""
    with sock:  # read until the server closes: head and body may come in separate packets
        while chunk := sock.recv(4096):
            received += chunk
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 413") and "announces 1000000000 bytes" in answer
    assert "connection: close" in answer.lower()


@pytest.mark.slow
def test_an_endless_body_is_cut_off(server: str) -> None:
    """A chunked body that never ends: the server stops reading after the limit (64 KiB) and closes; what the
    client manages to push is bounded by the socket buffers, far below what it would send."""
    sock = _raw(server, b"POST /sparql HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nContent-Type: application/sparql-query\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    sent, answer, cut = 0, b"", False
    start = time.perf_counter()
    with sock:
        try:
            while sent < 256 * 2**20:
                if select.select([sock], [], [], 0)[0]:
                    answer = sock.recv(4096)
                    break
                sock.sendall(chunk)
                sent += 0x10000
        except OSError:  # reset by the server: it stopped reading
            cut = True
    assert cut or answer.startswith(b"HTTP/1.1 413"), answer
    assert sent < 32 * 2**20 and time.perf_counter() - start < 10
    assert httpx.get(server + "/health", timeout=5).status_code == 200


@pytest.mark.slow
def test_guards_on_the_real_server(server: str) -> None:
    assert httpx.get(server + "/health", headers={"Host": "rebound.example"}).status_code == 400
    assert httpx.get(server + "/queries").status_code == 401
    assert httpx.get(server + "/queries", headers=AUTH).status_code == 200
    resp = httpx.post(server + CDS, content=b'{"hook": "patient-view", "context": "p1"}', headers=AUTH)
    assert resp.status_code == 400 and "context must be a JSON object, got a string" in resp.text


POLL = r"""
import json, sys, time, httpx
url, seconds, auth = sys.argv[1], float(sys.argv[2]), {"Authorization": "Bearer " + sys.argv[3]}
out = {"health": [], "other": []}
with httpx.Client(timeout=10) as c:
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        t = time.perf_counter()
        r = c.get(url + "/health")
        out["health"].append([time.perf_counter() - t, r.status_code])
        if i % 10 == 0:  # a page and the CDS discovery now and then
            for path in ("/", "/cds-services"):
                t = time.perf_counter()
                r = c.get(url + path, headers=auth)
                out["other"].append([time.perf_counter() - t, r.status_code])
        time.sleep(0.02)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_slow_queries_never_starve_health(server: str) -> None:
    """100 slow queries at once: one runs, 8 wait (each at most 2 s), the rest get 503 + Retry-After at once;
    /health, the page and CDS discovery (polled from another process, so the load's GIL is not measured) keep
    answering in well under a second."""
    poller = subprocess.Popen([sys.executable, "-c", POLL, server, "9", TOKEN], stdout=subprocess.PIPE)
    time.sleep(1.5)  # the poller's own start-up

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, headers=AUTH, limits=httpx.Limits(max_connections=200)) as c:
            return await asyncio.gather(*(c.get(server + "/sparql", params={"query": f"{SLOW} # {i}"})
                                          for i in range(100)))

    start = time.perf_counter()
    answers = asyncio.run(flood())
    elapsed = time.perf_counter() - start
    polled = json.loads(poller.communicate(timeout=60)[0])
    health = [t for t, status in polled["health"] if status == 200]
    refused = [r for r in answers if r.status_code == 503 and r.headers.get("retry-after") == "2"]
    timed_out = [r for r in answers if r.status_code == 503 and "time limit (2 s)" in r.text]
    print(f"100 slow queries in {elapsed:.1f} s: {len(refused)} refused (busy), {len(timed_out)} stopped at the "
          f"time limit; /health {len(health)} times, median {statistics.median(health) * 1000:.0f} ms, "
          f"max {max(health) * 1000:.0f} ms; page/CDS max {max(t for t, _ in polled['other']) * 1000:.0f} ms")
    assert len(refused) + len(timed_out) + sum(r.status_code == 200 for r in answers) == 100
    assert len(refused) >= 90  # 1 running + 8 waiting at most
    assert elapsed < 30
    assert len(health) == len(polled["health"]) and len(health) > 20
    assert max(health) < 1.0 and statistics.median(health) < 0.25
    assert all(status == 200 for _, status in polled["other"]) and max(t for t, _ in polled["other"]) < 1.0
    assert httpx.get(server + "/sparql", params={"query": "ASK { }"}, headers=AUTH, timeout=30).status_code == 200
