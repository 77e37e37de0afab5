"""Cohort evaluation on an external SPARQL 1.1 server (`cohort evaluate --store URL`): the JSON lines equal the
embedded run's, the server's default graph is emptied afterwards, and a store that already holds data is refused
untouched."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import free_port
from guideline_kg.cli.main import main
from guideline_kg.cohort.evaluate import CohortEvaluator
from guideline_kg.cohort.generate import generate, load_profile, write_cohort
from guideline_kg.store.stores import RemoteStore

N = 80


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory, project) -> dict[str, Path]:
    """The same small cohort (with planted defects) as Turtle and as FHIR NDJSON."""
    folder = tmp_path_factory.mktemp("cohort")
    profile = load_profile(project.kg_dir / "cohort-profile.json")
    profile.data = dict(profile.data, invalid=dict(profile["invalid"], rate=0.1))  # validation has work
    paths = {"turtle": folder / "c.ttl", "fhir-ndjson": folder / "c.ndjson"}
    for fmt, path in paths.items():
        with path.open("w") as f:
            write_cohort(generate(profile, N, seed=8), f, fmt)
    return paths


@pytest.fixture(scope="module")
def evaluator(knowledge, project) -> CohortEvaluator:
    return CohortEvaluator(knowledge, project)


def _count(url: str) -> int:
    rows = RemoteStore(url).select("SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }").rows
    return int(rows[0][0])


@pytest.mark.parametrize("fmt", ["turtle", "fhir-ndjson"])
@pytest.mark.slow
def test_remote_run_writes_the_same_lines_as_the_embedded_run(oxigraph_url, cohorts, evaluator, fmt) -> None:
    embedded, remote_out = io.StringIO(), io.StringIO()
    local = evaluator.run(cohorts[fmt], embedded, shard_size=30)
    remote = RemoteStore(oxigraph_url)
    try:
        summary = evaluator.run(cohorts[fmt], remote_out, shard_size=30, remote=remote)
    finally:
        remote.close()
    assert summary.shards == 3 and summary.cases == N
    assert summary.invalid and len(summary.invalid) == len(local.invalid)
    assert remote_out.getvalue().splitlines() == embedded.getvalue().splitlines()
    assert _count(oxigraph_url) == 0  # the last shard is cleared


@pytest.mark.slow
def test_cli_store_option_and_a_store_with_data_is_refused_untouched(oxigraph_url, cohorts, tmp_path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    code = main(["cohort", "evaluate", str(cohorts["turtle"]), "--store", oxigraph_url, "--out", str(out)])
    assert code == 1  # the cohort has invalid cases
    assert len(out.read_text().splitlines()) == N
    remote = RemoteStore(oxigraph_url)
    remote.send_ntriples(b"<urn:x:a> <urn:x:b> <urn:x:c> .\n")
    try:
        again = tmp_path / "again.jsonl"
        capsys.readouterr()
        assert main(["cohort", "evaluate", str(cohorts["turtle"]), "--store", oxigraph_url,
                     "--out", str(again)]) == 2
        assert "default graph is not empty" in capsys.readouterr().err
        assert not again.exists()
        assert _count(oxigraph_url) == 1
    finally:
        remote.clear_default()
        remote.close()


@pytest.mark.slow
def test_unreachable_store_exits_2(cohorts, tmp_path, capsys) -> None:
    port = free_port()
    assert main(["cohort", "evaluate", str(cohorts["turtle"]), "--store", f"http://127.0.0.1:{port}"]) == 2
    assert "cannot reach the SPARQL server" in capsys.readouterr().err
