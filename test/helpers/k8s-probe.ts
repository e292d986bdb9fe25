/**
 * Probing the upstream e2e network-policy model (namespaces x, y, z × pods
 * a, b, c) with real connections between network namespaces.
 *
 * Addresses: the model gives pods 10.244.{1,2,3}.{10,11,12}. The test puts
 * the nine pods in one /24 of its own (freeSubnet24), so every pod address
 * and every ipBlock of a policy is remapped consistently:
 *   10.244.k.(10+j)  → <base>.(16k + 2 + j)      (x: .18-.20, y: .34-.36, z: .50-.52)
 *   10.244.k.0/24    → <base>.(16k)/28            (exactly namespace k's pods)
 *   prefixes of length ≤ 8 (the upstream /4) stay as they are (they hold the
 *   whole 10/8, so the old and the new pod addresses alike).
 * Anything else has no faithful image and is refused. The test also checks
 * that the engine's matrix over the remapped cluster equals the fixture's
 * expected table, so a wrong remapping cannot go unnoticed.
 */
import type { V1NetworkPolicy } from '@kubernetes/client-node';
import type { Matrix } from '../../src/policy/k8s/matrix.js';
import { NAMESPACES, POD_NAMES, modelObjects, type ModelOptions } from '../fixtures/k8s/e2e-model.js';
import { buildCluster, type Cluster, type K8sProtocol } from '../../src/policy/k8s/objects.js';
import { nsRun, tcpConnect, type Ns } from './probes.js';
import { ipInCidr4, mustParseCidr4, parseIpv4 } from '../../src/net/ip.js';

/** The test's address of pod `ns/pod` in the /24 `base` ('10.123.45'). */
export function remappedPodIp(base: string, ns: string, pod: string): string {
  const k = NAMESPACES.indexOf(ns as 'x') + 1;
  const j = POD_NAMES.indexOf(pod as 'a');
  if (k < 1 || j < 0) throw new Error(`unknown pod ${ns}/${pod}`);
  return `${base}.${16 * k + 2 + j}`;
}


/** The image of one model CIDR in the test's /24. */
export function remapCidr(base: string, cidr: string): string {
  const [ip, lenText] = cidr.split('/');
  const len = Number(lenText ?? '32');
  if (len <= 8) {
    const c = mustParseCidr4(cidr);
    // must hold both the model's pods and ours, or the meaning changes
    for (const a of ['10.244.1.10', `${base}.18`]) {
      if (!ipInCidr4(c, parseIpv4(a)!)) throw new Error(`cannot remap ${cidr}: it does not hold ${a}`);
    }
    return cidr;
  }
  const m = /^10\.244\.([1-3])\.(\d+)$/.exec(ip!);
  if (!m) throw new Error(`cannot remap ${cidr}: outside the model's pod addresses`);
  const k = Number(m[1]);
  const host = Number(m[2]);
  if (len === 24) return `${base}.${16 * k}/28`;
  if (len === 32 && host >= 10 && host <= 12) return `${base}.${16 * k + 2 + (host - 10)}/32`;
  throw new Error(`cannot remap ${cidr}: no faithful image of a /${len} in the test subnet`);
}

/** Deep copy of a policy with every ipBlock remapped. */
export function remapPolicy(base: string, p: V1NetworkPolicy): V1NetworkPolicy {
  const copy = structuredClone(p) as V1NetworkPolicy;
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      const block = o.ipBlock as { cidr: string; except?: string[] } | undefined;
      if (block) {
        block.cidr = remapCidr(base, block.cidr);
        if (block.except) block.except = block.except.map((e) => remapCidr(base, e));
      }
      Object.values(o).forEach(walk);
    }
  };
  walk(copy);
  return copy;
}

/** The model cluster (with these policies and labels) at the test's addresses. */
export function remappedCluster(base: string, policies: V1NetworkPolicy[], model?: ModelOptions): Cluster {
  const objects = modelObjects(model).map((o) => {
    if (o.kind !== 'Pod') return o;
    const pod = structuredClone(o);
    const ip = remappedPodIp(base, pod.metadata!.namespace!, pod.metadata!.name!);
    pod.status = { ...pod.status, podIP: ip, podIPs: [{ ip }] };
    return pod;
  });
  return buildCluster([...objects, ...policies.map((p) => remapPolicy(base, p))]);
}

// ---------------------------------------------------------------- probing

export interface ProbePod {
  /** "ns/name" */
  key: string;
  netns: string;
  ip: string;
}

export interface PairResult {
  from: string;
  to: string;
  ok: boolean;
  /** something answered "nothing listens here" (a broken probe, not a policy verdict) */
  refused: boolean;
  detail: string;
  ms: number;
}

/** Runs fn over items with at most `limit` at a time, keeping the order of results. */
export async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * One real connection attempt from `ns` to ip:port. TCP: a handshake
 * (nc -z) bounded by timeoutS. UDP: one datagram to an echo server, and
 * its echo back within timeoutS. A new client socket each time, so a new
 * source port: no probe rides on an earlier probe's conntrack entry.
 */
export async function probeOnce(ns: Ns, ip: string, port: number, protocol: K8sProtocol, timeoutS: number): Promise<Omit<PairResult, 'from' | 'to'>> {
  if (protocol === 'TCP') {
    const r = await tcpConnect(ns, ip, port, timeoutS);
    return { ok: r.ok, refused: r.refused, detail: r.detail, ms: r.ms };
  }
  if (protocol === 'UDP') {
    const marker = `k8s-probe-${Math.random().toString(16).slice(2, 10)}`;
    const r = await nsRun(ns, 'socat', ['-T', String(timeoutS), '-t', String(timeoutS), '-', `UDP4:${ip}:${port}`], {
      input: `${marker}\n`,
      timeoutMs: (timeoutS + 3) * 1000,
    });
    const ok = r.stdout.includes(marker);
    const refused = !ok && /refused/i.test(r.stderr);
    return { ok, refused, detail: `udp ${ip}:${port} from ${ns ?? 'host'}: exit ${r.code} ${r.stderr.trim()}`.trim(), ms: r.ms };
  }
  throw new Error(`${protocol}: no probe (the kernel here has no SCTP sockets)`);
}

/** Every ordered pair of different pods, probed in parallel (bounded). */
export async function probeAllPairs(
  pods: ProbePod[],
  port: number,
  protocol: K8sProtocol,
  o: { concurrency: number; timeoutS: number },
): Promise<{ matrix: Matrix; results: PairResult[] }> {
  const pairs = pods.flatMap((from) => pods.filter((to) => to !== from).map((to) => ({ from, to })));
  const results = await pool(pairs, o.concurrency, async ({ from, to }) => ({
    from: from.key,
    to: to.key,
    ...(await probeOnce(from.netns, to.ip, port, protocol, o.timeoutS)),
  }));
  return { matrix: toMatrix(pods.map((p) => p.key), results), results };
}

export function toMatrix(pods: string[], results: PairResult[]): Matrix {
  const allowed: Record<string, Record<string, boolean>> = {};
  for (const p of pods) allowed[p] = {};
  for (const r of results) allowed[r.from]![r.to] = r.ok;
  return { pods: [...pods], allowed };
}
