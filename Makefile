# The README's quick start: `make demo` and `make test`. Each target creates .venv (Python 3.11
# or whatever `python3` is) on first use and reinstalls the package when setup.cfg changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: demo test lint bench examples clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip "setuptools>=68" wheel

$(STAMP_TEST): setup.cfg pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test,export]"
	touch $@

$(STAMP_BENCH): $(STAMP_TEST)
	$(PIP) install --quiet -e ".[test,bench]"
	touch $@

demo: $(STAMP_TEST)
	$(PY) examples/demo.py

test: $(STAMP_TEST)
	$(PY) -m ruff check keras_spiking export custom_ops tests examples benchmarks
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP_TEST)
	$(PY) -m ruff check keras_spiking export custom_ops tests examples benchmarks
	$(PY) -m ruff format --check keras_spiking export custom_ops tests examples benchmarks

bench: $(STAMP_BENCH)
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) build *.egg-info outputs
