#!/usr/bin/env bash
# Validates the interface documentation in docs/ and the links of the Markdown files:
#   1. docs/asyncapi.yaml with the AsyncAPI parser (@asyncapi/parser), plus a
#      cross-check against docs/schemas and the examples;
#   2. every docs/schemas/<type>.json: a valid draft-07 schema (Ajv, strict mode) that
#      accepts its examples and the docs' examples and refuses known-bad messages;
#   3. every relative link in README.md and docs/**/*.md resolves inside the repository.
# Needs Node.js >= 18 and npm; the tools are pinned in docs/package-lock.json and
# installed into docs/node_modules (from the npm registry, or the npm cache offline).
# Usage: bash docs/check.sh   (exits non-zero on any failure; runs every check anyway)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'docs/check.sh: %s\n' "$*" >&2; exit 2; }
command -v node >/dev/null || die "node not found (Node.js >= 18 is required)"
command -v npm >/dev/null || die "npm not found"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
  || die "Node.js >= 18 is required, found $(node --version)"

# Install the pinned tools when docs/node_modules does not match the lock file.
lock_sum=$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write(c.createHash("sha256").update(f.readFileSync("docs/package-lock.json")).digest("hex"))')
stamp=docs/node_modules/.installed-from-lock
if [[ ! -f $stamp || $(cat "$stamp") != "$lock_sum" ]]; then
  printf '=== installing the pinned validation tools (npm ci --prefix docs)\n'
  # --ignore-scripts: nothing we use needs an install script (one dependency's is telemetry).
  SCARF_ANALYTICS=false npm ci --prefix docs --ignore-scripts --no-audit --no-fund \
    --prefer-offline --loglevel=error \
    || die "npm ci failed: the npm registry (or a warm npm cache) is needed once"
  printf '%s' "$lock_sum" >"$stamp"
fi

status=0
for check in validate-asyncapi validate-schemas check-links; do
  printf '\n=== %s\n' "$check"
  node "docs/$check.mjs" || status=1
done

if ((status)); then
  printf '\ndocs/check.sh: FAILED (see FAIL lines above)\n' >&2
else
  printf '\ndocs/check.sh: all documentation checks passed\n'
fi
exit "$status"
