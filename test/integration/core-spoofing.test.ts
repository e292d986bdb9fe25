/**
 * Core issue, part 3: source verification and ARP poisoning.
 *
 * The attacker (CAP_NET_RAW in its namespace) forges web's IP, web's MAC or
 * both, with hand-built frames and with hping3; none of it may reach api.
 * It runs arpspoof and sends forged ARP replies; neither web's nor api's ARP
 * cache may change. Each attack is first shown to work without Bastion, and
 * the same injection from web itself (true addresses, allowed flow) is shown
 * to reach api under Bastion.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CoreLab } from '../helpers/bastion-daemon.js';
import {
  captureMany,
  connectAll,
  echoTransfer,
  expectAllConnect,
  flushNeighbours,
  neighbour,
  neighbours,
  ping,
  sleep,
  startTcpEcho,
  usableMac,
} from '../helpers/probes.js';
import { arpPoisonFrames, arpspoof, hping3Spoof, injectFrames, pinNeighbour, synFrame } from '../helpers/attacks.js';

/** Source ports that mark each injected flow in api's capture. */
const SPORT = { genuine: 41001, forgedIp: 41002, forgedMac: 41003, forgedBoth: 41004, hping3: 41005 } as const;

describe('core: spoofing and ARP poisoning (web→api 8080/tcp allowed)', () => {
  let lab: CoreLab;

  before(async () => {
    lab = await CoreLab.create();
    await startTcpEcho(lab.api.netns, lab.api.ip, 8080);
  });

  after(async () => {
    await lab?.cleanup();
  });

  /** Injects every variant (plus the genuine frame from web) while capturing in api; returns which source ports api saw. */
  async function injectAll(o: { genuine: boolean; forged: boolean }): Promise<{ seen: Set<number>; lines: string[] }> {
    const { web, api, attacker } = lab;
    const base = { dstMac: api.mac, dst: api.ip, dport: 8080 };
    const { captures } = await captureMany([{ ns: api.netns, iface: 'eth0', filter: 'tcp dst port 8080 and src portrange 41001-41009' }], async () => {
      if (o.genuine) await injectFrames(web.netns, 'eth0', [synFrame({ ...base, srcMac: web.mac, src: web.ip, sport: SPORT.genuine })]);
      if (o.forged) {
        await injectFrames(attacker.netns, 'eth0', [
          synFrame({ ...base, srcMac: attacker.mac, src: web.ip, sport: SPORT.forgedIp }),
          synFrame({ ...base, srcMac: web.mac, src: attacker.ip, sport: SPORT.forgedMac }),
          synFrame({ ...base, srcMac: web.mac, src: web.ip, sport: SPORT.forgedBoth }),
        ]);
        const h = await hping3Spoof(attacker.netns, { iface: 'eth0', spoofIp: web.ip, dstIp: api.ip, dport: 8080, sport: SPORT.hping3, count: 3 });
        if (!/HPING/.test(h.stdout + h.stderr)) throw new Error(`hping3 did not run: ${h.stdout} ${h.stderr}`);
      }
    });
    const lines = captures[0]!.packets;
    const seen = new Set<number>();
    for (const l of lines) {
      const m = /\.(4100\d) > /.exec(l);
      if (m) seen.add(Number(m[1]));
    }
    return { seen, lines };
  }

  it('baseline without Bastion: forged frames, hping3 and arpspoof all work', { timeout: 90_000 }, async () => {
    const { web, api, attacker } = lab;
    const { seen, lines } = await injectAll({ genuine: true, forged: true });
    for (const [what, port] of Object.entries(SPORT)) {
      assert.ok(seen.has(port), `without Bastion api should receive the ${what} SYN (sport ${port}); api captured:\n${lines.join('\n')}`);
    }
    // The forged-MAC frames taught the bridge that web's MAC is on the attacker's port: let web correct it.
    await ping(web.netns, lab.gateway);

    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
    assert.equal(usableMac(await neighbour(web.netns, api.ip)), api.mac, "web's entry for api before arpspoof");
    const spoof = await arpspoof(attacker.netns, { iface: 'eth0', target: web.ip, host: api.ip, durationMs: 3500 });
    const poisoned = await neighbour(web.netns, api.ip);
    assert.equal(poisoned?.lladdr, attacker.mac, `without Bastion arpspoof should poison web's entry for api: ${JSON.stringify(poisoned)}\n${spoof.output}`);

    await flushNeighbours(web.netns);
    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
    await sleep(1100); // past the neighbour locktime, so a forged answer may override
    await injectFrames(attacker.netns, 'eth0', arpPoisonFrames({ claimIp: api.ip, claimMac: attacker.mac, victimIp: web.ip, victimMac: web.mac }), 3, 400);
    const poisoned2 = await neighbour(web.netns, api.ip);
    assert.equal(poisoned2?.lladdr, attacker.mac, `without Bastion forged ARP replies should poison web's entry for api: ${JSON.stringify(poisoned2)}`);

    await Promise.all([web, api, attacker].map((c) => flushNeighbours(c.netns)));
  });

  it('the daemon starts and becomes ready with the core config', { timeout: 60_000 }, async () => {
    await lab.startDaemon();
  });

  it("frames forging web's IP, web's MAC, or both never reach api; web's genuine frame does", { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const { api, attacker } = lab;
    // The attacker knows api's MAC without asking ARP (Bastion would not answer it).
    await pinNeighbour(attacker.netns, 'eth0', api.ip, api.mac);
    const from = daemon.mark();
    const { seen, lines } = await injectAll({ genuine: true, forged: true });
    assert.ok(seen.has(SPORT.genuine), `web's genuine SYN to api:8080 (allowed) should reach api; api captured:\n${lines.join('\n')}`);
    const leaked = Object.entries(SPORT).filter(([what, port]) => what !== 'genuine' && seen.has(port));
    assert.deepEqual(leaked, [], `spoofed packets reached api:\n${lines.join('\n')}`);

    // The datapath says why: a spoofing reason on the attacker's drops.
    const rec = await daemon.waitForRecord((r) => 'verdict' in r && /spoof/i.test(String(r.reason)), 3000, from);
    assert.ok(rec, `no drop line with a spoofing reason after the forged frames\n${daemon.describe(30)}`);
  });

  it("arpspoof and forged ARP replies from attacker never change web's or api's ARP cache", { timeout: 90_000 }, async () => {
    lab.requireDaemon();
    const { web, api, attacker } = lab;
    // Real entries first: web learns api (allowed connection), api learns web (replies).
    const t = await echoTransfer(web.netns, api.ip, 8080, { bytes: 64 * 1024 }).done;
    assert.ok(t.ok, `web→api:8080 transfer before the attack: ${JSON.stringify(t)}`);
    const before = { webApi: await neighbour(web.netns, api.ip), apiWeb: await neighbour(api.netns, web.ip) };
    assert.equal(usableMac(before.webApi), api.mac, `web's entry for api before the attack: ${JSON.stringify(before.webApi)}`);

    await sleep(1100); // past the neighbour locktime
    const outputs = await Promise.all([
      arpspoof(attacker.netns, { iface: 'eth0', target: web.ip, host: api.ip, durationMs: 3500 }),
      arpspoof(attacker.netns, { iface: 'eth0', target: api.ip, host: web.ip, durationMs: 3500 }),
      arpspoof(attacker.netns, { iface: 'eth0', host: api.ip, durationMs: 3500 }),
      injectFrames(
        attacker.netns,
        'eth0',
        [
          ...arpPoisonFrames({ claimIp: api.ip, claimMac: attacker.mac, victimIp: web.ip, victimMac: web.mac }),
          ...arpPoisonFrames({ claimIp: web.ip, claimMac: attacker.mac, victimIp: api.ip, victimMac: api.mac }),
        ],
        6,
        500,
      ),
    ]);

    const afterWeb = await neighbours(web.netns);
    const afterApi = await neighbours(api.netns);
    const poisoned = [...afterWeb.map((n) => ['web', n] as const), ...afterApi.map((n) => ['api', n] as const)].filter(([, n]) => n.lladdr === attacker.mac);
    assert.deepEqual(
      poisoned.map(([who, n]) => `${who}: ${n.dst} at ${n.lladdr}`),
      [],
      `ARP caches poisoned with the attacker's MAC ${attacker.mac}\narpspoof said:\n${outputs
        .slice(0, 3)
        .map((o) => ('output' in o ? o.output : ''))
        .join('\n---\n')
        .slice(0, 3000)}`,
    );
    const webApi = await neighbour(web.netns, api.ip);
    assert.equal(webApi?.lladdr, api.mac, `web's entry for api after the attack: ${JSON.stringify(webApi)} (before: ${JSON.stringify(before.webApi)})`);
    if (before.apiWeb?.lladdr) {
      const apiWeb = await neighbour(api.netns, web.ip);
      assert.equal(apiWeb?.lladdr, web.mac, `api's entry for web after the attack: ${JSON.stringify(apiWeb)} (before: ${JSON.stringify(before.apiWeb)})`);
    }
    const t2 = await echoTransfer(web.netns, api.ip, 8080, { bytes: 1024 * 1024 }).done;
    assert.ok(t2.ok, `web→api:8080 transfer after the attack: ${JSON.stringify(t2)}`);
  });
});
