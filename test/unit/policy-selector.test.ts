/**
 * Label selectors: Kubernetes semantics, validation, canonical form, index.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { LabelSelector } from '../../src/policy/model.js';
import {
  LabelIndex,
  SelectorIndex,
  canonicalSelector,
  checkLabelKey,
  checkLabelValue,
  formatSelector,
  isEmptySelector,
  matches,
  validateSelector,
  validateLabels,
  parseSelector,
  selectorDocument,
  parseLabelAssignment,
  selectorAnd,
  K8S_LABEL_MESSAGES,
} from '../../src/policy/selector.js';
import { formatPath } from '../../src/policy/errors.js';
import { LABEL_KEYS, LABEL_VALUES, selectorArb } from './policy-world.test.js';

const labelsArb = fc.dictionary(fc.constantFrom(...LABEL_KEYS), fc.constantFrom(...LABEL_VALUES), { maxKeys: 3 }).map((d) => ({ ...d }));

describe('matches', () => {
  const L = { app: 'web', tier: 'front' };
  it('matchLabels, every operator, AND of everything', () => {
    assert.equal(matches({}, L), true);
    assert.equal(matches({}, {}), true);
    assert.equal(matches({ matchLabels: { app: 'web' } }, L), true);
    assert.equal(matches({ matchLabels: { app: 'web', tier: 'back' } }, L), false);
    assert.equal(matches({ matchLabels: { env: 'x' } }, L), false);
    assert.equal(matches({ matchExpressions: [{ key: 'app', operator: 'In', values: ['api', 'web'] }] }, L), true);
    assert.equal(matches({ matchExpressions: [{ key: 'app', operator: 'In', values: ['api'] }] }, L), false);
    assert.equal(matches({ matchExpressions: [{ key: 'env', operator: 'In', values: ['x'] }] }, L), false);
    assert.equal(matches({ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['api'] }] }, L), true);
    assert.equal(matches({ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, L), false);
    assert.equal(matches({ matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['x'] }] }, L), true, 'NotIn matches an absent key');
    assert.equal(matches({ matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, L), true);
    assert.equal(matches({ matchExpressions: [{ key: 'env', operator: 'Exists' }] }, L), false);
    assert.equal(matches({ matchExpressions: [{ key: 'env', operator: 'DoesNotExist' }] }, L), true);
    assert.equal(matches({ matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, L), false);
    assert.equal(
      matches({ matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'Exists' }, { key: 'env', operator: 'DoesNotExist' }] }, L),
      true,
    );
    assert.equal(matches({ matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] }, L), false);
    assert.equal(matches({ matchExpressions: [{ key: 'app', operator: 'Bogus' as 'In', values: ['web'] }] }, L), false, 'unknown operator never matches');
  });

  it('is not fooled by inherited properties', () => {
    assert.equal(matches({ matchExpressions: [{ key: 'constructor', operator: 'Exists' }] }, {}), false);
    assert.equal(matches({ matchExpressions: [{ key: 'toString', operator: 'DoesNotExist' }] }, {}), true);
    assert.equal(matches({ matchLabels: { __proto__: 'x' } as Record<string, string> }, {}), true, 'a literal __proto__ key sets the prototype, not a label');
  });

  it('is the definition of metav1.LabelSelector on random selectors and labels (property)', () => {
    // the one matcher of Bastion and Kubernetes selectors, against the definition written out
    const has = (l: Record<string, string>, k: string) => Object.hasOwn(l, k);
    const spec = (s: LabelSelector, l: Record<string, string>) =>
      Object.entries(s.matchLabels ?? {}).every(([k, v]) => has(l, k) && l[k] === v) &&
      (s.matchExpressions ?? []).every((r) =>
        r.operator === 'In' ? has(l, r.key) && (r.values ?? []).includes(l[r.key]!)
        : r.operator === 'NotIn' ? !has(l, r.key) || !(r.values ?? []).includes(l[r.key]!)
        : r.operator === 'Exists' ? has(l, r.key)
        : r.operator === 'DoesNotExist' ? !has(l, r.key)
        : false,
      );
    fc.assert(
      fc.property(selectorArb, labelsArb, (s, l) => {
        assert.equal(matches(s, l), spec(s, l));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('validateSelector', () => {
  it('accepts valid selectors', () => {
    assert.deepEqual(validateSelector({}), []);
    assert.deepEqual(
      validateSelector({
        matchLabels: { 'bastion.io/name': 'web', app: '' },
        matchExpressions: [
          { key: 'a', operator: 'In', values: ['x'] },
          { key: 'b', operator: 'Exists' },
          { key: 'c', operator: 'DoesNotExist', values: [] },
        ],
      }),
      [],
    );
  });

  it('rejects bad operators, values lists, keys and values, with their paths', () => {
    const issues = validateSelector({
      matchLabels: { 'bad key': 'x', ok: 'bad value!' },
      matchExpressions: [
        { key: 'a', operator: 'In' },
        { key: 'b', operator: 'NotIn', values: [] },
        { key: 'c', operator: 'Exists', values: ['x'] },
        { key: 'd', operator: 'Equals' as 'In', values: ['x'] },
        { key: '-bad', operator: 'Exists' },
        { key: 'e', operator: 'In', values: ['ok', 'not ok'] },
      ],
    });
    assert.deepEqual(
      issues.map((i) => formatPath(i.path)),
      [
        'matchLabels["bad key"]',
        'matchLabels.ok',
        'matchExpressions[0].values',
        'matchExpressions[1].values',
        'matchExpressions[2].values',
        'matchExpressions[3].operator',
        'matchExpressions[4].key',
        'matchExpressions[5].values[1]',
      ],
    );
    assert.match(issues[2]!.message, /non-empty list when the operator is In/);
    assert.match(issues[4]!.message, /must be empty when the operator is Exists/);
    assert.match(issues[5]!.message, /"Equals" is not an operator/);
  });

  it('label keys and values as the API server checks them', () => {
    for (const k of ['app', 'a.b-c_d', 'example.com/app', 'a'.repeat(63), `${'a'.repeat(253)}/x`]) assert.equal(checkLabelKey(k), undefined, k);
    for (const k of ['', '/app', 'a/', 'a/b/c', 'Example.com/app', '-a', 'a-', 'a'.repeat(64), 'a b']) assert.notEqual(checkLabelKey(k), undefined, k);
    for (const v of ['', 'x', 'A.b_c-1', 'a'.repeat(63)]) assert.equal(checkLabelValue(v), undefined, v);
    for (const v of ['-x', 'x-', 'a b', 'a/b', 'a'.repeat(64)]) assert.notEqual(checkLabelValue(v), undefined, v);
  });
});

describe('one validator, two wordings', () => {
  const keyish = fc.oneof(
    fc.constantFrom('app', 'a/b', 'a/b/c', '/x', 'x/', 'Example.com/app', 'example.com/app', '-a', 'a-', 'a b', '', 'a'.repeat(64), `${'a'.repeat(254)}/x`),
    fc.string({ maxLength: 12 }),
    fc.stringMatching(/^[a-z.]{0,6}\/?[A-Za-z0-9._-]{0,6}$/),
  );
  it("Bastion's and the API server's words reject exactly the same keys and values (property)", () => {
    fc.assert(
      fc.property(keyish, (k) => {
        assert.equal(checkLabelKey(k) === undefined, checkLabelKey(k, K8S_LABEL_MESSAGES) === undefined, k);
        assert.equal(checkLabelValue(k) === undefined, checkLabelValue(k, K8S_LABEL_MESSAGES) === undefined, k);
      }),
      { numRuns: 3000 },
    );
  });

  it('each wording reports a label where its front end always did', () => {
    const labels = { '-a': 'x', b: '-y' };
    assert.deepEqual(validateLabels(labels, ['labels']).map((i) => formatPath(i.path)), ['labels["-a"]', 'labels.b']);
    assert.deepEqual(validateLabels(labels, ['metadata', 'labels'], K8S_LABEL_MESSAGES).map((i) => formatPath(i.path, 'dotted')), ['metadata.labels', 'metadata.labels[b]']);
    assert.match(validateLabels(labels, [], K8S_LABEL_MESSAGES)[0]!.message, /^invalid label key "-a": name part must/);
    assert.match(validateLabels(labels)[0]!.message, /^"-a" is not a valid label key: the name must/);
  });
});

describe('parsing the document form', () => {
  it('a plain map is matchLabels; the explicit form is read as written', () => {
    assert.deepEqual(parseSelector({}), { ok: true, selector: {} });
    assert.deepEqual(parseSelector({ app: 'web' }), { ok: true, selector: { matchLabels: { app: 'web' } } });
    assert.deepEqual(parseSelector({ matchLabels: {}, matchExpressions: [{ key: 'a', operator: 'Exists' }] }), {
      ok: true,
      selector: { matchExpressions: [{ key: 'a', operator: 'Exists' }] },
    });
  });

  it('every issue, with paths from the selector', () => {
    const r = parseSelector({ matchLabels: 3, matchExpressions: [{ key: 1, operator: 'In', values: ['x'], extra: 1 }, 'x'], matchLabel: {} });
    assert.ok(!r.ok);
    assert.deepEqual(
      r.issues.map((i) => [i.code, formatPath(i.path), i.message]),
      [
        ['unknown-field', '', 'unknown field "matchLabel" (did you mean "matchLabels"?)'],
        ['invalid-type', 'matchLabels', 'expected a mapping of labels, got the number 3'],
        ['unknown-field', 'matchExpressions[0]', 'unknown field "extra"'],
        ['invalid-type', 'matchExpressions[0].key', 'expected a string, got the number 1'],
        ['invalid-type', 'matchExpressions[1]', 'expected a mapping with key, operator and values, got the string "x"'],
      ],
    );
  });

  it('the document form of a selector reads back to it (property)', () => {
    fc.assert(
      fc.property(selectorArb, (s) => {
        const r = parseSelector(JSON.parse(JSON.stringify(selectorDocument(s))) as Record<string, unknown>);
        assert.ok(r.ok);
        assert.equal(canonicalSelector(r.selector), canonicalSelector(s));
      }),
    );
  });

  it('KEY=VALUE on a command line', () => {
    assert.deepEqual(parseLabelAssignment('app=web'), { key: 'app', value: 'web' });
    assert.deepEqual(parseLabelAssignment('a=b=c'), { key: 'a', value: 'b=c' });
    assert.deepEqual(parseLabelAssignment('a='), { key: 'a', value: '' });
    assert.equal(parseLabelAssignment('=x'), undefined);
    assert.equal(parseLabelAssignment('app'), undefined);
  });

  it('selectorAnd: the conjunction, or null when nothing can match (property)', () => {
    fc.assert(
      fc.property(selectorArb, selectorArb, labelsArb, (a, b, l) => {
        const both = selectorAnd(a, b);
        if (both === null) assert.ok(!(matches(a, l) && matches(b, l)));
        else assert.equal(matches(both, l), matches(a, l) && matches(b, l));
      }),
      { numRuns: 1000 },
    );
    assert.equal(selectorAnd({ matchLabels: { a: 'x' } }, null), null);
    assert.equal(selectorAnd({ matchLabels: { a: 'x' } }, { matchLabels: { a: 'y' } }), null);
  });
});

describe('canonical and human forms', () => {
  const shuffle = <T>(xs: T[], seed: number) => xs.map((x, i) => [x, (i * 7919 + seed) % 101] as const).sort((a, b) => a[1] - b[1]).map(([x]) => x);

  it('the canonical form ignores order and duplicates, and equal forms match the same labels (property)', () => {
    fc.assert(
      fc.property(selectorArb, fc.nat(100), labelsArb, (s, seed, l) => {
        const t: LabelSelector = {
          ...(s.matchLabels ? { matchLabels: Object.fromEntries(shuffle(Object.entries(s.matchLabels), seed)) } : {}),
          ...(s.matchExpressions
            ? {
                matchExpressions: shuffle(
                  [...s.matchExpressions, ...s.matchExpressions.slice(0, 1)].map((r) => ({ ...r, ...(r.values ? { values: shuffle([...r.values, ...r.values], seed) } : {}) })),
                  seed,
                ),
              }
            : {}),
        };
        assert.equal(canonicalSelector(t), canonicalSelector(s));
        assert.equal(matches(t, l), matches(s, l));
      }),
      { numRuns: 1000 },
    );
    assert.notEqual(canonicalSelector({ matchLabels: { a: 'b' } }), canonicalSelector({ matchLabels: { a: 'c' } }));
    assert.notEqual(
      canonicalSelector({ matchExpressions: [{ key: 'a', operator: 'In', values: ['x'] }] }),
      canonicalSelector({ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['x'] }] }),
    );
    assert.equal(canonicalSelector({}), canonicalSelector({ matchLabels: {}, matchExpressions: [] }));
    assert.equal(isEmptySelector({ matchLabels: {}, matchExpressions: [] }), true);
    assert.equal(isEmptySelector({ matchLabels: { a: 'b' } }), false);
  });

  it('prints like kubectl', () => {
    assert.equal(formatSelector({}), '{}');
    assert.equal(
      formatSelector({
        matchLabels: { app: 'web' },
        matchExpressions: [
          { key: 't', operator: 'In', values: ['a', 'b'] },
          { key: 'u', operator: 'NotIn', values: ['c'] },
          { key: 'v', operator: 'Exists' },
          { key: 'w', operator: 'DoesNotExist' },
        ],
      }),
      'app=web,t in (a,b),u notin (c),v,!w',
    );
  });
});

describe('LabelIndex', () => {
  it('select equals filtering with matches, through changes (property)', () => {
    const opArb = fc.oneof(
      fc.record({ set: fc.nat(9), labels: labelsArb }),
      fc.record({ del: fc.nat(9) }),
    );
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 30 }), fc.array(selectorArb, { minLength: 1, maxLength: 5 }), (ops, sels) => {
        const idx = new LabelIndex<number>();
        const truth = new Map<number, Record<string, string>>();
        for (const op of ops) {
          if ('set' in op) {
            idx.set(op.set, op.labels);
            truth.set(op.set, op.labels);
          } else {
            idx.delete(op.del);
            truth.delete(op.del);
          }
        }
        assert.equal(idx.size, truth.size);
        for (const s of sels) {
          const want = [...truth].filter(([, l]) => matches(s, l)).map(([k]) => k).sort();
          assert.deepEqual(idx.select(s).sort(), want);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('SelectorIndex', () => {
  it('candidates include every selector that matches (property)', () => {
    fc.assert(
      fc.property(fc.array(selectorArb, { maxLength: 12 }), fc.array(fc.nat(11), { maxLength: 6 }), labelsArb, (sels, drops, l) => {
        const idx = new SelectorIndex<number>();
        sels.forEach((s, i) => idx.add(s, i));
        const dropped = new Set(drops.filter((d) => d < sels.length));
        for (const d of dropped) idx.delete(sels[d]!, d);
        const c = idx.candidates(l);
        sels.forEach((s, i) => {
          if (dropped.has(i)) assert.ok(!c.has(i), 'a deleted selector is no candidate');
          else if (matches(s, l)) assert.ok(c.has(i), `selector ${i} matches but is no candidate`);
        });
      }),
      { numRuns: 1000 },
    );
  });
});
