/**
 * Established connections across policy changes (issue 9): a long transfer
 * (a steady stream, its bytes counted where they arrive) and a long-lived
 * request/response connection (one request every 50 ms on one TCP
 * connection) from web to api keep flowing, with no reset and no pause over
 * a second, across 100 random policy changes that keep them allowed:
 * runtime policies added and deleted through the API, config reloads, the
 * rule that allows them moving between its selector form and its CIDR form
 * (to api's address, from web's address), both ends' labels changing, and
 * CIDR rules with excepts coming and going around them. Then one change that
 * denies them cuts both at once: nothing more arrives a moment after it is
 * applied (established connections meet the policy again after every
 * change, bpf/lib/verdict.h).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import { CoreLab, bastion, configText, type BastionConfig, type BastionDaemon, type PolicyEntry } from '../helpers/bastion-daemon.js';
import { sleep, startBackground, type Background } from '../helpers/probes.js';
import { REPO_ROOT } from '../helpers/bastion-daemon.js';

const PROBE = join(REPO_ROOT, 'dist', 'test', 'helpers', 'conn-probe.js');
const BULK = 5000;
const RR = 5001;

interface Stats {
  t: number;
  bulk: Record<string, unknown> & { events: string[] };
  rr: Record<string, unknown> & { events: string[] };
}

/** The last status line a conn-probe printed. */
function latest(bg: Background): Stats | undefined {
  const lines = bg.stdout.trim().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const o = JSON.parse(lines[i]!) as Stats;
      if (o.bulk && o.rr) return o;
    } catch {
      // a line being written
    }
  }
  return undefined;
}

describe('core: established connections across policy changes', () => {
  let lab: CoreLab;
  let d: BastionDaemon;
  let server: Background;
  let client: Background;
  const pin = () => ['--pin-path', lab.pinPath];

  /** How the stream is allowed in the config file: by selectors, by addresses, or both. */
  type Form = 'selector' | 'cidr' | 'both';
  let form: Form = 'selector';
  let webLabels: Record<string, string> = { app: 'web' };
  let apiLabels: Record<string, string> = { app: 'api' };
  let extras: PolicyEntry[] = [];
  let allowStream = true;

  function streamPolicies(): PolicyEntry[] {
    if (!allowStream) return [];
    const ports = [`${BULK}-${RR}/tcp`];
    const sel: PolicyEntry = { name: 'stream', from: { app: 'web' }, to: { app: 'api' }, ports };
    const cidr: PolicyEntry[] = [
      { name: 'stream-out', from: { app: 'web' }, to: { cidr: `${lab.api.ip}/32` }, ports },
      { name: 'stream-in', from: { cidr: `${lab.web.ip}/32` }, to: { app: 'api' }, ports },
    ];
    return form === 'selector' ? [sel] : form === 'cidr' ? cidr : [sel, ...cidr];
  }

  function config(): BastionConfig {
    const labels: Record<string, Record<string, string>> = { web: webLabels, api: apiLabels };
    return {
      mode: 'enforce',
      containers: lab.containersSection().map((c) => ({ ...c, labels: labels[c.name] ?? c.labels })),
      policies: [
        { name: 'web-to-api', from: { app: 'web' }, to: { app: 'api' }, ports: ['8080/tcp'] },
        { name: 'api-to-db', from: { app: 'api' }, to: { app: 'db' }, ports: ['5432/tcp'] },
        ...streamPolicies(),
        ...extras,
      ],
    };
  }

  before(async () => {
    lab = await CoreLab.create();
    d = await lab.startDaemon(config(), ['--verify-interval', '1']);
    await lab.pinNeighbours();
    server = startBackground(lab.api.netns, 'node', [PROBE, 'server', lab.api.ip, String(BULK), String(RR)]);
    for (let i = 0; i < 50 && !server.stdout.includes('"listening"'); i++) await sleep(100);
    client = startBackground(lab.web.netns, 'node', [PROBE, 'client', lab.api.ip, String(BULK), String(RR)]);
  });

  after(async () => {
    await client?.stop('SIGKILL').catch(() => undefined);
    await server?.stop('SIGKILL').catch(() => undefined);
    await lab?.cleanup();
  });

  /** Both connections open, with nothing wrong so far: no error, no close, no pause or wait over a second. */
  function healthy(label: string): { server: Stats; client: Stats } {
    const s = latest(server);
    const c = latest(client);
    assert.ok(s && c, `${label}: the probes report (server: ${server.stderr.slice(-300)} client: ${client.stderr.slice(-300)})`);
    assert.deepEqual([...c.bulk.events, ...c.rr.events, ...s.bulk.events, ...s.rr.events], [], `${label}: a connection was reset or closed`);
    assert.ok(c.bulk.open && c.rr.open, `${label}: both connections open`);
    assert.ok((s.bulk.maxGapMs as number) < 1000, `${label}: the stream paused ${s.bulk.maxGapMs} ms`);
    assert.ok((c.rr.maxWaitMs as number) < 1000, `${label}: a request waited ${c.rr.maxWaitMs} ms for its answer`);
    return { server: s, client: c };
  }

  it('both connections are up and flowing', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    for (let i = 0; i < 100; i++) {
      const s = latest(server);
      const c = latest(client);
      if (s && c && (s.bulk.bytes as number) > 1 << 20 && (c.rr.answered as number) > 20) break;
      await sleep(100);
    }
    const h = healthy('start');
    assert.ok((h.server.bulk.bytes as number) > 1 << 20, 'the stream flows');
    assert.ok((h.client.rr.answered as number) > 20, 'requests are answered');
  });

  it('they survive 100 random policy changes that keep them allowed: no reset, no pause over 1 s', { timeout: 300_000 }, async () => {
    lab.requireDaemon();
    const runtime: string[] = [];
    let n = 0;
    const kinds: Record<string, number> = {};
    let change = 0;
    const reload = async (what: string) => {
      // A numbered comment makes every write a new file: a random change can
      // leave the policy as it was (extras emptied twice, a label drawn
      // again), and the daemon's watch does not reload a file whose content
      // did not change; the reload then costs nothing, which is fine here.
      const r = await d.rewriteConfig(`${configText(config())}# change ${++change}\n`, 15_000);
      assert.ok(r.applied, `${what}: config applied\n${d.describe()}`);
    };
    const subnet = `${lab.gateway.split('.').slice(0, 3).join('.')}.0/24`;
    for (let i = 0; i < 100; i++) {
      const kind = ['form', 'labels', 'runtime-add', 'runtime-delete', 'cidr-extra', 'unrelated'][randomInt(6)]!;
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      switch (kind) {
        case 'form': {
          // the rule moves between its selector form and its CIDR form (through both, or straight)
          const next: Form[] = (['selector', 'cidr', 'both'] as Form[]).filter((f) => f !== form);
          form = next[randomInt(next.length)]!;
          await reload(`form ${form}`);
          break;
        }
        case 'labels': {
          // the peers' labels change (the selectors still match)
          if (randomInt(2)) webLabels = { app: 'web', rev: String(i) };
          else apiLabels = { app: 'api', tier: ['a', 'b', 'c'][randomInt(3)]! };
          await reload('labels');
          break;
        }
        case 'runtime-add': {
          // another way to allow the stream, or a wider one, through the API
          const name = `rt-${i}`;
          const to = [`app=api`, subnet, `${lab.api.ip}/32`][randomInt(3)]!;
          const args = ['policy', 'add', name, '--from', 'app=web', '--to', to, '--ports', randomInt(2) ? `${BULK}-${RR}/tcp` : `${RR}/tcp`, ...pin()];
          const r = await bastion(args);
          assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
          runtime.push(name);
          break;
        }
        case 'runtime-delete': {
          const name = runtime.splice(randomInt(Math.max(1, runtime.length)), 1)[0];
          if (!name) break;
          const r = await bastion(['policy', 'delete', name, ...pin()]);
          assert.equal(r.code, 0, r.stderr);
          break;
        }
        case 'cidr-extra': {
          // CIDR rules whose prefixes and excepts cut around the two ends (new prefix identities, new except holes)
          const e: PolicyEntry = randomInt(2)
            ? { name: `cx-${i}`, from: { app: 'web' }, to: { cidr: subnet, except: [`${lab.api.ip}/32`] }, ports: ['9000/tcp'] }
            : { name: `cx-${i}`, from: { app: 'db' }, to: { cidr: '10.0.0.0/8', except: [subnet] } };
          extras = randomInt(3) === 0 ? [] : [...extras.slice(-3), e];
          await reload('cidr extras');
          break;
        }
        default: {
          // policies about other containers
          const e: PolicyEntry = { name: `un-${i}`, from: { app: 'attacker' }, to: { app: 'db' }, ports: [`${9000 + (i % 100)}/tcp`] };
          extras = randomInt(3) === 0 ? [] : [...extras.slice(-3), e];
          await reload('unrelated');
        }
      }
      n++;
      healthy(`after change ${i} (${kind})`);
      await sleep(randomInt(120));
    }
    assert.equal(n, 100);
    await sleep(1200);
    const h = healthy(`after the 100 changes (${JSON.stringify(kinds)})`);
    assert.ok((h.server.bulk.bytes as number) > 8 << 20, `the stream went on (${h.server.bulk.bytes} bytes)`);
    // leave only the config's stream policy for the cut
    for (const name of runtime.splice(0)) assert.equal((await bastion(['policy', 'delete', name, ...pin()])).code, 0);
    healthy('runtime policies deleted');
  });

  it('a change that denies them cuts both at once', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    healthy('before the cut');
    const from = d.mark();
    allowStream = false;
    const r = await d.rewriteConfig(config(), 15_000);
    assert.ok(r.applied, d.describe());
    // from the moment it is applied, give the next packets 300 ms to arrive and be dropped, then nothing may pass for a second
    await sleep(300);
    const a = latest(server)!;
    const ca = latest(client)!;
    await sleep(1000);
    const b = latest(server)!;
    const cb = latest(client)!;
    assert.equal(b.bulk.bytes, a.bulk.bytes, `the stream still delivers after the cut (${a.bulk.bytes} → ${b.bulk.bytes} bytes)`);
    assert.equal(cb.rr.answered, ca.rr.answered, 'requests are still answered after the cut');
    const drop = await d.waitForRecord((x) => x.verdict === 'DROPPED' && x.reason === 'policy-denied' && [BULK, RR].includes(x.dst?.port ?? x.src?.port), 5000, from);
    assert.ok(drop, 'the cut shows in the flow log as policy-denied drops');
  });
});
