"""A govbus client in Python (grpcio): health, reflection, one publish, one
evidence query and one refusal, each over mutual TLS.

Inputs, from the environment:
  GOVBUS_CERTS           folder with ca.pem and <stem>.pem + <stem>.key per system
  GOVBUS_BROKER          host:port of the broker (OnceOnly, Consents)
  GOVBUS_CIVIL_REGISTRY  host:port of the civil registry's adapter (AgencyAdapter)
  GOVBUS_SUBJECT         the PINFL (14 digits) to publish a birth certificate for

Results go to stdout, one line per step; diagnostics to stderr. Exits 0 only
when every step passed. The govbus stubs are generated from proto/ (see
README.md); the health and reflection stubs ship with grpcio-health-checking
and grpcio-reflection.
"""

import datetime
import os
import secrets
import sys
import time

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from govbus.records.v1 import civil_registry_pb2, common_pb2, interior_pb2
from govbus.v1 import adapter_pb2, adapter_pb2_grpc, once_only_pb2, once_only_pb2_grpc
from govbus.v1 import record_pb2

# Certificate stems in GOVBUS_CERTS: who is calling.
CIVIL_REGISTRY = "civil-registry.fhdy"  # owns birth_certificate; calls its adapter
PORTAL = "egov.portal"  # reads evidence from the broker

TIMEOUT = 10  # seconds, per call
EVIDENCE_WAIT = 30  # seconds: ingest into the broker's showcase is asynchronous


class Failure(Exception):
    """A step did not give the expected answer."""


def connect(address, certs, stem):
    """An mTLS channel to `address`, presenting the certificate `<stem>.pem`.

    The bus identifies the caller by its client certificate alone. The
    servers' certificates name DNS localhost and IP 127.0.0.1, so addresses
    such as 127.0.0.1:50051 or localhost:50051 verify as they are, without a
    target-name override.
    """

    def read(name):
        with open(os.path.join(certs, name), "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read(f"{stem}.key"),
        certificate_chain=read(f"{stem}.pem"),
    )
    return grpc.secure_channel(address, credentials)


def check_health(channel):
    """The server's overall status from the standard health service."""
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def list_services(channel):
    """The services a server offers, by server reflection, sorted."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([request]), timeout=TIMEOUT
    )
    return sorted(s.name for r in responses for s in r.list_services_response.service)


def publish_birth_certificate(adapter, subject_id):
    """Publishes a new birth certificate about `subject_id` through the civil
    registry's adapter; returns its PublishResult once Kafka has it."""
    number = f"I-TN {secrets.randbelow(10**7):07d}"
    today = datetime.date.today().isoformat()
    certificate = civil_registry_pb2.BirthCertificate(
        certificate_number=number,
        child=common_pb2.PersonName(pinfl=subject_id, last_name="Yusupova", first_name="Laylo"),
        sex=common_pb2.SEX_FEMALE,
        date_of_birth=today,
        registered_on=today,
    )
    payload = any_pb2.Any()
    payload.Pack(certificate)  # type.googleapis.com/govbus.records.v1.BirthCertificate
    issued_at = timestamp_pb2.Timestamp()
    issued_at.GetCurrentTime()
    record = record_pb2.Record(
        record_type="birth_certificate",
        subject_id=subject_id,
        record_key=number,
        version=1,
        status=record_pb2.RECORD_STATUS_ACTIVE,
        issued_at=issued_at,
        payload=payload,
    )
    response = adapter_pb2_grpc.AgencyAdapterStub(adapter).Publish(
        adapter_pb2.PublishRequest(records=[record]), timeout=TIMEOUT
    )
    result = response.results[0]
    if result.outcome != adapter_pb2.PUBLISH_OUTCOME_ACCEPTED:
        outcome = adapter_pb2.PublishOutcome.Name(result.outcome)
        raise Failure(f"publish: {outcome}: {result.error}")
    return result


def read_evidence(broker, subject_id, record_id):
    """Asks the broker for the birth certificate evidence of `subject_id`, as
    the portal would, until the record `record_id` has reached its showcase."""
    stub = once_only_pb2_grpc.OnceOnlyStub(broker)
    request = once_only_pb2.GetEvidenceRequest(
        subject_id=subject_id, record_type="birth_certificate", purpose="demo"
    )
    deadline = time.monotonic() + EVIDENCE_WAIT
    while True:
        try:
            response = stub.GetEvidence(request, timeout=TIMEOUT)
            for evidence in response.evidence:
                if evidence.record.record_id == record_id:
                    return evidence
            waiting_for = f"{len(response.evidence)} evidence, none of them {record_id}"
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            waiting_for = f"NOT_FOUND: {e.details()}"
        if time.monotonic() > deadline:
            raise Failure(f"evidence: {record_id} not there after {EVIDENCE_WAIT} s ({waiting_for})")
        time.sleep(0.5)


def publish_someone_elses_record(adapter, subject_id):
    """Publishes an address registration, a record type the interior
    ministry owns: the adapter must refuse it. Returns the refusal."""
    registration = interior_pb2.AddressRegistration(
        resident=common_pb2.PersonName(pinfl=subject_id, last_name="Yusupova", first_name="Laylo"),
        address=common_pb2.Address(region="Toshkent shahri", district="Yunusobod", house="1"),
        kind=interior_pb2.REGISTRATION_KIND_PERMANENT,
        registered_on=datetime.date.today().isoformat(),
    )
    payload = any_pb2.Any()
    payload.Pack(registration)
    issued_at = timestamp_pb2.Timestamp()
    issued_at.GetCurrentTime()
    record = record_pb2.Record(
        record_type="address_registration",
        subject_id=subject_id,
        record_key=f"AR-{secrets.token_hex(4)}",
        version=1,
        status=record_pb2.RECORD_STATUS_ACTIVE,
        issued_at=issued_at,
        payload=payload,
    )
    try:
        adapter_pb2_grpc.AgencyAdapterStub(adapter).Publish(
            adapter_pb2.PublishRequest(records=[record]), timeout=TIMEOUT
        )
    except grpc.RpcError as e:
        return e
    raise Failure("refused: the adapter accepted an address_registration from the civil registry")


def env(name):
    value = os.environ.get(name)
    if not value:
        raise Failure(f"{name} is not set")
    return value


def main():
    certs = env("GOVBUS_CERTS")
    broker_address = env("GOVBUS_BROKER")
    adapter_address = env("GOVBUS_CIVIL_REGISTRY")
    subject_id = env("GOVBUS_SUBJECT")

    # One channel per (server, identity): the broker as the portal, the civil
    # registry's adapter as the civil registry's own system.
    with connect(broker_address, certs, PORTAL) as broker, connect(
        adapter_address, certs, CIVIL_REGISTRY
    ) as adapter:
        servers = [(broker_address, broker), (adapter_address, adapter)]
        for address, channel in servers:
            status = check_health(channel)
            if status != "SERVING":
                raise Failure(f"health {address}: {status}")
            print(f"health {address}: {status}", flush=True)
        for address, channel in servers:
            print(f"services {address}: {','.join(list_services(channel))}", flush=True)

        published = publish_birth_certificate(adapter, subject_id)
        print(
            f"published: {published.record_id} {published.topic}"
            f" {published.partition} {published.offset}",
            flush=True,
        )

        evidence = read_evidence(broker, subject_id, published.record_id)
        record = evidence.record
        status = once_only_pb2.EvidenceStatus.Name(evidence.status)
        print(f"evidence: {record.record_id} {record.record_type} v{record.version} {status}", flush=True)

        refusal = publish_someone_elses_record(adapter, subject_id)
        if refusal.code() != grpc.StatusCode.PERMISSION_DENIED:
            raise Failure(f"refused: expected PERMISSION_DENIED, got {refusal.code().name}: {refusal.details()}")
        print(f"refused: PERMISSION_DENIED {refusal.details()}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        sys.exit(f"error: {e}")
    except grpc.RpcError as e:
        sys.exit(f"error: {e.code().name}: {e.details()}")
    except OSError as e:
        sys.exit(f"error: {e}")
