"""Where a guideline project's data lives: ontology/, shapes/, queries/ and the guideline package (default guidelines/plbp/)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Project", "default_home"]


def default_home() -> Path:
    """The project root: $GUIDELINE_KG_HOME, else the checkout this package was installed from."""
    env = os.environ.get("GUIDELINE_KG_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Project:
    """The data folders of one guideline; every command reads its knowledge from here, none from code."""

    home: Path
    ontology_dir: Path
    kg_dir: Path
    shapes_dir: Path
    queries_dir: Path
    cases_dir: Path

    @classmethod
    def at(cls, home: Path | str | None = None, *, ontology: Path | str | None = None,
           kg: Path | str | None = None, shapes: Path | str | None = None,
           queries: Path | str | None = None) -> "Project":
        """The project rooted at ``home`` (default: :func:`default_home`), with optional folder overrides."""
        root = Path(home).resolve() if home else default_home()
        kg_dir = Path(kg).resolve() if kg else root / "guidelines" / "plbp"
        return cls(
            home=root,
            ontology_dir=Path(ontology).resolve() if ontology else root / "ontology",
            kg_dir=kg_dir,
            shapes_dir=Path(shapes).resolve() if shapes else root / "shapes",
            queries_dir=Path(queries).resolve() if queries else root / "queries",
            cases_dir=kg_dir / "cases",
        )

    def knowledge_files(self) -> list[Path]:
        """The ontology and content files, in a stable order (cases excluded)."""
        files = sorted(self.ontology_dir.glob("*.ttl"))
        files += sorted(p for p in self.kg_dir.glob("*.ttl"))
        return files
