# Everything a fresh machine needs: `make train` (the main job) and `make test` (what CI runs).
# Each target creates the virtual environment at .venv and installs the project into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/digits

.PHONY: train test install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Signum with majority vote on 8 simulated CPU workers, on scikit-learn's bundled digits.
train: $(VENV)/.installed
	$(PY) -m train --config=configs/digits.py --workdir=$(WORKDIR)
