/**
 * `bastion audit` on the real dockerd: one container per risky setting that
 * can start on this machine, a clean container, and a Bastion daemon (unique
 * pin path, --select on this test's label) protecting them with a policy
 * that names the clean one. The clean container must have no finding at all
 * (container checks and coverage); each risky one its finding; recreated
 * with the fix, the finding must be gone.
 *
 * Cannot start here, so covered by recorded inspect data in
 * test/unit/audit-docker.test.ts: --privileged and --cap-add ALL (runc:
 * "unable to apply caps: operation not permitted", the sandbox's bounding
 * set lacks capabilities), --cap-add BPF (Docker 20.10: "unknown
 * capability"), AppArmor (the kernel has none: every AppArmorProfile is
 * empty, and the check applies only where the engine reports AppArmor).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import AjvDraft04 from 'ajv-draft-04';
import ajvFormats from 'ajv-formats';
import { DockerFixture, ensureEngine, waitFor, ROOT } from '../helpers/docker.js';
import { BastionDaemon, bastion, bastionDown, uniquePinPath } from '../helpers/bastion-daemon.js';
import { runAudit } from '../../src/audit/audit.js';
import type { AuditReport, Finding } from '../../src/audit/findings.js';
import { apiRequest } from '../../src/api/client.js';
import { socketPathFor } from '../../src/api/paths.js';
import type { StatusReport } from '../../src/api/types.js';

const engine = await ensureEngine();
const skip = engine.ok ? false : engine.reason;

interface Risky {
  name: string;
  expect: string;
  hostConfig: (clean: Docker.HostConfig, ids: { clean: string }) => Docker.HostConfig;
  exposedPorts?: string[];
}

const RISKY: Risky[] = [
  { name: 'sys-admin', expect: 'docker.container.cap-sys-admin', hostConfig: (c) => ({ ...c, CapAdd: ['SYS_ADMIN'] }) },
  { name: 'net-admin', expect: 'docker.container.cap-net-admin', hostConfig: (c) => ({ ...c, CapAdd: ['NET_ADMIN'] }) },
  { name: 'sys-ptrace', expect: 'docker.container.cap-sys-ptrace', hostConfig: (c) => ({ ...c, CapAdd: ['SYS_PTRACE'] }) },
  { name: 'sys-module', expect: 'docker.container.cap-sys-module', hostConfig: (c) => ({ ...c, CapAdd: ['SYS_MODULE'] }) },
  { name: 'dac-read-search', expect: 'docker.container.cap-dac-read-search', hostConfig: (c) => ({ ...c, CapAdd: ['DAC_READ_SEARCH'] }) },
  { name: 'net-raw', expect: 'docker.container.net-raw', hostConfig: (c) => ({ ...c, CapDrop: [] }) },
  { name: 'host-net', expect: 'docker.container.host-network', hostConfig: (c) => ({ ...c, NetworkMode: 'host' }) },
  { name: 'shared-netns', expect: 'docker.container.shared-netns', hostConfig: (c, ids) => ({ ...c, NetworkMode: `container:${ids.clean}` }) },
  { name: 'host-pid', expect: 'docker.container.host-pid', hostConfig: (c) => ({ ...c, PidMode: 'host' }) },
  { name: 'host-ipc', expect: 'docker.container.host-ipc', hostConfig: (c) => ({ ...c, IpcMode: 'host' }) },
  { name: 'host-uts', expect: 'docker.container.host-uts', hostConfig: (c) => ({ ...c, UTSMode: 'host' }) },
  { name: 'seccomp', expect: 'docker.container.seccomp-unconfined', hostConfig: (c) => ({ ...c, SecurityOpt: ['no-new-privileges', 'seccomp=unconfined'] }) },
  { name: 'nnp', expect: 'docker.container.no-new-privileges', hostConfig: (c) => ({ ...c, SecurityOpt: [] }) },
  { name: 'host-root', expect: 'docker.container.host-root', hostConfig: (c) => ({ ...c, Binds: ['/:/host:ro'] }) },
  { name: 'docker-sock', expect: 'docker.container.docker-socket', hostConfig: (c) => ({ ...c, Binds: ['/var/run/docker.sock:/var/run/docker.sock'] }) },
  { name: 'etc', expect: 'docker.container.sensitive-mount', hostConfig: (c) => ({ ...c, Binds: ['/etc:/hostetc:ro'] }) },
  { name: 'published', expect: 'docker.container.ports-all-addresses', hostConfig: (c) => ({ ...c, PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '' }] } }), exposedPorts: ['80/tcp'] },
];

describe('bastion audit on a real Docker engine', { skip, timeout: 600_000 }, () => {
  const docker = (engine as { docker: Docker }).docker;
  const fx = new DockerFixture(docker);
  const pinPath = uniquePinPath();
  let dir: string;
  let configPath: string;
  let daemon: BastionDaemon | undefined;
  let netName: string;
  let cleanId: string;
  let cleanHost: Docker.HostConfig;
  const ids = new Map<string, string>(); // name -> id12

  const mine = (r: AuditReport, name: string) => r.findings.filter((f) => f.object.kind === 'container' && f.object.name === fx.name(name));
  const audit = () => runAudit({ docker: true, pinPath, configPath });
  const status = () => apiRequest<StatusReport>(socketPathFor(pinPath), 'GET', '/v1/status', 5000);

  async function startRisky(r: Risky) {
    const info = await fx.run({ name: r.name, network: r.hostConfig({}, { clean: cleanId }).NetworkMode ? undefined : netName, hostConfig: r.hostConfig(cleanHost, { clean: cleanId }), ...(r.exposedPorts ? { exposedPorts: r.exposedPorts } : {}) });
    ids.set(r.name, info.Id.slice(0, 12));
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-audit-'));
    netName = (await fx.createNetwork('net')).Name;
    cleanHost = { NetworkMode: netName, CapDrop: ['NET_RAW'], SecurityOpt: ['no-new-privileges'] };
    configPath = join(dir, 'bastion.yaml');
    writeFileSync(configPath, `mode: enforce\npolicies:\n  - { name: clean-dns, from: { bastion.io/name: ${fx.name('clean')} }, to: host, ports: ["53/udp"] }\n`);
    daemon = new BastionDaemon(configPath, pinPath, ['--docker', '--select', `bastion.test=${fx.prefix}`]).start();
    await daemon.waitReady(60_000);
    const clean = await fx.run({ name: 'clean', network: netName, hostConfig: cleanHost });
    cleanId = clean.Id;
    ids.set('clean', clean.Id.slice(0, 12));
    for (const r of RISKY) await startRisky(r);
    // the daemon protects the clean container before the audit looks
    await waitFor('the clean container protected', async () => (await status()).endpoints.some((e) => e.name === fx.name('clean') && e.stack.ok), 30_000);
  });

  after(async () => {
    await daemon?.stop();
    await bastionDown(pinPath).catch(() => undefined);
    const problems = await fx.cleanup();
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(problems, []);
  });

  it('the clean container has no finding at all, and is protected', async () => {
    const r = await audit();
    assert.deepEqual(mine(r, 'clean').map((f) => `${f.id}: ${JSON.stringify(f.evidence)}`), []);
    assert.ok(!r.findings.some((f) => f.id === 'bastion.not-running'));
    assert.ok(r.sources.includes('docker') && r.sources.includes('policies'));
  });

  it('each risky setting raises its finding, with the evidence of the live container', async () => {
    const r = await audit();
    for (const x of RISKY) {
      const got = mine(r, x.name);
      const f = got.find((g) => g.id === x.expect);
      assert.ok(f, `${x.name}: expected ${x.expect}, got ${got.map((g) => g.id).join(', ') || 'nothing'}`);
      assert.equal(f.object.id, ids.get(x.name));
    }
    // the live facts, not a guess: NET_RAW from the process's bounding set, lowered because Bastion enforces there
    const netRaw = mine(r, 'net-raw').find((f) => f.id === 'docker.container.net-raw')!;
    assert.match(netRaw.evidence[0]!.field, /^\/proc\/\d+\/status CapBnd$/);
    assert.equal(netRaw.severity, 'low');
    // what the daemon cannot protect, with the adapter's reason
    const unprotected = (name: string) => mine(r, name).find((f) => f.id === 'bastion.unprotected')?.evidence[0]?.value ?? '';
    assert.match(unprotected('host-net'), /host network namespace/);
    assert.match(unprotected('net-admin'), /CAP_NET_ADMIN/);
    assert.match(unprotected('shared-netns'), /shares the network namespace/);
    // a protected container that no policy names (enforce mode: isolated)
    const noPolicy = mine(r, 'sys-ptrace').find((f) => f.id === 'bastion.no-policy');
    assert.equal(noPolicy?.severity, 'low');
  });

  it('the daemon serves the same audit (GET /v1/audit), and status shows each container\'s findings', async () => {
    const r = await apiRequest<AuditReport>(socketPathFor(pinPath), 'GET', '/v1/audit?maxAge=0', 120_000);
    for (const x of RISKY) assert.ok(mine(r, x.name).some((f) => f.id === x.expect), `${x.name}: ${x.expect} missing from /v1/audit`);
    assert.deepEqual(mine(r, 'clean'), []);
    assert.ok(!r.findings.some((f) => f.id === 'bastion.not-running'));
    // a status request serves the last report (and refreshes it in the background when it is old)
    const s = await waitFor('an audit in the status report', async () => {
      const st = await status();
      return st.audit ? st : undefined;
    }, 60_000);
    const ep = (name: string) => s.endpoints.find((e) => e.name === fx.name(name));
    assert.deepEqual(ep('clean')?.findings, []);
    assert.ok(ep('sys-ptrace')?.findings?.some((f) => f.id === 'docker.container.cap-sys-ptrace'), JSON.stringify(ep('sys-ptrace')));
    assert.ok(s.audit!.containers[ids.get('host-net')!]?.some((f) => f.id === 'docker.container.host-network'));
    const table = await bastion(['status', '--pin-path', pinPath], 30_000);
    assert.match(table.stdout, /^Posture +\d+ critical, \d+ high, \d+ medium, \d+ low findings/m);
    assert.match(table.stdout, /FINDINGS/);
  });

  it('recreated with the fix, each finding is gone', async () => {
    for (const x of RISKY) {
      await docker.getContainer(ids.get(x.name)!).remove({ force: true });
      const info = await fx.run({ name: x.name, network: netName, hostConfig: cleanHost });
      ids.set(x.name, info.Id.slice(0, 12));
    }
    const r = await audit();
    for (const x of RISKY) {
      const got = mine(r, x.name);
      assert.ok(!got.some((g) => g.id === x.expect), `${x.name}: ${x.expect} still there: ${JSON.stringify(got.find((g) => g.id === x.expect))}`);
      assert.ok(got.every((g: Finding) => g.object.id === ids.get(x.name)));
    }
  });

  it('the CLI: -o json and -o sarif (valid against the SARIF 2.1.0 schema), --fail-on', async () => {
    const json = await bastion(['audit', '--docker', '--config', configPath, '--pin-path', pinPath, '-o', 'json'], 60_000);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as AuditReport;
    assert.ok(report.findings.some((f) => f.object.name === fx.name('sys-ptrace')));
    const sarif = await bastion(['audit', '--docker', '--config', configPath, '--pin-path', pinPath, '-o', 'sarif', '--fail-on', 'critical'], 60_000);
    const log = JSON.parse(sarif.stdout) as object;
    const schema = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/sarif/sarif-schema-2.1.0.json'), 'utf8')) as object;
    const ajv = new AjvDraft04.default({ allErrors: true, strict: false });
    ajvFormats.default(ajv);
    const validate = ajv.compile(schema);
    assert.ok(validate(log), JSON.stringify(validate.errors));
    // this engine's runc 1.1.5 has the 2025 escapes (critical): --fail-on critical exits 1
    assert.equal(sarif.code, report.findings.some((f) => f.severity === 'critical') ? 1 : 0, sarif.stderr);
  });
});
