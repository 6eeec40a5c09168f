# Set-up and entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv and install everything they need first (Python packages
# from PyPI, socket.io-client from npm, and for the browser tests Debian's
# chromium when it is missing and apt-get is usable).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WEB_STAMP := web/node_modules/.installed

.PHONY: demo test lint typecheck pytest bench chromium redis-server prometheus postgresql clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

# Debian's chromium for the browser tests (Playwright cannot download browsers here)
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: the browser tests will be skipped (or fail under CI=true)"; fi; \
	fi

demo: $(STAMP) $(WEB_STAMP)
	$(PY) -m observer demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check actors agent observer bench examples tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Debian's redis-server for the shared message-queue tests (tests/observer/test_redis.py)
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's redis-server for the message-queue tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: the message-queue tests will be skipped"; fi; \
	fi

# Debian's prometheus for the metrics test (tests/observer/test_metrics.py scrapes a real observer)
prometheus:
	@if ! command -v prometheus >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's prometheus for the metrics test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus is missing: the Prometheus scrape test will be skipped (or fail under CI=true)"; fi; \
	fi

# Debian's postgresql for the shared-history tests (they start a cluster of their own with initdb/pg_ctl)
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's postgresql for the shared-history tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "postgresql is missing: the PostgreSQL tests will be skipped (or fail under CI=true)"; fi; \
	fi

pytest: $(STAMP) $(WEB_STAMP) chromium redis-server prometheus postgresql
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP) $(WEB_STAMP)
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache web/node_modules
