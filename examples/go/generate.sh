#!/usr/bin/env bash
# Regenerates the committed Go stubs under gen/ from the repository's proto/.
#
#   examples/go/generate.sh
#
# Run it after a change to proto/ and commit the result. It needs only Go and
# python3: protoc comes from the PyPI wheel grpcio-tools (installed into a
# private virtualenv), protoc-gen-go and protoc-gen-go-grpc from `go install`,
# all at the versions pinned below, in ${GOVBUS_EXAMPLES_CACHE:-<repo>/target/examples}/go.
#
# The .proto files carry no `go_package` option; the Go import path of each
# file is given on the command line (M options), so proto/ stays language
# neutral and each agency picks its own Go package path.
set -euo pipefail

GRPCIO_TOOLS_VERSION=1.78.0      # bundles libprotoc 31.1
GRPCIO_VERSION=1.78.0
PYTHON_PROTOBUF_VERSION=6.33.6
SETUPTOOLS_VERSION=84.2.1
PROTOC_GEN_GO_VERSION=v1.36.12   # = google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/go"
tools="$cache/protoc-tools"
die() { echo "generate.sh: $*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH"
command -v python3 >/dev/null || die "python3 is not on PATH"
module="$(cd "$here" && go list -m)"

mkdir -p "$tools/bin"
if [ ! -x "$tools/venv/bin/python" ]; then
  python3 -m venv "$tools/venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
if [ -z "$("$tools/venv/bin/python" -m grpc_tools.protoc --version 2>/dev/null || true)" ] \
   || [ "$("$tools/venv/bin/pip" show grpcio-tools 2>/dev/null | sed -n 's/^Version: //p')" != "$GRPCIO_TOOLS_VERSION" ]; then
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    "grpcio-tools==$GRPCIO_TOOLS_VERSION" "grpcio==$GRPCIO_VERSION" \
    "protobuf==$PYTHON_PROTOBUF_VERSION" "setuptools==$SETUPTOOLS_VERSION" \
    || die "pip could not install grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi
GOBIN="$tools/bin" GOTOOLCHAIN=local go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN="$tools/bin" GOTOOLCHAIN=local go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

# The well-known types (google/protobuf/*.proto) ship inside the wheel.
wkt="$("$tools/venv/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

cd "$repo/proto"
v1=(govbus/v1/*.proto)
records=(govbus/records/v1/*.proto)
mopts=()
for f in "${v1[@]}"; do mopts+=("M$f=$module/gen/govbus/v1;govbusv1"); done
for f in "${records[@]}"; do mopts+=("M$f=$module/gen/govbus/records/v1;recordsv1"); done
go_opts=("module=$module" "paths=import")
join() { local IFS=,; echo "$*"; }

rm -rf "$here/gen"
mkdir -p "$here/gen"
PATH="$tools/bin:$PATH" "$tools/venv/bin/python" -m grpc_tools.protoc \
  -I . -I "$wkt" \
  --go_out="$here" --go_opt="$(join "${go_opts[@]}" "${mopts[@]}")" \
  --go-grpc_out="$here" --go-grpc_opt="$(join "${go_opts[@]}" "${mopts[@]}")" \
  "${v1[@]}" "${records[@]}"

# What the stubs were made from: setup.sh refuses stubs older than proto/.
(cd "$repo" && find proto -name '*.proto' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
  | sha256sum | cut -d' ' -f1 > "$here/gen/proto.sha256"

echo "generated:" >&2
(cd "$here" && find gen -name '*.go' | sort) >&2
