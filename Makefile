# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The dashboard's chart library: pinned in package-lock.json, fetched from the npm registry,
# copied next to the page's other static files, and served by the app itself (no CDN).
VENDOR := src/spikewatch/web/static/vendor
CHART_JS := $(VENDOR)/lightweight-charts.standalone.production.js
# What the whole test suite needs beyond Python: Debian's Chromium for the dashboard's
# browser tests (driven by Playwright, which never downloads a browser here), and npm for
# the chart library. `make test-deps` installs them with apt-get when it can (as root on
# Debian, as .ci/run does), else says exactly what to install.
CHROMIUM ?= /usr/bin/chromium
APT_GET ?= apt-get

.PHONY: install assets run demo test test-deps check lint typecheck unit fast clean

# Order-only: the chart library is installed with the package, without reinstalling the
# package whenever the library is refreshed.
$(STAMP): pyproject.toml | $(CHART_JS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make assets` always reinstalls; the file rule only when the lock file changed. Without
# npm the automatic step only warns: the dashboard then runs without its chart and says so.
assets:
	@command -v npm >/dev/null || { echo "make assets needs Node.js and npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund
	mkdir -p $(VENDOR)
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js $(CHART_JS)

$(CHART_JS): package.json package-lock.json
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory assets; \
	else echo "warning: npm not found, the dashboard's chart is not installed (install Node.js and npm, then: make assets)" >&2; fi

run: $(STAMP)
	$(PY) app.py $(ARGS)

demo: $(STAMP)
	$(PY) app.py --demo $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff format --check src tests bench scripts app.py
	$(PY) -m ruff check src tests bench scripts app.py

typecheck: $(STAMP)
	$(PY) -m mypy

# Every test, on every core (CI's 2 cores: about half the time of one; the suite's tests
# use their own ports, databases, schemas and bus names, so they run side by side).
unit: $(STAMP)
	$(PY) -m pytest -q -n auto $(PYTEST_ARGS)

test-deps:
	@missing=""; \
	[ -x "$(CHROMIUM)" ] || missing="chromium"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	missing=$${missing# }; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v "$(APT_GET)" >/dev/null 2>&1; then \
		echo "make test: installing $$missing (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive "$(APT_GET)" update && \
		DEBIAN_FRONTEND=noninteractive "$(APT_GET)" install -y --no-install-recommends $$missing; \
	else \
		echo "make test needs: $$missing (Chromium at $(CHROMIUM) runs the dashboard's browser tests; npm installs its chart library)" >&2; \
		echo "  On Debian or Ubuntu: sudo apt-get install --no-install-recommends $$missing" >&2; \
		echo "  Or, without them: make check (lint, types and the tests that need no browser)" >&2; \
		exit 1; \
	fi

# test-deps first (it may install npm, which the chart library's step needs), then the rest.
test: test-deps
	@$(MAKE) --no-print-directory lint typecheck unit

# The developer loop: lint, types and the fast tests (no `slow` or `browser` marker), on
# every core; under a minute on 2 cores. `make test` (CI) runs everything.
fast: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not slow and not browser and not soak" $(PYTEST_ARGS)

check: lint typecheck fast

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache node_modules $(VENDOR)
