# make figures   executes every notebook on the stored results (sets up .venv first)
# make test      lints (ruff) and runs the test suite (sets up .venv first)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
FAST   ?=
# test workers (pytest-xdist): one per core, at most 4 (each test uses one torch thread)
TEST_WORKERS ?= auto --maxprocesses=4

.PHONY: figures test venv benchmarks clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

figures: $(STAMP)
	$(PY) -m utils.figures.notebooks $(if $(FAST),--fast)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS)

benchmarks: $(STAMP)
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
