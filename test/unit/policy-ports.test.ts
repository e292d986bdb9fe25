/**
 * Port specs and the split of port ranges into LPM prefixes.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatPortRange, inRange, parsePortSpec, portPrefixes, prefixRange, type PortPrefix } from '../../src/policy/ports.js';

describe('parsePortSpec', () => {
  const ok = (s: unknown) => {
    const r = parsePortSpec(s);
    assert.ok(r.ok, `${String(s)}: ${r.ok ? '' : r.message}`);
    return r.port;
  };
  const bad = (s: unknown) => {
    const r = parsePortSpec(s);
    assert.ok(!r.ok, `${String(s)} should be rejected`);
    return r.message;
  };

  it('accepts PORT/PROTO, PORT-PORT/PROTO, PROTO and icmp', () => {
    assert.deepEqual(ok('8080/tcp'), { protocol: 'tcp', from: 8080, to: 8080 });
    assert.deepEqual(ok('9000-9010/udp'), { protocol: 'udp', from: 9000, to: 9010 });
    assert.deepEqual(ok('0-65535/sctp'), { protocol: 'sctp', from: 0, to: 65535 });
    assert.deepEqual(ok('53/UDP'), { protocol: 'udp', from: 53, to: 53 });
    assert.deepEqual(ok(' 443/tcp '), { protocol: 'tcp', from: 443, to: 443 });
    assert.deepEqual(ok('tcp'), { protocol: 'tcp', from: 0, to: 65535 });
    assert.deepEqual(ok('icmp'), { protocol: 'icmp', from: 0, to: 0 });
    assert.deepEqual(ok('0/tcp'), { protocol: 'tcp', from: 0, to: 0 });
    assert.deepEqual(ok('65535/udp'), { protocol: 'udp', from: 65535, to: 65535 });
  });

  it('rejects with messages that say what to write', () => {
    assert.equal(bad('80/tcpx'), '"80/tcpx" is not a port: expected PORT[-PORT]/tcp|udp|sctp, or icmp');
    assert.equal(bad('53'), '"53" has no protocol: write "53/tcp" or "53/udp" (or both)');
    assert.equal(bad(53), '53 has no protocol: write "53/tcp" or "53/udp" (or both)');
    assert.equal(bad('70000/tcp'), '"70000/tcp": port 70000 is out of range 0-65535');
    assert.equal(bad('1-65536/udp'), '"1-65536/udp": port 65536 is out of range 0-65535');
    assert.equal(bad('9010-9000/udp'), '"9010-9000/udp": the range is reversed (9010 > 9000)');
    assert.equal(bad('8/icmp'), '"8/icmp": icmp has no ports: write "icmp"');
    for (const s of ['', '/tcp', '80/', '-1/tcp', '80-/tcp', '80-90-100/tcp', 'http', 'any', '80 /tcp', '0x50/tcp', '8e1/tcp'])
      assert.match(bad(s), /is not a port|has no protocol/, s);
    assert.match(bad(null), /must be a string/);
    assert.match(bad(['80/tcp']), /must be a string/);
  });

  it('formatPortRange is the inverse of parsePortSpec (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }), fc.constantFrom('tcp', 'udp', 'sctp'), (a, b, proto) => {
        const p = ok(`${Math.min(a, b)}-${Math.max(a, b)}/${proto}`);
        assert.deepEqual(ok(formatPortRange(p)), p);
      }),
    );
    assert.equal(formatPortRange({ protocol: 'tcp', from: 0, to: 0, name: 'http' }), 'http/tcp');
    assert.equal(formatPortRange({ protocol: 'any', from: 0, to: 65535 }), 'any');
    assert.equal(formatPortRange(ok('icmp')), 'icmp');
  });
});

/** The reference: descend the binary trie of 16-bit ports, taking a whole subtree when it lies inside the range. */
function trieCover(from: number, to: number, base = 0, bits = 0, out: PortPrefix[] = []): PortPrefix[] {
  const size = 2 ** (16 - bits);
  const end = base + size - 1;
  if (end < from || base > to) return out;
  if (from <= base && end <= to) {
    out.push({ port: base, bits });
    return out;
  }
  trieCover(from, to, base, bits + 1, out);
  trieCover(from, to, base + size / 2, bits + 1, out);
  return out;
}

describe('portPrefixes', () => {
  it('known splits', () => {
    assert.deepEqual(portPrefixes(0, 65535), [{ port: 0, bits: 0 }]);
    assert.deepEqual(portPrefixes(80, 80), [{ port: 80, bits: 16 }]);
    assert.deepEqual(portPrefixes(9000, 9010), [
      { port: 9000, bits: 13 },
      { port: 9008, bits: 15 },
      { port: 9010, bits: 16 },
    ]);
    assert.deepEqual(portPrefixes(1, 65535).length, 16);
    assert.deepEqual(portPrefixes(1, 65534).length, 30, 'the worst case');
    assert.deepEqual(portPrefixes(32768, 65535), [{ port: 32768, bits: 1 }]);
    assert.deepEqual(portPrefixes(5, 4), []);
    assert.deepEqual(portPrefixes(-5, 3), [{ port: 0, bits: 14 }], 'clamped');
  });

  const rangeArb = fc
    .tuple(
      fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom(0, 1, 1023, 1024, 32767, 32768, 65534, 65535)),
      fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom(0, 1, 1023, 1024, 32767, 32768, 65534, 65535)),
    )
    .map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as const);

  it('cover the range exactly, without overlap, in order, aligned (property)', () => {
    fc.assert(
      fc.property(rangeArb, ([from, to]) => {
        const ps = portPrefixes(from, to);
        let next = from;
        for (const p of ps) {
          assert.ok(p.bits >= 0 && p.bits <= 16);
          const r = prefixRange(p);
          assert.equal(r.from, next, 'contiguous, no gap, no overlap');
          assert.equal(p.port % 2 ** (16 - p.bits), 0, 'aligned: the bits past the prefix are 0');
          next = r.to + 1;
        }
        assert.equal(next, to + 1, 'ends at the end of the range');
      }),
      { numRuns: 2000 },
    );
  });

  it('are minimal: every prefix is maximal, and the count equals an independent trie descent (property)', () => {
    fc.assert(
      fc.property(rangeArb, ([from, to]) => {
        const ps = portPrefixes(from, to);
        for (const p of ps) {
          if (p.bits === 0) continue;
          const parentSize = 2 ** (16 - p.bits + 1);
          const parentFrom = p.port - (p.port % parentSize);
          assert.ok(!(parentFrom >= from && parentFrom + parentSize - 1 <= to), `prefix ${p.port}/${p.bits} could be merged with its sibling`);
        }
        assert.deepEqual(ps, trieCover(from, to));
        assert.ok(ps.length <= 30);
      }),
      { numRuns: 2000 },
    );
  });

  it('exhaustively on every range inside a small window (lookups with the prefixes = membership)', () => {
    for (let from = 1000; from < 1100; from++) {
      for (let to = from; to < 1100; to++) {
        const ps = portPrefixes(from, to);
        for (let port = 990; port < 1110; port++) {
          const hit = ps.some((p) => inRange(prefixRange(p), port));
          assert.equal(hit, port >= from && port <= to);
        }
      }
    }
  });
});
