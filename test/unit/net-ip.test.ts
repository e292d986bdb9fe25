/**
 * src/net/ip.ts, the one address module: what it accepts and refuses (the
 * grammar the hand-written parsers it replaced had, checked against a copy of
 * them on random text near the grammar's edges), int ↔ text round trips,
 * prefix containment, canonical network addresses, and the IPv4 number and
 * bigint shapes agreeing with each other.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  canonicalCidr4,
  cidr4Contains,
  cidr4Covers,
  cidrContains,
  cidrCovers,
  formatCidr,
  formatCidr4,
  formatIp,
  formatIpv4,
  ipInBlock,
  ipInCidr4,
  ipv4Mask,
  mustParseCidr4,
  parseCidr,
  parseCidr4,
  parseIp,
  parseIpv4,
} from '../../src/net/ip.js';

// ------------------------------------------------------------ the old grammar
// A copy of the parsers src/net/ip.ts replaced (src/policy/compile.ts
// parseIpv4/parseCidr4 and src/policy/k8s/cidr.ts parseIPv6/parseCidr), kept
// as the reference for "nothing the CLI, API or config accept changes".

function oldIpv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return undefined;
    v = v * 256 + Number(p);
  }
  return v;
}

function oldIpv6(s: string): bigint | undefined {
  if (s.length === 0 || s.includes('%')) return undefined;
  let text = s;
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.slice(lastColon + 1).includes('.')) {
    const v4 = oldIpv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const dbl = text.split('::');
  if (dbl.length > 2) return undefined;
  const groups = (g: string): bigint[] | undefined => {
    if (g === '') return [];
    const out: bigint[] = [];
    for (const h of g.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(h)) return undefined;
      out.push(BigInt('0x' + h));
    }
    return out;
  };
  let all: bigint[];
  if (dbl.length === 2) {
    const head = groups(dbl[0]!);
    const rest = groups(dbl[1]!);
    if (!head || !rest || 8 - head.length - rest.length < 1) return undefined;
    all = [...head, ...Array<bigint>(8 - head.length - rest.length).fill(0n), ...rest];
  } else {
    const g = groups(text);
    if (!g) return undefined;
    all = g;
  }
  return all.length === 8 ? all.reduce((acc, g) => (acc << 16n) | g, 0n) : undefined;
}

function oldCidr4(s: string): { base: number; prefixLen: number } | undefined {
  const slash = s.indexOf('/');
  const ip = oldIpv4(slash < 0 ? s : s.slice(0, slash));
  if (ip === undefined) return undefined;
  let prefixLen = 32;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(0|[1-9][0-9]?)$/.test(p) || Number(p) > 32) return undefined;
    prefixLen = Number(p);
  }
  const mask = prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
  return { base: (ip & mask) >>> 0, prefixLen };
}

// --------------------------------------------------------------- generators

const octetText = fc.oneof(
  fc.integer({ min: 0, max: 300 }).map(String),
  fc.stringMatching(/^[0-9]{1,4}$/),
  fc.constantFrom('', '00', '01', '010', '0x1', '-1', '+1', ' 1', '1 ', 'a', '1e2', '١', '255', '256'),
);
/** text near the dotted-quad grammar: right and wrong counts of parts, odd octets */
const quadLike = fc.array(octetText, { minLength: 1, maxLength: 6 }).map((a) => a.join('.'));
const groupText = fc.oneof(
  fc.stringMatching(/^[0-9a-fA-F]{0,5}$/),
  fc.constantFrom('', '0', 'ffff', 'FFFF', 'g', ' ', '1.2.3.4', '01.2.3.4', '10.0.0.256', '1%eth0'),
);
/** text near the IPv6 grammar: '::' anywhere, embedded quads, too many groups */
const v6Like = fc.array(groupText, { minLength: 1, maxLength: 10 }).map((a) => a.join(':'));
const prefixText = fc.oneof(fc.integer({ min: 0, max: 140 }).map(String), fc.constantFrom('', '08', '00', '-1', '+8', ' 8', '1e1', '32', '33'));
const withPrefix = (addr: fc.Arbitrary<string>) =>
  fc.tuple(addr, fc.option(prefixText, { nil: undefined })).map(([a, p]) => (p === undefined ? a : `${a}/${p}`));

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const prefixLen = fc.integer({ min: 0, max: 32 });
const v6Value = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });
const sparseV6 = fc
  .array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 })
  .map((g) => g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n));

// -------------------------------------------------------------------- tests

describe('net/ip: IPv4', () => {
  it('accepts strict dotted quads only', () => {
    assert.equal(parseIpv4('10.1.2.3'), 0x0a010203);
    assert.equal(parseIpv4('0.0.0.0'), 0);
    assert.equal(parseIpv4('255.255.255.255'), 0xffffffff);
    for (const bad of ['01.2.3.4', '1.2.3.04', '1.2.3.00', '256.0.0.1', '1.2.3', '1.2.3.4.5', '10.1', '0x1.2.3.4', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.-1', '', 'a.b.c.d', '::1', '1.2.3.4/32'])
      assert.equal(parseIpv4(bad), undefined, bad);
  });

  it('accepts and refuses exactly what the old parser did, with the same value', () => {
    fc.assert(fc.property(quadLike, (s) => parseIpv4(s) === oldIpv4(s)), { numRuns: 20000 });
  });

  it('round-trips number → text → number and text → number → text', () => {
    fc.assert(fc.property(u32, (n) => parseIpv4(formatIpv4(n)) === n));
    fc.assert(fc.property(u32, (n) => formatIpv4(parseIpv4(formatIpv4(n))!) === formatIpv4(n)));
  });

  it('masks: prefix length bits set from the top', () => {
    assert.equal(ipv4Mask(0), 0);
    assert.equal(ipv4Mask(8), 0xff000000);
    assert.equal(ipv4Mask(31), 0xfffffffe);
    assert.equal(ipv4Mask(32), 0xffffffff);
    fc.assert(fc.property(prefixLen, (l) => ipv4Mask(l) === (l === 0 ? 0 : 2 ** 32 - 2 ** (32 - l))));
  });
});

describe('net/ip: IPv4 prefixes', () => {
  it('parses a.b.c.d/n and a bare address as /32, host bits cleared', () => {
    assert.deepEqual(parseCidr4('10.1.2.3/8'), { base: 0x0a000000, prefixLen: 8, addr: '10.0.0.0' });
    assert.deepEqual(mustParseCidr4('10.1.2.3'), { base: 0x0a010203, prefixLen: 32, addr: '10.1.2.3' });
    assert.equal(canonicalCidr4('192.168.7.9/20'), '192.168.0.0/20');
    for (const bad of ['10.0.0.0/33', '10.0.0.0/08', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/ 8', '10.0.0/8', '::/0', '10.0.0.0/8/8'])
      assert.equal(parseCidr4(bad), undefined, bad);
    assert.throws(() => mustParseCidr4('10.0.0.0/33'), /^Error: not an IPv4 CIDR: 10\.0\.0\.0\/33$/);
  });

  it('accepts and refuses exactly what the old parser did, with the same prefix', () => {
    fc.assert(
      fc.property(withPrefix(quadLike), (s) => {
        const c = parseCidr4(s);
        assert.deepEqual(c && { base: c.base, prefixLen: c.prefixLen }, oldCidr4(s));
      }),
      { numRuns: 20000 },
    );
  });

  it('canonical network address: host bits cleared, holds the address, parses to itself', () => {
    fc.assert(
      fc.property(u32, prefixLen, (ip, l) => {
        const c = mustParseCidr4(`${formatIpv4(ip)}/${l}`);
        assert.equal(c.prefixLen, l);
        assert.equal((c.base & ~ipv4Mask(l)) >>> 0, 0, 'no host bits');
        assert.ok(c.base <= ip && ip - c.base < 2 ** (32 - l));
        assert.equal(c.addr, formatIpv4(c.base));
        assert.ok(ipInCidr4(c, ip));
        assert.deepEqual(parseCidr4(formatCidr4(c)), c);
      }),
    );
  });

  it('containment: an address is in a prefix exactly when it shares the top prefixLen bits', () => {
    fc.assert(
      fc.property(u32, u32, prefixLen, (net, ip, l) => {
        const cidr = `${formatIpv4(net)}/${l}`;
        const same = l === 0 || Math.floor(net / 2 ** (32 - l)) === Math.floor(ip / 2 ** (32 - l));
        assert.equal(cidr4Contains(cidr, formatIpv4(ip)), same);
      }),
    );
    assert.equal(cidr4Contains('10.0.0.0/8', '010.0.0.1'), false);
  });

  it('covers: outer ⊇ inner exactly when both ends of inner are in outer', () => {
    fc.assert(
      fc.property(u32, prefixLen, u32, prefixLen, (a, la, b, lb) => {
        const outer = mustParseCidr4(`${formatIpv4(a)}/${la}`);
        const inner = mustParseCidr4(`${formatIpv4(b)}/${lb}`);
        const last = inner.base + 2 ** (32 - inner.prefixLen) - 1;
        assert.equal(cidr4Covers(outer, inner), ipInCidr4(outer, inner.base) && ipInCidr4(outer, last));
      }),
    );
  });
});

describe('net/ip: either family', () => {
  it('IPv6: accepts what the old parser did, with the same value; zone ids refused', () => {
    fc.assert(
      fc.property(v6Like, (s) => {
        const ip = parseIp(s);
        assert.equal(ip && ip.family === 6 ? ip.value : ip && ip.family === 4 ? 'v4' : undefined, s.includes(':') ? oldIpv6(s) : oldIpv4(s) !== undefined ? 'v4' : undefined);
      }),
      { numRuns: 20000 },
    );
    for (const bad of ['fe80::1%eth0', '1::2::3', '1:2:3:4:5:6:7:8:9', '::ffff:01.2.3.4', ':::', '1:2:3:4:5:6:7:8::', '12345::'])
      assert.equal(parseIp(bad), undefined, bad);
    assert.deepEqual(parseIp('::ffff:10.0.0.1'), { family: 6, value: 0xffff0a000001n });
    assert.deepEqual(parseIp('1:2:3:4:5:6:7::'), { family: 6, value: 0x00010002000300040005000600070000n });
  });

  it('IPv4 as a bigint is the same number as IPv4 as a number', () => {
    fc.assert(fc.property(quadLike, (s) => parseIp(s)?.value === (parseIpv4(s) === undefined ? undefined : BigInt(parseIpv4(s)!))));
  });

  it('IPv6 text round-trips and is canonical (RFC 5952: lower case, longest zero run compressed, ≥ 2 groups)', () => {
    assert.equal(formatIp(parseIp('2001:DB8:0:0:1:0:0:1')!), '2001:db8::1:0:0:1');
    assert.equal(formatIp(parseIp('1:0:2:3:4:5:6:7')!), '1:0:2:3:4:5:6:7');
    assert.equal(formatIp(parseIp('0:0:0:0:0:0:0:0')!), '::');
    fc.assert(
      fc.property(fc.oneof(v6Value, sparseV6), (value) => {
        const text = formatIp({ family: 6, value });
        assert.deepEqual(parseIp(text), { family: 6, value });
        assert.equal(text, text.toLowerCase());
        assert.ok(!/(^|:)0:0(:|$)/.test(text) || text.includes('::'), `${text}: a zero run left uncompressed`);
      }),
    );
  });

  it('prefixes need a length, clear host bits, and are canonical', () => {
    assert.equal(formatCidr(parseCidr('10.244.1.10/4')!), '0.0.0.0/4');
    assert.equal(formatCidr(parseCidr('2001:db8::1/32')!), '2001:db8::/32');
    for (const bad of ['10.0.0.0', '10.0.0.0/33', '::/129', '::/0128', 'fe80::/10%eth0', '10.0.0.0/08']) assert.equal(parseCidr(bad), undefined, bad);
    fc.assert(
      fc.property(v6Value, fc.integer({ min: 0, max: 128 }), (value, p) => {
        const c = parseCidr(`${formatIp({ family: 6, value })}/${p}`)!;
        assert.ok(cidrContains(c, { family: 6, value }));
        assert.deepEqual(parseCidr(formatCidr(c)), c);
        assert.equal(c.base >> BigInt(128 - p) << BigInt(128 - p), c.base, 'no host bits');
      }),
    );
  });

  it('the bigint shape agrees with the number shape for IPv4 prefixes', () => {
    fc.assert(
      fc.property(u32, prefixLen, u32, prefixLen, (a, la, b, lb) => {
        const [ta, tb] = [`${formatIpv4(a)}/${la}`, `${formatIpv4(b)}/${lb}`];
        assert.equal(formatCidr(parseCidr(ta)!), formatCidr4(mustParseCidr4(ta)));
        assert.equal(cidrCovers(parseCidr(ta)!, parseCidr(tb)!), cidr4Covers(mustParseCidr4(ta), mustParseCidr4(tb)));
        assert.equal(cidrContains(parseCidr(ta)!, parseIp(formatIpv4(b))!), cidr4Contains(ta, formatIpv4(b)));
      }),
    );
  });

  it('families never mix; ipInBlock honours except and ignores what it cannot read', () => {
    assert.ok(!cidrContains(parseCidr('::/0')!, parseIp('1.2.3.4')!));
    assert.ok(!cidrCovers(parseCidr('::/0')!, parseCidr('10.0.0.0/8')!));
    assert.ok(ipInBlock('10.1.2.3', '10.0.0.0/8', ['10.2.0.0/16', 'junk', 'fd00::/8']));
    assert.ok(!ipInBlock('10.2.0.1', '10.0.0.0/8', ['10.2.0.0/16']));
    assert.ok(!ipInBlock('010.1.2.3', '10.0.0.0/8'));
    assert.ok(!ipInBlock('10.1.2.3', '10.0.0.0'));
  });
});
