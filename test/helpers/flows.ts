/** Flow records for tests of learning, replay and filters: the shapes the daemon writes. */
import type { FlowEnd, FlowRecord } from '../../src/flows/record.js';

export interface Workload {
  name: string;
  identity: number;
  ip: string;
  labels: Record<string, string>;
}

export const HOST: Omit<FlowEnd, 'port'> = { identity: 1, name: 'host', labels: {}, ip: '10.9.0.1' };

export function world(ip: string): Omit<FlowEnd, 'port'> {
  return { identity: 2, name: 'world', labels: {}, ip };
}

export function ws(name: string, identity: number, ip: string, labels: Record<string, string> = { app: name }): Workload {
  return { name, identity, ip, labels: { ...labels, 'bastion.io/name': name } };
}

function endOf(w: Workload | Omit<FlowEnd, 'port'>, port?: number): FlowEnd {
  return 'labels' in w && 'name' in w && 'identity' in w
    ? { identity: w.identity, ...(w.name !== undefined ? { name: w.name } : {}), labels: w.labels, ip: w.ip, ...(port !== undefined ? { port } : {}) }
    : (w as FlowEnd);
}

let clock = Date.parse('2024-05-01T10:00:00Z');

/** A new connection from `src` to `dst` on `port`/`protocol` with this verdict (default ALLOWED), a second after the last one. */
export function flow(
  src: Workload | Omit<FlowEnd, 'port'>,
  dst: Workload | Omit<FlowEnd, 'port'>,
  port: number | 'icmp',
  o: { protocol?: string; verdict?: string; reason?: string; time?: number; sport?: number; policies?: FlowRecord['policies']; isReply?: boolean } = {},
): FlowRecord {
  const protocol = port === 'icmp' ? 'icmp' : (o.protocol ?? 'tcp');
  const verdict = o.verdict ?? 'ALLOWED';
  clock += 1000;
  const time = o.time ?? clock;
  return {
    time: new Date(time).toISOString(),
    verdict,
    reason: o.reason ?? (verdict === 'ALLOWED' ? 'allowed-new' : 'policy-denied'),
    direction: 'egress',
    protocol,
    src: endOf(src, protocol === 'icmp' ? undefined : (o.sport ?? 40000 + (time % 20000))),
    dst: endOf(dst, protocol === 'icmp' ? undefined : (port as number)),
    policies: o.policies ?? {},
    interface: `veth-${'name' in src ? src.name : 'x'}`,
    isReply: o.isReply ?? false,
    endpoint: 'name' in src ? src.name : undefined,
    bytes: 60,
  };
}
