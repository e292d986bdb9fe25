import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AuditCache, findingsOfEndpoint, statusAudit } from '../../src/audit/daemon-audit.js';
import { makeReport } from '../../src/audit/findings.js';
import { finding } from '../../src/audit/rules.js';

describe('audit in the daemon', () => {
  it('AuditCache: one run for concurrent callers, the last report while it is young enough', async () => {
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const cache = new AuditCache(async () => {
      runs++;
      await gate;
      return makeReport(['docker'], [], []);
    });
    assert.equal(cache.peek(), undefined);
    const a = cache.get(10_000);
    const b = cache.get(10_000);
    release();
    assert.equal(await a, await b);
    assert.equal(runs, 1);
    assert.equal(await cache.get(10_000), await a);
    assert.equal(runs, 1);
    await cache.get(-1);
    assert.equal(runs, 2);
  });

  it('a failed run is reported to the caller and the next call runs again', async () => {
    let runs = 0;
    const cache = new AuditCache(async () => {
      if (runs++ === 0) throw new Error('engine gone');
      return makeReport([], [], []);
    });
    await assert.rejects(cache.get(0), /engine gone/);
    assert.ok(await cache.get(0));
  });

  it("statusAudit groups container findings by id; an endpoint key finds its container's", () => {
    const r = makeReport(['docker'], [
      finding('docker.container.host-pid', { kind: 'container', name: 'web', id: '0123456789ab' }, [{ field: 'HostConfig.PidMode', value: 'host' }]),
      finding('docker.engine.icc', { kind: 'engine', name: 'dockerd' }, []),
    ], []);
    const a = statusAudit(r);
    assert.deepEqual(findingsOfEndpoint(a, 'docker:0123456789ab/net'), [{ id: 'docker.container.host-pid', severity: 'high', title: "container shares the host's PID namespace" }]);
    assert.deepEqual(findingsOfEndpoint(a, 'file:web'), []);
    assert.deepEqual(a.other.map((f) => f.id), ['docker.engine.icc']);
    assert.equal(a.summary.high, 1);
  });
});
