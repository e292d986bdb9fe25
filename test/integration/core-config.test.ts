/**
 * Core issue, part 8: bad configs.
 *
 * Each bad config gives a clear error naming the file and the object/field,
 * and changes nothing: `bastion run` on it exits non-zero without pinning or
 * attaching anything; a running daemon handed it keeps the previous policy
 * whole (checked with traffic), and still applies a good config afterwards.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CoreLab, WEB_TO_API, API_TO_DB, bastionDown, configText, pinsUnder, tcBpfFilters, uniquePinPath, writeConfigFile, type BastionConfig } from '../helpers/bastion-daemon.js';
import { connectAll, expectAllConnect, expectNoneConnect, startBackground, startTcpEcho, waitFor } from '../helpers/probes.js';

interface BadCase {
  name: string;
  /** the config text; every case would also open web→api:9090 and close web→api:8080 if it were applied */
  text: (lab: CoreLab) => string;
  /** the error must name the object: any of these */
  object: RegExp;
  /** and the field (or the bad value): any of these */
  field: RegExp;
}

/** The core containers, with policies that differ from the running ones (no web-to-api 8080; web→api 9090). */
function changed(lab: CoreLab): BastionConfig {
  return {
    mode: 'enforce',
    containers: lab.containersSection(),
    policies: [{ name: 'web-to-api-9090', from: { app: 'web' }, to: { app: 'api' }, ports: ['9090/tcp'] }, API_TO_DB],
  };
}

const CASES: BadCase[] = [
  {
    name: 'broken YAML',
    text: (lab) => configText(changed(lab)).replace(/^policies:/m, 'policies: [\n  { name: broken,'),
    object: /line \d+|yaml|syntax|parse/i,
    field: /line \d+|col(umn)? \d+|flow|collection|unexpected|expected|missing/i,
  },
  {
    name: 'unknown field in a container',
    text: (lab) => {
      const c = changed(lab);
      (c.containers[1] as unknown as Record<string, unknown>).colour = 'blue';
      return configText(c);
    },
    object: /\bapi\b|containers\[1\]|containers\.1\b/,
    field: /colour/,
  },
  {
    name: 'unknown field in a policy',
    text: (lab) => {
      const c = changed(lab);
      (c.policies![0] as unknown as Record<string, unknown>).allow = 'everything';
      return configText(c);
    },
    object: /web-to-api-9090|policies\[0\]|policies\.0\b/,
    field: /\ballow\b/,
  },
  {
    name: 'bad port number',
    text: (lab) => {
      const c = changed(lab);
      c.policies![0]!.ports = ['90900/tcp'];
      return configText(c);
    },
    object: /web-to-api-9090|policies\[0\]|policies\.0\b/,
    field: /ports|90900/,
  },
  {
    name: 'bad port protocol',
    text: (lab) => {
      const c = changed(lab);
      c.policies![0]!.ports = ['9090/tcpx'];
      return configText(c);
    },
    object: /web-to-api-9090|policies\[0\]|policies\.0\b/,
    field: /ports|tcpx/,
  },
  {
    name: 'selector matching no container',
    text: (lab) => {
      const c = changed(lab);
      c.policies!.push({ name: 'ghost-policy', from: { app: 'web' }, to: { app: 'nosuch' }, ports: ['80/tcp'] });
      return configText(c);
    },
    object: /ghost-policy|policies\[2\]|policies\.2\b/,
    field: /\bto\b|nosuch/,
  },
  {
    name: 'unknown netns',
    text: (lab) => {
      const c = changed(lab);
      c.containers.push({ name: 'ghost', netns: `${lab.topo.prefix}-no-such-netns`, labels: { app: 'ghost' } });
      return configText(c);
    },
    object: /\bghost\b|containers\[4\]|containers\.4\b/,
    field: /netns|no-such-netns/,
  },
  {
    name: 'bad mode',
    text: (lab) => configText({ ...changed(lab), mode: 'enforcing' as 'enforce' }),
    object: /mode|enforcing/,
    field: /mode|enforcing/,
  },
];

/** Checks that an error text names the file, the object and the field. */
function namesFileObjectField(err: string, path: string, c: BadCase): string[] {
  const missing: string[] = [];
  if (!err.includes(path)) missing.push(`the file ${path}`);
  if (!c.object.test(err)) missing.push(`the object (${c.object})`);
  if (!c.field.test(err)) missing.push(`the field (${c.field})`);
  return missing;
}

describe('core: bad configs are rejected whole, with a clear error', () => {
  let lab: CoreLab;

  before(async () => {
    lab = await CoreLab.create();
    await Promise.all([startTcpEcho(lab.api.netns, lab.api.ip, 8080), startTcpEcho(lab.api.netns, lab.api.ip, 9090)]);
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('baseline without Bastion: web reaches api on 8080 and 9090', { timeout: 30_000 }, async () => {
    const { web, api } = lab;
    expectAllConnect(
      await connectAll([
        ['web→api:8080', web.netns, api.ip, 8080],
        ['web→api:9090', web.netns, api.ip, 9090],
      ]),
    );
  });

  for (const c of CASES) {
    it(`bastion run refuses a config with ${c.name}: exit non-zero, error names file/object/field, nothing pinned or attached`, { timeout: 60_000 }, async () => {
      const path = join(lab.dir, `bad-${c.name.replace(/\W+/g, '-')}.yaml`);
      writeConfigFile(path, c.text(lab));
      const pin = uniquePinPath();
      const r = await lab.runExpectingFailure(path, pin);
      try {
        assert.ok(!r.timedOut, `bastion run kept running on a bad config (${c.name}); stdout:\n${r.stdout.slice(-2000)}`);
        assert.notEqual(r.code, 0, `bastion run exited 0 on a bad config (${c.name})`);
        const missing = namesFileObjectField(r.stderr, path, c);
        assert.deepEqual(missing, [], `the error on stderr should name ${missing.join(', ')}; stderr was:\n${r.stderr}`);
        assert.deepEqual(pinsUnder(pin), [], `pins were created under ${pin} for a rejected config`);
        assert.deepEqual(await lab.bpfFilters(), [], 'programs were attached for a rejected config');
      } finally {
        // If it did pin or attach anything, take it away so the next case starts clean.
        if (pinsUnder(pin).length) await bastionDown(pin);
      }
    });
  }

  it('the daemon starts and becomes ready with the core config', { timeout: 60_000 }, async () => {
    await lab.startDaemon();
    const { web, api } = lab;
    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
    expectNoneConnect(await connectAll([['web→api:9090', web.netns, api.ip, 9090]]));
  });

  for (const c of CASES) {
    it(`a running daemon rejects a rewrite with ${c.name}, names file/object/field, and keeps the previous policy`, { timeout: 60_000 }, async () => {
      const daemon = lab.requireDaemon();
      const errBefore = daemon.stderr.length;
      const res = await daemon.rewriteConfig(c.text(lab), 5000);
      assert.ok(daemon.running, `the daemon died on a bad config (${c.name}):\n${daemon.describe(20)}`);
      assert.equal(res.applied, false, `the daemon applied a config with ${c.name}: ${JSON.stringify(res.record)}`);
      // The error goes to stderr (a different pipe from the log line we waited for): give it a moment.
      await waitFor(() => namesFileObjectField(daemon.stderr.slice(errBefore), lab.configPath, c).length === 0, 2000, 50);
      const err = daemon.stderr.slice(errBefore);
      const missing = namesFileObjectField(err, lab.configPath, c);
      assert.deepEqual(missing, [], `the daemon's error should name ${missing.join(', ')}; its new stderr was:\n${err}\nrecord: ${JSON.stringify(res.record)}`);
      const { web, api } = lab;
      expectAllConnect(await connectAll([[`web→api:8080 still allowed after ${c.name}`, web.netns, api.ip, 8080]]));
      expectNoneConnect(await connectAll([[`web→api:9090 still refused after ${c.name}`, web.netns, api.ip, 9090]]));
    });
  }

  it('a container given by a /proc/PID/ns/net path is protected like one given by name', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const { web, api } = lab;
    const holder = startBackground(api.netns, 'sleep', ['120']);
    const cfg = lab.config();
    cfg.containers = cfg.containers.map((c) => (c.name === 'api' ? { ...c, netns: `/proc/${holder.child.pid}/ns/net` } : c));
    const res = await daemon.rewriteConfig(cfg);
    assert.ok(res.applied, `config with api's netns as a /proc path not applied: ${JSON.stringify(res.record)}\n${daemon.describe(20)}`);
    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
    expectNoneConnect(await connectAll([['web→api:9090', web.netns, api.ip, 9090]]));
    const f = [...(await tcBpfFilters(api.hostIf, 'ingress')), ...(await tcBpfFilters(api.hostIf, 'egress'))];
    assert.equal(f.length, 2, `api's veth should carry exactly its two programs: ${f.map((x) => x.line).join('\n')}`);
    const back = await daemon.rewriteConfig(lab.config());
    assert.ok(back.applied, 'the core config (netns by name) re-applies');
  });

  it('after all that, a good config is still applied (the daemon is healthy)', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const res = await daemon.rewriteConfig(changed(lab));
    assert.ok(res.applied, `a good config was not applied: ${JSON.stringify(res.record)}\n${daemon.describe(20)}`);
    const { web, api } = lab;
    expectAllConnect(await connectAll([['web→api:9090 (new policy)', web.netns, api.ip, 9090]]));
    expectNoneConnect(await connectAll([['web→api:8080 (policy removed)', web.netns, api.ip, 8080]]));
    // Back to the core config, for symmetry.
    const back = await daemon.rewriteConfig(lab.config({ policies: [WEB_TO_API, API_TO_DB] }));
    assert.ok(back.applied, 'the core config re-applies');
  });
});
