# One entry point for developers and CI. `make dev` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv dev test test-fast bench lint lock clean dashboard-vendor chromium

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,flask,postgres]'
	touch $(STAMP)

# Dev server on SQLite (./.ratchet/) with the example app, synced at start-up.
dev: $(STAMP)
	$(BIN)/python -m examples.run_dev

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not e2e and not compat and not ui"

# The browser tier (tests/ui) drives Debian's chromium through Playwright; Playwright never downloads a
# browser here. Installed with apt-get (as root) when missing; without it tests/ui skip, or fail on CI.
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium \
	  || (apt-get update -q && apt-get install -y -q chromium)) \
	  || echo "warning: could not install chromium (apt-get install chromium, as root): tests/ui will skip (fail with CI=true)"

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.lists --backends sqlite,postgres

lint: $(STAMP)
	$(BIN)/ruff check ratchet tests bench examples

# Refresh the pinned versions after changing dependencies.
lock:
	rm -rf /tmp/ratchet-lock && $(PYTHON) -m venv /tmp/ratchet-lock
	/tmp/ratchet-lock/bin/pip install -q -e '.[dev,flask,postgres]'
	/tmp/ratchet-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .ratchet build

# Refresh the dashboard's one vendored module (htm + Preact as a single ES module) from npm.
HTM_VERSION := 3.1.1
dashboard-vendor:
	rm -rf /tmp/ratchet-htm && mkdir -p /tmp/ratchet-htm
	cd /tmp/ratchet-htm && npm pack -q htm@$(HTM_VERSION) && tar xzf htm-$(HTM_VERSION).tgz
	cp /tmp/ratchet-htm/package/preact/standalone.module.js ratchet/server/dashboard/static/vendor/htm-preact.mjs
	cp /tmp/ratchet-htm/package/LICENSE ratchet/server/dashboard/static/vendor/htm-preact.LICENSE
