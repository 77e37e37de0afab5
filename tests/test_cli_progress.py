"""Long runs show a progress bar on a terminal (tqdm) and finish as they do in a pipe: run in a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

from test_cohort_summary import MINI, write_controlled_cohort

CLI = str(Path(sys.executable).with_name("guideline-kg"))


def _run_on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run the command with stderr on a pseudo-terminal; its exit code and what the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    shown: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run([CLI, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                              check=False, timeout=300)
    finally:
        os.close(slave)
        reader.join(timeout=5)
        os.close(master)
    return done.returncode, b"".join(shown).decode("utf-8", "replace")


def test_cohort_generate_and_evaluate_in_a_pseudo_terminal(tmp_path: Path) -> None:
    cohort, out = tmp_path / "cohort.ttl", tmp_path / "results.jsonl"
    code, shown = _run_on_a_terminal(["cohort", "generate", "--n", "6", "--seed", "1", "--out", str(cohort)])
    assert code == 0, shown
    assert "case" in shown and "6/6" in shown, "a bar with the total is drawn on a terminal"
    code, shown = _run_on_a_terminal(["cohort", "evaluate", str(cohort), "--out", str(out)])
    assert code in (0, 1), shown  # 1: the generated cohort may hold cases with planted defects
    assert "internal error" not in shown and "Traceback" not in shown
    assert len(out.read_text().splitlines()) == 6


def test_cohort_evaluate_bar_has_a_total_and_an_eta_and_the_summary_reaches_the_terminal(tmp_path: Path) -> None:
    """The 14-case mini cohort of test_cohort_summary in shards of 4: the bar starts at 0/14 with the total
    counted before the run, moves with a time left ([elapsed<remaining]) and ends at 14/14; the summary (on
    stderr, since the JSON lines go to stdout) shows shares and the defects counted."""
    cohort = write_controlled_cohort(tmp_path)
    code, shown = _run_on_a_terminal(["--kg", str(MINI), "cohort", "evaluate", str(cohort), "--shard-size", "4",
                                      "--summary"])
    assert code == 1, shown  # three planted defects
    assert "Traceback" not in shown and "internal error" not in shown
    assert "0/14" in shown and "14/14" in shown
    assert re.search(r"\b([1-9]|1[0-3])/14 \[\d\d:\d\d<\d\d:\d\d", shown), "a partial bar with the time left"
    assert "8 in scope (72.7%)" in shown and "invalid cases by defect (3 cases" in shown
    assert "mini5-p0000001" not in shown  # counted by defect, not listed
