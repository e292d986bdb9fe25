/**
 * Young-generation collections between changes (src/daemon/young-generation.ts)
 * and the manager's signal for them (ManagerOptions.onIdle): V8's real new
 * space, the real manager queue over a recording datapath.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import pino from 'pino';
import { youngCollector, youngFreeBytes } from '../../src/daemon/young-generation.js';
import { Manager } from '../../src/manager/manager.js';
import { RecordingDatapath, TableNode } from '../helpers/recording-datapath.js';

/** allocate short-lived objects until the new space has less than `bytes` free */
function fillYoung(bytes: number): number {
  let sink = 0;
  for (let i = 0; i < 1e7 && (youngFreeBytes() ?? 0) >= bytes; i++) {
    const o = Array.from({ length: 64 }, (_, j) => ({ j }));
    sink += o.length;
  }
  return sink;
}

describe('young collector', () => {
  it('reports the new space', () => {
    const free = youngFreeBytes();
    assert.equal(typeof free, 'number');
    assert.ok(free! >= 0);
  });

  it('collects when less than the threshold is free, once per turn however often it is told', async () => {
    // a threshold above any new space: every idle turn finds it "nearly full"
    const young = youngCollector(1024 * 1024 * 1024);
    young.idle();
    young.idle();
    young.idle();
    assert.equal(young.collections, 0, 'nothing happens before the event loop turns');
    await turn();
    assert.equal(young.collections, 1);
    young.idle();
    await turn();
    assert.equal(young.collections, 2);
  });

  it('a collection gives the new space back', async () => {
    // (a threshold no new space meets: the test runner's own allocations may
    // have started a collection of V8's before the check runs)
    const young = youngCollector(1024 * 1024 * 1024);
    fillYoung(256 * 1024);
    const before = youngFreeBytes()!;
    assert.ok(before < 256 * 1024, `free before ${before}`);
    young.idle();
    await turn();
    assert.equal(young.collections, 1);
    assert.ok(youngFreeBytes()! > before, `free ${before} -> ${youngFreeBytes()}`);
  });

  it('leaves a new space with room alone, and does nothing when turned off', async () => {
    const roomy = youngCollector(1);
    const off = youngCollector(0);
    roomy.idle();
    off.idle();
    await turn();
    assert.equal(roomy.collections, 0);
    assert.equal(off.collections, 0);
  });
});

describe('manager onIdle', () => {
  it('is called once the queue of changes has emptied, not per change', async () => {
    let idle = 0;
    const manager = new Manager({ datapath: new RecordingDatapath(), node: new TableNode(), log: pino({ level: 'silent' }), onIdle: () => idle++ });
    const changes = [manager.setHostAddresses(['10.0.0.1']), manager.setHostAddresses(['10.0.0.2']), manager.setHostAddresses(['10.0.0.3'])];
    await Promise.all(changes);
    await turn();
    assert.equal(idle, 1);
    await manager.setHostAddresses(['10.0.0.4']);
    await turn();
    assert.equal(idle, 2);
  });

  it('is called after a change that failed too', async () => {
    let idle = 0;
    const datapath = new RecordingDatapath();
    const manager = new Manager({ datapath, node: new TableNode(), log: pino({ level: 'silent' }), onIdle: () => idle++ });
    await assert.rejects(manager.setPolicy(undefined as never));
    await turn();
    assert.equal(idle, 1);
  });
});
