"""The command line: `build` and `statements` on the guideline, on a tiny second guideline, on a contradiction
and on bad input; exit codes 0 / 1 / 2 and no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MINI_HOME, REPO
from guideline_kg.cli.main import main
from guideline_kg.core.rdfio import read_graph

FIXTURES = REPO / "tests" / "fixtures"
WRITTEN = ["merged.ttl", "merged.nt", "merged.rdf", "merged.jsonld"]
KEYS = ["id", "source_lines", "text", "citations", "kind", "section", "action", "direction", "strength",
        "line_of_therapy"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line in-process: exit code, stdout, stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, Path]:
    """One `build --format json` of the guideline for the module (HermiT and the profile check take seconds)."""
    out, stdout = tmp_path_factory.mktemp("build"), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["build", "--out", str(out), "--format", "json"])
    return code, json.loads(stdout.getvalue()), out


@pytest.mark.hermit
@pytest.mark.slow
def test_build_passes_and_reports_consistency(built) -> None:
    code, summary, _ = built
    assert code == 0
    assert summary["consistent"] is True and summary["unsatisfiable_classes"] == []
    assert summary["owl2_dl_violations"] == []
    assert summary["source_lines"] == 41


@pytest.mark.hermit
@pytest.mark.slow
def test_build_writes_four_syntaxes_that_reparse_to_the_same_graph(built) -> None:
    _, summary, out = built
    assert sorted(Path(p).name for p in summary["written"]) == sorted(WRITTEN)
    for name in WRITTEN:
        assert len(read_graph(out / name)) == summary["triples"], name


@pytest.mark.hermit
@pytest.mark.slow
def test_build_on_a_contradiction_exits_1_names_it_and_writes_nothing(capsys, tmp_path: Path) -> None:
    code, _out, err = run(capsys, "--kg", FIXTURES / "inconsistent" / "kg", "build", "--out", tmp_path / "out")
    assert code == 1
    assert "INCONSISTENT" in err
    assert not (tmp_path / "out").exists()


def test_build_on_a_missing_folder_exits_2(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "--kg", tmp_path / "nowhere", "build", "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert f"{tmp_path / 'nowhere'}: no content files" in err


def test_build_on_malformed_turtle_exits_2_naming_file_line_and_column(capsys, tmp_path: Path) -> None:
    (tmp_path / "kg").mkdir()
    (tmp_path / "kg" / "bad.ttl").write_text("@prefix gk: <https://w3id.org/guideline-kg/ontology#> .\ngk:x gk:y .\n")
    code, out, err = run(capsys, "--kg", tmp_path / "kg", "build", "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert f"{tmp_path / 'kg' / 'bad.ttl'}:2:10: malformed turtle: objectList expected" in err


def test_statements_json_lists_every_content_line_exactly(capsys, expected_lines) -> None:
    code, out, _ = run(capsys, "statements", "--format", "json")
    records = json.loads(out)
    assert code == 0
    assert all(list(r) == KEYS for r in records)
    covered = {line: (r["text"], r["citations"]) for r in records for line in r["source_lines"]}
    assert covered == expected_lines


def test_statements_text_lists_each_statement_once(capsys) -> None:
    code, out, _ = run(capsys, "statements")
    records = json.loads(run(capsys, "statements", "--format", "json")[1])
    assert code == 0
    assert out.rstrip().endswith(f"{len(records)} statements")
    assert out.count("\nL") + 1 == len(records)


def test_statements_without_a_guideline_exits_2(capsys) -> None:
    code, out, err = run(capsys, "--kg", REPO / "ontology", "statements")
    assert code == 2 and out == ""
    assert "expected exactly one gk:Guideline" in err


@pytest.mark.hermit
@pytest.mark.slow
def test_second_guideline_builds_and_lists_through_the_same_code(capsys, tmp_path: Path, mini_expected_lines) -> None:
    code, out, err = run(capsys, "--kg", MINI_HOME, "build", "--out", tmp_path, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["guideline"] == "https://w3id.org/guideline-kg/test/mini/guideline"
    code, out, _ = run(capsys, "--kg", MINI_HOME, "statements", "--format", "json")
    records = json.loads(out)
    assert code == 0
    assert {line: (r["text"], r["citations"]) for r in records for line in r["source_lines"]} == mini_expected_lines


CONSOLE = Path(sys.executable).with_name("guideline-kg")


@pytest.mark.parametrize("argv", [
    ["--kg", "/nonexistent/kg", "statements"],
    ["--kg", str(MINI_HOME), "build", "--out", "/dev/null/out"],
    ["statements", "--format", "xml"],
], ids=["missing-folder", "unwritable-out", "bad-option"])
@pytest.mark.slow
def test_console_script_never_prints_a_traceback(argv: list[str], tmp_path: Path) -> None:
    if not CONSOLE.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run([str(CONSOLE), *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error" in proc.stderr
