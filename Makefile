# govbus — the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test lint fmt build

## Start the whole bus on this machine: embedded Kafka-protocol cluster,
## broker, and the civil-registry and interior demo agencies.
run:
	$(CARGO) run -p govbus-cli --bin govbus -- run

## Unit and end-to-end tests (embedded cluster, temporary SQLite databases).
## With TEST_POSTGRES_URL set (an admin URL such as
## postgres://postgres@127.0.0.1:5432/postgres) the end-to-end suite runs a
## second time on PostgreSQL, each test in databases of its own.
test:
	$(CARGO) test --workspace --all-targets
	@if [ -n "$$TEST_POSTGRES_URL" ]; then \
		echo "== end-to-end suite on PostgreSQL ($$TEST_POSTGRES_URL)"; \
		$(CARGO) test -p govbus-tests --all-targets; \
	fi

## What CI checks before the tests.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --all-targets
