/**
 * Core issue, part 4: no third container can see web↔api traffic, and the
 * bridge carries none of it (direct veth-to-veth forwarding).
 *
 * To make sniffing possible at all without Bastion, the bridge is turned
 * into a hub (ageing_time 0: no MAC learning, every frame flooded to every
 * port), the worst case of "traffic flooded or redirected" to the attacker.
 * The baseline shows the attacker's promiscuous tcpdump and a tcpdump on the
 * bridge device both capture the transfer; under Bastion neither may.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CoreLab } from '../helpers/bastion-daemon.js';
import { captureMany, echoTransfer, nsRun, startTcpEcho } from '../helpers/probes.js';

const MB = 1024 * 1024;

describe('core: sniffing (web↔api transfer, bridge in hub mode)', () => {
  let lab: CoreLab;

  before(async () => {
    lab = await CoreLab.create();
    const hub = await nsRun(null, 'ip', ['link', 'set', lab.topo.bridge, 'type', 'bridge', 'ageing_time', '0'], { timeoutMs: 5000 });
    assert.equal(hub.code, 0, `bridge ageing_time 0: ${hub.stderr}`);
    await startTcpEcho(lab.api.netns, lab.api.ip, 8080);
  });

  after(async () => {
    await lab?.cleanup();
  });

  /** A 2 MB echo transfer web→api while tcpdump runs in attacker, on the bridge and in api. */
  async function sniffTransfer(): Promise<{ attacker: string[]; bridge: string[]; api: string[]; ok: boolean; detail: string }> {
    const { web, api, attacker } = lab;
    const filter = `tcp and host ${web.ip} and host ${api.ip}`;
    const { captures, result } = await captureMany(
      [
        { ns: attacker.netns, iface: 'eth0', filter, promisc: true },
        { ns: null, iface: lab.topo.bridge, filter, promisc: true },
        { ns: api.netns, iface: 'eth0', filter },
      ],
      () => echoTransfer(web.netns, api.ip, 8080, { bytes: 2 * MB, timeoutMs: 20_000 }).done,
    );
    return {
      attacker: captures[0]!.packets,
      bridge: captures[1]!.packets,
      api: captures[2]!.packets,
      ok: result.ok,
      detail: JSON.stringify(result),
    };
  }

  it('baseline without Bastion: the attacker and the bridge capture the web↔api transfer', { timeout: 60_000 }, async () => {
    const s = await sniffTransfer();
    assert.ok(s.ok, `transfer without Bastion: ${s.detail}`);
    assert.ok(s.api.length > 0, 'api itself captures the transfer');
    assert.ok(s.attacker.length > 0, "without Bastion the attacker's promiscuous tcpdump should capture web↔api packets (hub mode)");
    assert.ok(s.bridge.length > 0, 'without Bastion tcpdump on the bridge should capture web↔api packets');
  });

  it('the daemon starts and becomes ready with the core config', { timeout: 60_000 }, async () => {
    await lab.startDaemon();
  });

  it("the attacker's promiscuous tcpdump captures none of a web↔api transfer, and the bridge carries none of it", { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const s = await sniffTransfer();
    assert.ok(s.ok, `transfer under Bastion: ${s.detail}`);
    assert.ok(s.api.length > 0, 'api itself captures the transfer (the capture works)');
    assert.equal(s.attacker.length, 0, `the attacker captured ${s.attacker.length} web↔api packets, e.g.:\n${s.attacker.slice(0, 10).join('\n')}`);
    assert.equal(s.bridge.length, 0, `the bridge carried ${s.bridge.length} web↔api packets, e.g.:\n${s.bridge.slice(0, 10).join('\n')}`);
  });
});
