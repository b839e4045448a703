# govbus — the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test bench lint fmt build

## Start the whole bus on this machine: embedded Kafka-protocol cluster,
## broker, and the civil-registry and interior demo agencies.
run:
	$(CARGO) run -p govbus-cli --bin govbus -- run

## Unit and end-to-end tests: the embedded Kafka-protocol cluster and
## temporary SQLite databases, and the client matrix (Python, Java, Node.js,
## Go and grpcurl clients from examples/, each set up by its setup.sh with
## pinned versions under target/examples). Two switches add passes of the
## end-to-end suite (tests/):
##   TEST_POSTGRES_URL=postgres://postgres:PASSWORD@127.0.0.1:5432/postgres
##       also on PostgreSQL, each test in databases created and dropped for it;
##   TEST_APACHE_KAFKA=1
##       also against Apache Kafka 4.1.1 (KRaft), a node per test, fetched
##       from Maven Central and started by tests/kafka/apache-kafka.sh;
##   TEST_TANSU=1
##       also against a separate tansu broker process (durable SQLite log),
##       `tansu` on PATH or TANSU_BIN.
test:
	env -u TEST_POSTGRES_URL -u TEST_KAFKA $(CARGO) test --workspace --all-targets
	@if [ -n "$$TEST_POSTGRES_URL" ]; then \
		echo "== end-to-end suite and store upgrades: embedded cluster, PostgreSQL"; \
		env -u TEST_KAFKA $(CARGO) test -p govbus-tests -p govbus-store --all-targets || exit 1; \
	fi
	@if [ "$$TEST_APACHE_KAFKA" = 1 ]; then \
		echo "== end-to-end suite: Apache Kafka, SQLite"; \
		env -u TEST_POSTGRES_URL TEST_KAFKA=apache $(CARGO) test -p govbus-tests --all-targets || exit 1; \
		if [ -n "$$TEST_POSTGRES_URL" ]; then \
			echo "== end-to-end suite: Apache Kafka, PostgreSQL"; \
			TEST_KAFKA=apache $(CARGO) test -p govbus-tests --all-targets || exit 1; \
		fi; \
	fi
	@if [ "$$TEST_TANSU" = 1 ]; then \
		echo "== end-to-end suite: tansu, SQLite"; \
		env -u TEST_POSTGRES_URL TEST_KAFKA=tansu $(CARGO) test -p govbus-tests --all-targets || exit 1; \
		if [ -n "$$TEST_POSTGRES_URL" ]; then \
			echo "== end-to-end suite: tansu, PostgreSQL"; \
			TEST_KAFKA=tansu $(CARGO) test -p govbus-tests --all-targets || exit 1; \
		fi; \
	fi

## Benchmarks against baselines measured in the same run (release build,
## then a few minutes); writes docs/BENCHMARKS.md. Options through BENCH_ARGS:
##   --quick                             a short run to check the bench itself
##   --sizes 10000,1000000,10000000      the ten-million-record run (slow to seed)
## and BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres puts the
## showcases on PostgreSQL instead of SQLite (report: docs/BENCHMARKS-postgres.md).
bench:
	env -u TEST_KAFKA -u TEST_POSTGRES_URL $(CARGO) run --release -p govbus-bench -- $(BENCH_ARGS)

## What CI checks before the tests.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --all-targets
