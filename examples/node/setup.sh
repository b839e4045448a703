#!/usr/bin/env bash
# Installs the pinned Node.js dependencies of the govbus client example
# (package.json + package-lock.json, with `npm ci`) into
#   ${GOVBUS_EXAMPLES_CACHE:-<repo>/target/examples}/node/node_modules
# Idempotent: when the manifest, the lock file, this script and Node's major
# version are unchanged it only checks a stamp. The .proto files are read at
# run time (@grpc/proto-loader), so changing them needs no new setup.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/node"

fail() { echo "examples/node/setup.sh: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || fail "no node on PATH (Node.js 18+ is required)"
command -v npm >/dev/null 2>&1 || fail "no npm on PATH (it ships with Node.js)"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum (coreutils) is required"
major="$(node -p 'process.versions.node.split(".")[0]')"
(( major >= 18 )) || fail "Node.js $(node --version) is too old: @grpc/grpc-js 1.14 here needs Node.js 18+"

want="$( {
    echo "node $major"
    sha256sum "$here/package.json" "$here/package-lock.json" "$here/setup.sh"
} | sha256sum | cut -d' ' -f1)"

if [[ -f "$cache/stamp" && "$(cat "$cache/stamp")" == "$want" && -d "$cache/node_modules/@grpc/grpc-js" ]]; then
    echo "examples/node: up to date in $cache" >&2
    exit 0
fi

echo "examples/node: installing into $cache" >&2
mkdir -p "$cache"
rm -f "$cache/stamp"
cp "$here/package.json" "$here/package-lock.json" "$cache/"
# --ignore-scripts: nothing here needs an install script (protobufjs's only
# checks its optional CLI), and the example should not run any.
(cd "$cache" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
    || fail "npm ci failed in $cache (is the npm registry reachable? does package-lock.json match package.json?)"

echo "$want" > "$cache/stamp"
echo "examples/node: ready ($cache)" >&2
