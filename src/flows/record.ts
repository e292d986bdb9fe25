/**
 * The flow record: one verdict of the datapath as users read it, write it to
 * files and query it (`bastion flows`, GET /v1/flows, the web console,
 * `bastion learn`, `bastion policy verify`). The one definition of its shape;
 * src/api/types.ts re-exports it for clients.
 *
 * Fields follow Hubble's where a user of Hubble would look for them
 * (verdict, drop reason, traffic direction, source and destination with
 * identity, labels, IP and port, the policies that allowed the flow, TCP
 * flags, is_reply), with Bastion's names where they are plainer.
 */

/** One end of a flow. */
export interface FlowEnd {
  /** the numeric identity: a container's, or 1 host, 2 world, a CIDR's */
  identity: number;
  /** container name, "host", "world", a CIDR; absent when unknown */
  name?: string;
  /** the container's labels when the flow was seen (empty for the host, the world and unknown ends) */
  labels: Record<string, string>;
  ip: string;
  /** TCP, UDP and SCTP only */
  port?: number;
  /** the node the container runs on, where known (cluster mode) */
  node?: string;
}

export type FlowVerdict = 'ALLOWED' | 'DROPPED' | 'AUDIT' | 'ARP_REPLY' | 'REPAIRED';

export interface FlowRecord {
  /** ISO time the datapath saw the packet (for a summary: the last one it counted) */
  time: string;
  /** ALLOWED, DROPPED, AUDIT (passed in audit mode although the policy in force would drop it), ARP_REPLY, REPAIRED (drift the daemon put right: src/daemon/flow-logger.ts) */
  verdict: FlowVerdict | string;
  /** why: allowed-new, policy-denied, host-denied, spoofed-ip, ... (docs/architecture.md) */
  reason: string;
  /**
   * egress: judged on the way out of the container whose stack decided (its
   * egress policy, or, for a connection to a local container, that
   * container's ingress policy too); ingress: on the way in (from the host,
   * the bridge, the world)
   */
  direction: 'egress' | 'ingress';
  /** tcp, udp, sctp, icmp, arp, ip-proto-N, ethertype-0xNNNN */
  protocol: string;
  src: FlowEnd;
  dst: FlowEnd;
  /** the TCP flags of the packet the verdict was on ("SYN", "SYN,ACK", "RST"), TCP only */
  tcpFlags?: string;
  /** the policies that allowed it, on the source's egress and the destination's ingress side */
  policies: { egress?: string; ingress?: string };
  /** the host-side interface of the container whose stack decided */
  interface: string;
  /** the packet belongs to the reply direction of a connection */
  isReply: boolean;
  /** the container whose stack decided */
  endpoint?: string;
  /** bytes of the packet the verdict was on */
  bytes?: number;
  /** an aggregated record: the number of flows it stands for */
  count?: number;
  /**
   * true for a record that stands for flows the datapath did not report one
   * by one: an allowed-flow summary (`count` new connections of one key,
   * from `firstSeen` to `lastSeen`; only the identities, protocol and
   * destination port are the key's, the addresses and source port are the
   * last flow's), or the tail of a burst the event rate limit held back
   * (`suppressed` of them, the last one's addresses shown)
   */
  summary?: boolean;
  /** events of this kind (endpoint, verdict, reason) the datapath's rate limit held back just before this one */
  suppressed?: number;
  /** a summary's first and last flow */
  firstSeen?: string;
  lastSeen?: string;
  /**
   * Arrived from another node through the tunnel (as Hubble's `tunnel`): the
   * outer source address, and the node whose underlay address it is (absent
   * when it is no node's: a forged packet). Set even when the packet was
   * dropped before its receiver was known; `src.identity` is then what the
   * packet claimed (the VNI), not a belief.
   */
  tunnel?: FlowTunnel;
}

export interface FlowTunnel {
  protocol: 'vxlan';
  /** the outer source address */
  source: string;
  /** the node whose underlay address that is */
  node?: string;
}

/** Records a node counts as going through: allowed, or passed in audit mode. */
export function wentThrough(r: Pick<FlowRecord, 'verdict'>): boolean {
  return r.verdict === 'ALLOWED' || r.verdict === 'AUDIT';
}

/**
 * Reasons of drops (and audits) that are a policy's verdict, not a check of
 * the packet itself: what a policy could have allowed (metrics, learning,
 * replay).
 */
export const POLICY_REASONS: ReadonlySet<string> = new Set(['policy-denied', 'host-denied']);

/** How many flows a record stands for (a summary or a deduplicated record: `count`). */
export function flowCount(r: Pick<FlowRecord, 'count'>): number {
  return r.count !== undefined && r.count > 0 ? r.count : 1;
}

function endText(p: FlowEnd): string {
  return `${p.name ?? p.ip}${p.name && p.name !== p.ip ? `(${p.ip})` : ''}${p.port !== undefined ? `:${p.port}` : ''}`;
}

/** One line, Hubble-style: "web(10.0.0.2):43512 -> api(10.0.0.3):8080 tcp DROPPED (policy-denied)". */
export function formatFlowLine(r: FlowRecord): string {
  const pol = [r.policies?.egress ? `egress=${r.policies.egress}` : '', r.policies?.ingress ? `ingress=${r.policies.ingress}` : ''].filter(Boolean).join(' ');
  const flags = r.tcpFlags ? ` [${r.tcpFlags}]` : '';
  const count =
    r.summary && r.suppressed !== undefined && r.count === undefined
      ? ` (summary: ${r.suppressed} like it held back by the rate limit, the last one shown)`
      : r.summary
        ? ` ×${flowCount(r)} (summary${r.firstSeen ? ` since ${r.firstSeen}` : ''})`
        : r.count && r.count > 1
          ? ` ×${r.count}`
          : r.suppressed
            ? ` (+${r.suppressed} like it before, not reported one by one)`
            : '';
  const tunnel = r.tunnel ? ` via ${r.tunnel.protocol} from ${r.tunnel.node ? `node ${r.tunnel.node} (${r.tunnel.source})` : `${r.tunnel.source} (no node)`} on ${r.interface}` : '';
  return `${r.time} ${endText(r.src)} -> ${endText(r.dst)} ${r.protocol}${flags} ${r.verdict} (${r.reason})${r.isReply ? ' reply' : ''}${pol ? ` ${pol}` : ''}${count}${tunnel}`;
}

// ------------------------------------------------------------ reading back

export class FlowRecordError extends Error {}

/** `none`: a record that is not a packet (a REPAIRED one: drift the daemon put right) */
const PROTOCOL_WORDS = /^(tcp|udp|sctp|icmp|arp|none|ip-proto-\d+|ethertype-0x[0-9a-f]{4})$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readEnd(v: unknown, field: string): FlowEnd {
  if (!isObject(v)) throw new FlowRecordError(`${field}: expected an object`);
  if (typeof v.identity !== 'number' || !Number.isInteger(v.identity) || v.identity < 0) throw new FlowRecordError(`${field}.identity: expected an identity number`);
  if (typeof v.ip !== 'string' || v.ip === '') throw new FlowRecordError(`${field}.ip: expected an address`);
  if (v.port !== undefined && (typeof v.port !== 'number' || !Number.isInteger(v.port) || v.port < 0 || v.port > 65535)) {
    throw new FlowRecordError(`${field}.port: expected a port 0-65535`);
  }
  if (v.name !== undefined && typeof v.name !== 'string') throw new FlowRecordError(`${field}.name: expected a string`);
  if (v.node !== undefined && typeof v.node !== 'string') throw new FlowRecordError(`${field}.node: expected a string`);
  let labels: Record<string, string> = {};
  if (v.labels !== undefined) {
    if (!isObject(v.labels) || Object.values(v.labels).some((x) => typeof x !== 'string')) throw new FlowRecordError(`${field}.labels: expected a map of strings`);
    labels = v.labels as Record<string, string>;
  }
  return {
    identity: v.identity,
    ...(v.name !== undefined ? { name: v.name } : {}),
    labels,
    ip: v.ip,
    ...(v.port !== undefined ? { port: v.port as number } : {}),
    ...(v.node !== undefined ? { node: v.node } : {}),
  };
}

/**
 * A flow record read back from JSON (a saved `bastion flows -o json`, the
 * flow history): checked field by field, so a file of something else fails
 * with the field that is wrong instead of giving a wrong answer later.
 * Records written before `direction`, `policies`, `interface` and `isReply`
 * existed (with `trace` and `rule`) are read too.
 */
export function readFlowRecord(v: unknown): FlowRecord {
  if (!isObject(v)) throw new FlowRecordError('expected a JSON object');
  if (typeof v.time !== 'string' || Number.isNaN(Date.parse(v.time))) throw new FlowRecordError('time: expected an ISO time');
  if (typeof v.verdict !== 'string' || v.verdict === '') throw new FlowRecordError('verdict: expected ALLOWED, DROPPED, AUDIT or ARP_REPLY');
  if (typeof v.reason !== 'string') throw new FlowRecordError('reason: expected a string');
  if (typeof v.protocol !== 'string' || !PROTOCOL_WORDS.test(v.protocol)) throw new FlowRecordError(`protocol: expected tcp, udp, sctp, icmp, arp or none, got ${JSON.stringify(v.protocol)}`);
  const src = readEnd(v.src, 'src');
  const dst = readEnd(v.dst, 'dst');
  let direction: FlowRecord['direction'];
  if (v.direction === 'egress' || v.direction === 'ingress') direction = v.direction;
  else if (v.direction === undefined && (v.trace === 'from-container' || v.trace === 'to-container')) direction = v.trace === 'from-container' ? 'egress' : 'ingress';
  else throw new FlowRecordError('direction: expected egress or ingress');
  let policies: FlowRecord['policies'] = {};
  if (isObject(v.policies)) {
    for (const side of ['egress', 'ingress'] as const) {
      const p = v.policies[side];
      if (p !== undefined && typeof p !== 'string') throw new FlowRecordError(`policies.${side}: expected a policy name`);
      if (p !== undefined) policies[side] = p;
    }
  } else if (v.policies !== undefined) throw new FlowRecordError('policies: expected an object');
  else if (typeof v.rule === 'string') policies = direction === 'egress' ? { egress: v.rule } : { ingress: v.rule };
  const num = (k: string): number | undefined => {
    const x = v[k];
    if (x === undefined) return undefined;
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) throw new FlowRecordError(`${k}: expected a number`);
    return x;
  };
  const str = (k: string): string | undefined => {
    const x = v[k];
    if (x === undefined) return undefined;
    if (typeof x !== 'string') throw new FlowRecordError(`${k}: expected a string`);
    return x;
  };
  const r: FlowRecord = {
    time: v.time,
    verdict: v.verdict,
    reason: v.reason,
    direction,
    protocol: v.protocol,
    src,
    dst,
    policies,
    interface: str('interface') ?? '',
    isReply: v.isReply === true,
  };
  const tcpFlags = str('tcpFlags');
  if (tcpFlags !== undefined) r.tcpFlags = tcpFlags;
  const endpoint = str('endpoint');
  if (endpoint !== undefined) r.endpoint = endpoint;
  const bytes = num('bytes');
  if (bytes !== undefined) r.bytes = bytes;
  const count = num('count');
  if (count !== undefined) r.count = count;
  if (v.summary === true) r.summary = true;
  const suppressed = num('suppressed');
  if (suppressed !== undefined) r.suppressed = suppressed;
  for (const k of ['firstSeen', 'lastSeen'] as const) {
    const t = str(k);
    if (t !== undefined) {
      if (Number.isNaN(Date.parse(t))) throw new FlowRecordError(`${k}: expected an ISO time`);
      r[k] = t;
    }
  }
  if (v.tunnel !== undefined) {
    const t = v.tunnel;
    if (!isObject(t) || t.protocol !== 'vxlan') throw new FlowRecordError('tunnel.protocol: expected vxlan');
    if (typeof t.source !== 'string' || t.source === '') throw new FlowRecordError('tunnel.source: expected an address');
    if (t.node !== undefined && typeof t.node !== 'string') throw new FlowRecordError('tunnel.node: expected a string');
    r.tunnel = { protocol: 'vxlan', source: t.source, ...(t.node !== undefined ? { node: t.node } : {}) };
  }
  return r;
}
