/**
 * Flow events from the datapath, named (containers and their labels,
 * policies, interfaces) and passed on: into the recent-flows store (the
 * API, followers, metrics), the flow history on disk, and the log, one JSON
 * line each.
 */
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { DatapathPort } from '../manager/ports.js';
import type { Repair } from '../manager/reconciler.js';
import { describeFlow, type FlowNames, type FlowStore } from '../agent/flow-log.js';
import type { FlowHistory } from '../flows/history.js';
import type { FlowRecord } from '../flows/record.js';

/** What a cluster node names besides the manager: its tunnel device, the other nodes by their underlay address. */
export interface ClusterNames {
  tunnelDevice(ifindex: number): string | undefined;
  nodeByUnderlay(address: string): string | undefined;
}

/** How the manager (and in cluster mode, the node) names what a flow event holds by number. */
export function flowNames(manager: Manager, cluster?: ClusterNames): FlowNames {
  return {
    identityName: (id) => manager.identityName(id),
    identityLabels: (id) => manager.identityLabels(id),
    identityNode: (id) => manager.identityNode(id),
    ruleName: (n) => manager.rules.name(n),
    endpointName: (ifindex) => manager.endpointByIfindex(ifindex)?.name,
    interfaceName: (ifindex) => manager.endpointByIfindex(ifindex)?.hostIfname ?? cluster?.tunnelDevice(ifindex),
    ...(cluster ? { nodeByUnderlay: (address: string) => cluster.nodeByUnderlay(address) } : {}),
  };
}

/** Where flow records go besides the store: the history, and the log (one line each). */
export interface FlowSinks {
  history?: FlowHistory;
  log: Logger;
  /**
   * Writes one line to the log's destination as it is. Given, a flow's log
   * line is made from the record's one JSON text (the one the history and
   * the followers get), with the fields pino would write: a flood costs one
   * serialization per record instead of three (pino's, the history's, the
   * followers'), which kept the daemon's growth under a SYN flood with
   * stalled followers at its level before flow records carried labels.
   */
  writeLogLine?: (line: string) => void;
}

const TIME_FIRST = '{"time":"';

/** One record to every consumer: the store (and its followers), the history, the log. */
export function recordFlow(rec: FlowRecord, flows: FlowStore, sinks: FlowSinks): void {
  const json = JSON.stringify(rec);
  flows.push(rec, json);
  sinks.history?.append(rec, json);
  if (!sinks.log.isLevelEnabled('info')) return;
  if (sinks.writeLogLine && json.startsWith(TIME_FIRST)) {
    // {"level":30,"time":NOW,"flowTime":"<record time>",...the record's other fields...,"msg":"flow"}
    sinks.writeLogLine(`{"level":30,"time":"${new Date().toISOString()}","flowTime":"${json.slice(TIME_FIRST.length, -1)},"msg":"flow"}\n`);
    return;
  }
  const { time, ...fields } = rec;
  sinks.log.info({ flowTime: time, ...fields }, 'flow');
}

export function logFlows(datapath: DatapathPort, manager: Manager, flows: FlowStore, sinks: FlowSinks, cluster?: ClusterNames): void {
  const names = flowNames(manager, cluster);
  datapath.onEvent((ev) => recordFlow(describeFlow(ev, names), flows, sinks));
}

/** The verdict of a flow record that is a repair, not a packet (`bastion flows --verdict REPAIRED`). */
export const REPAIRED = 'REPAIRED';

/**
 * A repair as a flow record, so that `bastion flows` shows it among the
 * packets: verdict REPAIRED, the reason names the map (or "stack") and what
 * was wrong (bastion_policy-missing, stack-reattached, ...), the source is
 * the endpoint the entry or stack belongs to, the destination the peer a
 * policy or neighbour entry names.
 */
export function repairRecord(r: Repair, manager: Manager, now = new Date()): FlowRecord {
  const ep = r.hostIfindex !== undefined ? manager.endpointByIfindex(r.hostIfindex) : r.identity !== undefined ? manager.endpointByIdentity(r.identity) : undefined;
  const name = (id: number | undefined) => (id === undefined ? undefined : manager.identityName(id));
  // a peer's labels and node as a packet's record names them (another node's endpoint included)
  const labels = (id: number | undefined) => (id === undefined ? {} : { ...(manager.identityLabels(id) ?? {}) });
  const srcName = ep?.name ?? name(r.identity);
  const dstName = name(r.peer);
  const peer = r.peer !== undefined ? manager.endpointByIdentity(r.peer) : undefined;
  const dstNode = r.peer !== undefined ? manager.identityNode(r.peer) : undefined;
  return {
    time: now.toISOString(),
    verdict: REPAIRED,
    reason: `${r.map}-${r.kind}`,
    direction: 'egress',
    protocol: 'none',
    src: { identity: r.identity ?? ep?.identity ?? 0, ...(srcName !== undefined ? { name: srcName } : {}), labels: ep ? { ...ep.labels } : labels(r.identity), ip: ep?.ipv4 ?? '0.0.0.0' },
    dst: {
      identity: r.peer ?? 0,
      ...(dstName !== undefined ? { name: dstName } : {}),
      labels: peer ? { ...peer.labels } : labels(r.peer),
      ip: peer?.ipv4 ?? '0.0.0.0',
      ...(dstNode !== undefined ? { node: dstNode } : {}),
    },
    policies: {},
    interface: ep?.hostIfname ?? '',
    isReply: false,
    ...(ep ? { endpoint: ep.name } : {}),
    bytes: 0,
  };
}
