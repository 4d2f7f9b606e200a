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

## make demo: migrate a SQLite database, seed it, serve http://127.0.0.1:8000 on the fake Klaviyo
demo: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@echo ""
	@echo "  Signup page: http://127.0.0.1:8000/   Admin: http://127.0.0.1:8000/admin/ (admin / admin)"
	@echo "  API:         http://127.0.0.1:8000/api/consent/profiles/"
	@echo ""
	$(PY) manage.py runserver 127.0.0.1:8000

## make test: the whole suite on SQLite (PostgreSQL/Redis parts too when those services answer),
## except the long random-fault run (make test-slow)
test: $(STAMP)
	$(PY) -m pytest -q

## make test-slow: the long random-fault run (fixed seed), on SQLite then PostgreSQL
test-slow: $(STAMP)
	$(PY) -m pytest -q -m random_faults
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/test $(PY) -m pytest -q -m random_faults

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
	rm -rf $(VENV) $(VENV6) demo.sqlite3 demo-fake-klaviyo.json .pytest_cache
