/**
 * Flow events from the datapath, named (containers, rules) and passed on:
 * into the recent-flows store (the API, followers, metrics) and the log,
 * one JSON line each.
 */
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { DatapathPort } from '../manager/ports.js';
import type { Repair } from '../manager/reconciler.js';
import { describeFlow, type FlowRecord, type FlowStore } from '../agent/flow-log.js';

export function logFlows(datapath: DatapathPort, manager: Manager, flows: FlowStore, log: Logger): void {
  const names = {
    identityName: (id: number) => manager.identityName(id),
    ruleName: (n: number) => manager.rules.name(n),
    endpointName: (ifindex: number) => manager.endpointByIfindex(ifindex)?.name,
  };
  datapath.onEvent((ev) => {
    const rec = describeFlow(ev, names);
    flows.push(rec);
    const { time, ...fields } = rec;
    log.info({ flowTime: time, ...fields }, 'flow');
  });
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
  const srcName = ep?.name ?? name(r.identity);
  const dstName = name(r.peer);
  return {
    time: now.toISOString(),
    verdict: REPAIRED,
    reason: `${r.map}-${r.kind}`,
    trace: 'reconciler',
    protocol: 'none',
    src: { identity: r.identity ?? ep?.identity ?? 0, ...(srcName !== undefined ? { name: srcName } : {}), ip: ep?.ipv4 ?? '0.0.0.0' },
    dst: { identity: r.peer ?? 0, ...(dstName !== undefined ? { name: dstName } : {}), ip: '0.0.0.0' },
    ...(ep ? { endpoint: ep.name } : {}),
    bytes: 0,
  };
}
