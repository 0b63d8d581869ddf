# Everything a new machine needs, from a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export OMP_NUM_THREADS ?= 1
# jlpm (yarn) fetches from the registry npm is configured with, not yarn's own default.
NPM_REGISTRY := $(patsubst %/,%,$(shell npm config get registry 2>/dev/null))
ifneq ($(NPM_REGISTRY),)
export YARN_NPM_REGISTRY_SERVER ?= $(NPM_REGISTRY)
endif

.PHONY: demo test bench lint sandbox browser clean

$(STAMP): pyproject.toml package.json yarn.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a CPU wheel lies on local disk; a bare range would fetch CUDA builds.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	# The JupyterLab extension (built by the install above): link, don't copy, so rebuilds show.
	rm -rf $(VENV)/share/jupyter/labextensions/syftlab
	ln -s $(CURDIR)/kernel_bridge/lab/labextension $(VENV)/share/jupyter/labextensions/syftlab
	touch $(STAMP)

# Rebuild the extension when its sources change (a fresh clone builds it in the install above).
LABEXT := kernel_bridge/lab/labextension/package.json
$(LABEXT): package.json tsconfig.json yarn.lock $(wildcard extension/src/*.ts style/* schema/*) | $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" jlpm install
	PATH="$(CURDIR)/$(BIN):$$PATH" jlpm build:prod
	touch $(LABEXT)

# Kernels run inside bubblewrap, as their own uid (setpriv), under rlimits (prlimit) and a
# seccomp filter (libseccomp); install what is missing where we can (CI and these machines are root).
SANDBOX_TOOLS := bwrap:bubblewrap setpriv:util-linux prlimit:util-linux
sandbox:
	@missing=""; \
	for t in $(SANDBOX_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing="$$missing libseccomp2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null); \
	  else \
	    echo "missing for the kernel sandbox:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

# UI tests (widgets, JupyterLab) drive Debian's Chromium with Playwright (no browser downloads).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); \
	  else \
	    echo "chromium is missing: install it (e.g. sudo apt-get install chromium)"; exit 1; \
	  fi; }

# DEMO_ARGS="--execute" runs the start-here notebook headless instead of opening JupyterLab;
# "--keep-state" keeps the previous run's requests and budgets (each demo starts clean).
# `python -m`: this checkout's code, whatever interpreter a copied venv's scripts name.
demo: $(STAMP) $(LABEXT) sandbox
	$(BIN)/python -m kernel_bridge demo $(DEMO_ARGS)

# CI runs `make test` only, so it runs `make lint`'s checks first.
test: $(STAMP) $(LABEXT) sandbox browser lint
	$(BIN)/python -m pytest -q

bench: $(STAMP) sandbox
	$(BIN)/python -m benchmarks

# ruff; mypy (strict, see pyproject.toml); the layer contracts ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/python -m ruff check kernel_bridge syft_widgets tests benchmarks datasets
	$(BIN)/python -m mypy kernel_bridge syft_widgets
	$(BIN)/python -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"

clean:
	rm -rf $(VENV) node_modules lib kernel_bridge/lab/labextension tsconfig.tsbuildinfo .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
