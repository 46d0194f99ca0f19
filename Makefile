# Two commands on a fresh machine:  `make run` (set up, then the main analysis)  and  `make test`.
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/faithful

.PHONY: setup compiled run test quick lint bench mutations clean

$(BIN)/mixflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,nutpie]"
	touch $(BIN)/mixflow

setup: $(BIN)/mixflow

# mixflow's bytecode written once (an environment may set PYTHONDONTWRITEBYTECODE): otherwise every Python process
# the run or the tests start (worker processes, command-line tests, benchmarks) compiles the package anew
compiled: setup
	$(BIN)/python -m compileall -q mixflow

run: compiled
	$(BIN)/mixflow run workflows/faithful.toml --out $(OUT)

test: compiled
	$(BIN)/ruff check mixflow tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist loadgroup --durations=25

quick: setup
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m "not slow"

bench: setup
	$(BIN)/python benchmarks/em_vs_sklearn.py

mutations: setup
	$(BIN)/python tests/mutations.py

clean:
	rm -rf $(VENV) out
