# Two commands: `make demo` and `make test`. Each creates .venv, installs what it needs, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-stamp
BUILD  := $(VENV)/.build-stamp
CSRC   := $(shell find csrc -name '*.cpp' -o -name '*.h') CMakeLists.txt setup.py pyproject.toml

.PHONY: install build test demo clean

# torch is pinned to the release whose CPU build lies on these machines (a plain `torch` pulls CUDA).
$(DEPS):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 setuptools wheel pybind11
	touch $@

$(BUILD): $(DEPS) $(CSRC)
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(BUILD)

# Incremental rebuild of dt_fast._C in place, for development.
build: $(DEPS)
	$(PY) setup.py -q build_ext --inplace

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) -m dt_fast.cli demo

clean:
	rm -rf $(VENV) build *.egg-info dt_fast/_C*.so
