"""Files in and out, safely: JSON read with a nesting limit, outputs written atomically, inputs never written.

* :func:`read_input` / :func:`read_input_text` read a named input whole, within limits: only a regular file (a
  device such as ``/dev/zero``, a FIFO or a socket is refused without being opened, so it cannot hang or fill the
  memory), and at most :func:`max_input_size` bytes (``--max-input-size``, default 100 MB), checked before reading.
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
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from guideline_kg.core.errors import InputError

__all__ = ["DEFAULT_MAX_INPUT_SIZE", "OUTPUT_MODE", "TOO_DEEP", "atomic_output", "check_input_file", "load_json",
           "max_input_size", "overlapping_input", "parse_size", "read_input", "read_input_text",
           "set_max_input_size", "write_atomic"]

#: Permissions of every file the project writes (rw-r--r--).
OUTPUT_MODE = 0o644
#: The defect reported for a document nested beyond the parser's recursion limit.
TOO_DEEP = "nested too deeply (arrays or objects inside each other beyond the parser's limit)"


#: The largest input file read whole, in bytes, unless ``--max-input-size`` says otherwise (100 MB).
DEFAULT_MAX_INPUT_SIZE = 100_000_000
_limit = {"max_input_size": DEFAULT_MAX_INPUT_SIZE}
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """A size in bytes from ``100000``, ``100MB``, ``1.5G``, ``512KiB`` (K, M, G are powers of 1000; KiB, MiB,
    GiB powers of 1024); ValueError for anything else or a negative size. ``0`` means no limit."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if m is None or m[2].lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 100MB, 2G, 512KiB, or 0 for no limit)")
    return int(float(m[1]) * _UNITS[m[2].lower()])


def max_input_size() -> int:
    """The largest input file (bytes) the readers read whole; 0: no limit."""
    return _limit["max_input_size"]


def set_max_input_size(size: int) -> None:
    """Set the limit of :func:`max_input_size` for this process (the command line's ``--max-input-size``)."""
    if size < 0:
        raise ValueError("the input size limit must not be negative")
    _limit["max_input_size"] = size


def _mb(size: int) -> str:
    return f"{size:,} bytes" if size < 10**6 else f"{size / 10**6:,.1f} MB"


def check_input_file(path: Path | str) -> os.stat_result:
    """The ``stat`` of an input file, or an InputError (exit 2) before anything is opened: no such file, a
    folder, not a regular file (``/dev/zero``, a FIFO, a socket: endless or blocking), or larger than
    :func:`max_input_size`."""
    where = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError("no such file", path=where) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=where) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a folder, not a file", path=where)
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if (
            stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "a socket" if stat.S_ISSOCK(
            st.st_mode) else "not a regular file"
        raise InputError(f"is {kind}, not a regular file: refused without reading it (an input must be a file of "
                         "known size)", path=where)
    limit = max_input_size()
    if limit and st.st_size > limit:
        raise InputError(f"is {_mb(st.st_size)}, larger than the input size limit of {_mb(limit)} "
                         "(--max-input-size; for many cases use `cohort evaluate`, which streams)", path=where)
    return st


def read_input(path: Path | str) -> bytes:
    """The bytes of the input file ``path``, checked by :func:`check_input_file` before it is opened and never
    read beyond the size limit (a file that grows while it is read is refused too)."""
    check_input_file(path)
    limit = max_input_size()
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1) if limit else fh.read()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    if limit and len(data) > limit:
        raise InputError(f"is larger than the input size limit of {_mb(limit)} (--max-input-size)", path=str(path))
    return data


def read_input_text(path: Path | str) -> str:
    """The UTF-8 text of the input file ``path`` (see :func:`read_input`); InputError if it is not UTF-8."""
    data = read_input(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path), line=line) from None


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
