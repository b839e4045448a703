'use strict';
// A govbus client in Node.js (@grpc/grpc-js): health, reflection, one
// publish, one evidence query and one refusal, each over mutual TLS.
//
// Inputs, from the environment:
//   GOVBUS_CERTS           folder with ca.pem and <stem>.pem + <stem>.key per system
//   GOVBUS_BROKER          host:port of the broker (OnceOnly, Consents)
//   GOVBUS_CIVIL_REGISTRY  host:port of the civil registry's adapter (AgencyAdapter)
//   GOVBUS_SUBJECT         the PINFL (14 digits) to publish a birth certificate for
//
// Results go to stdout, one line per step; diagnostics to stderr. Exits 0
// only when every step passed.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The .proto files are loaded at run time: govbus's own from the repository's
// proto/ (point this at your copy), the standard health and reflection
// services from the copies beside this file. The google/protobuf well-known
// types (Any, Timestamp) are built into protobufjs, which proto-loader uses.
const GOVBUS_PROTO = path.join(__dirname, '..', '..', 'proto');
const GRPC_PROTO = path.join(__dirname, 'proto');
const proto = grpc.loadPackageDefinition(
  protoLoader.loadSync(
    [
      'govbus/v1/adapter.proto',
      'govbus/v1/once_only.proto',
      'govbus/records/v1/civil_registry.proto',
      'govbus/records/v1/interior.proto',
      'grpc/health/v1/health.proto',
      'grpc/reflection/v1/reflection.proto',
    ],
    {
      includeDirs: [GOVBUS_PROTO, GRPC_PROTO],
      keepCase: true, // field names as in the .proto files: record_id, subject_id
      longs: String, // uint64/int64 (version, offset) as decimal strings
      enums: String, // enum values by name: 'RECORD_STATUS_ACTIVE'
      defaults: true,
      oneofs: true,
    },
  ),
);
const { AgencyAdapter, OnceOnly } = proto.govbus.v1;
const { Health } = proto.grpc.health.v1;
const { ServerReflection } = proto.grpc.reflection.v1;

// Certificate stems in GOVBUS_CERTS: who is calling.
const CIVIL_REGISTRY = 'civil-registry.fhdy'; // owns birth_certificate; calls its adapter
const PORTAL = 'egov.portal'; // reads evidence from the broker

const TIMEOUT_MS = 10_000; // per call
const EVIDENCE_WAIT_MS = 30_000; // ingest into the broker's showcase is asynchronous

class Failure extends Error {}

/**
 * One mTLS connection to `address`, presenting the certificate `<stem>.pem`;
 * `client(Service)` makes a client of any service over it.
 *
 * The bus identifies the caller by its client certificate alone. The servers'
 * certificates name DNS localhost and IP 127.0.0.1, so addresses such as
 * 127.0.0.1:50051 or localhost:50051 verify as they are, without a
 * target-name override (grpc.ssl_target_name_override).
 */
function connect(address, certs, stem) {
  const read = (name) => fs.readFileSync(path.join(certs, name));
  const credentials = grpc.credentials.createSsl(
    read('ca.pem'),
    read(`${stem}.key`),
    read(`${stem}.pem`),
  );
  const channel = new grpc.Channel(address, credentials, {});
  return {
    address,
    client: (Service) => new Service(address, credentials, { channelOverride: channel }),
    close: () => channel.close(),
  };
}

/** A unary call as a promise, with a deadline. */
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + TIMEOUT_MS }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/** The server's overall status from the standard health service. */
async function checkHealth(connection) {
  const response = await unary(connection.client(Health), 'Check', { service: '' });
  return response.status;
}

/** The services a server offers, by server reflection (v1), sorted. */
function listServices(connection) {
  const reflection = connection.client(ServerReflection);
  return new Promise((resolve, reject) => {
    const names = [];
    const call = reflection.ServerReflectionInfo({ deadline: Date.now() + TIMEOUT_MS });
    call.on('data', (response) => {
      if (response.message_response !== 'list_services_response') {
        reject(new Failure(`reflection: ${JSON.stringify(response.error_response)}`));
        return;
      }
      names.push(...response.list_services_response.service.map((s) => s.name));
    });
    call.on('error', reject);
    call.on('end', () => resolve(names.sort()));
    call.write({ list_services: '' });
    call.end();
  });
}

function now() {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/**
 * Publishes a new birth certificate about `subjectId` through the civil
 * registry's adapter; returns its PublishResult once Kafka has it.
 */
async function publishBirthCertificate(adapter, subjectId) {
  const number = `I-TN ${crypto.randomInt(10_000_000).toString().padStart(7, '0')}`;
  const today = new Date().toISOString().slice(0, 10);
  const record = {
    record_type: 'birth_certificate',
    subject_id: subjectId,
    record_key: number,
    version: 1,
    status: 'RECORD_STATUS_ACTIVE',
    issued_at: now(),
    // protobufjs packs a google.protobuf.Any from an object that names its
    // type in '@type' (the JSON form grpcurl takes too).
    payload: {
      '@type': 'type.googleapis.com/govbus.records.v1.BirthCertificate',
      certificate_number: number,
      child: { pinfl: subjectId, last_name: 'Yusupova', first_name: 'Laylo' },
      sex: 'SEX_FEMALE',
      date_of_birth: today,
      registered_on: today,
    },
  };
  const response = await unary(adapter.client(AgencyAdapter), 'Publish', { records: [record] });
  const result = response.results[0];
  if (result.outcome !== 'PUBLISH_OUTCOME_ACCEPTED') {
    throw new Failure(`publish: ${result.outcome}: ${result.error}`);
  }
  return result;
}

/**
 * Asks the broker for the birth certificate evidence of `subjectId`, as the
 * portal would, until the record `recordId` has reached its showcase.
 */
async function readEvidence(broker, subjectId, recordId) {
  const onceOnly = broker.client(OnceOnly);
  const request = { subject_id: subjectId, record_type: 'birth_certificate', purpose: 'demo' };
  const deadline = Date.now() + EVIDENCE_WAIT_MS;
  for (;;) {
    let waitingFor;
    try {
      const response = await unary(onceOnly, 'GetEvidence', request);
      const evidence = response.evidence.find((e) => e.record.record_id === recordId);
      if (evidence) return evidence;
      waitingFor = `${response.evidence.length} evidence, none of them ${recordId}`;
    } catch (err) {
      if (err.code !== grpc.status.NOT_FOUND) throw err;
      waitingFor = `NOT_FOUND: ${err.details}`;
    }
    if (Date.now() > deadline) {
      throw new Failure(`evidence: ${recordId} not there after ${EVIDENCE_WAIT_MS / 1000} s (${waitingFor})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/**
 * Publishes an address registration, a record type the interior ministry
 * owns: the adapter must refuse it. Returns the refusal.
 */
async function publishSomeoneElsesRecord(adapter, subjectId) {
  const record = {
    record_type: 'address_registration',
    subject_id: subjectId,
    record_key: `AR-${crypto.randomBytes(4).toString('hex')}`,
    version: 1,
    status: 'RECORD_STATUS_ACTIVE',
    issued_at: now(),
    payload: {
      '@type': 'type.googleapis.com/govbus.records.v1.AddressRegistration',
      resident: { pinfl: subjectId, last_name: 'Yusupova', first_name: 'Laylo' },
      address: { region: 'Toshkent shahri', district: 'Yunusobod', house: '1' },
      kind: 'REGISTRATION_KIND_PERMANENT',
      registered_on: new Date().toISOString().slice(0, 10),
    },
  };
  try {
    await unary(adapter.client(AgencyAdapter), 'Publish', { records: [record] });
  } catch (err) {
    if (err.code === undefined) throw err;
    return err;
  }
  throw new Failure('refused: the adapter accepted an address_registration from the civil registry');
}

function env(name) {
  const value = process.env[name];
  if (!value) throw new Failure(`${name} is not set`);
  return value;
}

async function main() {
  const certs = env('GOVBUS_CERTS');
  const subjectId = env('GOVBUS_SUBJECT');
  // One connection per (server, identity): the broker as the portal, the
  // civil registry's adapter as the civil registry's own system.
  const broker = connect(env('GOVBUS_BROKER'), certs, PORTAL);
  const adapter = connect(env('GOVBUS_CIVIL_REGISTRY'), certs, CIVIL_REGISTRY);
  try {
    for (const server of [broker, adapter]) {
      const status = await checkHealth(server);
      if (status !== 'SERVING') throw new Failure(`health ${server.address}: ${status}`);
      console.log(`health ${server.address}: ${status}`);
    }
    for (const server of [broker, adapter]) {
      console.log(`services ${server.address}: ${(await listServices(server)).join(',')}`);
    }

    const published = await publishBirthCertificate(adapter, subjectId);
    console.log(
      `published: ${published.record_id} ${published.topic} ${published.partition} ${published.offset}`,
    );

    const evidence = await readEvidence(broker, subjectId, published.record_id);
    const { record } = evidence;
    console.log(`evidence: ${record.record_id} ${record.record_type} v${record.version} ${evidence.status}`);

    const refusal = await publishSomeoneElsesRecord(adapter, subjectId);
    if (refusal.code !== grpc.status.PERMISSION_DENIED) {
      throw new Failure(
        `refused: expected PERMISSION_DENIED, got ${grpc.status[refusal.code]}: ${refusal.details}`,
      );
    }
    console.log(`refused: PERMISSION_DENIED ${refusal.details}`);
  } finally {
    broker.close();
    adapter.close();
  }
}

main().catch((err) => {
  if (err instanceof Failure) {
    console.error(`error: ${err.message}`);
  } else if (typeof err.code === 'number' && err.details !== undefined) {
    console.error(`error: ${grpc.status[err.code]}: ${err.details}`);
  } else {
    console.error('error:', err);
  }
  process.exitCode = 1;
});
