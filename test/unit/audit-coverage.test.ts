/**
 * Bastion coverage on recorded data: containers of a demo-like app (inspect
 * variants), policies read with the daemon's config loader, the daemon's
 * view as /v1/status gives it. Each finding appears with its problem and goes
 * away with its fix.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { auditCoverage, widePolicyEvidence, type DaemonView, type PolicyView } from '../../src/audit/bastion-rules.js';
import type { AuditInspect } from '../../src/audit/docker-rules.js';
import { loadConfigSource } from '../../src/daemon/config-source.js';
import type { DockerNetwork } from '../../src/platform/docker/mapping.js';

const base = JSON.parse(readFileSync('test/fixtures/audit/inspect-clean.json', 'utf8')) as AuditInspect;
const networks = new Map<string, DockerNetwork>([['demo', { id: 'n1', name: 'demo', driver: 'bridge', bridge: 'br-n1' }]]);

function container(name: string, app: string, n: number, change: (c: AuditInspect) => void = () => {}): AuditInspect {
  const c = structuredClone(base);
  c.Name = `/${name}`;
  c.Id = `${n}`.padStart(12, '0') + 'f'.repeat(52);
  c.Config.Labels = { app };
  c.HostConfig.NetworkMode = 'demo';
  c.NetworkSettings.Networks = { demo: { NetworkID: 'n1', MacAddress: `02:42:0a:00:00:0${n}`, IPAddress: `10.0.0.${n}` } };
  change(c);
  return c;
}
const app = () => [container('web', 'web', 1), container('api', 'api', 2), container('db', 'db', 3), container('attacker', 'attacker', 4)];
const key = (c: AuditInspect) => `docker:${c.Id.slice(0, 12)}/demo`;
const running = (cs: AuditInspect[], mode: 'enforce' | 'audit' = 'enforce', stackOk = () => true): DaemonView => ({
  pinPath: '/sys/fs/bpf/test',
  mode,
  endpoints: cs.map((c) => ({ key: key(c), name: c.Name.slice(1), mode, stackOk: stackOk() })),
  unprotected: [],
});

let dir: string;
async function policies(yaml: string): Promise<PolicyView> {
  const file = join(dir, `p${Math.random().toString(16).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  const l = await loadConfigSource(file, { containersRequired: false });
  if (!l.ok) throw new Error(l.errors.join('\n'));
  return { mode: l.policy.mode, policies: l.policies.map((policy) => ({ policy, source: file })), rules: l.policy.rules };
}
const DEMO_POLICY = `
policies:
  - { name: web-to-api, from: { app: web }, to: { app: api }, ports: ["8080/tcp"] }
  - { name: api-to-db, from: { app: api }, to: { app: db }, ports: ["5432/tcp"] }
  - { name: attacker-dns, from: { app: attacker }, to: host, ports: ["53/udp"] }
`;
const ids = (fs: Array<{ id: string; object: { name: string } }>) => fs.map((f) => `${f.id} ${f.object.name}`).sort();

describe('audit: Bastion coverage', () => {
  before(() => (dir = mkdtempSync(join(tmpdir(), 'bastion-audit-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a running daemon protecting every container, and a policy for each: no finding', async () => {
    const cs = app();
    assert.deepEqual(auditCoverage({ containers: cs, networks, pinPath: '/sys/fs/bpf/test', daemon: running(cs), policies: await policies(DEMO_POLICY) }), []);
  });

  it('no daemon: bastion.not-running, and every container is unprotected, with the reason', async () => {
    const f = auditCoverage({ containers: app(), networks, pinPath: '/sys/fs/bpf/test', policies: await policies(DEMO_POLICY) });
    assert.deepEqual(ids(f), ['bastion.not-running bastion (/sys/fs/bpf/test)', 'bastion.unprotected api', 'bastion.unprotected attacker', 'bastion.unprotected db', 'bastion.unprotected web']);
    assert.match(f.find((x) => x.object.name === 'web')!.evidence[0]!.value, /no Bastion daemon runs for \/sys\/fs\/bpf\/test/);
  });

  it('containers the Docker mapping cannot protect are unprotected with its reason, whether the daemon runs or not', async () => {
    const cs = [
      container('hostnet', 'x', 5, (c) => ((c.HostConfig.NetworkMode = 'host'), (c.NetworkSettings.Networks = { host: {} }))),
      container('admin', 'x', 6, (c) => (c.HostConfig.CapAdd = ['NET_ADMIN'])),
      container('priv', 'x', 7, (c) => (c.HostConfig.Privileged = true)),
    ];
    const pol = await policies('policies:\n  - { name: x, from: { app: x }, to: host, ports: ["53/udp"] }\n');
    const f = auditCoverage({ containers: cs, networks, pinPath: '/p', daemon: running([]), policies: pol });
    assert.deepEqual(ids(f), ['bastion.selector-matches-nothing x', 'bastion.unprotected admin', 'bastion.unprotected hostnet', 'bastion.unprotected priv']);
    assert.match(f.find((x) => x.object.name === 'hostnet')!.evidence[0]!.value, /--network host/);
    assert.match(f.find((x) => x.object.name === 'admin')!.evidence[0]!.value, /CAP_NET_ADMIN/);
  });

  it('a container the daemon does not manage, and a stack that is not attached', async () => {
    const cs = app();
    const view = running(cs.slice(0, 3));
    view.endpoints[0]!.stackOk = false;
    const f = auditCoverage({ containers: cs, networks, pinPath: '/p', daemon: view, policies: await policies(DEMO_POLICY) });
    assert.deepEqual(ids(f), ['bastion.stack-missing web', 'bastion.unprotected attacker']);
    assert.equal(f.find((x) => x.id === 'bastion.stack-missing')!.object.id, cs[0]!.Id.slice(0, 12));
  });

  it('no policy names the attacker: low in enforce mode, medium in audit mode; a policy for it is the fix', async () => {
    const cs = app();
    const without = await policies(DEMO_POLICY.split('\n').filter((l) => !l.includes('attacker')).join('\n'));
    const enforce = auditCoverage({ containers: cs, networks, pinPath: '/p', daemon: running(cs), policies: without });
    assert.deepEqual(ids(enforce), ['bastion.no-policy attacker']);
    assert.equal(enforce[0]!.severity, 'low');
    const audit = auditCoverage({ containers: cs, networks, pinPath: '/p', daemon: running(cs, 'audit'), policies: without });
    assert.equal(audit[0]!.severity, 'medium');
    assert.match(audit[0]!.evidence[1]!.value, /^audit/);
  });

  it('policies open to the world or the host on every port are wide; naming the ports is the fix', async () => {
    const wide = await policies(`
policies:
  - { name: to-host, from: { app: web }, to: host }
  - { name: to-world, from: { app: api }, to: { cidr: 0.0.0.0/0 }, ports: ["1-65535/tcp"] }
  - { name: from-world, from: { cidr: 0.0.0.0/0 }, to: { app: web } }
  - { name: dns, from: { app: db }, to: host, ports: ["53/udp"] }
  - { name: lan, from: { app: db }, to: { cidr: 10.0.0.0/8 } }
  - { name: ping, from: { app: attacker }, to: host, ports: ["icmp"] }
`);
    const f = auditCoverage({ pinPath: '/p', policies: wide });
    assert.deepEqual(ids(f), ['bastion.wide-policy from-world', 'bastion.wide-policy to-host', 'bastion.wide-policy to-world']);
    assert.deepEqual(f.find((x) => x.object.name === 'to-host')!.evidence, [
      { field: 'to', value: 'host' },
      { field: 'ports', value: '(none: every protocol and port)' },
    ]);
    const fixed = await policies('policies:\n  - { name: to-host, from: { app: web }, to: host, ports: ["53/udp", "8080/tcp"] }\n');
    assert.equal(widePolicyEvidence(fixed.policies[0]!.policy), undefined);
  });

  it('a selector that matches no running container (a typo) is reported; the corrected one is not', async () => {
    const cs = app();
    const typo = await policies(DEMO_POLICY.replace('to: { app: api }', 'to: { app: apl }'));
    const f = auditCoverage({ containers: cs, networks, pinPath: '/p', daemon: running(cs), policies: typo });
    assert.ok(ids(f).includes('bastion.selector-matches-nothing web-to-api'), ids(f).join(', '));
    assert.deepEqual(f.find((x) => x.id === 'bastion.selector-matches-nothing')!.evidence[0], { field: 'to', value: 'app=apl' });
  });
});
