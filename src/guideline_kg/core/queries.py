"""The named SPARQL files of queries/: loading, their one-line purpose, and running them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guideline_kg.core.errors import InputError

__all__ = ["NamedQuery", "list_queries", "load_query"]


@dataclass(frozen=True)
class NamedQuery:
    """A query file: its name (the file stem), purpose (first comment line) and text."""

    name: str
    path: Path
    purpose: str
    text: str

    @property
    def role(self) -> str:
        """``violation``, ``warning`` or ``report``, from the file name (ODK convention)."""
        for role in ("violation", "warning"):
            if self.name.endswith("-" + role):
                return role
        return "report"


def _purpose(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line:
            break
    return ""


def load_query(queries_dir: Path, name: str) -> NamedQuery:
    """The query ``name`` (file stem, or a path to an .rq file)."""
    path = Path(name)
    if path.suffix != ".rq" or not path.exists():
        path = queries_dir / f"{name}.rq"
        if not path.exists():
            path = next(iter(sorted(queries_dir.rglob(f"{name}.rq"))), path)
    if not path.exists():
        raise InputError(f"no query named {name!r} in {queries_dir}")
    text = path.read_text(encoding="utf-8")
    return NamedQuery(path.stem, path, _purpose(text), text)


def list_queries(queries_dir: Path) -> list[NamedQuery]:
    """Every query of the folder tree, sorted by name."""
    return [load_query(queries_dir, str(p)) for p in sorted(queries_dir.rglob("*.rq"))]
