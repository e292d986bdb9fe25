/**
 * Flow events from the datapath, named (containers and their labels,
 * policies, interfaces) and passed on: into the recent-flows store (the
 * API, followers, metrics), the flow history on disk, and the log, one JSON
 * line each.
 */
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { DatapathPort } from '../manager/ports.js';
import { describeFlow, type FlowNames, type FlowStore } from '../agent/flow-log.js';
import type { FlowHistory } from '../flows/history.js';
import type { FlowRecord } from '../flows/record.js';

/** How the manager names what a flow event holds by number. */
export function flowNames(manager: Manager): FlowNames {
  return {
    identityName: (id) => manager.identityName(id),
    identityLabels: (id) => manager.endpointByIdentity(id)?.labels,
    ruleName: (n) => manager.rules.name(n),
    endpointName: (ifindex) => manager.endpointByIfindex(ifindex)?.name,
    interfaceName: (ifindex) => manager.endpointByIfindex(ifindex)?.hostIfname,
  };
}

/** One record to every consumer: the store (and its followers), the history, the log. */
export function recordFlow(rec: FlowRecord, flows: FlowStore, history: FlowHistory | undefined, log: Logger): void {
  flows.push(rec);
  history?.append(rec);
  const { time, ...fields } = rec;
  log.info({ flowTime: time, ...fields }, 'flow');
}

export function logFlows(datapath: DatapathPort, manager: Manager, flows: FlowStore, history: FlowHistory | undefined, log: Logger): void {
  const names = flowNames(manager);
  datapath.onEvent((ev) => recordFlow(describeFlow(ev, names), flows, history, log));
}
