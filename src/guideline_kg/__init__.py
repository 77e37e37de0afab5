"""guideline-kg: a computable clinical guideline as an OWL 2 / SHACL / SPARQL knowledge graph."""

from guideline_kg.core.errors import CheckFailed, GuidelineKGError, InputError
from guideline_kg.core.project import Project
from guideline_kg.knowledge.graph import guideline_iri, load_knowledge

__all__ = ["CheckFailed", "GuidelineKGError", "InputError", "Project", "__version__", "guideline_iri", "load_knowledge"]
__version__ = "0.1.0"
