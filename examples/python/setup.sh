#!/usr/bin/env bash
# Installs the pinned Python toolchain of the govbus client example into
#   ${GOVBUS_EXAMPLES_CACHE:-<repo>/target/examples}/python
# (a venv from requirements.txt) and generates the Python stubs of proto/
# there with grpc_tools.protoc. Idempotent: when requirements.txt, the
# .proto files and this script are unchanged it only checks a stamp.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/python"
python="${PYTHON:-python3}"

fail() { echo "examples/python/setup.sh: $*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 || fail "no $python on PATH (set PYTHON to a Python 3.10+ interpreter)"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum (coreutils) is required"

# Everything the cache is built from: a change to any of it rebuilds.
want="$( {
    "$python" -c 'import sys; print(sys.version)'
    sha256sum "$here/requirements.txt" "$here/setup.sh"
    (cd "$repo" && find proto -name '*.proto' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
} | sha256sum | cut -d' ' -f1)"

if [[ -f "$cache/stamp" && "$(cat "$cache/stamp")" == "$want" ]] \
    && "$cache/venv/bin/python" -c '' 2>/dev/null; then
    echo "examples/python: up to date in $cache" >&2
    exit 0
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$("$python" --version 2>&1) is too old: grpcio 1.85 and protobuf 7 need Python 3.10+"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
    || fail "$python has no venv/ensurepip module (on Debian/Ubuntu: apt-get install python3-venv)"

echo "examples/python: installing into $cache" >&2
mkdir -p "$cache"
rm -f "$cache/stamp"
"$python" -m venv --clear "$cache/venv" || fail "could not create a venv in $cache/venv"
# Wheels only: building grpcio from source takes tens of minutes and a C++
# toolchain; if PyPI has no wheel for this Python/platform, say so instead.
"$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r "$here/requirements.txt" \
    || fail "pip could not install the pinned wheels of requirements.txt into $cache/venv (is PyPI reachable, and does grpcio $(sed -n 's/^grpcio==//p' "$here/requirements.txt") publish a wheel for $("$python" --version 2>&1) on $(uname -m)?)"

# Stubs: govbus/v1/*_pb2.py, *_pb2_grpc.py (+ .pyi for editors). The
# google/protobuf well-known types come with grpc_tools, which adds their
# include path itself when run as `python -m grpc_tools.protoc`.
rm -rf "$cache/stubs.tmp"
mkdir -p "$cache/stubs.tmp"
mapfile -t protos < <(cd "$repo/proto" && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
(cd "$repo/proto" && "$cache/venv/bin/python" -m grpc_tools.protoc -I. \
    --python_out="$cache/stubs.tmp" --pyi_out="$cache/stubs.tmp" \
    --grpc_python_out="$cache/stubs.tmp" "${protos[@]}") \
    || fail "grpc_tools.protoc failed on proto/"
rm -rf "$cache/stubs"
mv "$cache/stubs.tmp" "$cache/stubs"

echo "$want" > "$cache/stamp"
echo "examples/python: ready ($cache)" >&2
