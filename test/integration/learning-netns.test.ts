/**
 * From traffic to least privilege on the netns topology (issue 14), with
 * the real daemon and datapath: record a normal run of the app in audit
 * mode, learn the policies, verify them by replay against the recording
 * (passes) and against a recording with one extra flow (fails, names it),
 * enforce them, and the app still works while the attacks stay blocked.
 * Then audit per workload next to enforced containers, the flow filters and
 * --input read-back, and the flow history across a restart and under its cap.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { CoreLab, bastion, bastionStatus, type BastionConfig } from '../helpers/bastion-daemon.js';
import { connectAll, expectAllConnect, expectNoneConnect, nmapPingScan, nsRun, ping, startTcpEcho, startUdpEcho, udpEcho, sleep } from '../helpers/probes.js';
import { flowHistoryDirFor, modesFileFor, socketPathFor } from '../../src/api/paths.js';
import { FLOW_SUMMARY_INTERVAL_MS } from '../../src/agent/datapath-agent.js';
import type { FlowRecord } from '../../src/flows/record.js';

const HOST_PORT = 15353;

/** GET /metrics over the daemon's socket. */
function metricsText(pinPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socketPathFor(pinPath), path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** How many flows the records stand for (a summary counts what it summarises). */
function flowsIn(recs: FlowRecord[], pred: (f: FlowRecord) => boolean): number {
  return recs.filter(pred).reduce((n, f) => n + (f.count ?? 1), 0);
}

/**
 * Polls the daemon's history until `pred`'s flows add up to `n`: allowed (and
 * audited) connections after a key's first are counted in the kernel and
 * reach the history as a summary within a few seconds.
 */
async function waitForFlows(pinPath: string, pred: (f: FlowRecord) => boolean, n: number, timeoutMs = 15_000): Promise<FlowRecord[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await bastion(['flows', '--since', '30m', '-o', 'json', '--pin-path', pinPath]);
    const recs = ndjson(r.stdout);
    if (flowsIn(recs, pred) >= n || Date.now() > deadline) return recs;
    await sleep(500);
  }
}

function ndjson(text: string): FlowRecord[] {
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as FlowRecord);
}

describe('learning: observe in audit mode, learn, verify, enforce (netns)', () => {
  let lab: CoreLab;
  const pin = () => ['--pin-path', lab.pinPath];
  const file = (n: string) => join(lab.dir, n);

  /** The containers with no policy at all, the host in audit mode: a deployment before Bastion knows anything. */
  const auditConfig = (): BastionConfig => ({ mode: 'audit', containers: lab.containersSection(), policies: [] });

  /** What the app does on a normal day. */
  async function normalRun(): Promise<void> {
    for (let i = 0; i < 3; i++) {
      expectAllConnect(
        await connectAll([
          ['web→api:8080', lab.web.netns, lab.api.ip, 8080],
          ['api→db:5432', lab.api.netns, lab.db.ip, 5432],
        ]),
      );
    }
    const dns = await udpEcho(lab.web.netns, lab.gateway, HOST_PORT);
    assert.ok(dns.ok, dns.detail);
    assert.ok(await ping(lab.web.netns, lab.api.ip), 'web pings api');
  }

  async function attacksBlocked(): Promise<void> {
    expectNoneConnect(
      await connectAll([
        ['web→db:5432 (skipping the api)', lab.web.netns, lab.db.ip, 5432],
        ['web→api:9090 (undeclared port)', lab.web.netns, lab.api.ip, 9090],
        ['api→web:80 (reverse direction)', lab.api.netns, lab.web.ip, 80],
        ['attacker→api:8080', lab.attacker.netns, lab.api.ip, 8080],
        ['attacker→db:5432', lab.attacker.netns, lab.db.ip, 5432],
        ['attacker→host', lab.attacker.netns, lab.gateway, 22],
      ]),
    );
    const scan = await nmapPingScan(lab.attacker.netns, 'eth0', lab.scanCidr);
    assert.deepEqual(scan.up.filter((ip) => ip !== lab.attacker.ip), [], `the attacker's ARP scan found: ${scan.output}`);
    assert.equal(await ping(lab.attacker.netns, lab.web.ip), false, 'the attacker cannot ping web');
  }

  before(async () => {
    lab = await CoreLab.create();
    await Promise.all([
      startTcpEcho(lab.api.netns, lab.api.ip, 8080),
      startTcpEcho(lab.api.netns, lab.api.ip, 9090),
      startTcpEcho(lab.db.netns, lab.db.ip, 5432),
      startTcpEcho(lab.web.netns, lab.web.ip, 80),
      startUdpEcho(null, lab.gateway, HOST_PORT),
    ]);
    await lab.startDaemon(auditConfig());
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('records a normal run in audit mode: every flow AUDIT, in the history, queryable with filters', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    await normalRun();
    // three connections of each kind: the first an event, the others in the kernel's summary
    for (const [from, to, port] of [['web', 'api', 8080], ['api', 'db', 5432]] as const) {
      const recs = await waitForFlows(lab.pinPath, (f) => f.verdict === 'AUDIT' && f.src.name === from && f.dst.name === to && f.dst.port === port, 3);
      assert.equal(flowsIn(recs, (f) => f.verdict === 'AUDIT' && f.src.name === from && f.dst.name === to && f.dst.port === port), 3, `${from} → ${to}: 3 flows`);
      assert.ok(recs.some((f) => f.summary && f.src.name === from && f.dst.name === to && f.count === 2), `${from} → ${to}: a summary of 2`);
    }
    const r = await bastion(['flows', '--since', '10m', '--verdict', 'AUDIT', '-o', 'json', ...pin()]);
    assert.equal(r.code, 0, r.stderr);
    const recs = ndjson(r.stdout);
    const seen = new Set(recs.map((f) => `${f.src.name}>${f.dst.name}:${f.protocol}/${f.dst.port ?? ''}`));
    for (const want of ['web>api:tcp/8080', 'api>db:tcp/5432', `web>host:udp/${HOST_PORT}`, 'web>api:icmp/']) assert.ok(seen.has(want), `${want} recorded (have ${[...seen].join(' ')})`);
    const web = recs.find((f) => f.src.name === 'web' && f.dst.name === 'api')!;
    assert.deepEqual(web.src.labels, { app: 'web', 'bastion.io/name': 'web' });
    assert.equal(web.direction, 'egress');
    assert.match(web.interface, /\S/);
    assert.equal(web.isReply, false);
    // The saved file: every record up to a moment, taken once no record of
    // that moment or before can still arrive. A summary is reported up to
    // one summary interval after its packets, with their time: a copy taken
    // at once could miss one that the live queries below then find (seen:
    // an ARP record, 1 run in 3).
    // the latest time among them, not the last to arrive: a summary arrives up to an interval
    // after its packets, so the last record is often an older one (then the UDP flow, later
    // than the TCP summaries, fell outside the window: 2 runs in 2 with one test alone)
    const until = recs.map((f) => f.time).sort().at(-1)!;
    await sleep(FLOW_SUMMARY_INTERVAL_MS + 1500);
    const snapshot = await bastion(['flows', '--since', '10m', '--until', until, '-o', 'json', ...pin()]);
    assert.equal(snapshot.code, 0, snapshot.stderr);
    writeFileSync(file('normal.ndjson'), snapshot.stdout);

    // the filters, against the daemon and against the saved file (--input): the same answers
    for (const args of [
      ['--from', 'web', '--port', '8080'],
      ['--to-label', 'app=db'],
      ['--protocol', 'udp'],
      ['--container', 'api', '--protocol', 'tcp'],
    ]) {
      // the same window as the saved file: flows recorded since then are not in it
      const live = await bastion(['flows', '--since', '10m', '--until', until, ...args, '-o', 'json', ...pin()]);
      const saved = await bastion(['flows', '--input', file('normal.ndjson'), ...args, '-o', 'json']);
      assert.equal(live.code, 0, live.stderr);
      assert.equal(saved.code, 0, saved.stderr);
      const a = ndjson(live.stdout).filter((f) => f.verdict === 'AUDIT');
      assert.ok(a.length > 0, `${args.join(' ')} matched nothing`);
      assert.deepEqual(ndjson(saved.stdout), a, `${args.join(' ')}: --input reads back what the daemon answered`);
    }
    const table = await bastion(['flows', '--input', file('normal.ndjson'), '--from', 'web', '--last', '1']);
    assert.match(table.stdout, /web\([\d.]+\)(:\d+)? -> .* AUDIT/);
    assert.equal(table.stdout.trim().split('\n').length, 1);
    const bad = await bastion(['flows', '--since', 'yesterday', ...pin()]);
    assert.equal(bad.code, 2, 'a bad filter is a usage error');
  });

  it('learns the policies (from the file and from the daemon: the same), and they verify against the recording', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const offline = await bastion(['learn', '--flows', file('normal.ndjson')]);
    assert.equal(offline.code, 0, offline.stderr);
    const live = await bastion(['learn', '--since', '10m', ...pin()]);
    assert.equal(live.code, 0, live.stderr);
    const body = (t: string) => t.split('\n').filter((l) => !l.startsWith('#') && !l.includes('evidence:')).join('\n');
    assert.equal(body(live.stdout), body(offline.stdout), 'the daemon learns what the file teaches');
    writeFileSync(file('learned.yaml'), offline.stdout);
    for (const p of ['learned-web-to-api-8080-tcp', 'learned-api-to-db-5432-tcp', `learned-web-to-host-${HOST_PORT}-udp`, 'learned-web-to-api-icmp']) {
      assert.match(offline.stdout, new RegExp(`name: ${p}\\n`), `${p} learned:\n${offline.stdout}`);
    }
    assert.doesNotMatch(offline.stdout, /attacker|9090/, 'nothing that was not observed');
    assert.match(offline.stdout, /# evidence: 3 flows?, first /);

    const v = await bastion(['policy', 'verify', file('learned.yaml'), '--flows', file('normal.ndjson')]);
    assert.equal(v.code, 0, `${v.stdout}${v.stderr}`);
    assert.match(v.stdout, /PASS/);
    const vd = await bastion(['policy', 'verify', file('learned.yaml'), '--since', '10m', '-o', 'json', ...pin()]);
    assert.equal(vd.code, 0, vd.stdout + vd.stderr);
    assert.equal(JSON.parse(vd.stdout).ok, true);
  });

  it('fails the replay of a recording with one extra flow, naming it', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    // one connection the normal run never makes: passes in audit mode, recorded (its key's first: an event)
    expectAllConnect(await connectAll([['web→db:5432', lab.web.netns, lab.db.ip, 5432]]));
    await waitForFlows(lab.pinPath, (f) => f.src.name === 'web' && f.dst.name === 'db' && f.dst.port === 5432, 1);
    const r = await bastion(['flows', '--since', '10m', '-o', 'json', ...pin()]);
    writeFileSync(file('extra.ndjson'), r.stdout);
    const v = await bastion(['policy', 'verify', file('learned.yaml'), '--flows', file('extra.ndjson')]);
    assert.equal(v.code, 1, `${v.stdout}${v.stderr}`);
    assert.match(v.stdout, /FAIL: .* would drop/);
    assert.match(v.stdout, new RegExp(`web\\(${lab.web.ip.replace(/\./g, '\\.')}\\):\\d+ -> db\\(${lab.db.ip.replace(/\./g, '\\.')}\\):5432 tcp`));
    const j = await bastion(['policy', 'verify', file('learned.yaml'), '--flows', file('extra.ndjson'), '-o', 'json']);
    const out = JSON.parse(j.stdout);
    assert.equal(out.ok, false);
    assert.deepEqual(out.wouldDrop.map((f: FlowRecord) => `${f.src.name}>${f.dst.name}:${f.dst.port}`), ['web>db:5432']);
  });

  it('policy diff shows what the learned set adds to what was in force (nothing)', { timeout: 30_000 }, async () => {
    writeFileSync(file('none.yaml'), 'policies: []\n');
    const d = await bastion(['policy', 'diff', file('none.yaml'), file('learned.yaml'), '-o', 'json', ...pin()]);
    assert.equal(d.code, 0, d.stderr);
    const diff = JSON.parse(d.stdout);
    assert.deepEqual(diff.removed, []);
    assert.deepEqual(
      diff.added.map((p: { from: string; to: string; ports: string[] }) => `${p.from}>${p.to} ${p.ports.join(',')}`).sort(),
      ['api>db 5432/tcp', `web>api 8080/tcp,icmp`, `web>host ${HOST_PORT}/udp`].sort(),
    );
  });

  it('enforced, the learned policies keep the app working and the attacks blocked', { timeout: 90_000 }, async () => {
    const d = lab.requireDaemon();
    const add = await bastion(['policy', 'add', '-f', file('learned.yaml'), ...pin()]);
    assert.equal(add.code, 0, add.stderr);
    const cfg = auditConfig();
    cfg.mode = 'enforce';
    const re = await d.rewriteConfig(cfg);
    assert.ok(re.applied, 'config with mode: enforce applied');
    const st = await bastionStatus(lab.pinPath);
    assert.ok(st.json.endpoints.every((e: { mode: string }) => e.mode === 'enforce'), JSON.stringify(st.json.endpoints.map((e: { name: string; mode: string }) => [e.name, e.mode])));
    await lab.flushNeighbours();
    await normalRun();
    await attacksBlocked();
  });
});

describe('learning: audit per workload next to enforced containers (netns)', () => {
  let lab: CoreLab;
  const pin = () => ['--pin-path', lab.pinPath];

  before(async () => {
    lab = await CoreLab.create();
    await Promise.all([
      startTcpEcho(lab.api.netns, lab.api.ip, 8080),
      startTcpEcho(lab.api.netns, lab.api.ip, 9090),
      startTcpEcho(lab.db.netns, lab.db.ip, 5432),
      startTcpEcho(lab.web.netns, lab.web.ip, 80),
      startUdpEcho(null, lab.gateway, HOST_PORT),
    ]);
    await lab.startDaemon(lab.config());
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('bastion mode audit web: web\'s own policy is audited, its neighbours stay enforced, and it says so everywhere', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    await lab.pinNeighbours();
    const set = await bastion(['mode', 'audit', 'web', ...pin()]);
    assert.equal(set.code, 0, set.stderr);
    // web's egress is audited: web reaches the host, which enforces nothing of its own
    const dns = await udpEcho(lab.web.netns, lab.gateway, HOST_PORT);
    assert.ok(dns.ok, `web (audited) reaches a host port its policy does not name: ${dns.detail}`);
    // but db and api enforce their own ingress: an audited web is no way in
    expectNoneConnect(
      await connectAll([
        ['web→db:5432 (db enforces its ingress)', lab.web.netns, lab.db.ip, 5432],
        ['web→api:9090 (api enforces its ingress)', lab.web.netns, lab.api.ip, 9090],
        ['attacker→web:80 (the attacker enforces its egress)', lab.attacker.netns, lab.web.ip, 80],
        ['attacker→db:5432', lab.attacker.netns, lab.db.ip, 5432],
      ]),
    );
    expectAllConnect(await connectAll([['web→api:8080', lab.web.netns, lab.api.ip, 8080], ['api→db:5432', lab.api.netns, lab.db.ip, 5432]]));
    await sleep(500);

    const modes = await bastion(['mode', '-o', 'json', ...pin()]);
    assert.deepEqual(
      JSON.parse(modes.stdout).containers.map((c: { name: string; mode: string; source: string }) => `${c.name}:${c.mode}:${c.source}`),
      ['api:enforce:default', 'attacker:enforce:default', 'db:enforce:default', 'web:audit:runtime'],
    );
    const st = await bastionStatus(lab.pinPath);
    assert.equal(st.json.endpoints.find((e: { name: string }) => e.name === 'web').mode, 'audit');
    assert.equal(st.json.endpoints.find((e: { name: string }) => e.name === 'web').modeSource, 'runtime');
    const audit = await bastion(['flows', '--since', '5m', '--verdict', 'AUDIT', '-o', 'json', ...pin()]);
    const a = ndjson(audit.stdout);
    assert.ok(a.some((f) => f.src.name === 'web' && f.dst.name === 'host' && f.dst.port === HOST_PORT), `web→host AUDIT (have ${audit.stdout})`);
    assert.ok(!a.some((f) => f.dst.name === 'db' || f.src.name === 'attacker'), 'nothing of the enforced containers passed as AUDIT');
    const dropped = ndjson((await bastion(['flows', '--since', '5m', '--verdict', 'DROPPED', '--from', 'web', '-o', 'json', ...pin()])).stdout);
    assert.ok(dropped.some((f) => f.dst.name === 'db' && f.dst.port === 5432), 'web→db dropped by db\'s ingress');
    const m = await metricsText(lab.pinPath);
    assert.match(m, /^bastion_endpoint_mode\{endpoint="web",mode="audit",source="runtime"\} 1$/m);
    assert.match(m, /^bastion_endpoints_by_mode\{mode="audit"\} 1$/m);
    assert.match(m, /^bastion_flows_total\{verdict="AUDIT",reason="host-denied",direction="egress"\} [1-9]/m);
    assert.match(m, /^bastion_policy_verdicts_total\{policy="web-to-api",direction="egress",action="allow"\} [1-9]/m);
    assert.match(m, /^bastion_policy_verdicts_total\{policy="none",direction="egress",action="deny"\} [1-9]/m);
    assert.match(m, /^bastion_drops_total\{reason="policy-denied"\} [1-9]/m);
  });

  it('the mode set at run time survives a daemon restart, and bastion down forgets it', { timeout: 60_000 }, async () => {
    const d = lab.requireDaemon();
    await d.stop();
    const again = await lab.startDaemon(null);
    assert.ok(again);
    const modes = JSON.parse((await bastion(['mode', '-o', 'json', ...pin()])).stdout);
    assert.equal(modes.containers.find((c: { name: string }) => c.name === 'web').mode, 'audit');
    const dns = await udpEcho(lab.web.netns, lab.gateway, HOST_PORT);
    assert.ok(dns.ok, `still audited after the restart: ${dns.detail}`);
    const back = await bastion(['mode', 'enforce', 'web', ...pin()]);
    assert.equal(back.code, 0, back.stderr);
    assert.equal((await udpEcho(lab.web.netns, lab.gateway, HOST_PORT, 1)).ok, false, 'enforced again');
    const unknown = await bastion(['mode', 'audit', 'nobody', ...pin()]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no container "nobody"/);
    await bastion(['mode', 'audit', 'web', ...pin()]);
    await lab.daemons.at(-1)!.stop();
    const down = await bastion(['down', ...pin()]);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /forgot the modes set at run time/);
    assert.throws(() => statSync(modesFileFor(lab.pinPath)));
  });
});

describe('learning: the flow history across a restart and under its cap (netns)', () => {
  let lab: CoreLab;
  const pin = () => ['--pin-path', lab.pinPath];

  before(async () => {
    lab = await CoreLab.create();
    await startTcpEcho(lab.api.netns, lab.api.ip, 8080);
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('keeps flows across a restart (SIGTERM and SIGKILL), and stays under --flow-history-max-bytes under a flood of drops', { timeout: 120_000 }, async () => {
    // the attacker knows api's MAC: its SYNs reach its stack (and are dropped there, one event each)
    await lab.pinNeighbours(['attacker', 'web']);
    const { BastionDaemon, writeConfigFile } = await import('../helpers/bastion-daemon.js');
    writeConfigFile(lab.configPath, lab.config());
    const start = async () => {
      const d = new BastionDaemon(lab.configPath, lab.pinPath, ['--flow-history-max-bytes', '64k']).start();
      lab.daemons.push(d);
      await d.waitReady();
      return d;
    };
    const webToApi = (f: FlowRecord) => f.verdict === 'ALLOWED' && f.src.name === 'web' && f.dst.name === 'api' && f.dst.port === 8080;
    let d = await start();
    expectAllConnect(await connectAll([['web→api:8080', lab.web.netns, lab.api.ip, 8080]]));
    await sleep(400);
    await d.stop();
    d = await start();
    // the key exists in the kernel since the first run: counted there, not an event
    expectAllConnect(await connectAll([['web→api:8080 again', lab.web.netns, lab.api.ip, 8080]]));
    await sleep(400);
    await d.kill9();
    d = await start();
    // the killed daemon never read that count: the next one reports it (bastion_flow_seen says what was reported)
    const kept = await waitForFlows(lab.pinPath, webToApi, 2);
    assert.equal(flowsIn(kept, webToApi), 2, `both runs' flows, the killed one's included: ${JSON.stringify(kept.filter(webToApi))}`);
    await d.stop();
    d = await start();
    await sleep(6000);
    assert.equal(flowsIn(await waitForFlows(lab.pinPath, webToApi, 3, 1000), webToApi), 2, 'a restart reports nothing twice');

    // a flood of denied connections (drop events): until the history has had to delete segments
    const cap = 64 * 1024;
    const dir = flowHistoryDirFor(lab.pinPath);
    const size = () => readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
    const deadline = Date.now() + 60_000;
    let h: { written: number; rotatedOut: number; bytes: number; maxBytes: number } | undefined;
    for (;;) {
      await nsRun(lab.attacker.netns, 'hping3', ['-S', '-p', '++1000', '-i', 'u500', '-c', '2000', lab.api.ip], { timeoutMs: 30_000 });
      assert.ok(size() <= cap, `history ${size()} bytes, cap ${cap}`);
      h = (await bastionStatus(lab.pinPath)).json.daemon.flowHistory;
      if ((h && h.rotatedOut >= 2) || Date.now() > deadline) break;
    }
    assert.ok(h && h.rotatedOut >= 2, `old segments were deleted to stay under the cap: ${JSON.stringify(h)}`);
    assert.ok(h.bytes <= cap && h.maxBytes === cap, JSON.stringify(h));
    assert.ok(size() <= cap, `history ${size()} bytes, cap ${cap}`);
    assert.ok(readdirSync(dir).some((f) => f.endsWith('.ndjson.gz')), readdirSync(dir).join(' '));
    const m = await metricsText(lab.pinPath);
    assert.match(m, /^bastion_flow_history_bytes \d+/m);
    assert.match(m, /^bastion_flow_history_max_bytes 65536$/m);
    assert.match(m, /^bastion_flow_history_segments_deleted_total [1-9]\d*$/m);
  });
});
