// Checks docs/schemas/<type>.json: each file is JSON and a valid draft-07 schema (Ajv in
// strict mode: unknown or misplaced keywords are errors), describes the envelope of its
// type, accepts its own examples and every JSON example in docs/*.md, and refuses the
// counter-examples below, so a schema that silently accepts anything cannot pass.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  DOCS, EVENTS, INBOUND, SCHEMAS, TYPES, compileAll, describeErrors, readJson, reporter,
  schemaFiles,
} from './lib.mjs';

const report = reporter('schemas');
console.log(`JSON Schemas: ${SCHEMAS}`);
const validators = compileAll(report);

// ---- shape of each schema file --------------------------------------------------------------
for (const file of schemaFiles()) {
  const type = file.replace(/\.json$/, '');
  let schema;
  try {
    schema = readJson(join(SCHEMAS, file));
  } catch {
    continue; // reported by compileAll
  }
  const at = `schemas/${file}`;
  if (!TYPES.includes(type)) report.fail(`${at}: ${type} is not a message type of the worker`);
  if (schema.$schema !== 'http://json-schema.org/draft-07/schema#') report.fail(`${at}: $schema is not draft-07`);
  if (schema.title !== type) report.fail(`${at}: title is not ${type}`);
  if (schema.properties?.type?.const !== type) report.fail(`${at}: properties.type.const is not ${type}`);
  const event = EVENTS.includes(type);
  const required = event
    ? ['id', 'type', 'occurred_at', 'causation_id', 'data']
    : ['id', 'type', 'occurred_at', 'data'];
  if (JSON.stringify([...(schema.required ?? [])].sort()) !== JSON.stringify([...required].sort())) {
    report.fail(`${at}: required is [${schema.required}], expected [${required}]`);
  }
  if (schema.properties?.occurred_at?.format !== 'date-time') report.fail(`${at}: occurred_at is not a date-time`);
  if (!schema.properties?.correlation_id) report.fail(`${at}: correlation_id undocumented`);
  if (!event && schemaForbidsUnknownFields(schema)) {
    report.fail(`${at}: inbound schema refuses unknown fields, but the worker ignores them`);
  }
  if (!Array.isArray(schema.examples) || schema.examples.length === 0) {
    report.fail(`${at}: no examples`);
  }
  const validate = validators[type];
  for (const [i, example] of (schema.examples ?? []).entries()) {
    if (validate && !validate(example)) {
      report.fail(`${at}: examples[${i}] invalid: ${describeErrors(validate.errors)}`);
    }
  }
}
for (const type of TYPES) {
  if (!schemaFiles().includes(`${type}.json`)) report.fail(`schemas/${type}.json is missing`);
}

// ---- counter-examples: each must be refused by its schema -----------------------------------
const sample = (type, i = 0) => structuredClone(readJson(join(SCHEMAS, `${type}.json`)).examples[i]);
const set = (value, path, to) => {
  const keys = path.split('.');
  const last = keys.pop();
  const parent = keys.reduce((o, k) => o[k], value);
  if (to === undefined) delete parent[last];
  else parent[last] = to;
  return value;
};
const mustRefuse = [
  ['order.placed', 'type', 'wallet.save'],
  ['order.placed', 'occurred_at', 'yesterday'],
  ['order.placed', 'id', ''],
  ['order.placed', 'data.order.id', undefined],
  ['order.placed', 'data.order.status', undefined],
  ['order.placed', 'data.order.guest', 'no'],
  ['order.placed', 'data.order.customer', { email: 'jane@example.com' }],
  ['order.placed', 'data.order.payment_source.payment_source_token', undefined],
  ['order.placed', 'data.order.payment_source.gateway_id', null],
  ['order.placed', 'data.order.payment_source.type', undefined],
  ['wallet.save', 'data.order_id', 42],
  ['wallet.attach', 'data.order.customer', undefined],
  ['wallet.attach', 'data.customer_payment_source_id', undefined],
  ['wallet.remove', 'data.customer_id', undefined],
  ['wallet.set_default', 'data.customer_payment_source_id', ''],
  ['wallet.saved', 'causation_id', undefined],
  ['wallet.saved', 'data.customer_payment_source.default', undefined],
  ['wallet.saved', 'data.customer_payment_source.id', 'QgDXpwsqD'],
  ['wallet.saved', 'data.customer_payment_source.payment_source_token', 'tok_1a2b3c'],
  ['wallet.saved', 'data.created', 'yes'],
  ['wallet.save_failed', 'data.reason', 'order_not_found'],
  ['wallet.save_failed', 'data.message', undefined],
  ['wallet.attached', 'data.payment_source.type', 'credit_cards'],
  ['wallet.attached', 'data.payment_source.customer_token', undefined],
  ['wallet.attach_rejected', 'data.reason', 'wallet_full'],
  ['wallet.attach_rejected', 'data.customer_id', 'kWnEhpRgYD'],
  ['wallet.removed', 'data.default_customer_payment_source_id', undefined],
  ['wallet.remove_rejected', 'data.reason', 'expired'],
  ['wallet.default_set', 'data.customer_payment_source_id', 'not-an-id'],
  ['wallet.default_rejected', 'data.reason', 'gateway_disabled'],
  ['wallet.dead_lettered', 'causation_id', undefined],
  ['wallet.dead_lettered', 'data.order_id', undefined],
  ['wallet.dead_lettered', 'data.attempts', -1],
];
const mustAccept = [
  ['order.placed', 'data.order.customer', undefined, 'a guest order without customer'],
  ['order.placed', 'data.order.payment_source', { type: 'credit_cards' }, 'a non-external payment source'],
  ['order.placed', 'data.order.coupon_code', 'BLACKFRIDAY', 'an unknown field'],
  ['order.placed', 'correlation_id', null, 'a null correlation_id'],
  ['wallet.save', 'data.order_id', 'any order id', 'any order id'],
  ['wallet.attach', 'data.customer_payment_source_id', 'unknown-id', 'any source id (rejected as not_found later)'],
  ['wallet.save_failed', 'data.customer_id', null, 'a null customer_id'],
  ['wallet.dead_lettered', 'causation_id', null, 'a null causation_id'],
  ['wallet.saved', 'correlation_id', undefined, 'no correlation_id'],
];
let refused = 0;
for (const [type, path, to] of mustRefuse) {
  const validate = validators[type];
  if (!validate) continue;
  if (validate(set(sample(type), path, to))) {
    report.fail(`${type}: accepts ${path} = ${JSON.stringify(to) ?? '(absent)'}`);
  } else {
    refused += 1;
  }
}
let accepted = 0;
for (const [type, path, to, what] of mustAccept) {
  const validate = validators[type];
  if (!validate) continue;
  if (!validate(set(sample(type), path, to))) {
    report.fail(`${type}: refuses ${what}: ${describeErrors(validate.errors)}`);
  } else {
    accepted += 1;
  }
}
report.ok(`${refused}/${mustRefuse.length} counter-examples refused, ${accepted}/${mustAccept.length} variants accepted`);

// ---- JSON examples in docs/*.md ----------------------------------------------------------------
// Every ```json block must parse; one whose `type` names a message is checked against its schema.
let checked = 0;
for (const file of readdirSync(DOCS).filter((f) => f.endsWith('.md')).sort()) {
  const text = readFileSync(join(DOCS, file), 'utf8');
  const fence = /^```json[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  for (const match of text.matchAll(fence)) {
    const line = text.slice(0, match.index).split('\n').length;
    let value;
    try {
      value = JSON.parse(match[1]);
    } catch (err) {
      report.fail(`docs/${file}:${line}: json block does not parse (${err.message})`);
      continue;
    }
    const type = value?.type;
    if (typeof type === 'string' && TYPES.includes(type) && 'data' in value) {
      const validate = validators[type];
      if (validate && !validate(value)) {
        report.fail(`docs/${file}:${line}: ${type} example invalid: ${describeErrors(validate.errors)}`);
      }
      checked += 1;
    }
  }
}
report.ok(`${checked} message examples in docs/*.md valid`);
const missing = [...INBOUND, ...EVENTS].filter((t) => !docMentionsExample(t));
if (missing.length) report.fail(`docs/*.md has no json example of: ${missing.join(', ')}`);
report.done();

function docMentionsExample(type) {
  return readdirSync(DOCS).filter((f) => f.endsWith('.md')).some((f) => {
    const text = readFileSync(join(DOCS, f), 'utf8');
    return [...text.matchAll(/^```json[ \t]*\n([\s\S]*?)^```[ \t]*$/gm)]
      .some((m) => { try { return JSON.parse(m[1]).type === type; } catch { return false; } });
  });
}

/** Whether `additionalProperties: false` appears anywhere in the schema. */
function schemaForbidsUnknownFields(node) {
  if (!node || typeof node !== 'object') return false;
  if (node.additionalProperties === false) return true;
  return Object.entries(node).some(([k, v]) => k !== 'examples' && schemaForbidsUnknownFields(v));
}
