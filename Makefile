# Everything a fresh machine needs: `make train` (the main job) and `make test` (what CI runs).
# Each target creates the virtual environment at .venv and installs the project into it first,
# with the versions pinned in constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/digits
EXTRAS := train,test

.PHONY: train test install lock docs

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Signum with majority vote on 8 simulated CPU workers, on scikit-learn's bundled digits.
train: $(VENV)/.installed
	$(PY) -m train --config=configs/digits.py --workdir=$(WORKDIR)

# The API reference from the docstrings (Sphinx, warnings as errors) into docs/_build/html.
docs: $(VENV)/.installed
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# Re-pins constraints.txt to the newest versions pyproject.toml allows, resolved in a scratch venv.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q ".[$(EXTRAS)]" setuptools
	{ sed -n '1,2p' constraints.txt; .lock-venv/bin/python -m pip freeze --all --exclude pip --exclude signvote-jax | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv
