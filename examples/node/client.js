#!/usr/bin/env node
// A call-control client in Node.js: answer a call, watch the operation until it
// finishes, hang the call up, then send an invalid request and decode the
// google.rpc.BadRequest the gateway puts in grpc-status-details-bin.
//
// The stubs are generated at run time from the proto bundle that
// scripts/build_proto.py writes to build/proto-bundle/ (our protos plus every
// google/* file they import), so nothing is copied by hand.
//
//   node client.js --target 127.0.0.1:50051 [--session UUID] [--ca ca.pem]
//
// Credentials: --app-id/--api-key (default: the demo application). No CALLCONTROL_*
// variables here: the gateway refuses to start with one it does not know.
// One JSON line per step on stdout.
'use strict';

const path = require('node:path');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const { values: args } = parseArgs({
  options: {
    target: { type: 'string', default: '127.0.0.1:50051' },
    session: { type: 'string' },
    cause: { type: 'string', default: 'NORMAL_CLEARING' },
    'app-id': { type: 'string', default: 'demo-app' },
    'api-key': { type: 'string', default: 'demo-key-change-me' },
    ca: { type: 'string' },
    bundle: { type: 'string', default: path.join(__dirname, '..', '..', 'build', 'proto-bundle') },
  },
});

const PROTOS = [
  'callcontrol/v1/commands.proto',
  'callcontrol/v1/operations.proto',
  'callcontrol/v1/sessions.proto',
];
const DETAILS = ['google/rpc/status.proto', 'google/rpc/error_details.proto'];

function load() {
  const api = grpc.loadPackageDefinition(
    protoLoader.loadSync(PROTOS, {
      includeDirs: [args.bundle],
      keepCase: true, // field names as in the .proto (session_id)
      longs: String,
      enums: String,
      defaults: true,
    }),
  ).callcontrol.v1;
  // The error details are decoded with protobufjs, from the same bundle.
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(args.bundle, target);
  root.loadSync(DETAILS, { keepCase: true });
  return { api, root };
}

function out(step, fields) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

// The google.rpc.Status of a failed call, its Any details unpacked by type URL.
function statusDetails(root, err) {
  const [raw] = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (!raw) return null;
  const status = root.lookupType('google.rpc.Status').decode(raw);
  const details = status.details.map((any) => {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    return { type: typeName, ...root.lookupType(typeName).toObject(root.lookupType(typeName).decode(any.value)) };
  });
  return { code: status.code, message: status.message, details };
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (err, reply) =>
      err ? reject(err) : resolve(reply),
    );
  });
}

// WatchOperation streams the operation's states; the last one is terminal.
function watch(client, operationId, metadata) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const stream = client.WatchOperation({ operation_id: operationId }, metadata);
    stream.on('data', (op) => seen.push(op));
    stream.on('error', reject);
    stream.on('end', () => resolve(seen));
  });
}

async function main() {
  const { api, root } = load();
  const credentials = args.ca
    ? grpc.credentials.createSsl(fs.readFileSync(args.ca))
    : grpc.credentials.createInsecure();
  const commands = new api.SessionCommands(args.target, credentials);
  const operations = new api.Operations(args.target, credentials);
  const sessions = new api.Sessions(args.target, credentials);
  const metadata = new grpc.Metadata();
  metadata.set('x-app-id', args['app-id']);
  metadata.set('x-api-key', args['api-key']);

  let sessionId = args.session;
  if (!sessionId) {
    const listed = await unary(sessions, 'ListSessions', {}, metadata);
    const ringing = listed.sessions.find((s) => s.state === 'ringing');
    if (!ringing) throw new Error('no ringing call to answer (place one, or pass --session)');
    sessionId = ringing.session_id;
  }

  const answer = await unary(commands, 'Answer', { session_id: sessionId }, metadata);
  out('answer', { operation_id: answer.operation_id, status: answer.status });
  const states = await watch(operations, answer.operation_id, metadata);
  const last = states[states.length - 1];
  out('watch', { operation_id: last.operation_id, statuses: states.map((s) => s.status), error: last.error });

  const hangup = await unary(commands, 'Hangup', { session_id: sessionId, cause: args.cause }, metadata);
  out('hangup', { operation_id: hangup.operation_id, status: hangup.status });

  // An invalid request: the gateway names every bad field in a google.rpc.BadRequest.
  try {
    await unary(commands, 'Hangup', { session_id: 'not-a-uuid', cause: 'no such cause' }, metadata);
    throw new Error('the invalid request was accepted');
  } catch (err) {
    if (err.code === undefined) throw err;
    out('invalid', { grpc_code: grpc.status[err.code], status: statusDetails(root, err) });
  }
  for (const client of [commands, operations, sessions]) client.close();
}

main().catch((err) => {
  process.stderr.write(`error: ${err.message}\n`);
  process.exit(1);
});
