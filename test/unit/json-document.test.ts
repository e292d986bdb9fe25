/**
 * The JSON reading of config and policies documents (src/policy/json-document.ts):
 * what it reads equals what the YAML path reads, and a key given twice still
 * goes to YAML, which refuses it as before.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CORE_SCHEMA, load as loadYaml } from 'js-yaml';
import { readJsonDocument } from '../../src/policy/json-document.js';
import { parseConfigText } from '../../src/policy/bastion-config.js';
import { parsePoliciesDocument } from '../../src/daemon/runtime-policies.js';

test('any JSON object or list reads as the YAML path reads it', () => {
  fc.assert(
    fc.property(fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), fc.array(fc.jsonValue())), fc.boolean(), (v, pretty) => {
      const text = JSON.stringify(v, null, pretty ? 2 : undefined);
      const r = readJsonDocument(text);
      assert.ok(r.ok, text);
      assert.deepEqual(r.value, loadYaml(text, { schema: CORE_SCHEMA }));
    }),
    { numRuns: 500 },
  );
});

test('a key given twice, at any depth, is left to YAML', () => {
  for (const text of ['{"a":1,"a":2}', '{"p":[{"name":"x","name":"y"}]}', '[{"k":{"x":1,"x":1}}]', '{"a:b":1,"a:b":2}', '{"q\\"":1,"q\\"":2}']) {
    assert.deepEqual(readJsonDocument(text), { ok: false }, text);
    assert.throws(() => loadYaml(text, { schema: CORE_SCHEMA }), /duplicated mapping key/, text);
  }
  // colons and escaped quotes inside strings are not separators
  assert.deepEqual(readJsonDocument('{"a:b":"c:\\"d:","e":["f:g"]}'), { ok: true, value: { 'a:b': 'c:"d:', e: ['f:g'] } });
});

test('scalars, YAML and broken JSON are left to YAML', () => {
  for (const text of ['', '1', '"x"', 'null', 'yes', 'policies:\n  - name: a\n', '{"a": 1,}', '{a: 1}', '\ufeff{"a":1}', "{'a': 1}"]) {
    assert.deepEqual(readJsonDocument(text), { ok: false }, JSON.stringify(text));
  }
  assert.deepEqual(readJsonDocument(' \n\t{"a":[1,2]}\n'), { ok: true, value: { a: [1, 2] } });
});

test('a policies document in JSON: the same policies as in YAML, and a duplicate key the same error as before', () => {
  const doc = { policies: [{ name: 'web-to-api', from: { app: 'web' }, to: { app: 'api' }, ports: ['8080/tcp', '9000-9010/udp'] }] };
  const fromJson = parsePoliciesDocument(JSON.stringify(doc), 'request');
  const fromYaml = parsePoliciesDocument('policies:\n  - name: web-to-api\n    from: { app: web }\n    to: { app: api }\n    ports: [8080/tcp, 9000-9010/udp]\n', 'request');
  assert.ok(fromJson.ok && fromYaml.ok);
  assert.deepEqual(fromJson.policies, fromYaml.policies);
  const dup = '{"policies":[{"name":"a","name":"b","from":{"app":"web"},"to":{"app":"api"},"ports":["80/tcp"]}]}';
  const r = parseConfigText(dup, 'request');
  assert.equal(r.ok, false);
  assert.match(JSON.stringify(!r.ok && r.errors), /unique|duplicate/i);
});
