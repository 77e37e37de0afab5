"""Property-based fuzzing of the case readers (issue 13, item 7; docs/security.md).

Hypothesis generates inputs for every reader a patient case can come through: Turtle, JSON-LD, FHIR R4 Bundle JSON
(files), and FHIR NDJSON (a cohort file). Each input is run through the command line in-process
(``cli.main.main``): ``recommend`` (every example), ``validate`` (a few: on a readable case it also checks the
guideline, which takes seconds) and ``cohort evaluate`` (NDJSON). Whatever the input, the command must end with
exit 0, 1 or 2, within a time bound, with no traceback, no "internal error" (a bug mapped to exit 2 is still a bug),
and no library noise on stderr (rdflib's "Failed to convert", "does not look like a valid URI").

Inputs are mutations of the project's own example cases (so that many get past the parser and reach the mapping,
the shapes and the derivation) and free generated text and JSON; all small. Examples are derandomised (the same
run in CI every time) and not stored. ``GUIDELINE_KG_FUZZ_EXAMPLES=200`` runs more examples per reader, and
``GUIDELINE_KG_FUZZ_RANDOM=1`` other ones each run, for a deeper search than CI's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import REPO
from guideline_kg.cli.main import main

CASES = REPO / "guidelines" / "plbp" / "cases"
TURTLE = (CASES / "c01-first-visit.ttl").read_text(encoding="utf-8")
JSONLD = json.loads((CASES / "c17-routine-repeat-imaging.jsonld").read_text(encoding="utf-8"))
FHIR = json.loads((CASES / "fhir-c04-urgent-deficit.fhir.json").read_text(encoding="utf-8"))
#: Seconds one command may take on one small input (the machine is shared; a hang takes far longer); `validate`
#: also checks the guideline itself (about 10 s alone, 30 s on a loaded machine).
TIME_BOUND = {"validate": 120}
DEFAULT_TIME_BOUND = 30
#: What must never be on stderr.
NOISE = ("Traceback", "internal error", "Failed to convert", "does not look like a valid URI", "Error in sys.")

pytestmark = pytest.mark.slow  # about 10 s each; `make test` (CI) runs them, `make test-fast` does not

EXAMPLES = int(os.environ.get("GUIDELINE_KG_FUZZ_EXAMPLES", "15"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=os.environ.get("GUIDELINE_KG_FUZZ_RANDOM") != "1",
                database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def cli(*argv: object) -> tuple[int, str, str]:
    """Run the command line in-process; fail on a bad exit code, a traceback or noise, or a slow run."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    took = time.monotonic() - started
    text = err.getvalue()
    assert code in (0, 1, 2), (code, text[-2000:])
    assert not any(n in text for n in NOISE), text[-2000:]
    assert took < TIME_BOUND.get(str(argv[0]), DEFAULT_TIME_BOUND), f"{argv[0]} took {took:.1f} s"
    return code, out.getvalue(), text


# ---- strategies ---------------------------------------------------------------------------------------------------

#: Fragments a careless or hostile author might write into RDF.
TOKENS = ['"abc"^^xsd:integer', '"yesterday"^^xsd:date', '"-5"^^xsd:decimal', "<a b>", "<file:///etc/passwd>",
          "<http://127.0.0.1:1/x>", "_:b0", "[]", "(", ")", "[", "]", ";", ".", ",", '"""', '"', "'", "@prefix",
          "@base <http://127.0.0.1:1/> .", "a", "gk:Patient", "gk:ageYears", "gk:painScore", "true", "1e999",
          "\\u0000", "\u0000", "\udcff", "\U0001F600", "é", "#", "\n", "<>", "^^", "@en", "PREFIX", "gk:", ":",
          "case:c01-first-visit", "<https://w3id.org/guideline-kg/case/x y>"]
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                         st.sampled_from(["Patient/p", "Patient/someone-else", "urn:uuid:x", "http://127.0.0.1:1/c",
                                          "2025-02-30", "yesterday", "Bundle", "Patient", "Observation",
                                          "Procedure", "final", "@context", "@id", "file:///etc/passwd",
                                          "a b<>", "\udcff"]))
JSON = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
        ["@context", "@id", "@type", "@value", "@graph", "@list", "@import", "@vocab", "resourceType", "id",
         "entry", "resource", "subject", "reference", "code", "coding", "system", "valueBoolean", "fullUrl"])),
        inner, max_size=4)), max_leaves=12)


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few cuts, insertions of TOKENS, and duplicated slices."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "cut", "dup", "replace"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS) | st.text(max_size=6)) + text[at:]
        elif kind == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif kind == "dup":
            text = text[:at] + text[at:at + draw(st.integers(1, 60))] * 2 + text[at:]
        else:
            end = at + draw(st.integers(1, 10))
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[end:]
    return text


@st.composite
def mutated_json(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` (a copy) with a few values somewhere inside replaced by generated JSON, or keys dropped."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        node, path = doc, []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            path.append((node, key))
            node = node[key]
        if not path:
            continue
        parent, key = path[-1]
        if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = draw(JSON)
    return doc


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")  # lone surrogates become bytes that are not UTF-8
    path.write_bytes(data)
    return path


# ---- the readers --------------------------------------------------------------------------------------------------

@FUZZ
@given(text=mutated_text(TURTLE) | st.text(max_size=200))
def test_turtle_never_gives_a_traceback(work: Path, text: str) -> None:
    cli("recommend", write(work / "case.ttl", text))


@FUZZ
@given(doc=mutated_json(JSONLD) | JSON)
def test_json_ld_never_gives_a_traceback(work: Path, doc: Any) -> None:
    cli("recommend", write(work / "case.jsonld", json.dumps(doc)))


@FUZZ
@given(doc=mutated_json(FHIR) | st.fixed_dictionaries({"resourceType": st.just("Bundle"), "entry": st.lists(
    st.fixed_dictionaries({"resource": st.dictionaries(st.sampled_from(
        ["resourceType", "id", "subject", "code", "status", "valueBoolean", "effectiveDateTime"]), JSON,
        max_size=5)}), max_size=4)}))
def test_fhir_bundle_never_gives_a_traceback(work: Path, doc: Any) -> None:
    cli("recommend", write(work / "case.fhir.json", json.dumps(doc)))


@FUZZ
@given(raw=st.binary(max_size=120) | st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
       name=st.sampled_from(["case.ttl", "case.jsonld", "case.fhir.json", "case.nt", "case.rdf"]))
def test_bytes_in_every_case_format_never_give_a_traceback(work: Path, raw: bytes, name: str) -> None:
    cli("recommend", write(work / name, raw))


@pytest.fixture(scope="module")
def cohort_lines(work: Path) -> list[bytes]:
    """Two NDJSON records of a generated cohort (valid FHIR Bundles)."""
    path = work / "seed.ndjson"
    code, _, _ = cli("cohort", "generate", "--n", "2", "--seed", "5", "--format", "fhir-ndjson", "--out", path)
    assert code == 0
    return path.read_bytes().splitlines()


@settings(FUZZ, max_examples=max(1, EXAMPLES * 4 // 5))
@given(data=st.data())
def test_ndjson_cohort_never_gives_a_traceback(work: Path, cohort_lines: list[bytes], data: st.DataObject) -> None:
    good = st.sampled_from(cohort_lines)
    mutated = st.sampled_from(cohort_lines).flatmap(lambda line: mutated_json(json.loads(line))).map(
        lambda d: json.dumps(d).encode())
    line = good | mutated | JSON.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=40).filter(
        lambda b: b"\n" not in b)
    lines = data.draw(st.lists(line, min_size=1, max_size=4))
    code, out, err = cli("cohort", "evaluate", write(work / "cohort.ndjson", b"\n".join(lines) + b"\n"))
    results = [json.loads(x) for x in out.splitlines()]
    # every record gives one line: a result, or a report (unreadable, invalid, or a second record of one id)
    assert len(results) == sum(1 for x in lines if x.strip()), err
    if code == 0:
        assert not any(r.get("invalid") for r in results)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 6))  # each checks the guideline too (~10 s)
@given(text=mutated_text(TURTLE), doc=mutated_json(FHIR))
def test_validate_never_gives_a_traceback(work: Path, text: str, doc: Any) -> None:
    cli("validate", "--no-reasoner", "--sample", "0", write(work / "v.ttl", text),
        write(work / "v.fhir.json", json.dumps(doc)))
