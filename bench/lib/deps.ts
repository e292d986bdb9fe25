/**
 * The dependency sets the benchmark enforces. Pure functions: the same list
 * becomes iptables rules and Bastion policies, so both enforce exactly the
 * same thing.
 */

export type Proto = 'tcp' | 'udp';

export interface Dep {
  /** entry indexes (0 = client, 1 = server) */
  src: number;
  dst: number;
  proto: Proto;
  port: number;
  /** stable name, used as the Bastion policy name */
  name: string;
}

/** The measured pair's least-privilege policy: client -> server on the benchmark ports. */
export const PAIR_PORTS: ReadonlyArray<{ proto: Proto; port: number; what: string }> = [
  { proto: 'tcp', port: 5201, what: 'iperf3' },
  { proto: 'tcp', port: 11111, what: 'sockperf (tcp)' },
  { proto: 'udp', port: 11111, what: 'sockperf (udp)' },
  { proto: 'tcp', port: 8080, what: 'bbconn (new connections)' },
];

export const CONN_PORT = 8080;
export const IPERF_PORT = 5201;
export const SOCKPERF_PORT = 11111;
/** the server also listens on PROBE_BASE.. (added dependencies) and DENIED_PORT (never allowed) */
export const PROBE_BASE = 9000;
export const PROBE_PORTS = 100;
export const DENIED_PORT = PROBE_BASE + PROBE_PORTS;
/** filler dependencies use FILLER_BASE + k */
export const FILLER_BASE = 7000;

export function pairDeps(): Dep[] {
  return PAIR_PORTS.map((p) => ({ src: 0, dst: 1, proto: p.proto, port: p.port, name: `client-to-server-${p.port}-${p.proto}` }));
}

/**
 * perEntry dependencies for every one of n entries: entry i depends on entry
 * (i + 1 + (k mod (n-1))) mod n on tcp port FILLER_BASE + k, for k < perEntry.
 * Every (src, dst, port) is distinct, no entry depends on itself, and with
 * n <= perEntry an entry depends on the same peer on several ports.
 */
export function fillerDeps(n: number, perEntry = 10): Dep[] {
  const out: Dep[] = [];
  if (n < 2) return out;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < perEntry; k++) {
      const dst = (i + 1 + (k % (n - 1))) % n;
      out.push({ src: i, dst, proto: 'tcp', port: FILLER_BASE + k, name: `dep-${i}-${k}` });
    }
  }
  return out;
}

export type Position = 'start' | 'middle' | 'end';

/**
 * The full ordered list for an iptables chain: filler dependencies with the
 * measured pair's rules placed at `position` (a rule's position is what a
 * new connection pays for in a linear chain).
 */
export function orderedDeps(fillers: Dep[], pair: Dep[], position: Position): Dep[] {
  const at = position === 'start' ? 0 : position === 'end' ? fillers.length : Math.floor(fillers.length / 2);
  return [...fillers.slice(0, at), ...pair, ...fillers.slice(at)];
}

/** the dependency added by update number i (client -> server, a new port) */
export function probeDep(i: number): Dep {
  if (i >= PROBE_PORTS) throw new Error(`at most ${PROBE_PORTS} update probes`);
  return { src: 0, dst: 1, proto: 'tcp', port: PROBE_BASE + i, name: `added-${i}` };
}
