/**
 * Rule numbers name rules in flow events. An id keeps its number while any
 * of its rules is in force; a released number goes to another id only after
 * the quarantine, so the table follows the rules in force instead of every
 * id ever seen (Kubernetes gives each pod rule ids of its own).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RuleNumbers } from '../../src/manager/identity.js';

function clocked(quarantineMs = 1000) {
  const clock = { t: 0 };
  return { clock, numbers: new RuleNumbers(() => clock.t, quarantineMs) };
}

describe('rule numbers', () => {
  it('count up from 1, one per id', () => {
    const { numbers } = clocked();
    assert.equal(numbers.number('a'), 1);
    assert.equal(numbers.number('b'), 2);
    assert.equal(numbers.number('a'), 1);
    assert.equal(numbers.name(2), 'b');
    assert.equal(numbers.name(3), undefined);
    assert.equal(numbers.size, 2);
  });

  it('a released number goes to a new id only after the quarantine, and names its old id until then', () => {
    const { clock, numbers } = clocked();
    numbers.number('a');
    numbers.number('b');
    numbers.release('a');
    clock.t = 999;
    assert.equal(numbers.number('c'), 3, 'still in quarantine: a new number');
    assert.equal(numbers.name(1), 'a');
    clock.t = 1000;
    assert.equal(numbers.number('d'), 1, 'past it: the released number');
    assert.equal(numbers.name(1), 'd');
    assert.equal(numbers.number('a'), 4, 'the old id, back later, gets a number of its own');
    assert.equal(numbers.size, 4);
  });

  it('an id in force again before its number is taken keeps it, and the number is not handed out', () => {
    const { clock, numbers } = clocked();
    numbers.number('a');
    numbers.release('a');
    clock.t = 500;
    assert.equal(numbers.number('a'), 1);
    clock.t = 5000;
    assert.equal(numbers.number('b'), 2);
    assert.equal(numbers.name(1), 'a');
  });

  it('released, taken back and released again: the second quarantine runs in full', () => {
    const { clock, numbers } = clocked();
    numbers.number('a');
    numbers.release('a');
    clock.t = 900;
    numbers.number('a');
    numbers.release('a');
    clock.t = 1500; // past the first release's quarantine, not the second's
    assert.equal(numbers.number('b'), 2);
    clock.t = 1900;
    assert.equal(numbers.number('c'), 1);
  });

  it('ids that come and go keep the table at the size of what is in force (and in quarantine), not of every id ever seen', () => {
    const { clock, numbers } = clocked(1000);
    let max = 0;
    for (let i = 0; i < 20_000; i++) {
      numbers.number(`pod-${i}#ingress:not-isolated`);
      if (i >= 50) numbers.release(`pod-${i - 50}#ingress:not-isolated`);
      clock.t += 10;
      max = Math.max(max, numbers.size);
    }
    // 50 in force, about 100 ms × 1,000 / 10 in quarantine
    assert.ok(max <= 50 + 101 + 1, `table grew to ${max}`);
    const inForce = Array.from({ length: 50 }, (_, k) => `pod-${19_950 + k}#ingress:not-isolated`);
    for (const id of inForce) assert.equal(numbers.name(numbers.number(id)), id);
  });
});
