"""Run every benchmark of this folder in turn (each prints its own table). Extra arguments go to bench_cohort."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n## {script.name}", flush=True)
        args = sys.argv[1:] if script.name == "bench_cohort.py" else []
        failed += subprocess.run([sys.executable, str(script), *args]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
