# gateway: developer entry points. Every target bootstraps .venv itself.
#   make run    start the broker with the embedded default config (AMQP on 127.0.0.1:5672);
#               ARGS passes flags to `gateway serve`: make run ARGS="--amqp-port 5673"
#   make test   ruff, mypy, the import layers (lint-imports) and the whole test suite
#               (what .ci/run runs)
#   make bench  gateway beside RabbitMQ and Mosquitto, every scenario (bench/suite.py);
#               BENCH_ARGS=--quick for a short run
#   make cert   a development CA, server and client certificate in certs/ (docs/tls.md)
#   make clean  remove caches and build output (keeps .venv and data/)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench cert clean distclean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes (the install is editable: code edits need none).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

ARGS ?=

run: $(STAMP)
	$(BIN)/gateway serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy gateway protocols

# Tools from Debian's packages the tests use, installed (with sudo when not root) where
# missing: Chromium for the web UI's browser tests (driven by Playwright), rabbitmqadmin
# (shipped with rabbitmq-server), docker-compose (validates deploy/cluster/compose.yml when
# Docker's compose plugin is missing). The script keeps rabbitmq-server's install from
# starting (and enabling) a system RabbitMQ on 5672/15672, and fails if one it installed
# still runs.
SYSTEM_TOOLS := /usr/bin/chromium /usr/bin/rabbitmqadmin /usr/bin/docker-compose
INSTALL_DEBS := sh scripts/install-debian-packages.sh

$(SYSTEM_TOOLS):
	@echo "make: installing Debian packages chromium rabbitmq-server docker-compose (apt-get, sudo)"
	$(INSTALL_DEBS) chromium rabbitmq-server docker-compose

# autobahn-js and mqtt.js for the WebSocket browser test, from the npm registry (no lockfile)
BROWSER_LIBS := tests/websocket/node_modules/.installed

$(BROWSER_LIBS): tests/websocket/package.json
	@echo "make: npm install in tests/websocket (autobahn, mqtt.js for the browser test)"
	cd tests/websocket && npm install --no-package-lock --no-audit --no-fund --silent
	touch $(BROWSER_LIBS)

test: lint typecheck | $(SYSTEM_TOOLS) $(BROWSER_LIBS)
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -p no:cacheprovider

# The peers the benchmark runs beside gateway, from Debian's packages where missing (the
# suite starts private instances of them; the system services are not used).
BENCH_TOOLS := /usr/lib/rabbitmq/bin/rabbitmq-server /usr/sbin/mosquitto
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?=

$(BENCH_TOOLS):
	@echo "make: installing Debian packages rabbitmq-server mosquitto (apt-get, sudo)"
	$(INSTALL_DEBS) rabbitmq-server mosquitto

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) | $(BENCH_TOOLS)
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

# the client certificate's CN is the broker user it logs in as (make cert CERT_CN=alice)
CERT_DIR ?= certs
CERT_CN ?= guest
cert: $(STAMP)
	$(BIN)/gateway ctl generate_cert $(CERT_DIR) --client-cn $(CERT_CN)

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
