/**
 * Core issue, part 5: host / gateway isolation.
 *
 * Listeners in the host namespace bound to the bridge (gateway) address
 * only, and to a second host address (another subnet, on the same bridge): no
 * container reaches them unless a `to: host` rule names the port, and then
 * only that container and that port. The host reaching a container needs a
 * `from: host` rule likewise.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { CoreLab, tcBpfFilters, type PolicyEntry } from '../helpers/bastion-daemon.js';
import { connectAll, expectAllConnect, expectNoneConnect, flushNeighbours, nsRun, startTcpEcho } from '../helpers/probes.js';
import { pinNeighbour } from '../helpers/attacks.js';
import { freeSubnet24 } from '../helpers/netns.js';

describe('core: host isolation (listeners on the gateway address)', () => {
  let lab: CoreLab;
  let hostIp2: string;
  const P1 = randomInt(20000, 29000);
  const P2 = P1 + 1;

  before(async () => {
    lab = await CoreLab.create();
    // A container on the same bridge that the config does not list.
    await lab.topo.addContainer({ name: 'bystander', ip: `${lab.gateway.split('.').slice(0, 3).join('.')}.20` });
    // A second host address (outside the containers' subnet) on our own bridge.
    hostIp2 = `${await freeSubnet24()}.1`;
    const r = await nsRun(null, 'ip', ['addr', 'add', `${hostIp2}/32`, 'dev', lab.topo.bridge], { timeoutMs: 5000 });
    assert.equal(r.code, 0, `ip addr add ${hostIp2}/32 dev ${lab.topo.bridge}: ${r.stderr}`);
    await Promise.all([
      startTcpEcho(null, lab.gateway, P1),
      startTcpEcho(null, lab.gateway, P2),
      startTcpEcho(null, hostIp2, P1),
      startTcpEcho(lab.web.netns, lab.web.ip, 8080),
      startTcpEcho(lab.api.netns, lab.api.ip, 8080),
    ]);
  });

  after(async () => {
    await lab?.cleanup();
  });

  const webToHost = (): PolicyEntry => ({ name: 'web-to-host', from: { app: 'web' }, to: 'host', ports: [`${P1}/tcp`] });

  it('baseline without Bastion: containers reach the host listeners, the host reaches web (with and without static ARP entries)', { timeout: 60_000 }, async () => {
    const { web, api, attacker } = lab;
    const probes = (label: string) =>
      connectAll([
        [`${label}web→gateway:${P1}`, web.netns, lab.gateway, P1],
        [`${label}web→gateway:${P2}`, web.netns, lab.gateway, P2],
        [`${label}web→host address ${hostIp2}:${P1}`, web.netns, hostIp2, P1],
        [`${label}api→gateway:${P1}`, api.netns, lab.gateway, P1],
        [`${label}attacker→gateway:${P1}`, attacker.netns, lab.gateway, P1],
        [`${label}host→web:8080`, null, web.ip, 8080],
        [`${label}host→api:8080`, null, api.ip, 8080],
        [`${label}bystander→gateway:${P1}`, lab.topo.container('bystander').netns, lab.gateway, P1],
      ]);
    expectAllConnect(await probes(''));
    await pinAll();
    expectAllConnect(await probes('[static ARP] '));
    await flushAll();
  });

  it('the daemon starts and becomes ready with the core config (no host rule)', { timeout: 60_000 }, async () => {
    await lab.startDaemon();
  });

  /** Static ARP entries for the gateway in the containers, and for the containers on the host: refusals are then the IP policy's. */
  async function pinAll(): Promise<void> {
    await lab.pinNeighbours();
    for (const c of lab.topo.containers) await pinNeighbour(null, lab.topo.bridge, c.ip, c.mac);
  }
  async function flushAll(): Promise<void> {
    await lab.flushNeighbours();
    await flushNeighbours(null, lab.topo.bridge);
  }

  it('without a `to: host` rule no container reaches the host, on the gateway or another host address', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { web, api, attacker } = lab;
    await pinAll();
    expectNoneConnect(
      await connectAll([
        [`web→gateway:${P1}`, web.netns, lab.gateway, P1],
        [`web→gateway:${P2}`, web.netns, lab.gateway, P2],
        [`web→host address ${hostIp2}:${P1}`, web.netns, hostIp2, P1],
        [`api→gateway:${P1}`, api.netns, lab.gateway, P1],
        [`attacker→gateway:${P1}`, attacker.netns, lab.gateway, P1],
      ]),
    );
  });

  it('a container the config does not list is not touched: no stack on its veth, its traffic flows', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const b = lab.topo.container('bystander');
    const filters = [...(await tcBpfFilters(b.hostIf, 'ingress')), ...(await tcBpfFilters(b.hostIf, 'egress'))];
    assert.deepEqual(filters.map((f) => f.line), [], `Bastion attached to the unlisted container's veth ${b.hostIf}`);
    await flushNeighbours(b.netns);
    expectAllConnect(await connectAll([[`bystander→gateway:${P1}`, b.netns, lab.gateway, P1]]));
  });

  it('without a `from: host` rule the host does not reach web', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    expectNoneConnect(await connectAll([['host→web:8080', null, lab.web.ip, 8080]]));
  });

  it(`a \`to: host\` rule for ${P1}/tcp lets web (only web, only that port) reach the host`, { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const applied = await daemon.rewriteConfig(lab.config({ extra: [webToHost()] }));
    assert.ok(applied.applied, `the config with web-to-host was not applied: ${JSON.stringify(applied.record)}\n${daemon.describe(20)}`);
    const { web, api, attacker } = lab;
    await flushAll(); // the allowed path resolves the gateway through ARP
    expectAllConnect(
      await connectAll([
        [`web→gateway:${P1}`, web.netns, lab.gateway, P1],
        [`web→host address ${hostIp2}:${P1}`, web.netns, hostIp2, P1],
      ]),
    );
    await pinAll();
    expectNoneConnect(
      await connectAll([
        [`web→gateway:${P2} (port not in the rule)`, web.netns, lab.gateway, P2],
        [`api→gateway:${P1} (rule is for web)`, api.netns, lab.gateway, P1],
        [`attacker→gateway:${P1}`, attacker.netns, lab.gateway, P1],
        ['host→web:8080 (to: host does not open from: host)', null, web.ip, 8080],
      ]),
    );
  });

  it('a `from: host` rule lets the host reach web:8080', { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const hostToWeb: PolicyEntry = { name: 'host-to-web', from: 'host', to: { app: 'web' }, ports: ['8080/tcp'] };
    const applied = await daemon.rewriteConfig(lab.config({ extra: [webToHost(), hostToWeb] }));
    assert.ok(applied.applied, `the config with host-to-web was not applied: ${JSON.stringify(applied.record)}\n${daemon.describe(20)}`);
    await flushAll();
    expectAllConnect(await connectAll([['host→web:8080', null, lab.web.ip, 8080]]));
    await pinAll();
    expectNoneConnect(await connectAll([['host→api:8080', null, lab.api.ip, 8080]]));
  });

  it('removing the `to: host` rule closes the host again', { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const applied = await daemon.rewriteConfig(lab.config());
    assert.ok(applied.applied, `the core config was not re-applied: ${JSON.stringify(applied.record)}`);
    await pinAll();
    expectNoneConnect(await connectAll([[`web→gateway:${P1}`, lab.web.netns, lab.gateway, P1]]));
  });
});
