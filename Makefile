# The few commands the README names. Each sets up what it needs first.
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
# Use the machine's Python (3.11+); never download one.
export UV_PYTHON_DOWNLOADS := never
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test check client client-package screenshot bench clean

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --quiet
	@touch $@

## serve: set up, print an example token, run the service on the embedded default
serve: .venv/.synced
	@.venv/bin/campana migrate >/dev/null
	@echo "Example token for user 'demo' (valid 24 h):"
	@echo
	@.venv/bin/campana token demo --ttl 86400
	@echo
	@echo "Socket:  wscat -c \"ws://$(HOST):$(PORT)/api/v1/notifications/ws?token=<token>\""
	@echo "Send:    .venv/bin/campana send demo --type CAMPAIGN_SCHEDULED --message 'Hello' --url http://$(HOST):$(PORT)"
	@echo "API:     http://$(HOST):$(PORT)/docs"
	@echo
	.venv/bin/campana serve --host $(HOST) --port $(PORT)

clients/typescript/node_modules/.installed: clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## test: set up and run every test: the service (pytest) and the TypeScript client (Vitest)
test: .venv/.synced clients/typescript/node_modules/.installed
	cd clients/typescript && npm test --silent
	.venv/bin/pytest

## client: type-check and build the npm package, rebuild the demo served at /
client: clients/typescript/node_modules/.installed
	cd clients/typescript && npm run typecheck --silent && npm run build --silent && npm run build:demo --silent

## client-package: build the npm package's tarball into dist/ (npm install dist/campana-client-<version>.tgz)
client-package: clients/typescript/node_modules/.installed
	mkdir -p dist && cd clients/typescript && npm pack --silent --pack-destination ../../dist

## screenshot: refresh docs/demo.png from the browser test
screenshot: .venv/.synced
	CAMPANA_TEST_SCREENSHOT=$(CURDIR)/docs/demo.png .venv/bin/pytest tests/test_browser.py -k badge

## check: lint, format and type checks
check: .venv/.synced clients/typescript/node_modules/.installed
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	cd clients/typescript && npm run lint --silent

## bench: Campana against the ceiling and python-socketio, every scenario (local PostgreSQL and Redis)
bench: .venv/.synced
	.venv/bin/python bench/compare.py --sizes 1000,5000,10000 --rate 1000 --seconds 10

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
