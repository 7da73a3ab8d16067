# Two entry points: `make demo` (the main job, on data the project makes) and
# `make test` (the test suite). Both create the virtual environment first.
#
# Python versions (README "Python versions"): pyproject.toml claims >= 3.11.
# .venv is the oldest, 3.11, with the trainer (torch: the CPU build pinned in
# requirements/cpu.txt, the one on the CI machines' disk): the whole suite runs
# there. `make test` then runs the engine's tests on the newest claimed Python,
# 3.13, in .venv-3.13 without torch (NEWEST_TESTS; `make test-newest
# NEWEST_TESTS=tests` runs every test that needs no torch, ~2 more minutes).

# The first Python $(1) that runs: on PATH, else pyenv's (a pyenv shim on PATH
# fails for a version that is installed but not selected).
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
find_python = $(shell for p in python$(1) $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)); do \
	"$$p" -c "" 2>/dev/null && { command -v "$$p"; break; }; done)

PYTHON ?= $(or $(call find_python,3.11),python3)
PYTHON_NEWEST ?= $(call find_python,3.13)
VENV ?= .venv
VENV_NEWEST ?= .venv-3.13
#: The engine: the math, the backends, noise, the store's files, the layers and settings
#: (not the end-to-end commands build, simulate, demo and the catalogue of refusals).
NEWEST_TESTS ?= $(addprefix tests/test_,$(addsuffix .py,polar fourier ccf estimators engine \
	backends noise sacla io_direct ecosystem layers settings provenance)) tests/store
BIN := $(VENV)/bin

.PHONY: install install-newest browser demo demo-stack test test-newest bench figures clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/cpu.txt -e '.[trainer,dev]'
	touch $@

install-newest: $(VENV_NEWEST)/.installed

$(VENV_NEWEST)/.installed: pyproject.toml
	@test -n "$(PYTHON_NEWEST)" || { echo "Python 3.13 not found (set PYTHON_NEWEST)"; exit 1; }
	$(PYTHON_NEWEST) -m venv $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/ccfkit demo demo-output

# The same on a multi-module detector (AGIPD 1M stacks with their geometry): simulate,
# build with --geometry, fit briefly, predict and draw a gallery (ccfsort/demo_stack.py).
demo-stack: install
	$(BIN)/trainer demo-stack demo-stack-output

# The browser tests (the label page and the gallery: tests/test_label.py, test_gallery.py)
# drive Debian's Chromium through Playwright (a Python package: no browser download).
# Installed here when missing and we are root with apt-get; elsewhere this says why and
# goes on: those tests then skip, saying so (under CI=true they fail instead).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "browser: installing Debian's chromium for the browser tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium >/dev/null; } || echo "browser: apt-get install chromium failed: \
	the browser tests will skip (fail under CI=true)"; \
	else echo "browser: no $(CHROMIUM) and not root with apt-get: the browser tests will \
	skip (fail under CI=true)"; fi

test: install browser
	$(BIN)/python -m pytest
	$(MAKE) test-newest

# Without Python 3.13 this says so and passes, except under CI (CI=true), where it fails.
test-newest:
ifeq ($(PYTHON_NEWEST),)
	@echo "test-newest: Python 3.13 not found: the engine's tests on the newest Python did not run"
	@test "$(CI)" != true
else
	$(MAKE) install-newest
	$(VENV_NEWEST)/bin/python -m pytest $(NEWEST_TESTS)
endif

figures: demo
	cp demo-output/ccf_stages.png demo-output/demo_maps.png docs/images/
	$(BIN)/ccfkit simulate-examples docs/images/simulate_examples.png

bench: install
	$(BIN)/python benchmarks/performance.py --write docs/performance.md

clean:
	rm -rf $(VENV) $(VENV_NEWEST) demo-output demo-stack-output .pytest_cache
