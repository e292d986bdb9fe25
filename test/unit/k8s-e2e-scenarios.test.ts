/**
 * The upstream Kubernetes e2e network-policy scenarios (see
 * test/fixtures/k8s/e2e-scenarios.ts): the engine's matrix must equal each
 * expected truth table, at every step.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SCENARIOS, runStep } from '../fixtures/k8s/e2e-scenarios.js';

describe('upstream e2e network-policy scenarios', () => {
  it(`ports at least 40 scenarios (${SCENARIOS.length})`, () => {
    assert.ok(SCENARIOS.length >= 40);
  });
  for (const s of SCENARIOS) {
    it(s.name, () => {
      s.steps.forEach((step, i) => {
        for (const r of runStep(step)) {
          assert.deepEqual(
            r.diff,
            [],
            `step ${i + 1}, ${r.check.protocol}/${r.check.port}:\nexpected:\n${r.expected}\nactual:\n${r.actual}`,
          );
        }
      });
    });
  }
});
