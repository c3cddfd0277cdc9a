# Fresh machine: `make demo` or `make test`. Both create .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# glibc malloc page-faults heavily on SAM's temporaries (shared notes): tuned setting, stated in every bench.
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 100000000000
export MALLOC_TOP_PAD_ ?= 1000000000
export HF_HUB_OFFLINE ?= 1

# The edge runtime (runtime/: zsplg-fast-runtime, no torch) in a venv of its own, as a device installs it;
# tests/runtime/test_runtime_venv.py runs it against `zsplg-fast infer` (required under CI=true).
RVENV ?= .venv-runtime
RUNTIME_SRC := runtime/pyproject.toml $(wildcard runtime/zsplg_runtime/*.py)

.PHONY: venv runtime-venv sysdeps demo test test-fast lint format bench clean

# zsplg-fast depends on zsplg-fast-runtime, which is not on an index: both go in one pip call.
$(BIN)/zsplg-fast: pyproject.toml runtime/pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ./runtime -e ".[dev,dist,review,precision]"
	@# extra [sam2]: its sdist built against the torch above, without the CUDA extension (~10 s)
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation "sam2==1.1.0"
	touch $@

venv: $(BIN)/zsplg-fast

$(RVENV)/bin/zsplg-runtime: $(RUNTIME_SRC)
	test -d $(RVENV) || $(PY) -m venv $(RVENV)
	$(RVENV)/bin/pip install -q ./runtime
	touch $@

runtime-venv: $(RVENV)/bin/zsplg-runtime

# Headless Chromium for the label report test (system package; installed only when root and missing).
sysdeps:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the report browser test will skip" >&2

demo: venv
	$(BIN)/zsplg-fast demo --out demo_out

# CI's machine has 2 cores and most tests run torch on one thread: 2 pytest-xdist workers, each test
# module (or folder sharing costly session fixtures) on one of them, the longest first (tests/conftest.py).
# `make test XDIST=` runs the suite in one process.
XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

test: venv runtime-venv sysdeps
	$(BIN)/ruff check zsplg_fast runtime tests bench
	$(BIN)/ruff format --check zsplg_fast runtime tests bench
	@# pytest exit 5 = no tests collected: a broken suite, never a pass.
	$(BIN)/pytest -q $(XDIST); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

test-fast: venv
	$(BIN)/pytest -q -m "not slow"

lint: venv
	$(BIN)/ruff check zsplg_fast runtime tests bench
	$(BIN)/ruff format --check zsplg_fast runtime tests bench

format: venv
	$(BIN)/ruff format zsplg_fast runtime tests bench
	$(BIN)/ruff check --fix zsplg_fast runtime tests bench

clean:
	rm -rf $(VENV) $(RVENV) demo_out .pytest_cache .ruff_cache
