/**
 * GET /v1/graph: the dependency graph of the rules in force over the
 * endpoints the manager holds (src/policy/graph.ts), with endpoint names
 * and the rule rows of the status report. Computed again only when the
 * manager's rules or endpoints changed.
 */
import type { Manager } from '../manager/manager.js';
import type { Endpoint } from '../manager/endpoint.js';
import type { Rule } from '../policy/model.js';
import type { GraphExternal, GraphReport } from '../api/types.js';
import { dependencyGraph, type GraphEnd } from '../policy/graph.js';
import { portSetText } from '../policy/port-set.js';
import { peerText, ruleRows } from './status.js';

export function graphReport(manager: Manager): GraphReport {
  const endpoints = [...manager.endpoints.values()].sort((a, b) => a.name.localeCompare(b.name));
  const rules = manager.ruleList();
  const g = dependencyGraph(rules, endpoints);
  const nameOf = new Map(endpoints.map((e) => [e.key, e.name]));
  const externals = new Map<string, GraphExternal>();
  const endId = (end: GraphEnd, id: string): string => {
    if (end.kind === 'endpoint') return nameOf.get(end.key) ?? end.key;
    if (!externals.has(id)) {
      externals.set(
        id,
        end.kind === 'cidr' ? { id, kind: 'cidr', label: peerText(end.peer), cidr: end.peer.cidr } : { id, kind: end.kind, label: end.kind },
      );
    }
    return id;
  };
  return {
    generation: manager.generation,
    endpoints: endpoints.map((e) => ({ name: e.name, key: e.key, ...(g.rulesOf.get(e.key) ?? { egress: [], ingress: [] }) })),
    edges: g.edges.map((e) => ({ from: endId(e.fromEnd, e.from), to: endId(e.toEnd, e.to), ports: portSetText(e.ports), rules: e.rules })),
    externals: [...externals.values()],
    rules: ruleRows(rules),
    truncated: g.truncated,
  };
}

/**
 * The last report, kept while the manager holds the same rule and endpoint
 * objects (both are replaced, never changed in place, when they change):
 * comparing them costs one pass over each list, the graph far more.
 */
export function cachedGraphReport(manager: () => Manager | undefined): () => GraphReport | undefined {
  let last: { rules: Rule[]; endpoints: Endpoint[]; report: GraphReport } | undefined;
  const same = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  return () => {
    const m = manager();
    if (!m) return undefined;
    const rules = m.ruleList();
    const endpoints = [...m.endpoints.values()];
    if (!last || !same(last.rules, rules) || !same(last.endpoints, endpoints)) last = { rules, endpoints, report: graphReport(m) };
    return { ...last.report, generation: m.generation };
  };
}
