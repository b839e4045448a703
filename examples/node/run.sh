#!/usr/bin/env bash
# Runs roundtrip.js with the dependencies that setup.sh installed.
# Inputs: GOVBUS_CERTS, GOVBUS_BROKER, GOVBUS_CIVIL_REGISTRY, GOVBUS_SUBJECT.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/node"

if [[ ! -f "$cache/stamp" || ! -d "$cache/node_modules/@grpc/grpc-js" ]]; then
    echo "examples/node: dependencies missing in $cache: run examples/node/setup.sh first" >&2
    exit 1
fi
# roundtrip.js lives outside the cache; NODE_PATH lets its require() find
# the packages installed there.
export NODE_PATH="$cache/node_modules${NODE_PATH:+:$NODE_PATH}"
exec node "$here/roundtrip.js" "$@"
