# `make test` and `make demo` work on a fresh machine: they create .venv if missing and
# install everything the project needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lorascope-installed
# torch + torchvision that import together on CPU-only x86_64 machines (README "Install");
# override on other machines, e.g. `make test TORCH_PINS="torch==2.9.1 torchvision==0.24.1"`.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo bench chromium clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The report tests drive Debian's Chromium through Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install it (Debian: apt-get install chromium) for the browser tests"; fi; }

test: install chromium
	$(BIN)/python -m pytest

demo: install
	$(BIN)/lorascope demo --out runs/demo

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs build *.egg-info
