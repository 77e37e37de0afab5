"""guideline-kg: a computable clinical guideline as an OWL 2 / SHACL / SPARQL knowledge graph."""

from .errors import CheckFailed, GuidelineKGError, InputError
from .knowledge import guideline_iri, load_knowledge
from .project import Project

__all__ = ["CheckFailed", "GuidelineKGError", "InputError", "Project", "guideline_iri", "load_knowledge",
           "__version__"]
__version__ = "0.1.0"
