import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { schedBetween, threadSched } from '../../src/sys/thread-sched.js';

describe('threadSched', () => {
  it('reads the calling thread\'s scheduler counters: a sleep takes it off the CPU and puts it back', () => {
    const a = threadSched();
    assert.ok(a, 'Linux offers /proc/thread-self/schedstat');
    // sleep 20 ms in the thread itself (no event loop): it leaves the CPU and comes back
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    let x = 0;
    for (let i = 0; i < 2e6; i++) x += i % 7;
    assert.ok(x > 0);
    const b = threadSched()!;
    assert.ok(b.runNs >= a.runNs && b.waitNs >= a.waitNs);
    const d = schedBetween(a, b)!;
    assert.ok(d.switches >= 1, `put on a CPU again after the sleep: ${d.switches}`);
    assert.ok(d.runqueue >= 0);
  });

  it('gives no difference unless both readings were made', () => {
    const a = { runNs: 10, waitNs: 1_500_000, slices: 3 };
    assert.equal(schedBetween(undefined, a), undefined);
    assert.equal(schedBetween(a, undefined), undefined);
    assert.deepEqual(schedBetween(a, { runNs: 20, waitNs: 4_000_000, slices: 7 }), { runqueue: 2.5, switches: 4 });
  });
});
