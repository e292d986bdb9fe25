/**
 * Published ports on a real Docker engine (issue 13). `docker run -p`
 * is a declared intent to serve a port: under Bastion it must keep working
 * from where Docker delivers it.
 *
 * - 127.0.0.1:HP1 -> 80: Docker's userland proxy connects from the gateway
 *   (the host): reachable from the host only;
 * - 0.0.0.0:HP2 -> 81: also DNAT of connections from other machines, which
 *   keep their address (world): reachable from the host and from outside.
 *
 * "Outside" is a network namespace of this test on a veth to the host (its
 * connections to the host's address are DNATed by Docker like a remote
 * client's). A port the container listens on but does not publish stays
 * closed to the host. --published-ports host-only closes the outside path,
 * deny closes both (what Bastion did before: every published port was cut
 * as host-denied).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { DockerFixture, ensureEngine, waitFor } from '../helpers/docker.js';
import { BastionDaemon, bastion, bastionStatus, uniquePinPath } from '../helpers/bastion-daemon.js';
import { freeSubnet24 } from '../helpers/netns.js';
import { nsRun } from '../helpers/probes.js';
import { inNetns } from '../../src/demo/probes.js';

const engine = await ensureEngine();
const skip = engine.ok ? false : `Docker cannot run here: ${engine.reason}`;
const SELECT_KEY = 'bastion.published';

describe('published ports on a real Docker engine', { skip, timeout: 600_000 }, () => {
  const docker = (engine as { docker: Docker }).docker;
  let fx: DockerFixture;
  let dir: string;
  let configPath: string;
  const pinPath = uniquePinPath();
  const tag = randomBytes(3).toString('hex');
  const hp1 = 21000 + Math.floor(Math.random() * 4000);
  const hp2 = hp1 + 4000;
  const outside = `bt${tag}-out`;
  const hostIf = `bt${tag}o`;
  let hostIp: string;
  let outsideIp: string;
  let srv: Docker.ContainerInspectInfo;
  let daemon: BastionDaemon | undefined;

  before(async () => {
    fx = new DockerFixture(docker);
    dir = mkdtempSync(join(tmpdir(), 'bastion-published-'));
    configPath = join(dir, 'bastion.yaml');
    writeFileSync(configPath, 'mode: enforce\npolicies: []\n');
    const base = await freeSubnet24();
    const net = await fx.createNetwork('pub', { IPAM: { Config: [{ Subnet: `${base}.0/24`, Gateway: `${base}.1` }] } });
    srv = await fx.run({
      name: 'srv',
      cmd: ['sh', '-c', 'nc -ll -p 80 -e cat & nc -ll -p 81 -e cat & nc -ll -p 82 -e cat & wait'],
      labels: { [SELECT_KEY]: tag },
      network: net.Name,
      exposedPorts: ['80/tcp', '81/tcp'],
      hostConfig: { PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: String(hp1) }], '81/tcp': [{ HostIp: '0.0.0.0', HostPort: String(hp2) }] } },
    });
    await waitFor('srv listening', async () => /:82\b/.test((await inNetns({ pid: srv.State.Pid }, 'ss', ['-Hltn'])).stdout), 10_000);
    // the outside: a namespace on a veth to the host, nothing else
    const o = await freeSubnet24();
    hostIp = `${o}.1`;
    outsideIp = `${o}.2`;
    const sh = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
    sh('netns', 'add', outside);
    sh('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', `${hostIf}x`);
    sh('link', 'set', `${hostIf}x`, 'netns', outside);
    sh('addr', 'add', `${hostIp}/24`, 'dev', hostIf);
    sh('link', 'set', hostIf, 'up');
    sh('-n', outside, 'addr', 'add', `${outsideIp}/24`, 'dev', `${hostIf}x`);
    sh('-n', outside, 'link', 'set', `${hostIf}x`, 'up');
    sh('-n', outside, 'link', 'set', 'lo', 'up');
    sh('-n', outside, 'route', 'add', 'default', 'via', hostIp);
  });

  after(async () => {
    await daemon?.stop().catch(() => undefined);
    await bastion(['down', '--pin-path', pinPath]).catch(() => undefined);
    await fx?.cleanup();
    for (const args of [['link', 'del', hostIf], ['netns', 'del', outside]]) {
      try {
        execFileSync('ip', args, { stdio: 'pipe' });
      } catch {
        /* gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  async function startDaemon(mode: string): Promise<BastionDaemon> {
    await daemon?.stop();
    const d = new BastionDaemon(configPath, pinPath, ['--docker', '--select', `${SELECT_KEY}=${tag}`, '--published-ports', mode]).start();
    daemon = d;
    await d.waitReady(60_000);
    await waitFor('srv protected', async () => {
      const s = await bastionStatus(pinPath);
      return s.json?.endpoints?.some((e: { name: string; stack: { ok: boolean } }) => e.name === srv.Name.slice(1) && e.stack.ok);
    }, 30_000);
    return d;
  }

  /**
   * A line sent and echoed back: a connection to docker-proxy is accepted
   * whatever happens behind it, so only the echo proves the container
   * answered.
   */
  async function echoes(ns: string | null, ip: string, port: number): Promise<boolean> {
    const r = await nsRun(ns, 'sh', ['-c', `echo ping-${tag} | nc -N -w 3 ${ip} ${port}`], { timeoutMs: 8000 });
    return r.stdout.includes(`ping-${tag}`);
  }

  /** Every path at once: host -> 127.0.0.1:hp1, host -> hostIp:hp2, outside -> hostIp:hp2, host -> container:82 (not published). */
  async function paths(): Promise<Record<string, boolean>> {
    const ip = srv.NetworkSettings.Networks[Object.keys(srv.NetworkSettings.Networks)[0]!]!.IPAddress;
    const [a, b, c, d] = await Promise.all([echoes(null, '127.0.0.1', hp1), echoes(null, hostIp, hp2), echoes(outside, hostIp, hp2), echoes(null, ip, 82)]);
    return { 'host→127.0.0.1:80 (proxy)': a, 'host→81 (host DNAT)': b, 'outside→81 (DNAT)': c, 'host→82 (not published)': d };
  }

  it('without Bastion every path answers (the baseline)', async () => {
    assert.deepEqual(await paths(), { 'host→127.0.0.1:80 (proxy)': true, 'host→81 (host DNAT)': true, 'outside→81 (DNAT)': true, 'host→82 (not published)': true });
  });

  it('allow (the default): published ports answer from where Docker delivers them; status says so (failed before: all cut as host-denied)', async () => {
    await startDaemon('allow');
    assert.deepEqual(await paths(), { 'host→127.0.0.1:80 (proxy)': true, 'host→81 (host DNAT)': true, 'outside→81 (DNAT)': true, 'host→82 (not published)': false });
    const s = await bastionStatus(pinPath);
    assert.deepEqual(s.json.published, { mode: 'allow', ports: [{ container: srv.Name.slice(1), fromHost: '80-81/tcp', fromOutside: '81/tcp' }] });
    const list = await bastion(['policy', 'list', '--source', 'platform', '-o', 'json', '--pin-path', pinPath]);
    assert.deepEqual(
      JSON.parse(list.stdout).map((r: { name: string }) => r.name),
      [`published:${srv.Name.slice(1)}:from-host`, `published:${srv.Name.slice(1)}:from-outside`],
    );
  });

  it('host-only: the outside path is closed', async () => {
    await startDaemon('host-only');
    assert.deepEqual(await paths(), { 'host→127.0.0.1:80 (proxy)': true, 'host→81 (host DNAT)': true, 'outside→81 (DNAT)': false, 'host→82 (not published)': false });
  });

  it('deny: nothing published is let in (what Bastion did before)', async () => {
    await startDaemon('deny');
    assert.deepEqual(await paths(), { 'host→127.0.0.1:80 (proxy)': false, 'host→81 (host DNAT)': false, 'outside→81 (DNAT)': false, 'host→82 (not published)': false });
  });
});
