#!/usr/bin/env bash
# Runs the Java roundtrip against a running govbus. Needs GOVBUS_CERTS,
# GOVBUS_BROKER, GOVBUS_CIVIL_REGISTRY and GOVBUS_SUBJECT (see README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
jar="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/java/govbus-roundtrip.jar"

if [[ ! -f "$jar" ]]; then
  echo "run examples/java/setup.sh first ($jar is missing)" >&2
  exit 1
fi
exec java -jar "$jar" "$@"
