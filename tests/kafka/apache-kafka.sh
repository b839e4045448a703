#!/usr/bin/env bash
# Apache Kafka in KRaft mode for govbus's end-to-end tests, with no Docker and
# no download but Maven Central.
#
# Pinned: org.apache.kafka:kafka_2.13:4.1.1 with kafka-tools 4.1.1 (its
# Connect dependencies left out) and log4j-slf4j-impl 2.24.3 (the SLF4J 1.x
# binding the Kafka distribution ships). `fetch` resolves them with Maven
# (--strict-checksums) into ${GOVBUS_KAFKA_CACHE:-~/.cache/govbus/kafka}/<version>/
# and writes SHA256SUMS of the jar set there; every later fetch (and start)
# checks the jars against it and against tests/kafka/kafka-<version>.sha256.
#
#   apache-kafka.sh fetch
#   apache-kafka.sh start <dir> <port>      one broker+controller node on 127.0.0.1:<port>
#                                           (controller on a free port); data, logs, pid in <dir>;
#                                           a <dir> already formatted is restarted with its log
#   apache-kafka.sh start-cluster <dir> <n> <first-port>
#                                           n broker+controller nodes in one quorum, brokers on
#                                           first-port.., controllers on first-port+n..; <dir>/node<i>
#   apache-kafka.sh stop <dir>              SIGTERM, SIGKILL after GOVBUS_KAFKA_STOP_TIMEOUT (30) s;
#                                           also stops <dir>/node*/ of a cluster
#   apache-kafka.sh topics <args>           org.apache.kafka.tools.TopicCommand (kafka-topics.sh)
#   apache-kafka.sh tool <class> <args>     any main class of the same classpath
#
# Environment: GOVBUS_KAFKA_VERSION (4.1.1), GOVBUS_KAFKA_CACHE (~/.cache/govbus/kafka),
# GOVBUS_KAFKA_MAVEN_REPO (a Maven local repository instead of ~/.m2/repository),
# GOVBUS_KAFKA_HEAP (256m), GOVBUS_KAFKA_JVM_OPTS (the broker's GC flags, by default
# -XX:+UseG1GC -XX:MaxGCPauseMillis=20), GOVBUS_KAFKA_PROPERTIES (lines added to
# server.properties, e.g. broker.session.timeout.ms=3000), GOVBUS_KAFKA_START_TIMEOUT
# (120 s), GOVBUS_KAFKA_STOP_TIMEOUT (30 s), JAVA (java, 17 or newer).
# shellcheck disable=SC2016 # single-quoted awk and bash -c programs
set -euo pipefail

VERSION="${GOVBUS_KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION=2.24.3
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
CACHE="${GOVBUS_KAFKA_CACHE:-$HOME/.cache/govbus/kafka}/$VERSION"
LIBS="$CACHE/libs"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIN="$HERE/kafka-$VERSION.sha256"
JAVA="${JAVA:-java}"
HEAP="${GOVBUS_KAFKA_HEAP:-256m}"
START_TIMEOUT="${GOVBUS_KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${GOVBUS_KAFKA_STOP_TIMEOUT:-30}"
JVM_OPTS="-XX:+UseG1GC -XX:MaxGCPauseMillis=20"

say() { printf 'apache-kafka: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- fetch -------------------------------------------------------------------

write_pom() {
  cat >"$1/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>govbus.tests</groupId>
  <artifactId>apache-kafka-runtime</artifactId>
  <version>$VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>jackson-jakarta-rs-json-provider</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

sums_of() { (cd "$1" && LC_ALL=C sha256sum -- *.jar | LC_ALL=C sort -k2); }

# Checks $1/libs against $1/SHA256SUMS (names and contents) and the pin file.
verify() {
  local dir="$1"
  [[ -f "$dir/SHA256SUMS" && -d "$dir/libs" ]] || return 1
  if ! diff -q <(awk '{print $2}' "$dir/SHA256SUMS") <(cd "$dir/libs" && printf '%s\n' *.jar | LC_ALL=C sort) >/dev/null; then
    say "the jars in $dir/libs are not those listed in $dir/SHA256SUMS"
    return 2
  fi
  if ! (cd "$dir/libs" && sha256sum --quiet --strict -c ../SHA256SUMS >&2); then
    say "a jar in $dir/libs does not match $dir/SHA256SUMS"
    return 2
  fi
  if [[ -f "$PIN" ]] && ! cmp -s "$PIN" "$dir/SHA256SUMS"; then
    say "the jar set in $dir differs from the pinned $PIN:"
    diff "$PIN" "$dir/SHA256SUMS" >&2 || true
    return 2
  fi
}

fetch() {
  local rc=0
  verify "$CACHE" || rc=$?
  if [[ $rc == 0 ]]; then
    write_configs
    return 0
  elif [[ $rc == 2 ]]; then
    die "refusing a changed Kafka jar set; remove $CACHE to fetch it again"
  fi
  command -v mvn >/dev/null || die "mvn not found (Maven fetches Kafka from Maven Central)"
  local t0 work
  t0="$(now)"
  mkdir -p "$(dirname "$CACHE")"
  # One fetch at a time; a fetch that waited may find the work done.
  exec 9>"$(dirname "$CACHE")/.fetch-$VERSION.lock"
  flock 9
  rc=0
  verify "$CACHE" || rc=$?
  if [[ $rc != 1 ]]; then
    exec 9>&-
    [[ $rc == 0 ]] || die "refusing a changed Kafka jar set; remove $CACHE to fetch it again"
    write_configs
    return 0
  fi
  work="$(mktemp -d "$(dirname "$CACHE")/.fetch-$VERSION.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  write_pom "$work"
  local repo=()
  [[ -n "${GOVBUS_KAFKA_MAVEN_REPO:-}" ]] && repo=("-Dmaven.repo.local=$GOVBUS_KAFKA_MAVEN_REPO")
  say "fetching org.apache.kafka:kafka_2.13:$VERSION from Maven Central"
  if ! mvn -B -q --strict-checksums -f "$work/pom.xml" "${repo[@]}" \
      "$DEPENDENCY_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
    cat "$work/mvn.log" >&2
    die "Maven could not fetch Kafka $VERSION"
  fi
  sums_of "$work/libs" >"$work/SHA256SUMS"
  if [[ -f "$PIN" ]] && ! cmp -s "$PIN" "$work/SHA256SUMS"; then
    diff "$PIN" "$work/SHA256SUMS" >&2 || true
    die "the jars Maven fetched differ from the pinned $PIN"
  fi
  rm -rf "$work/pom.xml" "$work/mvn.log" "$CACHE"
  mv "$work" "$CACHE"
  trap - EXIT
  exec 9>&-
  write_configs
  say "fetched $(wc -l <"$CACHE/SHA256SUMS") jars, $(du -sh "$LIBS" | cut -f1), into $CACHE in $(since "$t0") s"
  [[ -f "$PIN" ]] || say "no pin yet: cp $CACHE/SHA256SUMS $PIN"
}

# log4j2 configurations: the broker's into ${kafka.logs.dir}/server.log, the
# tools' warnings to stderr.
write_configs() {
  local conf="$CACHE/config"
  mkdir -p "$conf"
  cat >"$conf/log4j2-server.xml.$$" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="server" fileName="${sys:kafka.logs.dir}/server.log">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
  </Loggers>
</Configuration>
EOF
  cat >"$conf/log4j2-tools.xml.$$" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
  mv "$conf/log4j2-server.xml.$$" "$conf/log4j2-server.xml"
  mv "$conf/log4j2-tools.xml.$$" "$conf/log4j2-tools.xml"
}

# --- tools -------------------------------------------------------------------

# A short-lived JVM on Kafka's classpath (the storage tool, kafka-topics, ...).
tool() {
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CACHE/config/log4j2-tools.xml" \
    -cp "$LIBS/*" "$@"
}

# --- start / stop --------------------------------------------------------------

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    local p
    while :; do
      p=$((20000 + RANDOM % 30000))
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
  fi
}

# A KRaft cluster id: 16 random bytes, base64url without padding, not
# starting with '-' (as Kafka's Uuid.randomUuid()).
cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)"
    [[ "$id" != -* ]] && { echo "$id"; return; }
  done
}

# write_config <node dir> <node id> <port> <controller port> <voters> <nodes>
write_config() {
  local dir="$1" id="$2" port="$3" cport="$4" voters="$5" nodes="$6"
  cat >"$dir/server.properties" <<EOF
# written by tests/kafka/apache-kafka.sh
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# the log cleaner allocates its dedupe buffer (128 MiB by default) on the heap
log.cleaner.dedupe.buffer.size=16777216
# $nodes node(s)
EOF
  [[ -z "${GOVBUS_KAFKA_PROPERTIES:-}" ]] || printf '%s\n' "$GOVBUS_KAFKA_PROPERTIES" >>"$dir/server.properties"
}

# Fails when something listens on 127.0.0.1:<port>.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || die "127.0.0.1:$1 is in use"
}

is_kafka_pid() {
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka '
}

running_pid() {
  local pidfile="$1/kafka.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  is_kafka_pid "$pid" && echo "$pid"
}

# Formats <dir>/data unless it was formatted before.
format() {
  local dir="$1" cid="$2"
  [[ -f "$dir/data/meta.properties" ]] && return 0
  tool kafka.tools.StorageTool format --cluster-id "$cid" --config "$dir/server.properties" \
    >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting $dir failed"; }
}

launch() {
  local dir="$1"
  mkdir -p "$dir/logs"
  # shellcheck disable=SC2086
  ( exec "$JAVA" -Xms"$HEAP" -Xmx"$HEAP" ${GOVBUS_KAFKA_JVM_OPTS-$JVM_OPTS} \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$CACHE/config/log4j2-server.xml" \
      -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
      </dev/null >>"$dir/logs/kafka.out" 2>&1 ) &
  echo $! >"$dir/kafka.pid"
}

# kafka_call <port> <request> <n>: sends one request (a printf format: size,
# header v1 with client id "probe", body) and prints the first <n> bytes of
# the answer as decimal numbers; fails without a whole answer within a second.
kafka_call() {
  timeout 1 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "$2" >&3
    head -c "$3" <&3 | od -An -tu1 -v | tr -s " \n" " "
  ' _ "$@" 2>/dev/null | awk -v n="$3" 'NF == n { print; ok = 1 } END { exit !ok }'
}

# The number of brokers a Metadata v4 request (all topics) answers with.
metadata_brokers() {
  local b
  # api key 3, version 4 | correlation id 1 | "probe" | topics null | no auto-create
  b="$(kafka_call "$1" '\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x01\x00\x05probe\xff\xff\xff\xff\x00' 16)" || return 1
  # size | correlation id | throttle ms | broker count
  awk '{ print $13 * 16777216 + $14 * 65536 + $15 * 256 + $16 }' <<<"$b"
}

# Makes a fresh broker do now what it does at the first consumer group and the
# first idempotent producer (create and load __consumer_offsets, get a block
# of producer ids from the controller), which librdkafka otherwise meets as
# NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS and retries for 1-3 s.
# warm_up <deadline> <broker port>...
warm_up() {
  local deadline="$1"; shift
  local ports="$*" p
  # FindCoordinator v1 of group "govbus-warmup": error code 0
  # shellcheck disable=SC2015 # either failing warns
  until_ok "$1" "$deadline" '\x00\x00\x00\x1f\x00\x0a\x00\x01\x00\x00\x00\x02\x00\x05probe\x00\x0dgovbus-warmup\x00' 14 '$13 * 256 + $14' &&
    # OffsetFetch v3 of that group, all topics, at its coordinator: no topics, error code 0
    until_ok "$ports" "$deadline" '\x00\x00\x00\x22\x00\x09\x00\x03\x00\x00\x00\x03\x00\x05probe\x00\x0dgovbus-warmup\xff\xff\xff\xff' 18 '$13 + $14 + $15 + $16 + $17 + $18' || {
    say "warning: the warm-up of Kafka on $ports did not finish"
    return 0
  }
  # InitProducerId v1, not transactional, at each broker: error code 0
  for p in "$@"; do
    until_ok "$p" "$deadline" '\x00\x00\x00\x15\x00\x16\x00\x01\x00\x00\x00\x04\x00\x05probe\xff\xff\x00\x00\xea\x60' 14 '$13 * 256 + $14' || {
      say "warning: the warm-up of Kafka on $p did not finish"
      return 0
    }
  done
}

# until_ok <ports> <deadline> <request> <n> <awk expression that is 0 when done>:
# sends the request to each port in turn until one answers so.
until_ok() {
  local b p
  while :; do
    for p in $1; do
      b="$(kafka_call "$p" "$3" "$4")" && [[ "$(awk "{ print $5 }" <<<"$b")" == 0 ]] && return 0
    done
    (($(date +%s) > $2)) && return 1
    sleep 0.05
  done
}

# wait_ready <dir> <port> <brokers> <deadline>
wait_ready() {
  local dir="$1" port="$2" want="$3" deadline="$4" n
  while :; do
    if ! running_pid "$dir" >/dev/null; then
      tail -n 30 "$dir/logs/server.log" "$dir/logs/kafka.out" >&2 2>/dev/null || true
      die "Kafka in $dir exited while starting"
    fi
    if n="$(metadata_brokers "$port")" && ((n >= want)); then
      return 0
    fi
    if (($(date +%s) > deadline)); then
      tail -n 30 "$dir/logs/server.log" >&2 2>/dev/null || true
      die "Kafka on 127.0.0.1:$port not ready after $START_TIMEOUT s"
    fi
    sleep 0.2
  done
}

start() {
  [[ $# == 2 ]] || die "usage: $0 start <dir> <port>"
  local dir port="$2" t0 t1 t2 t3 cport cid deadline
  t0="$(now)"
  fetch
  mkdir -p "$1"
  dir="$(cd "$1" && pwd)"
  running_pid "$dir" >/dev/null && die "Kafka already runs from $dir (pid $(cat "$dir/kafka.pid"))"
  # The controller port and cluster id stay those of the first start.
  [[ -f "$dir/controller.port" ]] || free_port >"$dir/controller.port"
  [[ -f "$dir/cluster.id" ]] || cluster_id >"$dir/cluster.id"
  cport="$(cat "$dir/controller.port")"
  cid="$(cat "$dir/cluster.id")"
  port_free "$port"
  port_free "$cport"
  write_config "$dir" 1 "$port" "$cport" "1@127.0.0.1:$cport" 1
  format "$dir" "$cid"
  t1="$(now)"
  launch "$dir"
  deadline=$(($(date +%s) + START_TIMEOUT))
  wait_ready "$dir" "$port" 1 "$deadline"
  t2="$(now)"
  warm_up "$deadline" "$port"
  t3="$(now)"
  say "Kafka $VERSION ready on 127.0.0.1:$port (pid $(cat "$dir/kafka.pid"), controller :$cport)" \
    "in $(since "$t0") s: fetch check + format $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s," \
    "JVM to first answer $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", b - a }') s," \
    "warm-up $(awk -v a="$t2" -v b="$t3" 'BEGIN { printf "%.2f", b - a }') s"
}

start_cluster() {
  [[ $# == 3 ]] || die "usage: $0 start-cluster <dir> <n> <first-port>"
  local n="$2" first="$3" t0 dir cid voters="" i deadline
  t0="$(now)"
  fetch
  mkdir -p "$1"
  dir="$(cd "$1" && pwd)"
  [[ -f "$dir/cluster.id" ]] || cluster_id >"$dir/cluster.id"
  cid="$(cat "$dir/cluster.id")"
  for ((i = 1; i <= n; i++)); do
    voters+="${voters:+,}$i@127.0.0.1:$((first + n + i - 1))"
  done
  local formats=()
  for ((i = 1; i <= n; i++)); do
    mkdir -p "$dir/node$i"
    running_pid "$dir/node$i" >/dev/null && die "Kafka already runs from $dir/node$i"
    port_free $((first + i - 1))
    port_free $((first + n + i - 1))
    write_config "$dir/node$i" "$i" $((first + i - 1)) $((first + n + i - 1)) "$voters" "$n"
    format "$dir/node$i" "$cid" &
    formats+=($!)
  done
  for i in "${formats[@]}"; do wait "$i" || die "formatting the cluster in $dir failed"; done
  for ((i = 1; i <= n; i++)); do launch "$dir/node$i"; done
  deadline=$(($(date +%s) + START_TIMEOUT))
  for ((i = 1; i <= n; i++)); do wait_ready "$dir/node$i" $((first + i - 1)) "$n" "$deadline"; done
  warm_up "$deadline" $(seq "$first" $((first + n - 1)))
  say "Kafka $VERSION cluster of $n ready on 127.0.0.1:$first..$((first + n - 1)) in $(since "$t0") s"
}

stop() {
  [[ $# == 1 ]] || die "usage: $0 stop <dir>"
  local dir="$1" d pid pids=() deadline
  for d in "$dir" "$dir"/node*; do
    [[ -d "$d" ]] || continue
    if pid="$(running_pid "$d")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$d/kafka.pid"
  done
  deadline=$(($(date +%s) + STOP_TIMEOUT))
  for pid in "${pids[@]}"; do
    while is_kafka_pid "$pid" && (($(date +%s) < deadline)); do sleep 0.1; done
    if is_kafka_pid "$pid"; then
      say "Kafka pid $pid still runs after $STOP_TIMEOUT s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  # A killed process has gone (or is a zombie, with no command line) shortly.
  for pid in "${pids[@]}"; do
    for _ in {1..50}; do is_kafka_pid "$pid" || break; sleep 0.1; done
  done
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  start-cluster) shift; start_cluster "$@" ;;
  stop) shift; stop "$@" ;;
  topics) shift; fetch; tool org.apache.kafka.tools.TopicCommand "$@" ;;
  tool) shift; fetch; tool "$@" ;;
  *) sed -n '2,/^# shellcheck/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
