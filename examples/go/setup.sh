#!/usr/bin/env bash
# Installs what the Go examples need into ${GOVBUS_EXAMPLES_CACHE:-<repo>/target/examples}/go/bin:
#   grpcurl    the pinned grpcurl, for grpcurl.sh
#   roundtrip  the example program of cmd/roundtrip, for run.sh
# Idempotent: a stamp holding a hash of the inputs makes a second run return
# at once. Needs Go (the version in go.mod or newer) and the Go module proxy.
set -euo pipefail

GRPCURL_VERSION=v1.9.4

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/go/bin"
stamp="$bin/.setup-stamp"

die() { echo "examples/go/setup.sh: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go $(sed -n 's/^go //p' "$here/go.mod") or newer"
need="$(sed -n 's/^go //p' "$here/go.mod")"
have="$(go env GOVERSION)"; have="${have#go}"
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | sed -n 1p)" != "$need" ]; then
  die "go.mod needs Go $need or newer (google.golang.org/grpc requires it); this is Go $have"
fi

protos="$(cd "$repo" && find proto -name '*.proto' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
[ "$protos" = "$(cat "$here/gen/proto.sha256" 2>/dev/null)" ] \
  || die "the stubs in examples/go/gen were generated from another proto/: run examples/go/generate.sh"

inputs="$(
  cd "$here"
  echo "grpcurl $GRPCURL_VERSION"
  go env GOVERSION GOOS GOARCH
  sha256sum setup.sh go.mod go.sum
  find cmd gen -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
)"
hash="$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] && [ -x "$bin/grpcurl" ] && [ -x "$bin/roundtrip" ]; then
  echo "examples/go: up to date in $bin" >&2
  exit 0
fi

mkdir -p "$bin"
rm -f "$stamp"
export GOTOOLCHAIN=local   # never download another toolchain behind the user's back
start=$SECONDS
echo "examples/go: installing grpcurl $GRPCURL_VERSION into $bin" >&2
# -X main.version: what `grpcurl -version` prints (its releases set it the same way).
GOBIN="$bin" go install -ldflags "-X main.version=$GRPCURL_VERSION" "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" \
  || die "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION failed (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
echo "examples/go: building roundtrip" >&2
(cd "$here" && go build -mod=readonly -o "$bin/roundtrip" ./cmd/roundtrip) \
  || die "go build ./cmd/roundtrip failed"
echo "$hash" > "$stamp"
echo "examples/go: ready in $bin ($((SECONDS - start)) s)" >&2
