"""One error hierarchy; every error says what is wrong and where, and carries its exit code."""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "CheckFailed", "GuidelineKGError", "InputError", "printable"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


def printable(text: str) -> str:
    """``text`` with what cannot be written as UTF-8 shown as escapes: the bytes of a file name that is not UTF-8
    (Python keeps them as lone surrogates, U+DC80..U+DCFF) as ``\\xff``, any other lone surrogate as ``\\ud800``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


class GuidelineKGError(Exception):
    """Base class of all errors the command line turns into a message and an exit code."""

    exit_code: int = EXIT_ERROR


class InputError(GuidelineKGError):
    """An input cannot be read: missing file, malformed RDF or JSON, unknown term (exit 2)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        self.path, self.line, self.column = path, line, column
        where = printable(path or "")
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(printable(f"{where}: {message}" if where else message))


class CheckFailed(GuidelineKGError):
    """A check ran and found a defect: inconsistency, unsatisfiable class, violation (exit 1)."""

    exit_code = 1
