// Validates docs/asyncapi.yaml with the AsyncAPI project's own parser (@asyncapi/parser,
// the library behind the AsyncAPI CLI and Studio), then checks that it describes exactly
// the worker's interface: one channel per routing key, `receive` for the inbound
// messages, `send` for the events, every payload one of docs/schemas/<type>.json, and
// every example valid against its schema. Exits non-zero on any error diagnostic.
import { join } from 'node:path';
import { Parser, fromFile } from '@asyncapi/parser';
import {
  DOCS, EVENTS, INBOUND, TYPES, compileAll, describeErrors, newAjv, reporter, schemaFiles,
} from './lib.mjs';

const SEVERITY = ['error', 'warning', 'info', 'hint'];

const report = reporter('asyncapi');
const source = join(DOCS, 'asyncapi.yaml');
console.log(`AsyncAPI: ${source}`);

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, source).parse();
for (const d of diagnostics) {
  const where = d.path?.length ? d.path.join('.') : '(document)';
  const line = d.range ? `:${d.range.start.line + 1}` : '';
  const text = `${SEVERITY[d.severity] ?? d.severity} ${d.code} at ${where}${line}: ${d.message}`;
  if (d.severity <= 1) { // errors and warnings; info and hints are printed only
    report.fail(text);
  } else {
    console.log(`  note ${text}`);
  }
}

if (!document) {
  report.fail('the parser produced no document');
  report.done();
  process.exit();
}
report.ok(`parsed AsyncAPI ${document.version()} document "${document.info().title()}" ${document.info().version()}`);

// ---- the document describes exactly the worker's messages --------------------------------
const validators = compileAll(report);
const headerAjv = newAjv();
// Messages as their channels hold them (component messages carry no channel links).
const byName = new Map();
const where = new Map();
for (const channel of document.channels().all()) {
  for (const message of channel.messages().all()) {
    const name = message.name();
    if (byName.has(name)) report.fail(`message ${name} appears in channels ${where.get(name).address()} and ${channel.address()}`);
    byName.set(name, message);
    where.set(name, channel);
  }
}

for (const type of TYPES) {
  const message = byName.get(type);
  if (!message) {
    report.fail(`no channel holds a message named ${type}`);
    continue;
  }
  const raw = message.payload()?.json();
  const payload = raw?.schemaFormat ? raw.schema : raw;
  if (message.schemaFormat() !== 'application/schema+json;version=draft-07') {
    report.fail(`${type}: payload schemaFormat is ${message.schemaFormat()}, expected JSON Schema draft-07`);
  }
  if (payload?.title !== type || payload?.properties?.type?.const !== type) {
    report.fail(`${type}: payload is not docs/schemas/${type}.json (title or type const differ)`);
  }
  const channel = where.get(type);
  if (channel.address() !== type) {
    report.fail(`${type}: channel address is ${channel.address()}, expected the routing key ${type}`);
  }
  const amqp = channel.bindings().get('amqp')?.value();
  if (amqp?.is !== 'routingKey' || amqp?.exchange?.type !== 'topic' || amqp?.exchange?.name !== 'commerce') {
    report.fail(`${type}: channel binding is not a routing key on the topic exchange commerce`);
  }
  const actions = channel.operations().all().map((op) => op.action());
  const expected = INBOUND.includes(type) ? 'receive' : 'send';
  if (actions.length !== 1 || actions[0] !== expected) {
    report.fail(`${type}: operations are [${actions.join(', ')}], expected [${expected}]`);
  }

}

// Every example of every message: payload valid against its schema file (for the typed
// messages), headers valid against the message's headers schema.
for (const [name, message] of byName) {
  const validate = validators[name];
  const headers = message.headers()?.json();
  const validateHeaders = headers ? headerAjv.compile(stripAsyncApiExtensions(headers)) : null;
  const examples = message.examples().all();
  if (TYPES.includes(name) && !examples.length) report.fail(`${name}: no example`);
  for (const [i, example] of examples.entries()) {
    const label = `${name} example "${example.name() ?? i}"`;
    if (validate && !validate(example.payload())) {
      report.fail(`${label}: payload invalid: ${describeErrors(validate.errors)}`);
    }
    if (validateHeaders && example.hasHeaders() && !validateHeaders(example.headers())) {
      report.fail(`${label}: headers invalid: ${describeErrors(validateHeaders.errors)}`);
    }
  }
}

for (const name of byName.keys()) {
  if (!TYPES.includes(name) && !['dead letter', 'retry'].includes(name)) {
    report.fail(`message ${name} is not one of the worker's message types`);
  }
}
const files = schemaFiles().map((f) => f.replace(/\.json$/, ''));
for (const type of files) {
  if (!TYPES.includes(type)) report.fail(`schemas/${type}.json: no such message type`);
}
for (const type of TYPES) {
  if (!files.includes(type)) report.fail(`schemas/${type}.json is missing`);
}

// ---- the dead-letter queue and its headers ---------------------------------------------------
const dlq = document.channels().all().find((c) => c.address()?.endsWith('.dlq'));
const dlqHeaders = dlq?.messages().all()[0]?.headers()?.json();
for (const header of [
  'x-wallet-error', 'x-wallet-error-detail', 'x-wallet-attempts',
  'x-wallet-original-routing-key', 'x-wallet-dead-lettered-at', 'traceparent', 'tracestate',
]) {
  if (!dlqHeaders?.properties?.[header]) report.fail(`dead-letter queue: header ${header} undocumented`);
}
for (const type of TYPES) {
  const headers = byName.get(type)?.headers()?.json();
  for (const header of ['traceparent', 'tracestate']) {
    if (!headers?.properties?.[header]) report.fail(`${type}: trace header ${header} undocumented`);
  }
}

report.ok(`${INBOUND.length} inbound messages (receive), ${EVENTS.length} events (send), dead-letter queue`);
report.done();

/** The parser annotates schemas with `x-parser-*` keys; Ajv's strict mode refuses them. */
function stripAsyncApiExtensions(value) {
  if (Array.isArray(value)) return value.map(stripAsyncApiExtensions);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value)
      .filter(([k]) => !k.startsWith('x-parser-'))
      .map(([k, v]) => [k, k === 'properties' ? mapValues(v) : stripAsyncApiExtensions(v)]));
  }
  return value;
}

function mapValues(properties) {
  return Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, stripAsyncApiExtensions(v)]));
}
