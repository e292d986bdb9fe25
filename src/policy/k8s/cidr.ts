/**
 * IPv4 / IPv6 addresses and CIDR blocks, as bigints. Strict parsing (no
 * leading zeros in IPv4 octets, no zone ids), enough for NetworkPolicy ipBlock
 * semantics: membership, containment, canonical form.
 */

export type IpFamily = 4 | 6;

export interface IpAddr {
  family: IpFamily;
  value: bigint;
}

export interface Cidr {
  family: IpFamily;
  /** network address: host bits cleared */
  base: bigint;
  prefix: number;
}

const bitsOf = (f: IpFamily) => (f === 4 ? 32 : 128);

function parseIPv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseIPv6(s: string): bigint | undefined {
  if (s.length === 0 || s.includes('%')) return undefined;
  let text = s;
  // an embedded IPv4 address in the last 32 bits becomes two hex groups
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.slice(lastColon + 1).includes('.')) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const dbl = text.split('::');
  if (dbl.length > 2) return undefined;
  const parseGroups = (g: string): bigint[] | undefined => {
    if (g === '') return [];
    const out: bigint[] = [];
    for (const h of g.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(h)) return undefined;
      out.push(BigInt('0x' + h));
    }
    return out;
  };
  let groups: bigint[];
  if (dbl.length === 2) {
    const head = parseGroups(dbl[0]!);
    const rest = parseGroups(dbl[1]!);
    if (!head || !rest) return undefined;
    const missing = 8 - head.length - rest.length;
    if (missing < 1) return undefined;
    groups = [...head, ...Array<bigint>(missing).fill(0n), ...rest];
  } else {
    const all = parseGroups(text);
    if (!all) return undefined;
    groups = all;
  }
  if (groups.length !== 8) return undefined;
  return groups.reduce((acc, g) => (acc << 16n) | g, 0n);
}

export function parseIp(s: string): IpAddr | undefined {
  if (s.includes(':')) {
    const v = parseIPv6(s);
    return v === undefined ? undefined : { family: 6, value: v };
  }
  const v = parseIPv4(s);
  return v === undefined ? undefined : { family: 4, value: v };
}

/**
 * Parses "a.b.c.d/n" or "v6/n". Host bits may be set ("10.1.2.3/8", which the
 * Kubernetes API has always accepted); they are cleared in the result.
 */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(s.slice(0, slash));
  const p = s.slice(slash + 1);
  if (!ip || !/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
  const prefix = Number(p);
  if (prefix > bitsOf(ip.family)) return undefined;
  return { family: ip.family, base: ip.value & mask(ip.family, prefix), prefix };
}

function mask(f: IpFamily, prefix: number): bigint {
  const bits = BigInt(bitsOf(f));
  const all = (1n << bits) - 1n;
  return prefix === 0 ? 0n : (all << (bits - BigInt(prefix))) & all;
}

export function cidrContains(c: Cidr, ip: IpAddr): boolean {
  return c.family === ip.family && (ip.value & mask(c.family, c.prefix)) === c.base;
}

/** outer contains every address of inner */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  return (
    outer.family === inner.family &&
    inner.prefix >= outer.prefix &&
    (inner.base & mask(outer.family, outer.prefix)) === outer.base
  );
}

export function formatIp(ip: IpAddr): string {
  if (ip.family === 4) {
    const v = ip.value;
    return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // compress the longest run of zero groups (length >= 2), RFC 5952
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return hex.slice(0, bestStart).join(':') + '::' + hex.slice(bestStart + bestLen).join(':');
}

/** canonical text: host bits cleared ("10.0.0.0/8") */
export function formatCidr(c: Cidr): string {
  return `${formatIp({ family: c.family, value: c.base })}/${c.prefix}`;
}

/** Is ip in cidr and in none of except? Unparseable inputs never match. */
export function ipInBlock(ip: string, cidr: string, except: readonly string[] = []): boolean {
  const a = parseIp(ip);
  const c = parseCidr(cidr);
  if (!a || !c || !cidrContains(c, a)) return false;
  for (const e of except) {
    const x = parseCidr(e);
    if (x && cidrContains(x, a)) return false;
  }
  return true;
}
