"""A finding of a check (shape, consistency analysis, algorithm check), in one form for text, JSON and RDF."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "SEVERITIES", "Finding", "severity_rank"]

#: The kinds a finding can have (the `validate --format json` contract).
KINDS = ("shape", "contradiction", "repetition", "content-gap", "unsupported", "dangling-reference",
         "unreachable", "case-conflict", "definition", "population")
#: Severities, most severe first (SHACL's sh:Violation, sh:Warning, sh:Info).
SEVERITIES = ("Violation", "Warning", "Info")


def severity_rank(severity: str) -> int:
    """0 for the most severe; used to sort findings most severe first."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True)
class Finding:
    """One finding: its kind, severity, the statements' source lines, the focus node and a message."""

    kind: str
    severity: str
    message: str
    focus: str | None = None
    source_lines: tuple[int, ...] = field(default_factory=tuple)
    source: str | None = None  # the file or check that produced it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_json(self) -> dict[str, Any]:
        """The object of the `validate --format json` findings list."""
        return {"kind": self.kind, "severity": self.severity, "source_lines": sorted(self.source_lines),
                "focus": self.focus, "message": self.message}
