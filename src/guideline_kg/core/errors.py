"""One error hierarchy; every error says what is wrong and where, and carries its exit code."""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "CheckFailed", "GuidelineKGError", "InputError"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


class GuidelineKGError(Exception):
    """Base class of all errors the command line turns into a message and an exit code."""

    exit_code: int = EXIT_ERROR


class InputError(GuidelineKGError):
    """An input cannot be read: missing file, malformed RDF or JSON, unknown term (exit 2)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        self.path, self.line, self.column = path, line, column
        where = path or ""
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: {message}" if where else message)


class CheckFailed(GuidelineKGError):
    """A check ran and found a defect: inconsistency, unsatisfiable class, violation (exit 1)."""

    exit_code = 1
