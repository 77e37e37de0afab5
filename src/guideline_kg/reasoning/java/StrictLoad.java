// Load an OWL file with the OWL API 5 and its default settings (a missing import is an error, not skipped), as
// another tool would; report the ontology, its imports, the triples the parser could not read as OWL, and the
// OWL 2 DL profile violations of its imports closure. Used by tests/test_strict_export.py with Debian's
// libowlapi-java; IRI=FILE arguments map an import to a local file (what an XML catalog does in Protege).
// Usage: java -cp OWLAPI-JARS:DIR StrictLoad FILE [IRI=FILE ...]
// Exit 0 loaded and in profile, 1 loaded but not in the OWL 2 DL profile, 2 not loadable.
import java.io.File;
import org.semanticweb.owlapi.apibinding.OWLManager;
import org.semanticweb.owlapi.formats.RDFJsonLDDocumentFormat;
import org.semanticweb.owlapi.io.FileDocumentSource;
import org.semanticweb.owlapi.model.IRI;
import org.semanticweb.owlapi.model.OWLDocumentFormat;
import org.semanticweb.owlapi.model.OWLImportsDeclaration;
import org.semanticweb.owlapi.model.OWLOntology;
import org.semanticweb.owlapi.model.OWLOntologyCreationException;
import org.semanticweb.owlapi.model.OWLOntologyManager;
import org.semanticweb.owlapi.profiles.OWL2DLProfile;
import org.semanticweb.owlapi.profiles.OWLProfileReport;
import org.semanticweb.owlapi.profiles.OWLProfileViolation;
import org.semanticweb.owlapi.util.SimpleIRIMapper;

public class StrictLoad {
    public static void main(String[] args) {
        OWLOntologyManager manager = OWLManager.createOWLOntologyManager();
        for (int i = 1; i < args.length; i++) {
            String[] pair = args[i].split("=", 2);
            manager.getIRIMappers().add(new SimpleIRIMapper(IRI.create(pair[0]), IRI.create(new File(pair[1]))));
        }
        OWLOntology ontology;
        try {
            File file = new File(args[0]);
            // JSON-LD is named by its extension, as a tool opening a .jsonld file does: the OWL API's guess tries
            // the RDF/JSON parser first, which stops at "@context" instead of passing the file on
            ontology = args[0].endsWith(".jsonld")
                ? manager.loadOntologyFromOntologyDocument(new FileDocumentSource(file, new RDFJsonLDDocumentFormat()))
                : manager.loadOntologyFromOntologyDocument(file);
        } catch (OWLOntologyCreationException | RuntimeException e) {  // an unloadable import is a runtime one
            String message = String.valueOf(e.getMessage()).replace('\n', ' ');
            System.out.println("unloadable " + e.getClass().getSimpleName() + ": "
                               + message.substring(0, Math.min(message.length(), 800)));
            System.exit(2);
            return;
        }
        System.out.println("ontology " + ontology.getOntologyID().getOntologyIRI().map(IRI::toString).orElse("-"));
        System.out.println("ontologies " + manager.ontologies().count());
        System.out.println("closure " + ontology.importsClosure().count());
        for (OWLImportsDeclaration d : (Iterable<OWLImportsDeclaration>) ontology.importsDeclarations()::iterator) {
            System.out.println("imports " + d.getIRI());
        }
        System.out.println("axioms " + ontology.getAxiomCount());
        OWLDocumentFormat format = manager.getOntologyFormat(ontology);
        long unparsed = format == null ? 0 : format.getOntologyLoaderMetaData()
            .map(m -> m.getUnparsedTriples().count()).orElse(0L);
        System.out.println("format " + (format == null ? "-" : format.getKey()));
        System.out.println("unparsed " + unparsed);
        OWLProfileReport report = new OWL2DLProfile().checkOntology(ontology);
        for (OWLProfileViolation v : report.getViolations()) {
            System.out.println("violation " + v.toString().replace('\n', ' '));
        }
        System.exit(report.isInProfile() ? 0 : 1);
    }
}
