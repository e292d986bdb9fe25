/**
 * Sets of (protocol, destination port): what a rule, or a pair of rules
 * (the source's egress and the destination's ingress), lets through. Used
 * to draw the dependency graph's edges with their ports (src/policy/graph.ts).
 *
 * Ranges are inclusive, sorted and merged; 'icmp' is ICMP echo, as in the
 * model (src/policy/model.ts). Pure values: every operation returns a new set.
 */
import type { L4Protocol } from './evaluate.js';

export type PortProtocol = 'tcp' | 'udp' | 'sctp';
export const PORT_PROTOCOLS: readonly PortProtocol[] = ['tcp', 'udp', 'sctp'];

export type Range = readonly [number, number];

export interface PortSet {
  readonly tcp: readonly Range[];
  readonly udp: readonly Range[];
  readonly sctp: readonly Range[];
  readonly icmp: boolean;
}

const FULL: readonly Range[] = [[0, 65535]];

export const NO_PORTS: PortSet = { tcp: [], udp: [], sctp: [], icmp: false };
export const ALL_PORTS: PortSet = { tcp: FULL, udp: FULL, sctp: FULL, icmp: true };

/** One protocol's ports from..to (inclusive). */
export function portRange(protocol: PortProtocol, from: number, to: number): PortSet {
  return { ...NO_PORTS, [protocol]: [[from, to]] };
}

export const ICMP_ONLY: PortSet = { ...NO_PORTS, icmp: true };

function merge(ranges: Range[]): Range[] {
  ranges.sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [a, b] of ranges) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

function intersectRanges(x: readonly Range[], y: readonly Range[]): Range[] {
  const out: Range[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length && j < y.length) {
    const a = Math.max(x[i]![0], y[j]![0]);
    const b = Math.min(x[i]![1], y[j]![1]);
    if (a <= b) out.push([a, b]);
    if (x[i]![1] < y[j]![1]) i++;
    else j++;
  }
  return out;
}

export function union(a: PortSet, b: PortSet): PortSet {
  if (a === NO_PORTS || b === ALL_PORTS) return b;
  if (b === NO_PORTS || a === ALL_PORTS) return a;
  return {
    tcp: merge([...a.tcp, ...b.tcp]),
    udp: merge([...a.udp, ...b.udp]),
    sctp: merge([...a.sctp, ...b.sctp]),
    icmp: a.icmp || b.icmp,
  };
}

export function intersect(a: PortSet, b: PortSet): PortSet {
  if (a === ALL_PORTS) return b;
  if (b === ALL_PORTS) return a;
  return {
    tcp: intersectRanges(a.tcp, b.tcp),
    udp: intersectRanges(a.udp, b.udp),
    sctp: intersectRanges(a.sctp, b.sctp),
    icmp: a.icmp && b.icmp,
  };
}

export function isEmpty(s: PortSet): boolean {
  return !s.icmp && s.tcp.length === 0 && s.udp.length === 0 && s.sctp.length === 0;
}

/** Does the set let (protocol, port) through? (port is ignored for icmp) */
export function covers(s: PortSet, protocol: L4Protocol, port: number): boolean {
  if (protocol === 'icmp') return s.icmp;
  return s[protocol].some(([a, b]) => a <= port && port <= b);
}

function isFull(r: readonly Range[]): boolean {
  return r.length === 1 && r[0]![0] === 0 && r[0]![1] === 65535;
}

/**
 * The set as short texts, in the policy syntax: ["any"] for everything,
 * else "8080/tcp", "9000-9010/udp", "*\/sctp", "icmp".
 */
export function portSetText(s: PortSet): string[] {
  if (s.icmp && PORT_PROTOCOLS.every((p) => isFull(s[p]))) return ['any'];
  const out: string[] = [];
  for (const p of PORT_PROTOCOLS) {
    if (isFull(s[p])) out.push(`*/${p}`);
    else for (const [a, b] of s[p]) out.push(`${a === b ? a : `${a}-${b}`}/${p}`);
  }
  if (s.icmp) out.push('icmp');
  return out;
}
