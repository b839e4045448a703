#!/usr/bin/env bash
# Runs roundtrip.py with the toolchain and stubs that setup.sh installed.
# Inputs: GOVBUS_CERTS, GOVBUS_BROKER, GOVBUS_CIVIL_REGISTRY, GOVBUS_SUBJECT.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/python"

if [[ ! -f "$cache/stamp" || ! -x "$cache/venv/bin/python" || ! -d "$cache/stubs" ]]; then
    echo "examples/python: toolchain missing in $cache: run examples/python/setup.sh first" >&2
    exit 1
fi
export PYTHONPATH="$cache/stubs${PYTHONPATH:+:$PYTHONPATH}"
exec "$cache/venv/bin/python" "$here/roundtrip.py" "$@"
