// Checks the links of README.md and docs/**/*.md: a relative link must resolve to a file
// (or directory) inside the repository that git does not ignore, and a `#fragment` to a
// heading of its target; nothing may point outside the repository (a clone has nothing
// there). Also requires README.md to link into docs/, where the interface is documented.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { DOCS, ROOT, reporter } from './lib.mjs';

const report = reporter('links');
let gitWorks = true;
const files = ['README.md', ...markdownUnder(DOCS).map((f) => relative(ROOT, f))];
console.log(`Markdown links: ${files.join(', ')}`);

let count = 0;
let readmeLinksDocs = false;
for (const file of files) {
  const path = join(ROOT, file);
  for (const { target, line } of links(readFileSync(path, 'utf8'))) {
    count += 1;
    const at = `${file}:${line}: ${target}`;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) {
      if (/^file:/i.test(target)) report.fail(`${at}: file: URL points outside the repository`);
      continue; // http(s), mailto: not checked here (no network in CI)
    }
    const [rawPath, fragment] = splitFragment(target);
    let decoded;
    try {
      decoded = decodeURIComponent(rawPath);
    } catch {
      report.fail(`${at}: malformed percent-encoding`);
      continue;
    }
    const resolved = rawPath === ''
      ? path
      : decoded.startsWith('/') ? join(ROOT, decoded) : resolve(dirname(path), decoded);
    if (!inside(resolved)) {
      report.fail(`${at}: points outside the repository`);
      continue;
    }
    if (!existsSync(resolved)) {
      report.fail(`${at}: no such file in the repository`);
      continue;
    }
    if (!inside(realpathSync(resolved))) {
      report.fail(`${at}: resolves (through a symlink) outside the repository`);
      continue;
    }
    if (gitIgnores(resolved)) {
      report.fail(`${at}: target is ignored by git, so a clone does not have it`);
      continue;
    }
    if (fragment && resolved.endsWith('.md') && statSync(resolved).isFile()) {
      const anchors = headingAnchors(readFileSync(resolved, 'utf8'));
      if (!anchors.has(fragment.toLowerCase())) {
        report.fail(`${at}: no heading #${fragment} in ${relative(ROOT, resolved)}`);
      }
    }
    if (file === 'README.md' && relative(ROOT, resolved).split(sep)[0] === 'docs') readmeLinksDocs = true;
  }
}
if (!readmeLinksDocs) report.fail('README.md: no link into docs/ (the interface documentation)');
report.ok(`${count} links in ${files.length} files`);
report.done();

function markdownUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) return [];
    const full = join(dir, entry.name);
    if (entry.isDirectory()) return markdownUnder(full);
    return entry.name.endsWith('.md') ? [full] : [];
  }).sort();
}

function inside(path) {
  const rel = relative(ROOT, path);
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep) && !/^[a-z]:/i.test(rel));
}

function splitFragment(target) {
  const noQuery = target.replace(/\?[^#]*/, '');
  const hash = noQuery.indexOf('#');
  return hash < 0 ? [noQuery, ''] : [noQuery.slice(0, hash), noQuery.slice(hash + 1)];
}

function gitIgnores(path) {
  if (!gitWorks) return false;
  try {
    execFileSync('git', ['-C', ROOT, 'check-ignore', '-q', '--', path], { stdio: 'ignore' });
    return true; // exit 0: ignored
  } catch (err) {
    if (err.status === 1) return false; // not ignored
    gitWorks = false; // not a git checkout, or no git: skip this check
    console.log('  note git check-ignore unavailable; ignored targets not detected');
    return false;
  }
}

/** Link targets with their line numbers, outside fenced code blocks and code spans. */
function links(markdown) {
  const out = [];
  const lines = markdown.split('\n');
  let fence = null;
  lines.forEach((raw, i) => {
    const opening = raw.match(/^ {0,3}(`{3,}|~{3,})/);
    if (opening) {
      if (!fence) fence = opening[1];
      else if (raw.trim().startsWith(fence)) fence = null;
      return;
    }
    if (fence) return;
    const text = raw.replace(/(`+)[\s\S]*?\1/g, '');
    const line = i + 1;
    // [text](target "title") and ![alt](target)
    for (const m of text.matchAll(/!?\[(?:[^\]\\]|\\.)*\]\(\s*(<[^>]*>|[^\s)]+(?:\([^\s)]*\))?)(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g)) {
      out.push({ target: m[1].replace(/^<|>$/g, ''), line });
    }
    // [label]: target
    const def = text.match(/^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/);
    if (def) out.push({ target: def[1].replace(/^<|>$/g, ''), line });
    // <a href="..."> and <img src="...">
    for (const m of text.matchAll(/\b(?:href|src)\s*=\s*["']([^"']+)["']/gi)) out.push({ target: m[1], line });
  });
  return out;
}

/** GitHub-style anchors of a Markdown file's headings. */
function headingAnchors(markdown) {
  const anchors = new Set();
  const seen = new Map();
  let fence = null;
  for (const raw of markdown.split('\n')) {
    const opening = raw.match(/^ {0,3}(`{3,}|~{3,})/);
    if (opening) {
      if (!fence) fence = opening[1];
      else if (raw.trim().startsWith(fence)) fence = null;
      continue;
    }
    if (fence) continue;
    const heading = raw.match(/^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/);
    if (!heading) continue;
    const slug = heading[1]
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n ? `${slug}-${n}` : slug);
  }
  return anchors;
}
