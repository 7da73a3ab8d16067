# Two entry points: `make demo` (the main job, on data the project makes) and
# `make test` (the test suite). Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench figures clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/cpu.txt -e '.[dev]'
	touch $@

demo: install
	$(BIN)/ccfkit demo demo-output

test: install
	$(BIN)/python -m pytest

figures: demo
	cp demo-output/ccf_stages.png demo-output/demo_maps.png docs/images/
	$(BIN)/ccfkit simulate-examples docs/images/simulate_examples.png

bench: install
	$(BIN)/python benchmarks/performance.py --write docs/performance.md

clean:
	rm -rf $(VENV) demo-output .pytest_cache
