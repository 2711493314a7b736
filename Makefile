# Everything a fresh machine needs: `make test` and (once the trainer lands) `make train`.
# Each target creates the virtual environment at .venv and installs the project into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q
