"""Files in and out, safely: JSON read with a nesting limit, outputs written atomically, inputs never written.

* :func:`load_json` parses JSON text; a document nested too deeply (which makes Python's parser recurse past its
  limit) is an :class:`InputError` naming the file, like any other malformed JSON.
* :func:`write_atomic` writes an output file through a temporary file in the same folder and ``os.replace``, so a
  reader never sees half a file and an interrupted run leaves the old file whole; the file gets mode 0644.
* :func:`overlapping_input` tells whether an output path is (or is inside, or contains) one of the inputs, so a
  command can refuse ``--out`` before it writes anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from guideline_kg.core.errors import InputError

__all__ = ["OUTPUT_MODE", "TOO_DEEP", "atomic_output", "load_json", "overlapping_input", "write_atomic"]

#: Permissions of every file the project writes (rw-r--r--).
OUTPUT_MODE = 0o644
#: The defect reported for a document nested beyond the parser's recursion limit.
TOO_DEEP = "nested too deeply (arrays or objects inside each other beyond the parser's limit)"


def load_json(text: str | bytes, path: Path | str | None = None) -> Any:
    """The JSON value of ``text``; InputError (exit 2) naming ``path``, line and column when malformed, and
    "nested too deeply" when the nesting exceeds the parser's recursion limit."""
    where = None if path is None else str(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", path=where, line=exc.lineno, column=exc.colno) from None
    except RecursionError:
        raise InputError(f"malformed JSON: {TOO_DEEP}", path=where) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=where) from None


def write_atomic(path: Path | str, data: str | bytes, mode: int = OUTPUT_MODE) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see :func:`atomic_output`). Returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with _atomic(path, mode, binary=True) as fh:
        fh.write(payload)
    return Path(path)


def atomic_output(path: Path | str, mode: int = OUTPUT_MODE) -> contextlib.AbstractContextManager[TextIO]:
    """A text handle (UTF-8) on a temporary file beside ``path``, flushed, given ``mode`` and renamed onto
    ``path`` only when the ``with`` block completes; on any failure the temporary file is removed and ``path``
    is untouched. Missing folders are created."""
    return _atomic(path, mode, binary=False)


@contextlib.contextmanager
def _atomic(path: Path | str, mode: int, *, binary: bool) -> Iterator[Any]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _resolved(path: Path | str) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def overlapping_input(out: Path | str, inputs: Iterable[Path | str]) -> Path | None:
    """The first input that ``out`` would write over: the same file or folder (symbolic links followed), or a
    path inside an input folder. None when ``out`` is safe to write."""
    target = _resolved(out)
    for given in inputs:
        src = _resolved(given)
        if target == src or (src.is_dir() and target.is_relative_to(src)):
            return Path(given)
    return None
