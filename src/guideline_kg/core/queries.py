"""The named SPARQL files (the generic queries/ and a guideline package's competency questions): loading and
their one-line purpose."""

from __future__ import annotations

from collections.abc import Sequence
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


def _folders(queries_dir: Path | Sequence[Path]) -> list[Path]:
    return [queries_dir] if isinstance(queries_dir, Path) else list(queries_dir)


def load_query(queries_dir: Path | Sequence[Path], name: str) -> NamedQuery:
    """The query ``name`` (file stem, or a path to an .rq file), looked for in ``queries_dir`` (one folder, or
    several searched in order: the first holding ``<name>.rq`` at its top, else anywhere in its tree)."""
    path = Path(name)
    folders = _folders(queries_dir)
    if path.suffix != ".rq" or not path.exists():
        if path.is_absolute() or "/" in name or "\\" in name or name in ("", ".", ".."):
            raise InputError(f"no query named {name!r}: give a query's name, or the path of an .rq file")
        found = [f / f"{name}.rq" for f in folders if (f / f"{name}.rq").is_file()]
        found += [p for f in folders if f.is_dir() for p in sorted(f.rglob(f"{name}.rq"))]
        if not found:
            raise InputError(f"no query named {name!r} in {', '.join(str(f) for f in folders)}")
        path = found[0]
    text = path.read_text(encoding="utf-8")
    return NamedQuery(path.stem, path, _purpose(text), text)


def list_queries(queries_dir: Path | Sequence[Path]) -> list[NamedQuery]:
    """Every query of the folder tree(s), folder by folder, each sorted by path."""
    return [load_query(queries_dir, str(p))
            for f in _folders(queries_dir) if f.is_dir() for p in sorted(f.rglob("*.rq"))]
