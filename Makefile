# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-sqlite test-postgres test-django6 test-all lint bench services clean \
	test-schema test-wheel

# Django 6 needs Python >= 3.12: the first python3.12 / python3.13 on PATH or in pyenv, if any.
PYTHON_DJANGO6 ?= $(shell for v in 3.12 3.13; do \
	if python$$v -c '' 2>/dev/null; then command -v python$$v; exit; fi; \
	found=$$(pyenv versions --bare 2>/dev/null | grep "^$$v" | tail -1); \
	if [ -n "$$found" ]; then PYENV_VERSION=$$found pyenv which python$$v 2>/dev/null; exit; fi; \
	done)
VENV6 ?= .venv-django6

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $(STAMP)

## make demo [PORT=8001]: migrate a SQLite database, seed it, serve http://127.0.0.1:$(PORT) on the
## fake Klaviyo. The port is checked first, so a busy one stops the demo before anything is changed.
PORT ?= 8000
demo: $(STAMP)
	@$(PY) -c 'import socket, sys; port = int(sys.argv[1]); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", port)); s.close()' '$(PORT)' 2>/dev/null || { \
		echo "make demo: port $(PORT) on 127.0.0.1 is in use (or not a port number). Nothing was changed."; \
		echo "           Stop whatever is serving it, or choose another: make demo PORT=8001"; \
		exit 1; }
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --base-url http://127.0.0.1:$(PORT)
	@echo ""
	@echo "  Signup page: http://127.0.0.1:$(PORT)/   Admin: http://127.0.0.1:$(PORT)/admin/ (admin / admin)"
	@echo "  API:         http://127.0.0.1:$(PORT)/api/consent/profiles/"
	@echo ""
	$(PY) manage.py runserver 127.0.0.1:$(PORT)

## make test: the whole suite on SQLite (PostgreSQL/Redis parts too when those services answer),
## except the long random-fault run (make test-slow)
test: $(STAMP)
	$(PY) -m pytest -q

## make test-slow: the long random-fault run (fixed seed), on SQLite then PostgreSQL
test-slow: $(STAMP)
	$(PY) -m pytest -q -m random_faults
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/test $(PY) -m pytest -q -m random_faults

## make test-browser: the real-browser test (tests/browser/): Playwright drives Debian's Chromium
## (apt-get install chromium; never a downloaded browser), axe-core from npm. Screenshots and
## failure traces go to .ci/artifacts/. Skips, saying why, when Chromium is missing.
BROWSER_STAMP := $(VENV)/.installed-browser
AXE := .ci/node_modules/axe-core/axe.min.js

$(BROWSER_STAMP): $(STAMP)
	$(PIP) install --quiet -e '.[test,browser]'
	touch $(BROWSER_STAMP)

$(AXE): .ci/package.json .ci/package-lock.json
	npm ci --prefix .ci --no-audit --no-fund
	touch $(AXE)

.PHONY: test-browser
test-browser: $(BROWSER_STAMP) $(AXE)
	$(PY) -m pytest -q -m browser tests/browser \
		--output .ci/artifacts/failures --screenshot only-on-failure --tracing retain-on-failure

test-postgres: $(STAMP)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/test $(PY) -m pytest -q

## make test-django6: the suite again on Django 6 (SQLite, then PostgreSQL), in $(VENV6)
test-django6:
	@set -e; \
	if [ -z "$(PYTHON_DJANGO6)" ]; then echo "test-django6: no Python 3.12+ found; Django 6 not tested"; exit 0; fi; \
	test -x $(VENV6)/bin/python || $(PYTHON_DJANGO6) -m venv $(VENV6); \
	$(VENV6)/bin/pip install --quiet --upgrade pip; \
	$(VENV6)/bin/pip install --quiet -e '.[test]' 'django>=6,<7'; \
	$(VENV6)/bin/python -c 'import django, sys; print("Django", django.get_version(), "on Python", sys.version.split()[0])'; \
	$(VENV6)/bin/python -m pytest -q; \
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/test $(VENV6)/bin/python -m pytest -q

## make test-schema: schemathesis against the example site (every endpoint of the OpenAPI schema;
## server errors, status codes and response shapes), on a free port, SQLite, the fake Klaviyo
test-schema: $(STAMP)
	PY=$(PY) ST=$(VENV)/bin/schemathesis .ci/schemathesis

## make test-wheel: build + twine check, every template/static file in the wheel, the wheel
## installed in a fresh venv under an empty project: manage.py check, migrate, a valid schema
test-wheel: $(STAMP)
	$(PIP) install --quiet --group dev
	PY=$(PY) PYTHON=$(PYTHON) .ci/wheel

lint: $(STAMP)
	$(VENV)/bin/ruff check klaviyo_consent tests example_project benchmarks

bench: $(STAMP)
	$(PY) benchmarks/push_throughput.py

clean:
	rm -rf $(VENV) $(VENV6) demo.sqlite3 demo-fake-klaviyo.json .pytest_cache .ci/node_modules .ci/artifacts
