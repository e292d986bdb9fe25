/**
 * Flow events from the datapath, named (containers, rules) and passed on:
 * into the recent-flows store (the API, followers, metrics) and the log,
 * one JSON line each.
 */
import type { Logger } from 'pino';
import type { Manager } from '../manager/manager.js';
import type { DatapathPort } from '../manager/ports.js';
import { describeFlow, type FlowStore } from '../agent/flow-log.js';

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
