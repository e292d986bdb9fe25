/**
 * Fuzzing the config and policies-document parsers (issue 13): random YAML
 * and JSON documents, structured near-valid configs with wrong values mixed
 * in, and byte-level mutations of a valid config. Whatever the input:
 *
 * - the parser never throws (a crash of the daemon's parser is a crash of
 *   the daemon's reload);
 * - the answer is all or nothing: either every policy of the document, or
 *   errors and no config at all;
 * - every error names the file, and the field (a path) or, for a document
 *   that does not parse or is no Bastion document, a line or what it is;
 * - no error quotes more than an excerpt of the input.
 *
 * The end-to-end half (a real daemon, the kernel maps unchanged after a
 * rejected document, exit 3) is test/integration/config-fuzz-e2e.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { stringify as toYaml } from 'yaml';
import { parseConfigText, type ConfigParseResult } from '../../src/policy/bastion-config.js';
import { parsePoliciesDocument } from '../../src/daemon/runtime-policies.js';
import { ERRORS_MAX, EXCERPT_MAX, MESSAGE_MAX, formatIssue, type Issue } from '../../src/policy/errors.js';

const FILE = 'fuzz.yaml';
const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

const GOOD = `mode: enforce
containers:
  - name: web
    netns: web
    labels: { app: web, tier: front }
  - name: api
    netns: /proc/1234/ns/net
    interface: eth1
    labels: { app: api }
    mode: audit
  - { name: db, netns: db, labels: { app: db } }
policies:
  - name: web-to-api
    from: { app: web }
    to: { app: api }
    ports: [ "8080/tcp", "9000-9010/udp", "icmp" ]
  - name: api-to-db
    from: { matchLabels: { app: api } }
    to: { matchExpressions: [ { key: app, operator: In, values: [ db ] } ] }
    ports: [ "5432/tcp" ]
  - { name: dns, from: {}, to: host, ports: [ "53/udp" ] }
  - { name: out, from: { app: api }, to: { cidr: 10.0.0.0/8, except: [ 10.1.0.0/16 ] } }
`;

/** The checks every answer must pass; `raw` is the document's plain value when the generator knows it. */
function checkAnswer(r: ConfigParseResult, text: string, raw?: unknown): void {
  if (r.ok) {
    // all of it: as many policies as the document lists
    if (raw && typeof raw === 'object' && Array.isArray((raw as { policies?: unknown }).policies)) {
      assert.equal(r.config.policies.length, (raw as { policies: unknown[] }).policies.length);
    }
    return;
  }
  assert.ok(r.errors.length > 0, 'a rejection says why');
  for (const e of r.errors) checkError(e, text);
}

function checkError(e: Issue, text: string): void {
  const line = formatIssue(e);
  assert.equal(e.file, FILE, line);
  assert.ok(line.startsWith(`${FILE}: `), line);
  // the field, or for the document as a whole its line or what it is
  assert.ok(e.path.length > 0 || e.line !== undefined || /YAML|not a Bastion|expected a mapping/.test(e.message), `no field, no line: ${line}`);
  assert.ok(e.message.length > 0);
  // no more of the input than an excerpt: any run of the text longer than an excerpt
  // (and not a field or word of ours) must not appear in the message
  const long = text.match(new RegExp(`[^\\s{}\\[\\],:"']{${EXCERPT_MAX + 8},}`, 'g')) ?? [];
  for (const chunk of long) assert.ok(!e.message.includes(chunk), `the error quotes ${chunk.length} characters of the input: ${line}`);
}

function parseBoth(text: string, raw?: unknown): void {
  let r: ConfigParseResult;
  try {
    r = parseConfigText(text, FILE, { containersRequired: true });
  } catch (err) {
    assert.fail(`parseConfigText threw on ${JSON.stringify(text.slice(0, 200))}: ${(err as Error).stack}`);
  }
  checkAnswer(r, text, raw);
  let p;
  try {
    p = parsePoliciesDocument(text, FILE);
  } catch (err) {
    assert.fail(`parsePoliciesDocument threw on ${JSON.stringify(text.slice(0, 200))}: ${(err as Error).stack}`);
  }
  if (!p.ok) {
    assert.ok(p.errors.length > 0 && p.errors.length <= ERRORS_MAX + 1, `${p.errors.length} errors`);
    for (const [i, e] of p.errors.entries()) {
      if (i === ERRORS_MAX && /^\.\.\. and \d+ more errors?$/.test(e)) continue;
      assert.ok(e.startsWith(`${FILE}: `), e);
      assert.ok([...e].length <= MESSAGE_MAX, `an error of ${e.length} characters`);
    }
  } else if (raw && typeof raw === 'object' && Array.isArray((raw as { policies?: unknown }).policies)) {
    assert.equal(p.policies.length, (raw as { policies: unknown[] }).policies.length);
  }
}

// ------------------------------------------------------------ generators

const word = fc.constantFrom('web', 'api', 'db', 'app', 'tier', 'host', 'any', 'world', 'eth0', 'icmp', 'tcp', '', ' ', '-', 'x'.repeat(70), 'a/b', 'bastion.io/name', '10.0.0.0/8', '10.0.0.1/8', '::1/128', '80/tcp', '80/tcpx', '70000/udp', '9-1/tcp', '53', 'matchLabels', 'cidr', 'except', '\u0000', 'é');
const scalar = fc.oneof(word, fc.integer({ min: -5, max: 70000 }), fc.boolean(), fc.constant(null), fc.string({ maxLength: 12 }));
const labels = fc.dictionary(fc.oneof(word, fc.string({ maxLength: 8 })), fc.oneof(word, scalar), { maxKeys: 3 });
const selector = fc.oneof(
  labels,
  fc.record({ matchLabels: fc.oneof(labels, scalar) }, { requiredKeys: [] }),
  fc.record({ matchExpressions: fc.oneof(scalar, fc.array(fc.record({ key: fc.oneof(word, scalar), operator: fc.oneof(fc.constantFrom('In', 'NotIn', 'Exists', 'DoesNotExist', 'Equals'), scalar), values: fc.oneof(fc.array(fc.oneof(word, scalar), { maxLength: 3 }), scalar) }, { requiredKeys: [] }), { maxLength: 2 })) }),
);
const end = fc.oneof(fc.constant('host'), selector, fc.record({ cidr: fc.oneof(word, scalar), except: fc.oneof(fc.array(fc.oneof(word, scalar), { maxLength: 3 }), scalar) }, { requiredKeys: ['cidr'] }), scalar);
const policy = fc.record(
  { name: fc.oneof(word, scalar), from: end, to: end, ports: fc.oneof(fc.array(fc.oneof(word, scalar), { maxLength: 4 }), scalar), extra: scalar },
  { requiredKeys: [] },
);
const container = fc.record(
  { name: fc.oneof(word, scalar), netns: fc.oneof(word, scalar), interface: fc.oneof(word, scalar), labels: fc.oneof(labels, scalar), mode: fc.oneof(fc.constantFrom('enforce', 'audit'), scalar), extra: scalar },
  { requiredKeys: [] },
);
const nearConfig = fc.record(
  { mode: fc.oneof(fc.constantFrom('enforce', 'audit'), scalar), containers: fc.oneof(fc.array(container, { maxLength: 4 }), scalar), policies: fc.oneof(fc.array(policy, { maxLength: 5 }), scalar), extra: scalar },
  { requiredKeys: [] },
);

/** Text in YAML (block or flow) or JSON. */
const asText = (v: unknown) => fc.constantFrom('yaml', 'flow', 'json').map((how) => (how === 'json' ? JSON.stringify(v) : toYaml(v, how === 'flow' ? { collectionStyle: 'flow' } : {})));

/** Byte-level mutations of a valid config: deletions, insertions and replacements from YAML's alphabet. */
const YAML_CHARS = [...'{}[],:-&*!|>\'"#%@`? \n\t0123456789abcdefxyz/.'];
const mutated = fc
  .array(fc.tuple(fc.nat({ max: GOOD.length }), fc.constantFrom('delete', 'insert', 'replace'), fc.constantFrom(...YAML_CHARS), fc.nat({ max: 6 })), { minLength: 1, maxLength: 6 })
  .map((muts) => {
    let t = GOOD;
    for (const [at, op, ch, len] of muts) {
      const i = Math.min(at, t.length);
      if (op === 'delete') t = t.slice(0, i) + t.slice(i + len + 1);
      else if (op === 'insert') t = t.slice(0, i) + ch.repeat(len + 1) + t.slice(i);
      else t = t.slice(0, i) + ch + t.slice(i + 1);
    }
    return t;
  });

// ----------------------------------------------------------------- tests

describe('config and policies parsers under fuzzing', () => {
  it('the valid config itself parses (the mutations start from something good)', () => {
    const r = parseConfigText(GOOD, FILE, { containersRequired: true });
    assert.ok(r.ok, r.ok ? '' : r.errors.map(formatIssue).join('\n'));
    assert.equal(r.config.policies.length, 4);
  });

  it('random JSON values, as YAML or JSON text: never a crash, all or nothing, errors that name the field', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }).chain((v) => asText(v).map((t) => [v, t] as const)), ([v, t]) => parseBoth(t, v)), { numRuns: RUNS });
  });

  it('structured near-valid configs with wrong values mixed in', () => {
    fc.assert(fc.property(nearConfig.chain((v) => asText(v).map((t) => [v, t] as const)), ([v, t]) => parseBoth(t, v)), { numRuns: RUNS });
  });

  it('policies documents with wrong values mixed in', () => {
    fc.assert(
      fc.property(fc.array(policy, { maxLength: 6 }).chain((ps) => asText({ policies: ps }).map((t) => [{ policies: ps }, t] as const)), ([v, t]) => parseBoth(t, v)),
      { numRuns: RUNS },
    );
  });

  it('byte-level mutations of a valid config (anchors, aliases, tags and broken flow collections included)', () => {
    fc.assert(fc.property(mutated, (t) => parseBoth(t)), { numRuns: RUNS });
  });

  it('random text', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300, unit: fc.constantFrom(...YAML_CHARS) }), (t) => parseBoth(t)), { numRuns: RUNS });
  });

  it('an alias bomb is refused, quickly, without expanding it', () => {
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 0; i < 9; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)}]`);
    bomb.push('policies: *j');
    const t0 = performance.now();
    parseBoth(bomb.join('\n') + '\n');
    assert.ok(performance.now() - t0 < 5000, `took ${performance.now() - t0} ms`);
  });
});
