# The two commands: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test services chromium wrk bench venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall when the package metadata changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-load: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,load]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

venv: $(VENV)/.installed-test

run: $(VENV)/.installed-run
	$(BIN)/pulse serve --host 127.0.0.1 --port 8080

services:
	bash scripts/ensure-services.sh

# Debian's Chromium for the browser tests of the web console (they skip without it).
chromium:
	bash scripts/ensure-chromium.sh

test: $(VENV)/.installed-test services chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's wrk for the closed-loop saturation runs (without it the bench uses its own client).
wrk:
	bash scripts/ensure-wrk.sh

bench: $(VENV)/.installed-load services wrk
	$(BIN)/python -m loadtest.bench

clean:
	rm -rf $(VENV) .pytest_cache
