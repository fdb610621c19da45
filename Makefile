# The two quickstart commands: `make run` and `make test`. Each creates .venv
# itself. PYTHON picks the interpreter; VENV the environment's folder.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean

$(BIN)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(BIN)/.installed-run

run: $(BIN)/.installed-run
	$(BIN)/python examples/batch.py

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed-dev
	$(BIN)/mypy --strict flowdsl examples tests/typing
	$(BIN)/pyright --pythonpath $(BIN)/python tests/typing examples

pytest: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(BIN)/.installed-dev
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/durable.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
