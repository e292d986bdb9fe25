/**
 * The libbpf layer against the real kernel, with a tiny fixture program
 * (test/fixtures/bpf/fixture.bpf.c): loading with a pin root and sharing
 * pinned maps between objects, map operations (plain and per-CPU), program
 * test runs, ring buffer events, tc attach/replace/query/detach on a veth of
 * a test topology, verifier errors, and the typed Bastion maps on the real
 * datapath objects. Every pin, qdisc and namespace is removed afterwards.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { BpfMap, openBastionMaps } from '../../src/datapath/bpf-map.js';
import { loadObject, type BpfObject } from '../../src/datapath/bpf-object.js';
import { ensurePinRoot, isBpffs, listPins, removePinDir } from '../../src/datapath/bpffs.js';
import { BPF_EXIST, BPF_NOEXIST, LibbpfError, numPossibleCpus, progInfo, setLibbpfLogger } from '../../src/datapath/libbpf.js';
import { testRun } from '../../src/datapath/prog-test-run.js';
import { RingBufReader } from '../../src/datapath/ringbuf.js';
import { attachTc, destroyClsact, detachTc, queryTc } from '../../src/datapath/tc.js';
import { MAP_NAMES, NR_COUNTERS, encodeU32 } from '../../src/datapath/layout.js';
import { arpRequest, parseFrame, udpFrame } from '../helpers/packets.js';
import { createTopology, freeSubnet24, run, type Topology } from '../helpers/netns.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = join(root, 'test/fixtures/bpf');
const FIXTURE = join(fixtures, 'fixture.bpf.o');
const BAD = join(fixtures, 'bad.bpf.o');
const pinRoot = `/sys/fs/bpf/bastion-test-${randomBytes(4).toString('hex')}`;

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const FX_MAGIC = 0xb5710001;
/** skb->mark that makes the fixture swap the MACs of an ARP frame */
const FX_MARK_SWAP = 0x5a5;

interface FxEvent {
  magic: number;
  len: number;
  ifindex: number;
  mark: number;
  ethProto: number;
  tag: number;
  seq: number;
}
function decodeFx(b: Buffer): FxEvent {
  return {
    magic: b.readUInt32LE(0),
    len: b.readUInt32LE(4),
    ifindex: b.readUInt32LE(8),
    mark: b.readUInt32LE(12),
    ethProto: b.readUInt16BE(16),
    tag: b.readUInt16LE(18),
    seq: b.readUInt32LE(20),
  };
}

const u32 = (n: number): Buffer => encodeU32(n);
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};

const MAC_A = '02:00:00:00:01:0a';
const MAC_B = '02:00:00:00:01:0b';
const arpFrame = arpRequest({ srcMac: MAC_A, srcIp: '10.66.0.2', targetIp: '10.66.0.3' });
const udp = udpFrame({ srcMac: MAC_A, dstMac: MAC_B, src: '10.66.0.2', dst: '10.66.0.3', sport: 1000, dport: 2000 });

/** Objects opened by tests, closed at the end whatever happens. */
const objects: BpfObject[] = [];
function load(path = FIXTURE, opts: { pinRoot?: string } = {}): BpfObject {
  const o = loadObject(path, { pinRoot: opts.pinRoot ?? pinRoot });
  objects.push(o);
  return o;
}

before(() => {
  execFileSync('make', ['-s', '-C', fixtures], { stdio: 'pipe' });
});
// Pins outlive the process: remove them even if the run dies before after().
process.on('exit', () => {
  for (const dir of [pinRoot, `${pinRoot}-mismatch`, `${pinRoot}-dp`]) {
    try {
      removePinDir(dir);
    } catch {
      /* best effort */
    }
  }
});
after(() => {
  for (const o of objects) o.close();
  removePinDir(pinRoot);
  assert.ok(!existsSync(pinRoot), `${pinRoot} removed`);
});

describe('bpffs', () => {
  it('is mounted at /sys/fs/bpf and hosts the pin root', () => {
    assert.equal(ensurePinRoot(pinRoot), pinRoot);
    assert.ok(isBpffs('/sys/fs/bpf'));
    assert.ok(isBpffs(pinRoot));
  });

  it('refuses a pin root, or a removal, outside bpffs', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bastion-notbpffs-'));
    try {
      assert.throws(() => ensurePinRoot(dir), /not on a bpf filesystem/);
      assert.throws(() => removePinDir(dir), /refusing to remove/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bpf objects', () => {
  it('loads programs and pins LIBBPF_PIN_BY_NAME maps under the pin root', () => {
    const o = load();
    assert.deepEqual(o.programs().sort(), ['fx_private_touch', 'fx_tc_a', 'fx_tc_b']);
    assert.ok(o.maps().includes('fx_private'));
    assert.deepEqual(listPins(pinRoot), ['fx_events', 'fx_hash', 'fx_percpu', 'fx_verdict']);
    assert.ok(o.program('fx_tc_a') > 0);
    assert.equal(progInfo(o.program('fx_tc_a')).name, 'fx_tc_a');
  });

  it('shares pinned maps between two objects with the same pin root, not private ones', () => {
    const a = load();
    const b = load();
    assert.equal(a.map('fx_hash').id, b.map('fx_hash').id);
    assert.notEqual(a.map('fx_private').id, b.map('fx_private').id);
    a.map('fx_hash').update(u32(4242), u64(7n));
    assert.deepEqual(b.map('fx_hash').lookup(u32(4242)), u64(7n));
    // What one object's program writes, the other object's map sees.
    testRun(a.program('fx_tc_a'), udp, { ifindex: 1 });
    assert.ok(b.map('fx_hash').lookup(u32(1)));
    b.map('fx_hash').delete(u32(4242));
    assert.equal(a.map('fx_hash').lookup(u32(4242)), undefined);
  });

  it('keeps the maps after the objects close (pins hold them) and reopens them by path', () => {
    const o = load();
    o.map('fx_hash').update(u32(99), u64(123n));
    const id = o.map('fx_hash').id;
    o.close();
    o.close(); // idempotent
    const m = BpfMap.openPinned(join(pinRoot, 'fx_hash'), 4, 8);
    try {
      assert.equal(m.id, id);
      assert.equal(m.name, 'fx_hash');
      assert.deepEqual(m.lookup(u32(99)), u64(123n));
      m.delete(u32(99));
    } finally {
      m.close();
    }
    assert.throws(() => o.program('fx_tc_a'), /closed/);
  });

  it('pins a program and a map by hand (bpf_program__pin, bpf_obj_pin)', () => {
    const o = load();
    const progPin = join(pinRoot, 'prog_a');
    const mapPin = join(pinRoot, 'private_copy');
    o.pinProgram('fx_tc_a', progPin);
    o.map('fx_private').pin(mapPin);
    try {
      assert.ok(existsSync(progPin));
      const m = BpfMap.openPinned(mapPin, 4, 4);
      assert.equal(m.id, o.map('fx_private').id);
      m.close();
      assert.throws(() => o.pinProgram('fx_tc_a', progPin), /bpf_program__pin\(fx_tc_a at .*prog_a\): File exists/);
    } finally {
      rmSync(progPin, { force: true });
      rmSync(mapPin, { force: true });
    }
  });

  it('names what is missing', () => {
    const o = load();
    assert.throws(() => o.program('nope'), /no program nope \(programs: .*fx_tc_a/);
    assert.throws(() => o.map('nope'), /no map nope \(maps: .*fx_hash/);
    assert.throws(() => loadObject('/nonexistent/x.o', { pinRoot }), (e: unknown) => {
      assert.ok(e instanceof LibbpfError);
      assert.equal(e.code, 'ENOENT');
      assert.match(e.message, /^bpf_object__open_file\(\/nonexistent\/x\.o\): No such file or directory/);
      return true;
    });
  });

  it('puts the verifier log in the error when a program is rejected', () => {
    let logged = '';
    setLibbpfLogger((level, msg) => {
      if (level === 'warn') logged += msg;
    });
    try {
      assert.throws(() => load(BAD), (e: unknown) => {
        assert.ok(e instanceof LibbpfError);
        assert.equal(e.fn, 'bpf_object__load');
        assert.equal(e.code, 'EACCES');
        assert.match(e.message, /bpf_object__load\(.*bad\.bpf\.o\): Permission denied/);
        assert.match(e.message, /invalid access to packet/);
        assert.match(e.log, /BEGIN PROG LOAD LOG/);
        return true;
      });
      assert.match(logged, /invalid access to packet/, 'the logger saw it too');
    } finally {
      setLibbpfLogger(null);
    }
  });

  it('refuses to reuse a pinned map whose definition differs', () => {
    const other = `${pinRoot}-mismatch`;
    try {
      ensurePinRoot(other);
      // A hash map pinned as fx_hash with other sizes: libbpf must not reuse it.
      execFileSync('bpftool', ['map', 'create', join(other, 'fx_hash'), 'type', 'hash', 'key', '8', 'value', '8', 'entries', '4', 'name', 'fx_hash']);
      assert.throws(() => loadObject(FIXTURE, { pinRoot: other }), /bpf_object__load.*\n[\s\S]*fx_hash/);
    } finally {
      removePinDir(other);
    }
  });
});

describe('maps', () => {
  let o: BpfObject;
  let m: BpfMap;
  before(() => {
    o = load();
    m = o.map('fx_hash');
    m.clear();
  });

  it('reports its kernel description', () => {
    assert.equal(m.keySize, 4);
    assert.equal(m.valueSize, 8);
    assert.equal(m.maxEntries, 1024);
    assert.equal(m.perCpu, false);
  });

  it('updates, looks up, iterates and deletes', () => {
    for (let i = 1; i <= 5; i++) m.update(u32(i), u64(BigInt(i * 10)));
    assert.deepEqual(m.lookup(u32(3)), u64(30n));
    assert.equal(m.lookup(u32(77)), undefined);
    assert.deepEqual([...m.keys()].map((k) => k.readUInt32LE(0)).sort(), [1, 2, 3, 4, 5]);
    const entries = new Map([...m.entries()].map(([k, v]) => [k.readUInt32LE(0), v.readBigUInt64LE(0)]));
    assert.equal(entries.get(4), 40n);
    assert.equal(m.delete(u32(4)), true);
    assert.equal(m.delete(u32(4)), false);
    assert.deepEqual(m.lookupAndDelete(u32(5)), u64(50n));
    assert.equal(m.lookup(u32(5)), undefined);
    assert.equal(m.clear(), 3);
    assert.deepEqual([...m.keys()], []);
  });

  it('reads in batches, with fresh buffers per batch or, asked to, the same two for every batch', async () => {
    for (let i = 1; i <= 50; i++) m.update(u32(i), u64(BigInt(i * 10)));
    try {
      const fresh: Array<{ keys: Buffer; values: Buffer; count: number }> = [];
      for await (const b of m.batches(8)) fresh.push(b);
      const reused: Array<{ keys: Buffer; values: Buffer; count: number }> = [];
      const seen = new Map<number, bigint>();
      for await (const b of m.batches(8, { reuse: true })) {
        reused.push(b);
        for (let i = 0; i < b.count; i++) seen.set(b.keys.readUInt32LE(i * 4), b.values.readBigUInt64LE(i * 8));
      }
      // every entry once, whichever way
      assert.deepEqual([...seen.keys()].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 1));
      for (const [k, v] of seen) assert.equal(v, BigInt(k * 10));
      assert.ok(reused.length >= 2, `batches of 8 for 50 entries: ${reused.length}`);
      // fresh batches keep their bytes; reused ones share one buffer
      assert.equal(new Set(fresh.map((b) => b.keys.buffer)).size, fresh.length);
      assert.equal(new Set(reused.map((b) => b.keys.buffer)).size, 1);
      assert.equal(new Set(reused.map((b) => b.values.buffer)).size, 1);
    } finally {
      m.clear();
    }
  });

  it('honours NOEXIST / EXIST with errors that say what and where', () => {
    m.update(u32(1), u64(1n), BPF_NOEXIST);
    assert.throws(() => m.update(u32(1), u64(2n), BPF_NOEXIST), (e: unknown) => {
      assert.ok(e instanceof LibbpfError);
      assert.equal(e.code, 'EEXIST');
      assert.equal(e.message, 'bpf_map_update_elem(fx_hash): File exists');
      return true;
    });
    assert.throws(() => m.update(u32(2), u64(2n), BPF_EXIST), /bpf_map_update_elem\(fx_hash\): No such file or directory/);
    m.clear();
  });

  it('checks key and value sizes before calling the kernel', () => {
    assert.throws(() => m.update(Buffer.alloc(3), u64(0n)), /fx_hash: key is 3 bytes, the map's are 4/);
    assert.throws(() => m.update(u32(1), Buffer.alloc(4)), /fx_hash: value is 4 bytes, the map expects 8/);
    assert.throws(() => m.lookupPerCpu(u32(1)), /not per-CPU/);
  });

  it('opens pinned maps and checks their sizes against the layout', () => {
    assert.throws(() => BpfMap.openPinned(join(pinRoot, 'fx_hash'), 4, 16), /key 4 \/ value 8 bytes, expected key 4 \/ value 16/);
    assert.throws(() => BpfMap.openPinned(join(pinRoot, 'nope')), /bpf_obj_get\(.*nope\): No such file or directory/);
    const byId = BpfMap.fromId(m.id);
    assert.equal(byId.name, 'fx_hash');
    byId.close();
  });

  it('reads and writes per-CPU values, one per possible CPU', () => {
    const pc = o.map('fx_percpu');
    const ncpu = numPossibleCpus();
    assert.ok(pc.perCpu);
    assert.equal(pc.rawValueSize, 8 * ncpu);
    pc.updatePerCpu(u32(0), Array.from({ length: ncpu }, (_, i) => u64(BigInt(100 + i))));
    assert.deepEqual(pc.lookupPerCpu(u32(0)), Array.from({ length: ncpu }, (_, i) => u64(BigInt(100 + i))));
    pc.updatePerCpu(u32(0), u64(0n));
    testRun(o.program('fx_tc_a'), udp, { repeat: 5 });
    const total = pc.lookupPerCpu(u32(0))!.reduce((s, b) => s + b.readBigUInt64LE(0), 0n);
    assert.equal(total, 5n);
    assert.throws(() => pc.updatePerCpu(u32(0), [u64(0n)].concat(ncpu > 1 ? [] : [u64(0n)])), /per-CPU values given/);
  });
});

describe('prog test run', () => {
  let o: BpfObject;
  before(() => {
    o = load();
  });

  it('returns the verdict and the rewritten frame', () => {
    o.map('fx_verdict').update(u32(0), u32(0));
    const r = testRun(o.program('fx_tc_a'), arpFrame, { mark: FX_MARK_SWAP });
    assert.equal(r.retval, TC_ACT_OK);
    assert.deepEqual(testRun(o.program('fx_tc_a'), arpFrame).dataOut, arpFrame, 'untouched without the mark');
    assert.equal(r.dataOut.length, arpFrame.length);
    const p = parseFrame(r.dataOut);
    assert.equal(p.eth.src, 'ff:ff:ff:ff:ff:ff', 'the fixture swaps MACs of ARP frames');
    assert.equal(p.eth.dst, MAC_A);
    assert.equal(p.arp?.targetIp, '10.66.0.3');
    assert.ok(r.duration >= 0);
  });

  it('sees verdicts written into maps from TypeScript', () => {
    o.map('fx_verdict').update(u32(0), u32(TC_ACT_SHOT));
    try {
      assert.equal(testRun(o.program('fx_tc_b'), udp).retval, TC_ACT_SHOT);
    } finally {
      o.map('fx_verdict').update(u32(0), u32(0));
    }
  });

  it('passes ifindex and mark through __sk_buff, and repeats', () => {
    const hash = o.map('fx_hash');
    hash.delete(u32(1));
    testRun(o.program('fx_tc_a'), udp, { ifindex: 1, mark: 7, repeat: 10 });
    assert.deepEqual(hash.lookup(u32(1)), u64(10n));
    assert.throws(() => testRun(o.program('fx_tc_a'), udp, { ifindex: 0x7ffffff0 }), /bpf_prog_test_run_opts\(prog fd \d+\): No such device/);
    assert.throws(() => testRun(o.program('fx_tc_a'), Buffer.alloc(10)), /at least an Ethernet header/);
  });
});

describe('ring buffer', () => {
  let o: BpfObject;
  before(() => {
    o = load();
  });

  it('delivers every record on consume(), copied out of the ring', () => {
    const got: Buffer[] = [];
    const seen = new Set<ArrayBufferLike>();
    // the reader reuses its buffer: a listener that keeps a record copies it
    const r = new RingBufReader(o.map('fx_events').fd, (b) => {
      seen.add(b.buffer);
      got.push(Buffer.from(b));
    });
    try {
      r.consume(); // drain what earlier tests produced
      got.length = 0;
      for (let i = 0; i < 3; i++) testRun(o.program('fx_tc_a'), udp, { ifindex: 1, mark: 40 + i });
      assert.equal(r.consume(), 3);
      assert.equal(got.length, 3);
      const evs = got.map(decodeFx);
      assert.deepEqual(evs.map((e) => [e.magic, e.len, e.ifindex, e.mark, e.ethProto, e.tag]), [
        [FX_MAGIC, udp.length, 1, 40, 0x0800, 0xa],
        [FX_MAGIC, udp.length, 1, 41, 0x0800, 0xa],
        [FX_MAGIC, udp.length, 1, 42, 0x0800, 0xa],
      ]);
      assert.equal(r.consume(), 0);
      assert.equal(seen.size, 1, 'every record went through the one reused buffer');
    } finally {
      r.close();
    }
  });

  for (const wakeup of ['epoll', 'interval'] as const) {
    it(`wakes up on its own (${wakeup}) and drains on stop()`, async () => {
      const got: FxEvent[] = [];
      const r = new RingBufReader(o.map('fx_events').fd, (b) => got.push(decodeFx(b)), { wakeup, intervalMs: 10 });
      try {
        r.consume();
        got.length = 0;
        r.start();
        assert.ok(r.running);
        testRun(o.program('fx_tc_b'), udp, { ifindex: 1, mark: 1 });
        const deadline = Date.now() + 2000;
        while (got.length < 1 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
        assert.equal(got.length, 1, 'delivered without an explicit consume');
        assert.equal(got[0]!.tag, 0xb);
        testRun(o.program('fx_tc_b'), udp, { ifindex: 1, mark: 2 });
        const drained = r.stop();
        assert.ok(!r.running);
        assert.ok(drained <= 1);
        // the record is delivered either by a wake-up or by stop()'s drain
        while (got.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
        assert.deepEqual(got.map((e) => e.mark), [1, 2]);
      } finally {
        r.close();
      }
    });
  }

  it('keeps going when the listener throws', () => {
    const errors: unknown[] = [];
    let calls = 0;
    const r = new RingBufReader(
      o.map('fx_events').fd,
      () => {
        calls++;
        if (calls === 1) throw new Error('listener bug');
      },
      { onError: (e) => errors.push(e) },
    );
    try {
      r.consume();
      calls = 0;
      testRun(o.program('fx_tc_a'), udp, { repeat: 3 });
      assert.equal(r.consume(), 3);
      assert.equal(calls, 3);
      assert.equal(errors.length, 1);
    } finally {
      r.close();
    }
  });

  it('can be closed or stopped from its own listener', () => {
    let calls = 0;
    const r: RingBufReader = new RingBufReader(o.map('fx_events').fd, () => {
      calls++;
      r.stop();
      r.close(); // deferred until the consume returns: libbpf's reader is in use
    });
    r.consume();
    calls = 0;
    testRun(o.program('fx_tc_a'), udp, { repeat: 3 });
    r.consume();
    assert.equal(calls, 1, 'nothing delivered after close()');
    assert.equal(r.running, false);
    // A closed reader sets itself up again if asked to consume; the batch it dropped is gone.
    assert.equal(r.consume(), 0);
    r.close();
  });

  it('refuses a map that is not a ring buffer', () => {
    const r = new RingBufReader(o.map('fx_hash').fd, () => undefined);
    assert.throws(() => r.consume(), /ring_buffer__new\(map fd \d+\): Invalid argument/);
    r.close();
  });
});

describe('tc attach', () => {
  let topo: Topology;
  let o: BpfObject;
  let ifindex: number;
  let hostIf: string;

  before(async () => {
    const net = await freeSubnet24();
    topo = await createTopology({
      bridgeIp: `${net}.1/24`,
      containers: [
        { name: 'a', ip: `${net}.2` },
        { name: 'b', ip: `${net}.3` },
      ],
    });
    o = load();
    ({ hostIfindex: ifindex, hostIf } = topo.container('a'));
  });
  after(async () => {
    if (ifindex) destroyClsact(ifindex);
    await topo?.destroy();
  });

  async function filters(dir: 'ingress' | 'egress'): Promise<string[]> {
    const { stdout } = await run('tc', ['filter', 'show', 'dev', hostIf, dir]);
    // One filter prints a header line and a line with its handle and program.
    return stdout.split('\n').filter((l) => / handle /.test(l));
  }

  it('finds nothing before anything is attached', () => {
    assert.equal(queryTc(ifindex, 'ingress'), undefined);
    assert.equal(detachTc(ifindex, 'ingress'), false);
  });

  it('attaches, creating clsact, and reports the program id', async () => {
    const fdA = o.program('fx_tc_a');
    const { progId } = attachTc(ifindex, 'ingress', fdA);
    assert.equal(progId, progInfo(fdA).id);
    assert.equal(queryTc(ifindex, 'ingress'), progId);
    assert.equal(queryTc(ifindex, 'egress'), undefined);
    assert.equal((await filters('ingress')).length, 1);
  });

  it('replaces in place: one filter, the new program', async () => {
    const idB = attachTc(ifindex, 'ingress', o.program('fx_tc_b')).progId;
    attachTc(ifindex, 'ingress', o.program('fx_tc_b'));
    assert.equal(queryTc(ifindex, 'ingress'), idB);
    const f = await filters('ingress');
    assert.equal(f.length, 1, f.join('\n'));
    assert.match(f[0]!, /fx_tc_b/);
  });

  it('runs on real traffic from the container (host-side ingress) and reports it', async () => {
    const idA = attachTc(ifindex, 'ingress', o.program('fx_tc_a')).progId;
    attachTc(ifindex, 'egress', o.program('fx_tc_b'));
    assert.equal(queryTc(ifindex, 'ingress'), idA);
    const events: FxEvent[] = [];
    const r = new RingBufReader(o.map('fx_events').fd, (b) => events.push(decodeFx(b)));
    try {
      r.consume();
      events.length = 0;
      o.map('fx_hash').delete(u32(ifindex));
      assert.ok(await topo.ping('a', topo.container('b').ip, { timeoutS: 2 }), 'TC_ACT_OK lets traffic through');
      r.consume();
      const ours = events.filter((e) => e.ifindex === ifindex);
      assert.ok(ours.some((e) => e.tag === 0xa), 'ingress program saw the container sending');
      assert.ok(ours.some((e) => e.tag === 0xb), 'egress program saw traffic to the container');
      assert.ok(o.map('fx_hash').lookup(u32(ifindex))!.readBigUInt64LE(0) >= 2n);

      // A verdict in the map now drops the container's traffic.
      o.map('fx_verdict').update(u32(0), u32(TC_ACT_SHOT));
      try {
        assert.equal(await topo.ping('a', topo.container('b').ip, { timeoutS: 1 }), false);
      } finally {
        o.map('fx_verdict').update(u32(0), u32(0));
      }
    } finally {
      r.close();
    }
  });

  it('keeps running after the object is closed (the filter holds the program)', async () => {
    const other = load();
    const id = attachTc(ifindex, 'ingress', other.program('fx_tc_a')).progId;
    other.close();
    assert.equal(queryTc(ifindex, 'ingress'), id);
    assert.ok(await topo.ping('a', topo.container('b').ip, { timeoutS: 2 }));
  });

  it('detaches one hook, then removes clsact', async () => {
    assert.equal(detachTc(ifindex, 'ingress'), true);
    assert.equal(queryTc(ifindex, 'ingress'), undefined);
    assert.equal(detachTc(ifindex, 'ingress'), false);
    assert.ok(queryTc(ifindex, 'egress'));
    assert.equal(destroyClsact(ifindex), true);
    assert.equal(queryTc(ifindex, 'egress'), undefined);
    assert.equal(destroyClsact(ifindex), false);
    const { stdout } = await run('tc', ['qdisc', 'show', 'dev', hostIf]);
    assert.doesNotMatch(stdout, /clsact/);
  });

  it('says which interface and hook failed', () => {
    assert.throws(() => attachTc(0x7ffffff0, 'ingress', o.program('fx_tc_a')), /^LibbpfError: bpf_tc_hook_create\(ifindex 2147483632\): No such device/);
    assert.throws(() => attachTc(ifindex, 'egress', o.map('fx_hash').fd), /bpf_tc_attach\(ifindex \d+, egress\): /);
    destroyClsact(ifindex);
  });
});

describe('typed Bastion maps on the real datapath', () => {
  const bpfDir = join(root, 'bpf');
  const datapathPin = `${pinRoot}-dp`;
  let built = false;
  before(() => {
    try {
      execFileSync('make', ['-s', '-C', bpfDir], { stdio: 'pipe' });
      built = existsSync(join(bpfDir, 'from_container.o')) && existsSync(join(bpfDir, 'to_container.o'));
    } catch {
      built = false;
    }
  });
  after(() => removePinDir(datapathPin));

  it('loads both objects on one set of maps and reads/writes them through layout.ts', (t) => {
    if (!built) {
      t.skip('bpf/ does not build right now');
      return;
    }
    const from = load(join(bpfDir, 'from_container.o'), { pinRoot: datapathPin });
    const to = load(join(bpfDir, 'to_container.o'), { pinRoot: datapathPin });
    assert.equal(from.map(MAP_NAMES.policy).id, to.map(MAP_NAMES.policy).id);
    const maps = openBastionMaps(datapathPin);
    try {
      assert.equal(maps.endpoints.raw.id, from.map(MAP_NAMES.endpoints).id);
      const ep = { identity: 300, ifindex: 12, ipv4: '10.66.0.2', flags: 1, mac: MAC_A, gwMac: MAC_B };
      maps.endpoints.set(12, ep);
      maps.endpointsByIp.set('10.66.0.2', ep);
      assert.deepEqual(maps.endpoints.get(12), ep);
      assert.deepEqual([...maps.endpointsByIp.entries()], [['10.66.0.2', ep]]);
      maps.ipcache.set({ prefixlen: 32, addr: '10.66.0.2' }, { identity: 300, flags: 0 });
      maps.ipcache.set({ prefixlen: 0, addr: '0.0.0.0' }, { identity: 2, flags: 0 });
      assert.equal(maps.ipcache.get({ prefixlen: 32, addr: '10.66.0.2' })?.identity, 300);
      assert.equal([...maps.ipcache.keys()].length, 2);
      const pk = { prefixlen: 96, epId: 300, peerId: 301, direction: 0, proto: 6, dport: 443 };
      maps.policy.set(pk, { ruleId: 9, flags: 0 });
      assert.deepEqual(maps.policy.get(pk), { ruleId: 9, flags: 0 });
      maps.neigh.set({ epId: 300, peerId: 301 }, 1);
      assert.equal(maps.neigh.get({ epId: 300, peerId: 301 }), 1);
      maps.config.set({ mode: 1, flags: 1, ctTcpLifetimeS: 3600, ctOtherLifetimeS: 60, ctPerEndpoint: 1000, eventsPerSec: 50, policyEpoch: 7 });
      assert.deepEqual(maps.config.get(), { mode: 1, flags: 1, ctTcpLifetimeS: 3600, ctOtherLifetimeS: 60, ctPerEndpoint: 1000, eventsPerSec: 50, policyEpoch: 7 });
      maps.state.set({ nextIdentity: 302n, generation: 5n });
      assert.deepEqual(maps.state.get(), { nextIdentity: 302n, generation: 5n });
      assert.equal(maps.counters.all().length, NR_COUNTERS);
      assert.deepEqual(maps.counters.get(1), { packets: 0n, bytes: 0n });
      maps.epStats.raw.updatePerCpu(u32(12), (() => {
        const b = Buffer.alloc(40);
        b.writeBigUInt64LE(3n, 0);
        b.writeBigUInt64LE(300n, 8);
        return b;
      })());
      const st = maps.epStats.get(12)!;
      assert.equal(st.txPackets, 3n * BigInt(numPossibleCpus()), 'summed over CPUs');
      assert.equal(st.txBytes, 300n * BigInt(numPossibleCpus()));
      assert.ok(Object.keys(maps.all).includes(MAP_NAMES.ct));
    } finally {
      maps.close();
    }
  });

  it('explains a missing pin', () => {
    assert.throws(() => openBastionMaps(`${pinRoot}-nothing`), /map bastion_\w+ is not pinned under .*-nothing \(is the datapath loaded\?\)/);
  });
});
