"""Patient cases in (Turtle, JSON-LD, FHIR R4) and case facts out to FHIR."""
