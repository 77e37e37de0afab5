"""Where a guideline project's data lives: the generic ontology/, shapes/, queries/ and one guideline package.

A guideline package is a folder (by default the one package under ``guidelines/``) whose manifest,
``guideline.toml``, names its parts by relative path: content, patient vocabulary, case shapes, competency
questions, algorithm, FHIR mappings, JSON-LD context, cohort profile, example cases and the source document (the
format: ``docs/guideline-package.md``). A folder without a manifest is read by the conventions of earlier versions
(every ``*.ttl`` is content, ``algorithm.ttl``, ``context.jsonld``, ``cohort-profile.json``, ``mappings/``,
``cases/``).
"""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline_kg.core.errors import InputError
from guideline_kg.core.namespaces import GENERIC_PREFIXES, declare_namespace

__all__ = ["MANIFEST_FILE", "PARTS", "Manifest", "PartSpec", "Project", "default_home", "default_package",
           "read_manifest"]

#: The manifest's file name, at the root of a guideline package.
MANIFEST_FILE = "guideline.toml"


@dataclass(frozen=True)
class PartSpec:
    """One key of the manifest's ``[parts]`` table: what it names and whether the package must have it."""

    kind: str  # "file", "files" (a list of files) or "folder"
    required: bool
    what: str


#: Every part a guideline package may name, in the order the documentation lists them.
PARTS: dict[str, PartSpec] = {
    "content": PartSpec("files", True, "Turtle files of the guideline's content (statements with provenance, "
                                       "definitions, populations, topics, terminology)"),
    "vocabulary": PartSpec("files", False, "Turtle files of the patient/case vocabulary of this guideline"),
    "algorithm": PartSpec("file", False, "Turtle file of the treatment algorithm (gk:Transition edges)"),
    "fhir_cpg_mapping": PartSpec("file", False, "Turtle file of the FHIR CPG (PlanDefinition) mapping"),
    "case_shapes": PartSpec("files", False, "SHACL files that patient cases of this guideline must satisfy"),
    "competency_questions": PartSpec("folder", False, "folder of competency questions (*.rq with *.expected.tsv)"),
    "fhir_case_mapping": PartSpec("file", False, "JSON rules that map FHIR R4 Bundles to cases and back"),
    "code_mappings": PartSpec("file", False, "SSSOM TSV of code mappings used by the FHIR case mapping"),
    "jsonld_context": PartSpec("file", False, "JSON-LD context for `export --format jsonld`"),
    "cohort_profile": PartSpec("file", False, "JSON profile that drives `cohort generate`"),
    "cases": PartSpec("folder", False, "folder of example cases with their *.expected.json results"),
    "source": PartSpec("file", False, "the guideline's source document, whose line numbers anchor provenance"),
    "terminology_codes": PartSpec("file", False, "TSV of the codes the guideline's terminology uses"),
}
#: Keys of the manifest's ``[guideline]`` table.
GUIDELINE_KEYS = {"id": "short name of the guideline", "title": "its title", "prefix": "the prefix of its namespace",
                  "namespace": "the IRI base of its content"}
#: Parts that Turtle knowledge is merged from, in this order after the ontology.
KNOWLEDGE_PARTS = ("vocabulary", "content", "algorithm", "fhir_cpg_mapping")
#: Where a package without a manifest keeps its single-file and folder parts (the earlier conventions).
CONVENTIONS = {"algorithm": "algorithm.ttl", "fhir_cpg_mapping": "fhir-cpg-mapping.ttl",
               "fhir_case_mapping": "mappings/fhir-case-mapping.json", "code_mappings": "mappings/codes.sssom.tsv",
               "jsonld_context": "context.jsonld", "cohort_profile": "cohort-profile.json", "cases": "cases",
               "source": "source/guideline.txt"}


def default_package(home: Path) -> Path:
    """The guideline package of ``home`` when none is named: the one folder under ``home/guidelines/`` (or, if
    there are several, the one with a manifest); ``home/guidelines`` itself when there is none; an InputError
    (exit 2) when several packages have a manifest."""
    root = home / "guidelines"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(folders) > 1:
        folders = [p for p in folders if (p / MANIFEST_FILE).is_file()]
    if len(folders) == 1:
        return folders[0]
    if not folders:  # commands that need content say so (no content files found)
        return root
    raise InputError(f"{len(folders)} guideline packages ({', '.join(p.name for p in folders)}): choose one with "
                     "--kg", path=str(root))


def default_home() -> Path:
    """The project root, the folder holding ``ontology/``, ``shapes/``, ``queries/`` and ``guidelines/``:
    $GUIDELINE_KG_HOME; else the data installed with the package (``guideline_kg/data/`` of a wheel, where
    pyproject.toml maps those folders as package data), found by importlib.resources; else the checkout that an
    editable install runs from (``src/guideline_kg`` inside it). Neither: an InputError (exit 2) saying so."""
    env = os.environ.get("GUIDELINE_KG_HOME")
    if env:
        return Path(env).resolve()
    package = Path(str(importlib.resources.files("guideline_kg")))
    installed, checkout = package / "data", package.parent.parent
    if (installed / "ontology").is_dir():
        return installed.resolve()
    if (checkout / "pyproject.toml").is_file() and (checkout / "ontology").is_dir():
        return checkout.resolve()
    raise InputError("no data folders (ontology/, shapes/, queries/, guidelines/) installed with the package or in "
                     "a checkout around it; set GUIDELINE_KG_HOME to a guideline-kg checkout", path=str(package))


@dataclass(frozen=True)
class Manifest:
    """A guideline package's parts, resolved to absolute paths (``None`` for a part the package does not have)."""

    package: Path
    #: The manifest file, or None when the package has none (conventions apply).
    path: Path | None
    guideline: dict[str, str] = field(default_factory=dict)
    parts: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """What a message names as the origin of the parts: the manifest file, or the package folder."""
        return str(self.path) if self.path else str(self.package)


def _fail(path: Path, message: str) -> InputError:
    return InputError(message, path=str(path))


def read_manifest(package: Path) -> Manifest:
    """The manifest of the package at ``package``, validated (unknown keys, wrong types, missing files: exit 2);
    a package without ``guideline.toml`` gets the conventional parts of its folder."""
    path = package / MANIFEST_FILE
    if not path.is_file():
        return _conventional(package)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"not valid TOML: {err}", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the manifest: {err}", path=str(path)) from None
    for key in data:
        if key not in ("guideline", "parts"):
            raise _fail(path, f"unknown table or key {key!r} (a manifest has [guideline] and [parts])")
    guideline = _guideline_table(path, data.get("guideline", {}))
    raw = data.get("parts")
    if not isinstance(raw, dict):
        raise _fail(path, "the manifest needs a [parts] table (at least [parts] content)")
    parts: dict[str, list[Path]] = {}
    for key, value in raw.items():
        spec = PARTS.get(key)
        if spec is None:
            raise _fail(path, f"[parts] {key}: unknown part (known: {', '.join(PARTS)})")
        parts[key] = _resolve(path, package, key, spec, value)
    for key, spec in PARTS.items():
        if spec.required and not parts.get(key):
            raise _fail(path, f"[parts] {key} is required: {spec.what}")
    return Manifest(package, path, guideline, parts)


def _guideline_table(path: Path, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise _fail(path, "[guideline] must be a table")
    for key, value in table.items():
        if key not in GUIDELINE_KEYS:
            raise _fail(path, f"[guideline] {key}: unknown key (known: {', '.join(GUIDELINE_KEYS)})")
        if not isinstance(value, str) or not value:
            raise _fail(path, f"[guideline] {key}: must be a non-empty string")
    if ("prefix" in table) != ("namespace" in table):
        raise _fail(path, "[guideline] prefix and namespace go together: give both or neither")
    if table.get("prefix") in GENERIC_PREFIXES:
        reserved = table["prefix"]
        raise _fail(path, f"[guideline] prefix: {reserved!r} is reserved for {GENERIC_PREFIXES[reserved]}")
    ns = table.get("namespace", "")
    if ns and not (ns.startswith(("https://", "http://", "urn:")) and ns[-1] in "/#:"):
        raise _fail(path, f"[guideline] namespace: {ns!r} is not an IRI base ending in '/', '#' or ':'")
    return dict(table)


def _resolve(path: Path, package: Path, key: str, spec: PartSpec, value: Any) -> list[Path]:
    if spec.kind == "files":
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise _fail(path, f"[parts] {key}: must be a relative path or a list of them")
    elif isinstance(value, str):
        values = [value]
    else:
        raise _fail(path, f"[parts] {key}: must be one relative path (a string)")
    out = []
    for rel in values:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise _fail(path, f"[parts] {key}: {rel!r} must be a path inside the package, relative to it")
        target = package / rel
        if spec.kind == "folder" and not target.is_dir():
            raise _fail(path, f"[parts] {key}: no folder {rel!r} in the package")
        if spec.kind != "folder" and not target.is_file():
            raise _fail(path, f"[parts] {key}: no file {rel!r} in the package")
        out.append(target)
    return out


def _conventional(package: Path) -> Manifest:
    parts: dict[str, list[Path]] = {"content": sorted(package.glob("*.ttl"))}
    for key, rel in CONVENTIONS.items():
        target = package / rel
        if target.is_dir() if PARTS[key].kind == "folder" else target.is_file():
            parts[key] = [target]
    return Manifest(package, None, {}, parts)


@dataclass(frozen=True)
class Project:
    """The data folders of one guideline; every command reads its knowledge from here, none from code."""

    home: Path
    ontology_dir: Path
    #: The guideline package folder (named kg for the --kg option).
    kg_dir: Path
    shapes_dir: Path
    queries_dir: Path
    cases_dir: Path
    manifest: Manifest

    @classmethod
    def at(cls, home: Path | str | None = None, *, ontology: Path | str | None = None,
           kg: Path | str | None = None, shapes: Path | str | None = None,
           queries: Path | str | None = None) -> Project:
        """The project rooted at ``home`` (default: :func:`default_home`), with optional folder overrides;
        ``kg`` is a guideline package folder (default: :func:`default_package`). The package's manifest is read
        and validated here (exit 2)."""
        root = Path(home).resolve() if home else default_home()
        kg_dir = Path(kg).resolve() if kg else default_package(root)
        manifest = read_manifest(kg_dir) if kg_dir.is_dir() else Manifest(kg_dir, None, {}, {"content": []})
        cases = manifest.parts.get("cases")
        if "prefix" in manifest.guideline:
            declare_namespace(manifest.guideline["prefix"], manifest.guideline["namespace"])
        return cls(
            home=root,
            ontology_dir=Path(ontology).resolve() if ontology else root / "ontology",
            kg_dir=kg_dir,
            shapes_dir=Path(shapes).resolve() if shapes else root / "shapes",
            queries_dir=Path(queries).resolve() if queries else root / "queries",
            cases_dir=cases[0] if cases else kg_dir / "cases",
            manifest=manifest,
        )

    # ------------------------------------------------------------ the package's parts

    @property
    def package_dir(self) -> Path:
        """The guideline package folder."""
        return self.kg_dir

    def part(self, name: str) -> Path | None:
        """The path of a single-file or folder part (the first file of a list part), or None if absent."""
        if name not in PARTS:
            raise KeyError(name)
        found = self.manifest.parts.get(name)
        return found[0] if found else None

    def parts(self, name: str) -> list[Path]:
        """Every path of a part (empty when the package has none)."""
        if name not in PARTS:
            raise KeyError(name)
        return list(self.manifest.parts.get(name, []))

    def require(self, name: str, purpose: str) -> Path:
        """The path of a part that ``purpose`` (a command, in backquotes) needs; an InputError (exit 2) naming the
        package and the manifest key when the package has none."""
        found = self.part(name)
        if found is None:
            where = f"({MANIFEST_FILE} [parts] {name})" if self.manifest.path else \
                f"(it has no {MANIFEST_FILE}; add one with [parts] {name}, see docs/guideline-package.md)"
            raise InputError(f"the guideline package at {self.kg_dir} names no {name.replace('_', ' ')} {where}; "
                             f"{purpose} needs one")
        return found

    @property
    def namespace(self) -> tuple[str, str] | None:
        """The guideline's (prefix, IRI base) from the manifest, or None when it declares none."""
        g = self.manifest.guideline
        return (g["prefix"], g["namespace"]) if "prefix" in g else None

    def case_shape_files(self) -> list[Path]:
        """The package's case shapes (SHACL files)."""
        return self.parts("case_shapes")

    def query_folders(self) -> list[Path]:
        """Where named queries are found: the generic queries/, then the package's competency questions."""
        return [self.queries_dir, *self.parts("competency_questions")]

    def vocabulary_files(self) -> list[Path]:
        """The terms a case may use: the ontology and the package's patient vocabulary (no content)."""
        return sorted(self.ontology_dir.glob("*.ttl")) + self.parts("vocabulary")

    def knowledge_files(self) -> list[Path]:
        """The ontology and the package's Turtle parts (vocabulary, content, algorithm, CPG mapping), each once,
        in a stable order (cases excluded)."""
        files = sorted(self.ontology_dir.glob("*.ttl"))
        for name in KNOWLEDGE_PARTS:
            files += [p for p in self.parts(name) if p not in files]
        return files
