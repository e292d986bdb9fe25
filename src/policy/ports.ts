/**
 * Destination ports: the config file's port specs, their display form, and
 * the split of a port range into the prefixes of the LPM policy map.
 *
 * Port spec grammar (Bastion YAML):
 *   PORT/PROTO        "8080/tcp"
 *   PORT-PORT/PROTO   "9000-9010/udp"     (inclusive; PORT is 0..65535)
 *   PROTO             "tcp"               every port of that protocol
 *   icmp              ICMP echo
 * with PROTO one of tcp, udp, sctp (case-insensitive). A bare port ("53")
 * is an error: the protocol is never guessed (a DNS server usually wants
 * both "53/udp" and "53/tcp", a web server only tcp).
 *
 * Pure functions, no I/O.
 */
import type { PortRange } from './model.js';
import { quote } from './errors.js';

export const PORT_SPEC_EXPECTED = 'expected PORT[-PORT]/tcp|udp|sctp, or icmp';
export const MAX_PORT = 65535;

export type PortSpecResult = { ok: true; port: PortRange } | { ok: false; message: string };

const L4 = new Set(['tcp', 'udp', 'sctp']);

/** Parses one port spec (a string, or a number, which is always an error that says what to write). */
export function parsePortSpec(spec: unknown): PortSpecResult {
  if (typeof spec === 'number') {
    return {
      ok: false,
      message: `${spec} has no protocol: write "${spec}/tcp" or "${spec}/udp" (or both)`,
    };
  }
  if (typeof spec !== 'string') return { ok: false, message: `a port must be a string: ${PORT_SPEC_EXPECTED}` };
  const q = quote(spec);
  const bad = (): PortSpecResult => ({ ok: false, message: `${q} is not a port: ${PORT_SPEC_EXPECTED}` });
  const s = spec.trim().toLowerCase();
  if (s === 'icmp') return { ok: true, port: { protocol: 'icmp', from: 0, to: 0 } };
  if (L4.has(s)) return { ok: true, port: { protocol: s as 'tcp' | 'udp' | 'sctp', from: 0, to: MAX_PORT } };
  if (/^\d+(-\d+)?$/.test(s)) {
    return { ok: false, message: `${q} has no protocol: write "${s}/tcp" or "${s}/udp" (or both)` };
  }
  const m = /^(\d+)(?:-(\d+))?\/([a-z]+)$/.exec(s);
  if (!m) return bad();
  const proto = m[3]!;
  if (!L4.has(proto)) {
    if (proto === 'icmp') return { ok: false, message: `${q}: icmp has no ports: write "icmp"` };
    return bad();
  }
  const from = Number(m[1]);
  const to = m[2] === undefined ? from : Number(m[2]);
  for (const p of [from, to]) {
    if (p > MAX_PORT) return { ok: false, message: `${q}: port ${p} is out of range 0-${MAX_PORT}` };
  }
  if (from > to) return { ok: false, message: `${q}: the range is reversed (${from} > ${to})` };
  return { ok: true, port: { protocol: proto as 'tcp' | 'udp' | 'sctp', from, to } };
}

/** Display form, the inverse of parsePortSpec: "8080/tcp", "9000-9010/udp", "tcp", "icmp", "any", "http/tcp" (named). */
export function formatPortRange(p: PortRange): string {
  if (p.name !== undefined) return `${p.name}/${p.protocol}`;
  if (p.protocol === 'icmp' || p.protocol === 'any') return p.protocol;
  if (p.from <= 0 && p.to >= MAX_PORT) return p.protocol;
  return p.from === p.to ? `${p.from}/${p.protocol}` : `${p.from}-${p.to}/${p.protocol}`;
}

/** `bits` leading bits of `port` are fixed: the prefix covers 2^(16-bits) ports from `port`. */
export interface PortPrefix {
  port: number;
  bits: number;
}

/**
 * Splits the inclusive range [from, to] into the minimal list of aligned
 * 16-bit prefixes that covers it exactly, in increasing order. (The policy
 * map's prefixlen for one of them is 80 + bits.)
 *
 * Greedy: from the low end, take the largest block that is aligned on its
 * start and does not pass `to`. Why it is minimal: a block [p, p + 2^k) is
 * "maximal" in the range when its parent block (twice the size, aligned) is
 * not inside the range. The maximal blocks of a range are disjoint and cover
 * it; any exact cover by aligned blocks puts every one of its blocks inside
 * one maximal block (aligned blocks are nested or disjoint), and needs at
 * least one block per maximal block, so the set of maximal blocks is the
 * unique minimal cover. The greedy step always takes a maximal block: a
 * larger aligned block starting at the same port would pass `to` or not be
 * aligned, and a larger block containing it but starting lower would
 * contain ports already covered (below the current start, i.e. below
 * `from` or in an earlier block, which was itself maximal).
 *
 * Returns [] for an empty range (from > to). Bounds are clamped to 0..65535.
 */
export function portPrefixes(from: number, to: number): PortPrefix[] {
  let lo = Math.max(0, Math.ceil(from));
  const hi = Math.min(MAX_PORT, Math.floor(to));
  const out: PortPrefix[] = [];
  while (lo <= hi) {
    let k = 0;
    while (k < 16) {
      const size = 2 ** (k + 1);
      if (lo % size !== 0 || lo + size - 1 > hi) break;
      k++;
    }
    out.push({ port: lo, bits: 16 - k });
    lo += 2 ** k;
  }
  return out;
}

/** The inclusive range a prefix covers. */
export function prefixRange(p: PortPrefix): { from: number; to: number } {
  return { from: p.port, to: p.port + 2 ** (16 - p.bits) - 1 };
}

/** Does the range allow this port? (Named ports, icmp and 'any' are the caller's business.) */
export function inRange(p: { from: number; to: number }, port: number): boolean {
  return p.from <= port && port <= p.to;
}
