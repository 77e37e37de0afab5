# guideline-kg: set-up, main job, tests (all; fast), benchmarks.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

#: pytest-xdist workers for `make test` (CI machines have 2 cores; `make test WORKERS=0` runs in one process)
WORKERS ?= 2

.PHONY: run test test-fast lint install bench clean reference export serve validate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## main job on the embedded default store
run: $(STAMP)
	$(BIN)/guideline-kg build --out build
	$(BIN)/guideline-kg recommend guidelines/plbp/cases --applicable-only > build/example-cases-report.txt
	$(BIN)/guideline-kg recommend guidelines/plbp/cases --format json > build/example-cases.json
	$(BIN)/guideline-kg recommend guidelines/plbp/cases --summary
	$(BIN)/guideline-kg render --format svg --out build/algorithm.svg
	$(BIN)/guideline-kg render --format png --out build/algorithm.png
	$(BIN)/guideline-kg render --view overview --format png --out build/algorithm-overview.png
	$(BIN)/guideline-kg render --case guidelines/plbp/cases/c04-urgent-deficit.ttl --format png --out build/algorithm-c04.png
	@echo "full report: build/example-cases-report.txt; JSON: build/example-cases.json"

## static checks: the import layers (import-linter), ruff, mypy (configuration in pyproject.toml)
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests
	$(BIN)/mypy

## the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --durations=25

## the fast loop while editing (under a minute): all but HermiT/Java, slow (> ~2 s) and browser tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not hermit and not slow and not browser"

## export the pathway to other knowledge systems (FHIR, RDF syntaxes, CSV, CarePlans)
export: $(STAMP)
	$(BIN)/guideline-kg export --format fhir --out build/export/pathway.bundle.json
	$(BIN)/guideline-kg export --format rdfxml --out build/export/guideline-kg.rdf
	$(BIN)/guideline-kg export --format jsonld --out build/export/guideline-kg.jsonld
	$(BIN)/guideline-kg export --format csv --out build/export/csv
	$(BIN)/guideline-kg export --format careplan --case guidelines/plbp/cases --out build/export/careplans

## validate the guideline graph (shapes, consistency analysis) and the example cases
validate: $(STAMP)
	$(BIN)/guideline-kg validate guidelines/plbp/cases/

## a read-only SPARQL endpoint, query page and CDS Hooks service on http://127.0.0.1:8000
serve: $(STAMP)
	$(BIN)/guideline-kg serve guidelines/plbp/cases

## regenerate the ontology reference (run after editing ontology/)
reference: $(STAMP)
	$(BIN)/guideline-kg reference --out docs/ontology-reference.md

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build
