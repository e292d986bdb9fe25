/**
 * Flow filters (src/flows/filter.ts), reading records back
 * (src/flows/record.ts, src/flows/ndjson.ts) and the flow history on disk
 * (src/flows/history.ts): rotation, compression, the size cap, surviving a
 * restart and a kill.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, appendFileSync, readFileSync } from 'node:fs';
import { gzipSync, gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  filterInputFromQuery,
  filterQuery,
  FlowFilterError,
  matchesFlow,
  parseDuration,
  parseFlowFilter,
  parseTimePoint,
  type FlowFilterInput,
} from '../../src/flows/filter.js';
import { FlowRecordError, readFlowRecord, type FlowRecord } from '../../src/flows/record.js';
import { FlowFileError, parseFlowLine, readFlowFileAll } from '../../src/flows/ndjson.js';
import { FlowHistory } from '../../src/flows/history.js';
import { repairRecord } from '../../src/daemon/flow-logger.js';
import type { Manager } from '../../src/manager/manager.js';
import { flow, HOST, ws } from '../helpers/flows.js';

const web = ws('web', 300, '10.9.0.10', { app: 'web', tier: 'front' });
const api = ws('api', 301, '10.9.0.11');
const db = ws('db', 302, '10.9.0.12');
const NOW = Date.parse('2024-05-01T12:00:00Z');

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'bastion-flows-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('flow filters', () => {
  it('reads durations and points in time', () => {
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('2d'), 172_800_000);
    assert.equal(parseDuration('24'), undefined);
    assert.equal(parseTimePoint('10m', 'since', NOW), NOW - 600_000);
    assert.equal(parseTimePoint('2024-05-01T11:00:00Z', 'since', NOW), Date.parse('2024-05-01T11:00:00Z'));
    assert.equal(parseTimePoint('2024-04-30', 'since', NOW), Date.parse('2024-04-30'));
    assert.throws(() => parseTimePoint('yesterday', 'since', NOW), /since "yesterday": expected a duration/);
  });

  it('says which filter is wrong', () => {
    const bad: Array<[FlowFilterInput, RegExp]> = [
      [{ port: ['http'] }, /port "http"/],
      [{ port: ['70000'] }, /port "70000"/],
      [{ protocol: ['tcpp'] }, /protocol "tcpp": expected one of tcp, udp, icmp, sctp, arp/],
      [{ verdict: ['ok'] }, /verdict "ok"/],
      [{ fromLabel: ['app'] }, /from-label "app"/],
      [{ since: '1h', until: '2h' }, /since .* is after until/],
    ];
    for (const [input, re] of bad) assert.throws(() => parseFlowFilter(input, NOW), (e: Error) => e instanceof FlowFilterError && re.test(e.message));
  });

  it('narrows with each filter, accepts any value of a repeated one', () => {
    const records = [
      flow(web, api, 8080, { time: NOW - 7200_000 }),
      flow(web, api, 9090, { verdict: 'DROPPED', time: NOW - 1800_000 }),
      flow(api, db, 5432, { time: NOW - 600_000 }),
      flow(web, HOST, 53, { protocol: 'udp', time: NOW - 60_000 }),
      flow(api, db, 6379, { verdict: 'AUDIT', reason: 'policy-denied', time: NOW }),
    ];
    const pick = (input: FlowFilterInput) => records.filter((r) => matchesFlow(parseFlowFilter(input, NOW), r)).map((r) => `${r.src.name}>${r.dst.name}:${r.dst.port}`);
    assert.deepEqual(pick({ since: '1h' }), ['web>api:9090', 'api>db:5432', 'web>host:53', 'api>db:6379']);
    assert.deepEqual(pick({ since: '1h', until: '5m' }), ['web>api:9090', 'api>db:5432']);
    assert.deepEqual(pick({ from: ['web'] }), ['web>api:8080', 'web>api:9090', 'web>host:53']);
    assert.deepEqual(pick({ to: ['db', 'host'] }), ['api>db:5432', 'web>host:53', 'api>db:6379']);
    assert.deepEqual(pick({ container: ['api'], verdict: ['dropped', 'AUDIT'] }), ['web>api:9090', 'api>db:6379']);
    assert.deepEqual(pick({ fromLabel: ['app=web,tier=front'], port: ['53', '8080'] }), ['web>api:8080', 'web>host:53']);
    assert.deepEqual(pick({ fromLabel: ['app=web', 'tier=front'], port: ['53', '8080'] }), ['web>api:8080', 'web>host:53'], 'repeated: all of them');
    assert.deepEqual(pick({ fromLabel: ['app=web', 'tier=back'] }), [], 'repeated: all of them, not any');
    assert.deepEqual(pick({ toLabel: ['app=db'], reason: ['policy-denied'] }), ['api>db:6379']);
    assert.deepEqual(pick({ protocol: ['UDP'] }), ['web>host:53']);
    // a source port matches too (Hubble's --port)
    assert.equal(pick({ port: [String(records[0]!.src.port)] })[0], 'web>api:8080');
  });

  it('travels as query parameters unchanged (CLI to API)', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            since: fc.constantFrom('1h', '2024-05-01T00:00:00Z'),
            from: fc.array(fc.constantFrom('web', 'api'), { minLength: 1, maxLength: 2 }),
            fromLabel: fc.array(fc.constantFrom('app=web', 'app=a,tier=b'), { minLength: 1, maxLength: 2 }),
            port: fc.array(fc.constantFrom('80', '53'), { minLength: 1, maxLength: 2 }),
            verdict: fc.array(fc.constantFrom('DROPPED', 'AUDIT'), { minLength: 1, maxLength: 2 }),
          },
          { requiredKeys: [] },
        ),
        (input: FlowFilterInput) => {
          const q = filterQuery(input);
          const back = filterInputFromQuery((k) => q.get(k) ?? undefined, (k) => q.getAll(k));
          assert.deepEqual(back, { ...input });
        },
      ),
    );
  });
});

describe('flow records read back', () => {
  it('checks each field and names the one that is wrong', () => {
    const good = flow(web, api, 8080);
    assert.deepEqual(readFlowRecord(JSON.parse(JSON.stringify(good))), JSON.parse(JSON.stringify(good)));
    const bad: Array<[unknown, RegExp]> = [
      [[], /expected a JSON object/],
      [{ ...good, time: 'x' }, /time: expected an ISO time/],
      [{ ...good, protocol: 'http' }, /protocol: expected tcp/],
      [{ ...good, src: { ...good.src, port: 70000 } }, /src.port: expected a port/],
      [{ ...good, dst: { ...good.dst, labels: { a: 1 } } }, /dst.labels: expected a map of strings/],
      [{ ...good, direction: 'up' }, /direction: expected egress or ingress/],
      [{ ...good, policies: { egress: 3 } }, /policies.egress: expected a policy name/],
    ];
    for (const [v, re] of bad) assert.throws(() => readFlowRecord(v), (e: Error) => e instanceof FlowRecordError && re.test(e.message), String(re));
  });

  it('reads records of the format before issue 14 (trace, rule, no labels)', () => {
    const old = { time: '2024-05-01T10:00:00.000Z', verdict: 'ALLOWED', reason: 'allowed-new', trace: 'to-container', protocol: 'tcp', src: { identity: 1, name: 'host', ip: '10.0.0.1', port: 4000 }, dst: { identity: 300, name: 'web', ip: '10.0.0.2', port: 80 }, endpoint: 'web', rule: 'host-to-web', bytes: 60 };
    const r = readFlowRecord(old);
    assert.equal(r.direction, 'ingress');
    assert.deepEqual(r.policies, { ingress: 'host-to-web' });
    assert.deepEqual(r.src.labels, {});
  });

  it('reads the daemon\'s log lines, and skips lost lines and other log lines', () => {
    const rec = flow(web, api, 8080);
    const { time, ...rest } = rec;
    const logLine = JSON.stringify({ level: 30, time: '2024-05-01T10:00:09.000Z', flowTime: time, ...rest, msg: 'flow' });
    assert.equal(parseFlowLine(logLine)!.time, time);
    assert.equal(parseFlowLine(JSON.stringify({ level: 30, msg: 'ready' })), undefined);
    assert.equal(parseFlowLine('{"type":"lost","count":3}'), undefined);
    assert.equal(parseFlowLine('   '), undefined);
  });

  it('reads back a REPAIRED record as the daemon makes it (protocol none), with the labels and node of the peer (failed before: the history and --input refused it)', () => {
    const ep = { name: 'web', identity: 300, labels: { app: 'web' }, ipv4: '10.9.0.10', hostIfname: 'veth-web', hostIfindex: 7 };
    const manager = {
      endpointByIfindex: (i: number) => (i === 7 ? ep : undefined),
      endpointByIdentity: (id: number) => (id === 300 ? ep : undefined),
      identityName: (id: number) => (id === 300 ? 'web' : id === 900 ? 'cache' : undefined),
      identityLabels: (id: number) => (id === 900 ? { app: 'cache' } : undefined),
      identityNode: (id: number) => (id === 900 ? 'h2' : undefined),
    } as unknown as Manager;
    const rec = repairRecord({ map: 'bastion_policy', kind: 'missing', identity: 300, peer: 900 } as Parameters<typeof repairRecord>[0], manager, new Date(NOW));
    assert.equal(rec.protocol, 'none');
    assert.deepEqual(rec.dst, { identity: 900, name: 'cache', labels: { app: 'cache' }, ip: '0.0.0.0', node: 'h2' });
    assert.deepEqual(parseFlowLine(JSON.stringify(rec)), rec);
  });

  it('reads a file plain or gzip-compressed, and names the file and line of a bad record', async () => {
    const d = tmp();
    const recs = [flow(web, api, 8080), flow(api, db, 5432)];
    const text = recs.map((r) => JSON.stringify(r)).join('\n') + '\n';
    writeFileSync(join(d, 'a.ndjson'), text);
    writeFileSync(join(d, 'a.bin'), gzipSync(text));
    assert.equal((await readFlowFileAll(join(d, 'a.ndjson'))).length, 2);
    assert.deepEqual(await readFlowFileAll(join(d, 'a.bin')), await readFlowFileAll(join(d, 'a.ndjson')));
    writeFileSync(join(d, 'b.ndjson'), text + '{"time":"2024-05-01T10:00:00Z","verdict":"ALLOWED"}\n');
    await assert.rejects(readFlowFileAll(join(d, 'b.ndjson')), (e: Error) => e instanceof FlowFileError && /b\.ndjson: line 3: reason: expected a string/.test(e.message));
    writeFileSync(join(d, 'c.ndjson'), 'not json\n');
    await assert.rejects(readFlowFileAll(join(d, 'c.ndjson')), /c\.ndjson: line 1: not JSON/);
    await assert.rejects(readFlowFileAll(join(d, 'missing.ndjson')), /missing\.ndjson: cannot read: ENOENT/);
    writeFileSync(join(d, 'd.gz'), gzipSync(text).subarray(0, 30));
    await assert.rejects(readFlowFileAll(join(d, 'd.gz')), /d\.gz: .*damaged gzip data|unexpected end/);
  });
});

describe('flow history on disk', () => {
  const many = (n: number, t0: number) => Array.from({ length: n }, (_, i) => flow(i % 2 ? web : api, db, 5432, { time: t0 + i * 1000, sport: 1024 + (i % 60000) }));

  it('keeps what it is given, oldest first, across a restart', async () => {
    const dir = tmp();
    const h = new FlowHistory({ dir, maxBytes: 1 << 20 });
    await h.open();
    const recs = many(100, NOW);
    for (const r of recs) h.append(r);
    assert.deepEqual(await collect(h.records()), recs.map(plain));
    await h.close();
    const again = new FlowHistory({ dir, maxBytes: 1 << 20 });
    await again.open();
    const more = many(10, NOW + 200_000);
    for (const r of more) again.append(r);
    assert.deepEqual(await collect(again.records()), [...recs, ...more].map(plain));
    assert.deepEqual(await again.recent(3), more.slice(-3).map(plain));
    await again.close();
  });

  it('abandoned after a refused start, it takes away the directories it made if it kept nothing, and only those', async () => {
    const base = tmp();
    const dir = join(base, 'bastion-x', 'flows');
    const h = new FlowHistory({ dir, maxBytes: 1 << 20 });
    await h.open();
    await h.abandon();
    assert.deepEqual(readdirSync(base), [], 'bastion-x made by open() is gone');
    // a directory that was there stays, and so does one that kept a record
    const kept = join(base, 'kept');
    const h2 = new FlowHistory({ dir: kept, maxBytes: 1 << 20 });
    await h2.open();
    h2.append(many(1, NOW)[0]!);
    await h2.abandon();
    assert.equal(readdirSync(kept).length, 1);
    const h3 = new FlowHistory({ dir: kept, maxBytes: 1 << 20 });
    await h3.open();
    await h3.abandon();
    assert.ok(readdirSync(kept).length >= 1);
  });

  it('keeps what a killed daemon wrote (its active file becomes a segment)', async () => {
    const dir = tmp();
    const h = new FlowHistory({ dir, maxBytes: 1 << 20 });
    await h.open();
    const recs = many(20, NOW);
    for (const r of recs) h.append(r);
    await h.flush(); // written, never closed: as after SIGKILL
    // and a line cut short by the kill
    const active = readdirSync(dir).find((f) => f.startsWith('active-'))!;
    appendFileSync(join(dir, active), '{"time":"2024-05-01T12:');
    const errors: string[] = [];
    const again = new FlowHistory({ dir, maxBytes: 1 << 20, onError: (m) => errors.push(m) });
    await again.open();
    assert.deepEqual(await collect(again.records()), recs.map(plain));
    assert.match(errors.join('\n'), /line 21: not JSON/);
    assert.ok(readdirSync(dir).some((f) => /^flows-\d+-\d+-\d+\.ndjson\.gz$/.test(f)), readdirSync(dir).join(' '));
    await again.close();
    await h.close();
  });

  it('rotates into gzip-compressed segments and stays under its size cap, deleting the oldest', async () => {
    const dir = tmp();
    const maxBytes = 256 * 1024;
    const h = new FlowHistory({ dir, maxBytes });
    await h.open();
    const t0 = NOW;
    // about 2.5 MB of records: ten times the cap
    const recs = many(6000, t0);
    for (let i = 0; i < recs.length; i++) {
      h.append(recs[i]!);
      if (i % 500 === 499) await h.flush();
    }
    await h.close();
    const files = readdirSync(dir);
    const bytes = files.reduce((n, f) => n + statSync(join(dir, f)).size, 0);
    assert.ok(bytes <= maxBytes, `${bytes} bytes on disk, cap ${maxBytes}`);
    assert.ok(files.filter((f) => f.endsWith('.ndjson.gz')).length >= 2, files.join(' '));
    assert.ok(h.stats.rotatedOut > 0, 'the oldest segments were deleted');
    const gz = files.find((f) => f.endsWith('.gz'))!;
    assert.ok(gunzipSync(readFileSync(join(dir, gz))).toString().split('\n')[0]!.startsWith('{"time":'));
    const again = new FlowHistory({ dir, maxBytes });
    await again.open();
    const kept = await collect(again.records());
    // the newest survive, in order, and they are the end of what was written
    assert.ok(kept.length > 100 && kept.length < recs.length, `${kept.length} kept`);
    assert.deepEqual(kept, recs.slice(-kept.length).map(plain));
    assert.deepEqual(await again.recent(5, { since: t0 + 5990_000 }), recs.slice(-5).map(plain));
    await again.close();
  });

  it('opens only the segments a time window overlaps', async () => {
    const dir = tmp();
    const h = new FlowHistory({ dir, maxBytes: 1 << 20, segmentBytes: 16 * 1024 });
    await h.open();
    for (const r of many(400, NOW)) h.append(r);
    await h.close();
    const again = new FlowHistory({ dir, maxBytes: 1 << 20, segmentBytes: 16 * 1024 });
    await again.open();
    const window = await collect(again.records({ since: NOW + 100_000, until: NOW + 110_000 }));
    assert.deepEqual(window.map((r) => Date.parse(r.time) - NOW), Array.from({ length: 11 }, (_, i) => 100_000 + i * 1000));
    // a segment far outside the window is never read: damage it and nothing is said
    const seg = readdirSync(dir).filter((f) => f.startsWith('flows-')).sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]))[0]!;
    writeFileSync(join(dir, seg), 'garbage');
    const errors: string[] = [];
    const third = new FlowHistory({ dir, maxBytes: 1 << 20, segmentBytes: 16 * 1024, onError: (m) => errors.push(m) });
    await third.open();
    assert.equal((await collect(third.records({ since: NOW + 390_000 }))).length, 10);
    assert.deepEqual(errors, []);
    await third.close();
    await again.close();
  });

  it('refuses a cap too small to hold anything', () => {
    assert.throws(() => new FlowHistory({ dir: tmp(), maxBytes: 1000 }), /at least 64 kB/);
  });
});

async function collect(it: AsyncIterable<FlowRecord>): Promise<FlowRecord[]> {
  const out: FlowRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

/** A record as JSON gives it back (no undefined fields). */
function plain(r: FlowRecord): FlowRecord {
  return JSON.parse(JSON.stringify(r)) as FlowRecord;
}

describe('bastion run --flow-history-max-bytes', () => {
  it('reads sizes with or without a unit, and refuses the rest', async () => {
    const { parseSize } = await import('../../src/cli/commands/run.js');
    assert.equal(parseSize('256M', 'x'), 256 * 1024 * 1024);
    assert.equal(parseSize('1g', 'x'), 1024 ** 3);
    assert.equal(parseSize('64k', 'x'), 65536);
    assert.equal(parseSize('1.5MiB', 'x'), 1.5 * 1024 * 1024);
    assert.equal(parseSize('100000', 'x'), 100000);
    assert.throws(() => parseSize('lots', '--flow-history-max-bytes'), /--flow-history-max-bytes "lots": expected a size/);
  });
});
