# Two entry points a new user needs: `make demo` and `make test`. Both create .venv with
# nothing but a Python 3.11+ interpreter and install the project (and its test extra) into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ffjax demo

test: $(STAMP)
	$(PY) -m pytest -q tests tfds_builders

bench: $(STAMP)
	$(VENV)/bin/ffjax bench --config test

clean:
	rm -rf $(VENV) .pytest_cache
