/**
 * Reachability matrices between all pods, and truth tables in the form of the
 * upstream Kubernetes e2e network-policy tests: rows are clients ("from"),
 * columns servers ("to"), "." allowed, "X" denied.
 */
import { Evaluator } from './engine.js';
import type { Cluster, K8sProtocol } from './objects.js';

/** The JSON form of `bastion k8s matrix -o json`. */
export interface Matrix {
  /** "ns/name", sorted by namespace then name */
  pods: string[];
  /** allowed[client][server], for every ordered pair of different pods */
  allowed: Record<string, Record<string, boolean>>;
}

/** Connection from every pod to every other pod's IP on port/protocol. */
export function computeMatrix(cluster: Cluster, port: number | string, protocol: K8sProtocol): Matrix {
  const ev = new Evaluator(cluster);
  const pods = cluster.pods.map((p) => p.key);
  const allowed: Record<string, Record<string, boolean>> = {};
  for (const from of cluster.pods) {
    const row: Record<string, boolean> = {};
    for (const to of cluster.pods) {
      if (from === to) continue;
      row[to.key] = ev.evaluate(from, to, port, protocol).allowed;
    }
    allowed[from.key] = row;
  }
  return { pods, allowed };
}

/**
 * A table like the upstream e2e truth tables; the diagonal (a pod to itself,
 * left undefined upstream) shows "-".
 */
export function formatMatrix(m: Matrix): string {
  const width = Math.max(1, ...m.pods.map((p) => p.length));
  const cell = (s: string) => s.padEnd(width);
  const lines = [[cell('-'), ...m.pods.map(cell)].join(' ').trimEnd()];
  for (const from of m.pods) {
    const cells = m.pods.map((to) => cell(from === to ? '-' : m.allowed[from]?.[to] ? '.' : 'X'));
    lines.push([cell(from), ...cells].join(' ').trimEnd());
  }
  return lines.join('\n') + '\n';
}

/** Pairs where two matrices over the same pods differ: "from -> to: expected X, got ." */
export function diffMatrices(expected: Matrix, actual: Matrix): string[] {
  const out: string[] = [];
  const pods = new Set([...expected.pods, ...actual.pods]);
  for (const from of pods)
    for (const to of pods) {
      if (from === to) continue;
      const e = expected.allowed[from]?.[to];
      const a = actual.allowed[from]?.[to];
      if (e !== a) out.push(`${from} -> ${to}: expected ${mark(e)}, got ${mark(a)}`);
    }
  return out;
}

const mark = (v: boolean | undefined) => (v === undefined ? '?' : v ? '.' : 'X');

/**
 * An expected reachability table built the way the upstream e2e tests build
 * theirs: start from a default for every pair, then override with expect,
 * expectPeer, expectAllIngress, expectAllEgress.
 */
export class Reachability {
  private readonly values = new Map<string, Map<string, boolean>>();

  constructor(
    readonly pods: readonly string[],
    defaultValue: boolean,
  ) {
    for (const f of pods) this.values.set(f, new Map(pods.map((t) => [t, defaultValue])));
  }

  private set(from: string, to: string, v: boolean): void {
    const row = this.values.get(from);
    if (!row || !row.has(to)) throw new Error(`unknown pod in ${from} -> ${to}`);
    row.set(to, v);
  }

  /** one pair */
  expect(from: string, to: string, connected: boolean): this {
    this.set(from, to, connected);
    return this;
  }

  /** every client to `to` */
  expectAllIngress(to: string, connected: boolean): this {
    for (const f of this.pods) this.set(f, to, connected);
    return this;
  }

  /** `from` to every server */
  expectAllEgress(from: string, connected: boolean): this {
    for (const t of this.pods) this.set(from, t, connected);
    return this;
  }

  /** every pair matching the peers; an omitted namespace or pod matches all */
  expectPeer(from: PeerMatch, to: PeerMatch, connected: boolean): this {
    for (const f of this.pods.filter((p) => peerMatch(from, p)))
      for (const t of this.pods.filter((p) => peerMatch(to, p))) this.set(f, t, connected);
    return this;
  }

  /** The matrix (diagonal dropped, like computeMatrix). */
  toMatrix(): Matrix {
    const allowed: Record<string, Record<string, boolean>> = {};
    for (const f of this.pods) {
      allowed[f] = {};
      for (const t of this.pods) if (f !== t) allowed[f][t] = this.values.get(f)!.get(t)!;
    }
    return { pods: [...this.pods], allowed };
  }
}

export interface PeerMatch {
  namespace?: string;
  pod?: string;
}

function peerMatch(p: PeerMatch, key: string): boolean {
  const [ns, name] = key.split('/') as [string, string];
  return (p.namespace === undefined || p.namespace === ns) && (p.pod === undefined || p.pod === name);
}
