# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs the project (with its dev extra) into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/placement demo

test: $(STAMP)
	$(PY) -m pytest -q tests placement examples

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=min,mean,max,rounds

lint: $(STAMP)
	$(PY) -m ruff check placement tests benchmarks examples
	$(PY) -m mypy placement

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks .hypothesis
