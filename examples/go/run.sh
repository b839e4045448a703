#!/usr/bin/env bash
# Runs the roundtrip example built by setup.sh. Needs GOVBUS_CERTS,
# GOVBUS_BROKER, GOVBUS_CIVIL_REGISTRY and GOVBUS_SUBJECT (see README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/go/bin"
if [ ! -x "$bin/roundtrip" ]; then
  echo "examples/go/run.sh: $bin/roundtrip is missing: run examples/go/setup.sh first" >&2
  exit 1
fi
exec "$bin/roundtrip" "$@"
