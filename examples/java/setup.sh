#!/usr/bin/env bash
# Builds the Java roundtrip example into one runnable jar:
#   ${GOVBUS_EXAMPLES_CACHE:-<repo>/target/examples}/java/govbus-roundtrip.jar
# Maven fetches grpc-java, protobuf, protoc and protoc-gen-grpc-java from
# Maven Central into ~/.m2 on the first run; the jar then runs offline.
# A stamp (hash of pom.xml, the sources and proto/) makes a second run a no-op.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/java"
jar="$cache/govbus-roundtrip.jar"
stamp="$cache/stamp"

fail() { echo "examples/java/setup.sh: $*" >&2; exit 1; }

command -v java >/dev/null 2>&1 || fail "java not found: install a JDK, 17 or newer"
command -v javac >/dev/null 2>&1 || fail "javac not found: install a JDK (not only a JRE), 17 or newer"
command -v mvn >/dev/null 2>&1 || fail "mvn not found: install Maven 3.8 or newer"
java_major="$(javac -version 2>&1 | sed -n 's/^javac \([0-9]*\).*/\1/p')"
[[ -n "$java_major" && "$java_major" -ge 17 ]] || fail "JDK 17 or newer needed; javac -version says: $(javac -version 2>&1)"

hash="$(
  cd "$repo"
  { echo "java $java_major"
    find examples/java/pom.xml examples/java/setup.sh examples/java/src proto -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
)"
if [[ -f "$jar" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
  echo "java example up to date: $jar"
  exit 0
fi

mkdir -p "$cache"
rm -rf "$cache/build" "$stamp"
log="$cache/build.log"
echo "building the java example (the first build downloads grpc-java, protobuf and protoc into ~/.m2)..."
if ! mvn -B -q -f "$here/pom.xml" -Dgovbus.build.dir="$cache/build" package >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  fail "the Maven build failed (full log: $log); it needs Maven Central, or every artifact already in ~/.m2"
fi
[[ -f "$cache/build/govbus-roundtrip.jar" ]] || fail "Maven succeeded but left no $cache/build/govbus-roundtrip.jar"
cp "$cache/build/govbus-roundtrip.jar" "$jar.tmp"
mv "$jar.tmp" "$jar"
echo "$hash" >"$stamp"
echo "java example built: $jar"
