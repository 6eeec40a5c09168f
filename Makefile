# Set-up and entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv and install everything they need first (Python packages
# from PyPI, socket.io-client from npm, and for the browser tests Debian's
# chromium when it is missing and apt-get is usable).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WEB_STAMP := web/node_modules/.installed

.PHONY: demo test lint typecheck pytest pytest-asyncio-versions bench chromium redis-server prometheus postgresql valgrind clean

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

# The asyncio source's tests on Python 3.12 and 3.13 too (eager tasks, wait_for on
# timeouts, aiohttp's directly built tasks): python3.X from PATH, else from pyenv; each in
# a venv of its own under build/ made once (remade when pyproject.toml changes). A version
# absent from this machine is skipped, and the run says so.
ASYNCIO_PYTHONS ?= 3.12 3.13
ASYNCIO_TESTS := tests/agent/test_asyncio_*.py
ASYNCIO_TEST_DEPS := 'pytest>=8' 'pytest-timeout>=2.3' 'aiohttp>=3.9' 'uvloop>=0.19' 'fastapi>=0.110' \
	'uvicorn>=0.29' 'jsonschema>=4.18' 'orjson>=3.9'
pytest-asyncio-versions:
	@for v in $(ASYNCIO_PYTHONS); do \
	  py=; for c in $$(command -v python$$v) $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python 2>/dev/null | sort -rV); do \
	    if $$c -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "'$$v'".split("."))))' 2>/dev/null; then py=$$c; break; fi; \
	  done; \
	  if [ -z "$$py" ]; then echo "*** SKIPPED: no python$$v here (PATH, pyenv): the asyncio tests did not run on $$v"; continue; fi; \
	  venv=build/venv-py$$v; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    echo "making $$venv with $$py"; rm -rf $$venv; \
	    $$py -m venv $$venv && $$venv/bin/python -m pip install --quiet --upgrade pip && \
	    $$venv/bin/python -m pip install --quiet -e . $(ASYNCIO_TEST_DEPS) && touch $$venv/.installed || exit 1; \
	  fi; \
	  echo "asyncio tests on $$($$venv/bin/python -V)"; \
	  PYTHONPATH=$(CURDIR) $$venv/bin/python -m pytest -q -p no:cacheprovider $(ASYNCIO_TESTS) $(ASYNCIO_PYTEST_ARGS) || exit 1; \
	done

test: lint typecheck pytest
	$(MAKE) --no-print-directory pytest-asyncio-versions

bench: $(STAMP) $(WEB_STAMP)
	@if [ "$(BENCH)" = agent_storm_ic ]; then $(MAKE) --no-print-directory valgrind; fi
	$(PY) -m bench $(BENCH)

# Debian's valgrind for `make bench BENCH=agent_storm_ic` (instruction counts by callgrind)
valgrind:
	@if ! command -v valgrind >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's valgrind for the instruction counts"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; \
	  else echo "valgrind is missing: python -m bench agent_storm_ic cannot run"; fi; \
	fi

clean:
	rm -rf $(VENV) build/venv-py* .pytest_cache .mypy_cache .ruff_cache web/node_modules
