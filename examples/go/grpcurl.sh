#!/usr/bin/env bash
# The roundtrip of cmd/roundtrip done with grpcurl alone: no .proto files,
# everything comes from the servers' reflection. Same environment, same
# stdout lines:
#   health <addr>: SERVING
#   services <addr>: <sorted, comma-separated service names>
#   published: <record_id> <topic> <partition> <offset>
#   evidence: <record_id> <record_type> v<version> <EVIDENCE_STATUS_…>
#   refused: PERMISSION_DENIED <status message>
# Diagnostics go to stderr; exit 0 only when every step passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${GOVBUS_EXAMPLES_CACHE:-$repo/target/examples}/go/bin"
die() { echo "examples/go/grpcurl.sh: $*" >&2; exit 1; }

[ -x "$bin/grpcurl" ] || die "$bin/grpcurl is missing: run examples/go/setup.sh first"
command -v python3 >/dev/null || die "python3 is needed to read grpcurl's JSON"
for v in GOVBUS_CERTS GOVBUS_BROKER GOVBUS_CIVIL_REGISTRY GOVBUS_SUBJECT; do
  [ -n "${!v:-}" ] || die "$v is not set"
done
C="$GOVBUS_CERTS"
BROKER="$GOVBUS_BROKER"
ADAPTER="$GOVBUS_CIVIL_REGISTRY"
SUBJECT="$GOVBUS_SUBJECT"
[[ "$SUBJECT" =~ ^[0-9]{14}$ ]] || die "GOVBUS_SUBJECT=$SUBJECT: expected a PINFL (14 digits)"
err="$(mktemp)"
trap 'rm -f "$err"' EXIT

# grpcurl as one identity: the file stem of its certificate and key in $C.
as() {
  local stem="$1"; shift
  "$bin/grpcurl" -max-time 10 -cacert "$C/ca.pem" -cert "$C/$stem.pem" -key "$C/$stem.key" "$@"
}
# A JSON value out of stdin: json <python expression over `j`>.
json() { python3 -c "import json, sys; j = json.load(sys.stdin); print($1)" "${@:2}"; }
# grpcurl reports a failed call on stderr as "Code: PermissionDenied" and
# "Message: …"; prints "PERMISSION_DENIED <message>".
status_of() {
  python3 -c '
import re, sys
text = sys.stdin.read()
code = re.search(r"^\s*Code: (\w+)", text, re.M)
msg = re.search(r"^\s*Message: (.*?)(?:\n\s*Details:|\Z)", text, re.M | re.S)
if not code:
    sys.exit("no gRPC status in: " + text.strip())
name = re.sub(r"(?<!^)(?=[A-Z])", "_", code.group(1)).upper().replace("CANCELED", "CANCELLED")
print(name, msg.group(1).strip() if msg else "")'
}

# 1. Health of each server as a whole (service "").
for pair in "egov.portal $BROKER" "civil-registry.fhdy $ADAPTER"; do
  set -- $pair
  out="$(as "$1" -d '{"service": ""}' "$2" grpc.health.v1.Health/Check)" || die "health $2: grpcurl failed"
  st="$(json 'j.get("status", "UNKNOWN")' <<<"$out")"
  echo "health $2: $st"
  [ "$st" = SERVING ] || die "health $2: $st, want SERVING"
done

# 2. The services each server offers, by reflection.
for pair in "egov.portal $BROKER" "civil-registry.fhdy $ADAPTER"; do
  set -- $pair
  out="$(as "$1" "$2" list)" || die "services $2: grpcurl list failed"
  echo "services $2: $(sort <<<"$out" | paste -sd, -)"
done

# 3. Publish a birth certificate as the civil registry, the owner of the type.
number="I-GC $(printf '%07d' $(( (RANDOM << 15 | RANDOM) % 10000000 )))"
born="$(python3 -c "import sys; p = sys.argv[1]; print({'1':'18','2':'18','3':'19','4':'19','5':'20','6':'20'}.get(p[0], '20') + p[5:7] + '-' + p[3:5] + '-' + p[1:3])" "$SUBJECT")"
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
out="$(as civil-registry.fhdy -d '{"records": [{
    "record_type": "birth_certificate", "subject_id": "'"$SUBJECT"'",
    "record_key": "'"$number"'", "version": 1, "status": "RECORD_STATUS_ACTIVE",
    "issued_at": "'"$now"'",
    "payload": {"@type": "type.googleapis.com/govbus.records.v1.BirthCertificate",
                "certificate_number": "'"$number"'", "date_of_birth": "'"$born"'",
                "child": {"pinfl": "'"$SUBJECT"'", "first_name": "Laylo", "last_name": "Yusupova"}}
  }]}' "$ADAPTER" govbus.v1.AgencyAdapter/Publish)" || die "publish: grpcurl failed"
# Zero values (partition 0, offset 0) are left out of grpcurl's JSON.
read -r record_id outcome topic partition offset < <(json '" ".join(str(x) for x in (lambda r: (r.get("recordId", "-"), r.get("outcome", "PUBLISH_OUTCOME_UNSPECIFIED"), r.get("topic", "-"), r.get("partition", 0), r.get("offset", "0")))(j["results"][0]))' <<<"$out") || die "publish: unexpected answer: $out"
[ "$outcome" = PUBLISH_OUTCOME_ACCEPTED ] || die "publish: $outcome: $out"
echo "published: $record_id $topic $partition $offset"

# 4. Read it back as the portal; it reaches the showcase through Kafka a
#    moment after Publish returned, so NOT_FOUND is retried for up to 30 s.
deadline=$((SECONDS + 30))
while :; do
  if out="$(as egov.portal -d '{"subject_id": "'"$SUBJECT"'", "record_type": "birth_certificate", "purpose": "demo"}' \
              "$BROKER" govbus.v1.OnceOnly/GetEvidence 2>"$err")"; then
    line="$(json '" ".join(" ".join((r["recordId"], r["recordType"], "v" + str(r.get("version", 0)), e.get("status", "EVIDENCE_STATUS_UNSPECIFIED"))) for e in j.get("evidence", []) for r in [e["record"]] if r.get("recordId") == sys.argv[1])' "$record_id" <<<"$out")"
    [ -n "$line" ] && { echo "evidence: $line"; break; }
    why="no record $record_id among the evidence"
  else
    why="$(status_of <"$err")" || why="$(cat "$err")"
    case "$why" in NOT_FOUND*) ;; *) die "evidence: $why";; esac
  fi
  [ $SECONDS -lt $deadline ] || { die "evidence: not there after 30 s: $why"; }
  echo "grpcurl.sh: evidence not there yet ($why); retrying" >&2
  sleep 0.5
done

# 5. An address registration is the interior ministry's: the civil registry's
#    adapter must refuse it.
if out="$(as civil-registry.fhdy -d '{"records": [{
    "record_type": "address_registration", "subject_id": "'"$SUBJECT"'",
    "record_key": "GC-'"$RANDOM$RANDOM"'", "version": 1, "status": "RECORD_STATUS_ACTIVE",
    "issued_at": "'"$now"'",
    "payload": {"@type": "type.googleapis.com/govbus.records.v1.AddressRegistration",
                "resident": {"pinfl": "'"$SUBJECT"'", "first_name": "Laylo", "last_name": "Yusupova"},
                "address": {"region": "Toshkent shahri", "district": "Yunusobod", "street": "Amir Temur", "house": "1"},
                "kind": "REGISTRATION_KIND_PERMANENT"}
  }]}' "$ADAPTER" govbus.v1.AgencyAdapter/Publish 2>&1)"; then
  die "refusal: address_registration was accepted from the civil registry: $out"
fi
refusal="$(status_of <<<"$out")" || die "refusal: $out"
case "$refusal" in
  PERMISSION_DENIED*) echo "refused: $refusal" ;;
  *) die "refusal: want PERMISSION_DENIED, got $refusal" ;;
esac
