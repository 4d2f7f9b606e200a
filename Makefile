# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-sqlite test-postgres test-all lint bench services clean

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

## make test: the whole suite on SQLite (PostgreSQL/Redis parts too when those services answer)
test: $(STAMP)
	$(PY) -m pytest -q

test-postgres: $(STAMP)
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/test $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check klaviyo_consent tests example_project benchmarks

bench: $(STAMP)
	$(PY) benchmarks/push_throughput.py

clean:
	rm -rf $(VENV) demo.sqlite3 demo-fake-klaviyo.json .pytest_cache
