# The README's two commands: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m aiodisp demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples fuzz

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py
	# the congestion benchmark needs root, ip and tc: it says why when it cannot run
	$(PY) benchmarks/congestion.py --plot docs/congestion.png || test $$? -eq 2

# Coverage-guided fuzzing of the receive path (needs `pip install atheris`; without it
# the target replays its seeds once). Not part of `make test`.
fuzz: $(STAMP)
	$(PY) fuzz/fuzz_receive.py --seeds fuzz/corpus
	$(PY) fuzz/fuzz_receive.py -max_total_time=300 fuzz/corpus

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
