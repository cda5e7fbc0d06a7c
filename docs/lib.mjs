// Shared helpers of the docs checks (docs/check.sh): paths, the JSON Schema compiler and
// failure reporting.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import AjvModule from 'ajv';
import addFormatsModule from 'ajv-formats';

const Ajv = AjvModule.default ?? AjvModule;
const addFormats = addFormatsModule.default ?? addFormatsModule;

export const DOCS = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(DOCS, '..');
export const SCHEMAS = join(DOCS, 'schemas');

export const INBOUND = ['order.placed', 'wallet.save', 'wallet.attach', 'wallet.remove', 'wallet.set_default'];
export const EVENTS = [
  'wallet.saved', 'wallet.save_failed',
  'wallet.attached', 'wallet.attach_rejected',
  'wallet.removed', 'wallet.remove_rejected',
  'wallet.default_set', 'wallet.default_rejected',
  'wallet.dead_lettered',
];
export const TYPES = [...INBOUND, ...EVENTS];

/** Collects failures; `done()` prints a verdict and sets the exit code. */
export function reporter(name) {
  const failures = [];
  return {
    fail(message) {
      failures.push(message);
      console.log(`  FAIL ${message}`);
    },
    ok(message) {
      console.log(`  ok   ${message}`);
    },
    done() {
      if (failures.length) {
        console.log(`${name}: FAILED, ${failures.length} failure(s)`);
        process.exitCode = 1;
      } else {
        console.log(`${name}: passed`);
      }
    },
  };
}

/** Ajv for draft-07 in strict mode: unknown keywords and ill-typed keywords are errors. */
export function newAjv() {
  const ajv = new Ajv({ strict: true, allowUnionTypes: true, allErrors: true });
  addFormats(ajv);
  return ajv;
}

/** Schema file names (`<type>.json`) in docs/schemas. */
export function schemaFiles() {
  return readdirSync(SCHEMAS).filter((f) => f.endsWith('.json')).sort();
}

export function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'));
}

/** Compiles every schema in docs/schemas: `{type: validateFn}`; failures go to `report`. */
export function compileAll(report) {
  const ajv = newAjv();
  const validators = {};
  for (const file of schemaFiles()) {
    const type = file.replace(/\.json$/, '');
    let schema;
    try {
      schema = readJson(join(SCHEMAS, file));
    } catch (err) {
      report.fail(`schemas/${file}: not JSON (${err.message})`);
      continue;
    }
    try {
      validators[type] = ajv.compile(schema);
    } catch (err) {
      report.fail(`schemas/${file}: not a valid draft-07 schema (${err.message})`);
    }
  }
  return validators;
}

export function describeErrors(errors) {
  return (errors ?? [])
    .map((e) => `${e.instancePath || '/'} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ''}`)
    .join('; ');
}
