"""The merged and exported OWL loads as other tools load it: the OWL API 5 (Debian's libowlapi-java) with its default
settings, offline. Each file is one ontology (one header, the package's), imports nothing it does not hold, parses
with no triple left over, and is in the OWL 2 DL profile with nothing stripped. The package's own files load the
same way with the imports that its XML catalog (guidelines/plbp/catalog-v001.xml, the one Protégé reads) resolves.

A tiny Java main, src/guideline_kg/reasoning/java/StrictLoad.java, is compiled against /usr/share/java in the set-up.
Java runs with an HTTP(S) proxy on a closed local port, so an import that is not in the file fails at once instead
of being fetched (never a fetched URL)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rdflib import Graph
from rdflib.namespace import OWL, RDF

from guideline_kg.cli.main import main
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import load_knowledge
from guideline_kg.outputs.export import RDF_FORMATS, rdf_export

pytestmark = [pytest.mark.hermit, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "guideline_kg" / "reasoning" / "java" / "StrictLoad.java"
JARS = Path("/usr/share/java")
#: libowlapi-java and the libraries it depends on (Debian package names, unversioned jar links)
NEEDED = ["owlapi-distribution", "guava", "caffeine", "commons-rdf-api", "commons-io", "commons-codec",
          "atinject-jsr330-api", "jsr305", "slf4j-api", "slf4j-nop", "hppcrt", "xz", "jackson-core",
          "jackson-databind", "jackson-annotations", "jsonld-java", "httpclient", "httpclient-cache", "httpcore",
          "commons-logging"]
NO_NETWORK = [f"-D{scheme}.{key}" for scheme in ("http", "https") for key in ("proxyHost=127.0.0.1", "proxyPort=9")]
MINI = ROOT / "tests" / "fixtures" / "mini-guideline"
PLBP_ONTOLOGY = "https://w3id.org/guideline-kg/plbp"
PARSERS = {"turtle": "turtle", "ntriples": "nt", "rdfxml": "xml", "jsonld": "json-ld"}


@pytest.fixture(scope="module")
def loader(tmp_path_factory) -> list[str]:
    """The command that runs StrictLoad: compiled once per module against Debian's OWL API 5."""
    if not (JARS / "owlapi-distribution.jar").is_file() or shutil.which("javac") is None:
        pytest.fail("the strict load test needs Debian's libowlapi-java and a JDK: apt-get install -y "
                    "libowlapi-java default-jdk-headless (.ci/run does)")
    classpath = [str(JARS / f"{name}.jar") for name in NEEDED] + sorted(
        str(p) for p in JARS.glob("rdf4j-*.jar") if not p.stem.rsplit("-", 1)[-1][:1].isdigit())
    out = tmp_path_factory.mktemp("strict-load")
    done = subprocess.run(["javac", "-nowarn", "-cp", ":".join(classpath), "-d", str(out), str(SOURCE)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return ["java", *NO_NETWORK, "-cp", ":".join([*classpath, str(out)]), "StrictLoad"]


def _load(loader: list[str], path: Path, *mappings: str) -> tuple[int, dict[str, list[str]]]:
    """Exit code and the loader's report: key -> values (ontology, ontologies, closure, imports, unparsed, ...)."""
    done = subprocess.run([*loader, str(path), *mappings], capture_output=True, text=True, check=False, timeout=300)
    report: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        report.setdefault(key, []).append(value)
    assert done.returncode in (0, 1, 2), done.stderr[-2000:]
    return done.returncode, report


def _assert_one_closed_ontology(loader: list[str], path: Path, fmt: str, ontology: str) -> None:
    graph = Graph().parse(path, format=PARSERS[fmt])
    assert list(graph.subjects(RDF.type, OWL.Ontology)) == [graph.value(None, RDF.type, OWL.Ontology)]
    assert str(graph.value(None, RDF.type, OWL.Ontology)) == ontology
    assert list(graph.objects(None, OWL.imports)) == []
    code, report = _load(loader, path)
    assert "unloadable" not in report, report.get("unloadable")
    assert report["ontology"] == [ontology] and report["ontologies"] == ["1"] and report["closure"] == ["1"]
    assert "imports" not in report
    assert report["unparsed"] == ["0"], "every triple is read as OWL"
    assert report.get("violation", []) == [] and code == 0
    assert int(report["axioms"][0]) > 1000


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    assert main(["build", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("fmt", sorted(RDF_FORMATS))
def test_build_output_loads_strictly_as_one_ontology(loader, built: Path, fmt: str) -> None:
    _assert_one_closed_ontology(loader, built / f"merged{RDF_FORMATS[fmt][1]}", fmt, PLBP_ONTOLOGY)


@pytest.mark.parametrize("fmt", ["turtle", "rdfxml"])
def test_rdf_export_loads_strictly_as_one_ontology(loader, knowledge, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"export{RDF_FORMATS[fmt][1]}"
    path.write_text(rdf_export(knowledge, Project.at(), fmt), encoding="utf-8")
    _assert_one_closed_ontology(loader, path, fmt, PLBP_ONTOLOGY)


def test_the_second_guidelines_export_loads_strictly(loader, tmp_path: Path) -> None:
    project = Project.at(kg=MINI)
    path = tmp_path / "mini.ttl"
    path.write_text(rdf_export(load_knowledge(project), project, "turtle"), encoding="utf-8")
    _assert_one_closed_ontology(loader, path, "turtle", "https://w3id.org/guideline-kg/test/mini")


def test_the_raw_merge_with_its_imports_does_not_load_offline(loader, knowledge, tmp_path: Path) -> None:
    """The control: the package's files merged as they are (three headers, imports of w3id IRIs) fail, as the
    issue measured, without anything fetched."""
    path = tmp_path / "raw.ttl"
    knowledge.serialize(destination=path, format="turtle")
    code, report = _load(loader, path)
    assert code == 2 and "UnloadableImportException" in report["unloadable"][0]


def _catalog(path: Path) -> list[str]:
    """IRI=FILE for each <uri> of an OASIS XML catalog (relative to the catalog's folder), as Protégé reads it."""
    ns = "{urn:oasis:names:tc:entity:xmlns:xml:catalog}"
    return [f"{u.get('name')}={(path.parent / u.get('uri', '')).resolve()}"
            for u in ET.parse(path).getroot().iter(f"{ns}uri")]


def test_the_package_catalog_resolves_every_import_offline(loader) -> None:
    """guidelines/plbp/guideline.ttl, opened as Protégé opens it: its imports (the generic ontology, the package's
    vocabulary, which imports the generic ontology again) all come from the catalog's local files."""
    package = ROOT / "guidelines" / "plbp"
    code, report = _load(loader, package / "guideline.ttl", *_catalog(package / "catalog-v001.xml"))
    assert "unloadable" not in report, report.get("unloadable")
    assert report["ontology"] == [PLBP_ONTOLOGY]
    assert sorted(report["imports"]) == ["https://w3id.org/guideline-kg/ontology", PLBP_ONTOLOGY + "/vocabulary"]
    assert report["closure"] == ["3"] and report["ontologies"] == ["3"]
    assert code in (0, 1)  # one file of the package alone need not be in profile: the merge is (above)
