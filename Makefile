# govbus — the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test lint fmt build

## Start the whole bus on this machine: embedded Kafka-protocol cluster,
## broker, and the civil-registry and interior demo agencies.
run:
	$(CARGO) run -p govbus-cli --bin govbus -- run

## Unit and end-to-end tests (embedded cluster, temporary SQLite databases).
test:
	$(CARGO) test --workspace --all-targets

## What CI checks before the tests.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --all-targets
