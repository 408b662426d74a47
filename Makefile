# Two commands: `make demo` and `make test`. Each creates .venv, installs what it needs, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-stamp
BUILD  := $(VENV)/.build-stamp
CMAKE  := $(VENV)/bin/cmake
CXX_SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.h')
CSRC   := $(CXX_SOURCES) CMakeLists.txt setup.py pyproject.toml
# The [build-system] requires of pyproject.toml (cmake and ninja among them), quoted for the shell.
BUILD_REQUIRES := $(shell sed -n 's/^requires = \[\(.*\)\]$$/\1/p' pyproject.toml | tr ',' ' ')
EGL_PKGS := libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0

.PHONY: install build test demo bench lint docs check-package clean sanitize

# torch is pinned to the release whose CPU build lies on these machines (a plain `torch` pulls CUDA). The editable
# install builds without isolation, so the venv holds the build requirements (again when pyproject.toml changes).
$(DEPS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 $(BUILD_REQUIRES)
	@# MuJoCo offscreen rendering for `dt-fast eval --video` (MUJOCO_GL=egl on Mesa's software driver).
	@dpkg -s $(EGL_PKGS) >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q $(EGL_PKGS); } || \
		echo "warning: dt-fast eval --video needs the system packages $(EGL_PKGS)"
	touch $@

$(BUILD): $(DEPS) $(CSRC)
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(BUILD)

# Incremental rebuild of dt_fast._C in place after a C++ change (build/temp.*), for development.
build: $(DEPS)
	$(PY) setup.py -q build_ext --inplace

# The API docs build first (seconds): a docstring that pdoc cannot render fails the run before the tests.
test: install docs lint
	$(PY) -m pytest -q tests
	tests/packaging/check_install.sh $(PY)

# From this checkout: `python -m build` (sdist, then the wheel from it) on a PATH without cmake or ninja, the wheel
# into a fresh venv, and the installed package used outside the source tree.
check-package: install
	tests/packaging/check_install.sh $(PY)

# Python: ruff (pyproject.toml); C++: clang-format (.clang-format). Runs every check, changes nothing.
lint: install
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SOURCES) || status=1; \
	exit $$status

# The API reference in build/docs, offline: the public names (dt_fast.__all__) and the modules users touch beside
# them. A pdoc warning (a name in __all__ that does not resolve, a module or annotation that does not import) fails
# the build, and so does a backticked reference to a dt_fast name that pdoc could not link (tests/doc_links.py).
DOC_MODULES := dt_fast dt_fast.data dt_fast.checkpoint
docs: install
	rm -rf build/docs
	$(PY) -W error::UserWarning -W error::RuntimeWarning -m pdoc --docformat google --output-directory build/docs \
		$(DOC_MODULES)
	$(PY) tests/doc_links.py build/docs

demo: install
	$(PY) -m dt_fast.cli demo

# `dt-fast bench`: one table against the blog's workflow and this machine's bounds (a few minutes), written to
# benchmarks/results/suite.json and suite.md (replaced). d3rlpy, the training peer, without its pins (it pins
# gymnasium==1.0.0), with its other requirements and theirs.
D3RLPY := d3rlpy==2.8.1 click colorama dataclasses-json "marshmallow>=3.18,<4" typing-inspect mypy-extensions \
	structlog scikit-learn scipy joblib threadpoolctl narwhals gym==0.26.2 gym-notices
bench: install
	$(PY) -m pip install -q --no-deps $(D3RLPY)
	$(VENV)/bin/dt-fast bench --out benchmarks/results --overwrite

# The sampler, engine and training-op tests against a copy of dt_fast._C built with ASan + UBSan in build/sanitize
# (the in-place module stays untouched): a shadow package links every dt_fast file but _C. Python itself is not
# instrumented, so libasan is preloaded; leak checking is off (the interpreter never frees everything).
# Then the engine: csrc/examples/control_loop (engine + Controller, two threads at batch 1) on a random
# checkpoint, built with ASan + UBSan and again with ThreadSanitizer (build/tsan), in both modes.
SAN_DIR   := build/sanitize
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1
SAN_ENV   := LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
sanitize: $(DEPS)
	$(CMAKE) -S . -B $(SAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="$(SAN_FLAGS)" \
		-DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DPython_EXECUTABLE=$(abspath $(PY)) \
		-Dpybind11_DIR="$$($(PY) -c 'import pybind11; print(pybind11.get_cmake_dir())')" >/dev/null
	$(CMAKE) --build $(SAN_DIR) --target _C -j 2
	rm -rf $(SAN_DIR)/pkg && mkdir -p $(SAN_DIR)/pkg/dt_fast
	for f in dt_fast/*; do case $$f in *.so) ;; *) ln -s $(CURDIR)/$$f $(SAN_DIR)/pkg/dt_fast/ ;; esac; done
	cp $(SAN_DIR)/_C*.so $(SAN_DIR)/pkg/dt_fast/
	$(SAN_ENV) $(PY) -c "import sys; sys.path.insert(0, '$(SAN_DIR)/pkg'); import dt_fast._C as c; print(c.__file__)"
	$(SAN_ENV) $(PY) -m pytest -q -p no:cacheprovider -o pythonpath="$(SAN_DIR)/pkg ." tests/test_sampler*.py \
		tests/test_engine.py tests/test_engine_threads.py tests/test_train_ops.py
	$(PY) -c "import dt_fast as d; d.DecisionTransformer(d.DecisionTransformerConfig(state_dim=11, act_dim=3, \
		max_ep_len=1000)).save_pretrained('$(SAN_DIR)/checkpoint')"
	$(CMAKE) --build $(SAN_DIR) --target control_loop -j 2
	$(CMAKE) -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="-fsanitize=thread -g -O1" \
		-DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" -DPython_EXECUTABLE=$(abspath $(PY)) \
		-Dpybind11_DIR="$$($(PY) -c 'import pybind11; print(pybind11.get_cmake_dir())')" >/dev/null
	$(CMAKE) --build build/tsan --target control_loop -j 2
	for mode in exact rolling; do \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(SAN_DIR)/control_loop $(SAN_DIR)/checkpoint 300 $$mode && \
		TSAN_OPTIONS=halt_on_error=1 build/tsan/control_loop $(SAN_DIR)/checkpoint 300 $$mode || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info dt_fast/_C*.so
