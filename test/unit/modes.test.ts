/**
 * Audit per workload (src/daemon/modes.ts) on the manager's real code path
 * over a recording datapath: which endpoint entries carry the audit flag,
 * where each mode comes from, modes kept across a restart, and the API's
 * answers (/v1/modes, PUT /v1/containers/:name/mode) with their status codes.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Manager } from '../../src/manager/manager.js';
import { ModeService, type ModeSources } from '../../src/daemon/modes.js';
import { parseConfigText, configToPolicySet, type PolicyConfig } from '../../src/policy/bastion-config.js';
import { EP_F_AUDIT, MAP_NAMES, decodeEndpointInfo } from '../../src/datapath/layout.js';
import type { Mode } from '../../src/policy/model.js';
import { createApiApp, type DaemonApi } from '../../src/api/app.js';
import { FlowStore } from '../../src/agent/flow-log.js';
import { FlowFollowers } from '../../src/api/flow-stream.js';
import { RecordingDatapath, TableNode, endpointSpec } from '../helpers/recording-datapath.js';

const dir = mkdtempSync(join(tmpdir(), 'bastion-modes-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const silent = pino({ level: 'silent' });

function policies(yaml: string): PolicyConfig[] {
  const r = parseConfigText(yaml, 'p.yaml');
  assert.ok(r.ok, !r.ok ? JSON.stringify(r.errors) : '');
  return r.config.policies;
}

interface Setup {
  manager: Manager;
  datapath: RecordingDatapath;
  modes: ModeService;
  sources: { global: Mode; file: PolicyConfig[]; runtime: PolicyConfig[] };
}

async function setup(file: string, containers: Array<{ name: string; mode?: Mode; labels?: Record<string, string> }>, s: Partial<Setup['sources']> = {}): Promise<Setup> {
  const sources = { global: s.global ?? 'enforce', file: s.file ?? [], runtime: s.runtime ?? [] };
  const src: ModeSources = { globalMode: () => sources.global, filePolicies: () => sources.file, runtimePolicies: () => sources.runtime };
  const modes = new ModeService(file, src, silent);
  modes.load();
  const datapath = new RecordingDatapath();
  const node = new TableNode();
  const manager = new Manager({ datapath, node, log: silent, modeOf: modes.modeOf });
  modes.attach(manager);
  await manager.setPolicy({ ...configToPolicySet({ mode: sources.global, policies: sources.file }), mode: sources.global });
  containers.forEach((c, i) => node.interfaces.set(c.name, TableNode.iface(i)));
  await manager.upsertEndpoints(
    await Promise.all(containers.map(async (c) => {
      const spec = { ...endpointSpec(c.name, { ...(c.labels ?? { app: c.name }), 'bastion.io/name': c.name }), ...(c.mode ? { mode: c.mode } : {}) };
      return { spec, known: await node.discover(spec) };
    })),
  );
  return { manager, datapath, modes, sources };
}

/** The audit flag of each endpoint as last written to bastion_ep. */
function auditFlags(d: RecordingDatapath, manager: Manager): Record<string, boolean> {
  const byIfindex = new Map<number, boolean>();
  for (const op of d.ops) {
    if (op.map !== MAP_NAMES.endpoints || op.op !== 'upsert') continue;
    const info = decodeEndpointInfo(op.value);
    byIfindex.set(info.ifindex, (info.flags & EP_F_AUDIT) !== 0);
  }
  return Object.fromEntries([...manager.endpoints.values()].map((e) => [e.name, byIfindex.get(e.hostIfindex) ?? false]));
}

describe('audit per workload', () => {
  it('puts in audit mode the containers a policy with mode: audit selects, next to enforced ones', async () => {
    const file = policies(`policies:\n  - { name: web-to-api, from: { app: web }, to: { app: api }, ports: ["8080/tcp"], mode: audit }\n  - { name: api-to-db, from: { app: api }, to: { app: db }, ports: ["5432/tcp"] }\n`);
    const s = await setup(join(dir, 'a.json'), [{ name: 'web' }, { name: 'api' }, { name: 'db' }, { name: 'attacker' }], { file });
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: true, api: true, db: false, attacker: false });
    assert.deepEqual(s.modes.list(), {
      global: 'enforce',
      containers: [
        { name: 'api', mode: 'audit', source: 'config', policy: 'web-to-api' },
        { name: 'attacker', mode: 'enforce', source: 'default' },
        { name: 'db', mode: 'enforce', source: 'default' },
        { name: 'web', mode: 'audit', source: 'config', policy: 'web-to-api' },
      ],
    });
  });

  it('lets a container\'s own mode win over a policy\'s, and a mode set at run time win over both', async () => {
    const file = policies(`policies:\n  - { name: p, from: { app: web }, to: { app: api }, mode: audit }\n`);
    const s = await setup(join(dir, 'b.json'), [{ name: 'web', mode: 'enforce' }, { name: 'api' }, { name: 'db', mode: 'audit' }], { file });
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: false, api: true, db: true });
    const r = await s.modes.set('db', 'enforce');
    assert.deepEqual(r, { ok: true, value: { name: 'db', mode: 'enforce' } });
    await s.modes.set('web', 'audit');
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: true, api: true, db: false });
    assert.deepEqual(
      s.modes.list().containers.map((c) => [c.name, c.mode, c.source]),
      [
        ['api', 'audit', 'config'],
        ['db', 'enforce', 'runtime'],
        ['web', 'audit', 'runtime'],
      ],
    );
  });

  it('follows the policies: a runtime policy in audit mode added, then deleted', async () => {
    const s = await setup(join(dir, 'c.json'), [{ name: 'web' }, { name: 'api' }]);
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: false, api: false });
    s.sources.runtime = policies(`policies:\n  - { name: try-web, from: { app: web }, to: host, ports: ["53/udp"], mode: audit }\n`);
    assert.deepEqual(await s.modes.refresh(), ['file:web']);
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: true, api: false });
    assert.equal(s.modes.list().containers.find((c) => c.name === 'web')!.source, 'runtime');
    s.sources.runtime = [];
    assert.deepEqual(await s.modes.refresh(), ['file:web']);
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: false, api: false });
    assert.deepEqual(await s.modes.refresh(), [], 'nothing moved: nothing rewritten');
  });

  it('after a runtime policy change (policiesOnly), walks the endpoints only when the policies in audit mode changed', async () => {
    const s = await setup(join(dir, 'c2.json'), [{ name: 'web' }, { name: 'api' }]);
    let walked = 0;
    const values = s.manager.endpoints.values.bind(s.manager.endpoints);
    s.manager.endpoints.values = () => {
      walked++;
      return values();
    };
    // an enforced policy added: no policy in audit mode changed, no endpoint walked, nothing rewritten
    s.sources.runtime = policies(`policies:\n  - { name: web-api, from: { app: web }, to: { app: api }, ports: ["80/tcp"] }\n`);
    const before = s.datapath.ops.length;
    assert.deepEqual(await s.modes.refresh({ policiesOnly: true }), []);
    assert.equal(walked, 0, 'the endpoints were not walked');
    assert.equal(s.datapath.ops.length, before);
    // one in audit mode added: walked, web moves
    s.sources.runtime = [...s.sources.runtime, ...policies(`policies:\n  - { name: try-web, from: { app: web }, to: host, ports: ["53/udp"], mode: audit }\n`)];
    assert.deepEqual(await s.modes.refresh({ policiesOnly: true }), ['file:web']);
    assert.ok(walked > 0);
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: true, api: false });
    // deleted again: web back to enforce
    s.sources.runtime = s.sources.runtime.filter((p) => p.name !== 'try-web');
    assert.deepEqual(await s.modes.refresh({ policiesOnly: true }), ['file:web']);
    assert.deepEqual(auditFlags(s.datapath, s.manager), { web: false, api: false });
  });

  it('keeps modes set at run time across a restart, in its file', async () => {
    const file = join(dir, 'd.json');
    const s = await setup(file, [{ name: 'web' }, { name: 'api' }]);
    await s.modes.set('web', 'audit');
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { modes: { web: 'audit' } });
    const again = await setup(file, [{ name: 'web' }, { name: 'api' }]);
    assert.deepEqual(auditFlags(again.datapath, again.manager), { web: true, api: false });
    assert.equal(again.modes.resolve(again.manager.endpoints.get('file:web')!).source, 'runtime');
    writeFileSync(join(dir, 'bad.json'), '{"modes":{"web":"sometimes"}}');
    const bad = await setup(join(dir, 'bad.json'), [{ name: 'web' }]);
    assert.deepEqual(auditFlags(bad.datapath, bad.manager), { web: false });
  });

  it('under a host in audit mode, every container is audited and none can be enforced', async () => {
    const s = await setup(join(dir, 'e.json'), [{ name: 'web', mode: 'enforce' }], { global: 'audit' });
    assert.deepEqual(s.modes.list(), { global: 'audit', containers: [{ name: 'web', mode: 'audit', source: 'default' }] });
    const r = await s.modes.set('web', 'enforce');
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.code, 'conflict');
  });

  it('answers over HTTP: 200, 404 for an unknown container, 422 for a bad mode, 400 for a body that is not JSON', async () => {
    const s = await setup(join(dir, 'f.json'), [{ name: 'web' }]);
    const flows = new FlowStore(10);
    const api: DaemonApi = {
      status: () => ({}) as never,
      reload: async () => ({ ok: true, value: {} }),
      policies: { list: () => [], add: async () => ({ ok: true, value: { dryRun: true, policies: [] } }), delete: async () => ({ ok: true, value: { deleted: [], entries: 0, ms: 0 } }) },
      metrics: { text: async () => '', contentType: 'text/plain' },
      flows,
      followers: new FlowFollowers(flows),
      modes: { list: () => s.modes.list(), set: (n, m) => s.modes.set(n, m) },
    };
    const app = createApiApp(api);
    const put = (name: string, body: string) => app.request(`/v1/containers/${name}/mode`, { method: 'PUT', body, headers: { 'content-type': 'application/json' } });
    let res = await put('web', '{"mode":"audit"}');
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true, name: 'web', mode: 'audit' });
    res = await put('nobody', '{"mode":"audit"}');
    assert.equal(res.status, 404);
    assert.match(((await res.json()) as { errors: string[] }).errors[0]!, /no container "nobody"/);
    res = await put('web', '{"mode":"loud"}');
    assert.equal(res.status, 422);
    res = await put('web', 'mode=audit');
    assert.equal(res.status, 400);
    res = await app.request('/v1/modes');
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { global: 'enforce', containers: [{ name: 'web', mode: 'audit', source: 'runtime' }] });
  });
});
