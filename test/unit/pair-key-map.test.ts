import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PairKeyMap } from '../../src/manager/pair-key-map.js';
import { u32Latin1 } from '../../src/datapath/layout.js';

const key = (a: number, b: number) => u32Latin1(a) + u32Latin1(b);

type Op = { op: 'set'; a: number; b: number; v: number } | { op: 'delete'; a: number; b: number };

/** identities from a small range, so that keys collide and probe runs wrap and are cut by deletions */
const small = fc.integer({ min: 0, max: 40 });
const wide = fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff);
const id = fc.oneof(small, wide, fc.nat());
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), a: id, b: id, v: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ op: fc.constant('delete' as const), a: id, b: id }),
);

function sameAsMap(ops: Op[]): void {
  const m = new PairKeyMap();
  const ref = new Map<string, string>();
  for (const o of ops) {
    const k = key(o.a, o.b);
    if (o.op === 'set') {
      const v = `v${o.v}\u0001`;
      m.set(k, v);
      ref.set(k, v);
    } else {
      assert.equal(m.delete(k), ref.delete(k));
    }
    assert.equal(m.size, ref.size);
    assert.equal(m.get(k), ref.get(k));
  }
  for (const [k, v] of ref) assert.equal(m.get(k), v);
  assert.deepEqual(new Map(m), ref);
}

describe('PairKeyMap', () => {
  it('answers as a Map<string, string> would, through sets, deletions, growth and shrinking', () => {
    fc.assert(fc.property(fc.array(opArb, { maxLength: 400 }), (ops) => sameAsMap(ops)), { numRuns: 300 });
  });

  it('stays right through thousands of keys added and all removed again (the arrays grow and shrink)', () => {
    const ops: Op[] = [];
    for (let i = 0; i < 5000; i++) ops.push({ op: 'set', a: i % 97, b: i, v: i % 2 });
    for (let i = 0; i < 5000; i += 2) ops.push({ op: 'delete', a: i % 97, b: i });
    for (let i = 1; i < 5000; i += 2) ops.push({ op: 'delete', a: i % 97, b: i });
    sameAsMap(ops);
  });

  it('refuses to hold a key that is not two u32, and never finds one', () => {
    const m = new PairKeyMap();
    assert.throws(() => m.set('abc', 'x'), /8 one-byte characters, not 3/);
    assert.equal(m.get(''), undefined);
    assert.equal(m.has('abcdefghi'), false);
    assert.equal(m.delete('abc'), false);
    assert.equal(m.size, 0);
  });
});
