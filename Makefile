# Everything a new machine needs, from a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export OMP_NUM_THREADS ?= 1

.PHONY: demo test bench lint sandbox chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a CPU wheel lies on local disk; a bare range would fetch CUDA builds.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# Kernels run inside bubblewrap; install it where we can (CI and these machines run as root).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null); \
	  else \
	    echo "bubblewrap (bwrap) is missing: install it (e.g. sudo apt-get install bubblewrap)"; exit 1; \
	  fi; }

# The widget browser tests drive Debian's Chromium through Playwright (no browser downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); \
	  else \
	    echo "chromium is missing: install it (e.g. sudo apt-get install chromium)"; exit 1; \
	  fi; }

# DEMO_ARGS="--execute" runs the start-here notebook headless instead of opening JupyterLab.
demo: $(STAMP) sandbox
	$(BIN)/syftlab demo $(DEMO_ARGS)

test: $(STAMP) sandbox chromium
	$(BIN)/ruff check kernel_bridge syft_widgets tests benchmarks datasets
	$(BIN)/python -m pytest -q

bench: $(STAMP) sandbox
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check kernel_bridge syft_widgets tests benchmarks datasets
	$(BIN)/mypy kernel_bridge syft_widgets

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
