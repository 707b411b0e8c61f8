# Simpul: the two commands are `make run` and `make test`; each installs what it needs and is
# safe to run twice. `make stop` stops everything the project started.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_STAMP := .simpul/.system-packages
TEST_CONFIG := tests/simpul.test.yaml

FOR ?=
RATE ?= 20
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_ARGS_MYSQL ?=
BENCH_ARGS_ER ?=
BENCH_ARGS_E2E ?=

.PHONY: run test stop deps venv bench clean

run: deps ## the main job on the local stack (make run FOR=60s ends by itself)
	$(BIN)/simpul run --rate $(RATE) $(if $(FOR),--for $(FOR))

test: deps ## the whole test suite against real servers
	$(BIN)/pytest $(PYTEST_ARGS)

bench: deps ## the benchmarks (not part of make test); figures in bench/results/
	$(BIN)/simpul stack up
	$(BIN)/python -m bench.cdc_postgres $(BENCH_ARGS)
	$(BIN)/python -m bench.cdc_mysql --config simpul.yaml $(BENCH_ARGS_MYSQL)
	$(BIN)/python -m bench.row_encoders --config simpul.yaml
	$(BIN)/python -m bench.er_resolver
	$(BIN)/python -m bench.avro_encoding --config simpul.yaml
	$(BIN)/python -m bench.er --config simpul.yaml $(BENCH_ARGS_ER)
	$(BIN)/python -m bench.api --config simpul.yaml
	$(BIN)/python -m bench.e2e --config simpul.yaml $(BENCH_ARGS_E2E)

stop: ## stop everything the project started (main and test stacks)
	@if [ -x $(BIN)/simpul ]; then \
		$(BIN)/simpul stack down; \
		$(BIN)/simpul --config $(TEST_CONFIG) stack down; \
	fi

deps: venv $(SYSTEM_STAMP)

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $@

$(SYSTEM_STAMP): deploy/local/install-system-packages.sh
	bash deploy/local/install-system-packages.sh
	mkdir -p $(dir $@) && touch $@

clean: stop
	rm -rf .simpul $(VENV) deploy/kafka/target
