# Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install demo test test-matrix test-stock test-pythons test-rabbitmq4 test-quick test-random test-faults soak lint format bench bench-quick bench-dashboard clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the project and its dev tools

demo: $(STAMP) ## run the demo workload: 2 workers, a producer, a summary
	$(BIN)/python -m tasks.demo

test: $(STAMP) ## the whole suite against a real RabbitMQ, then test-matrix (what CI runs)
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-matrix

test-matrix: $(STAMP) ## test-stock, test-pythons and test-rabbitmq4 side by side (~10 min)
	RABBITMQ4_URL=$(RABBITMQ4_URL) $(BIN)/python -m tests.matrix

test-stock: $(STAMP) ## unit and integration tests on aiormq's own frame reader (~8 min)
	LEVERET_STOCK_FRAMES=1 $(BIN)/pytest tests/unit tests/integration -m "not slow" -q

RABBITMQ4_URL ?= amqp://guest:guest@127.0.0.1:5682/

test-rabbitmq4: $(STAMP) ## unit and integration tests against RabbitMQ 4 (sudo .ci/rabbitmq4.sh up; ~8 min)
	RABBITMQ_URL=$(RABBITMQ4_URL) $(BIN)/pytest tests/unit tests/integration -m "not slow" -q

test-pythons: $(STAMP) ## unit tests and an integration subset on Python 3.12 and 3.13 (.venv-3.X; ~3 min each)
	$(BIN)/python -m tests.pythons

test-quick: $(STAMP) ## the suite without the slow fault tests
	$(BIN)/pytest -m "not slow"

test-random: $(STAMP) ## the quick suite in a random order (seed printed; --randomly-seed=N replays)
	$(BIN)/pytest -m "not slow" -p randomly

test-faults: $(STAMP) ## the fault suite at full size, with its table
	LEVERET_FAULTS_FULL=1 $(BIN)/pytest tests/faults -m slow -s

soak: $(STAMP) ## the soak test for 30 min (make test runs 3); its tables in .pytest_cache/soak.md
	LEVERET_SOAK_SECONDS=1800 $(BIN)/pytest tests/faults/test_soak.py -s

lint: $(STAMP) ## ruff, mypy (strict) and the layer contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## benchmarks beside a raw aio-pika baseline (< 5 min)
	$(BIN)/python -m bench

bench-quick: $(STAMP) ## the benchmarks, small (< 1 min)
	$(BIN)/python -m bench --quick

bench-dashboard: $(STAMP) ## the dashboard with 100,000 dead letters: page latency, RSS (~5 min)
	$(BIN)/python -m bench --only dashboard

clean: ## remove the environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
