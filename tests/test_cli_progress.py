"""Long runs show a progress bar on a terminal (tqdm) and finish as they do in a pipe."""

from __future__ import annotations

import sys
from pathlib import Path

from guideline_kg.cli.main import main


def test_cohort_generate_and_evaluate_on_a_terminal(tmp_path: Path, monkeypatch, capsys) -> None:
    cohort, out = tmp_path / "cohort.ttl", tmp_path / "results.jsonl"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as if run in a terminal: the bar is drawn
    assert main(["cohort", "generate", "--n", "6", "--seed", "1", "--out", str(cohort)]) == 0
    code = main(["cohort", "evaluate", str(cohort), "--out", str(out)])
    err = capsys.readouterr().err
    assert code in (0, 1), err  # 1: the generated cohort may hold cases with planted defects
    assert "internal error" not in err and "TypeError" not in err
    assert len(out.read_text().splitlines()) == 6
