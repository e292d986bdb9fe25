import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rehearsePolicyChanges } from '../../src/manager/rehearsal.js';

describe('rehearsePolicyChanges', () => {
  it('runs the whole compile-and-diff path of a change: every round writes its dependency\'s entries', () => {
    const r = rehearsePolicyChanges(3);
    // the first round also writes the two endpoints' own entries; each later
    // round adds one port: the client's egress entry and the server's ingress entry
    assert.equal(r.writes.length, 3);
    assert.ok(r.writes[0]! > 2, `first round: ${r.writes[0]}`);
    assert.deepEqual(r.writes.slice(1), [2, 2]);
    assert.ok(r.ms > 0);
  });

  it('keeps nothing between calls (its compiler, store and rule numbers are its own)', () => {
    assert.deepEqual(rehearsePolicyChanges(2).writes, rehearsePolicyChanges(2).writes);
  });
});
