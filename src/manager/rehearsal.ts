/**
 * A policy change rehearsed on scratch state, once, at start-up.
 *
 * The first change after start-up ran the compiler's rule indexing, the
 * slice compiler and the store's diff for the first time, and V8 compiled
 * their code then, on the change's clock (at 5,000 containers the first of
 * 60 updates was the slowest in every benchmark run: compile 0.7-0.9 ms
 * against 0.1; after the rehearsal, 0.19 ms). Running
 * the same code on two made-up endpoints and a compiler, a store and rule
 * numbers of its own moves that to start-up. Nothing here reaches the
 * manager's state or the kernel: the rehearsal's objects are dropped when
 * it returns.
 */
import { SliceCompiler, type SliceEnv } from './slices.js';
import { SliceStore } from './entries.js';
import type { Endpoint } from './endpoint.js';
import { parsePoliciesDocument } from '../policy/policy-document.js';
import { policyToRules } from '../policy/bastion-config.js';

/** Identities far above any the allocator hands out soon (never written anywhere). */
const SCRATCH_IDENTITY = 0x7fff_0000;

function scratchEndpoint(i: number, app: string): Endpoint {
  return {
    key: `rehearsal:${app}`,
    name: app,
    netns: { kind: 'name', name: `rehearsal-${app}` },
    interface: 'eth0',
    labels: { app },
    identity: SCRATCH_IDENTITY + i,
    ipv4: `192.0.2.${10 + i}`, // TEST-NET-1: documentation only
    mac: `02:00:00:00:00:${(10 + i).toString(16).padStart(2, '0')}`,
    hostIfindex: 0x7fff_0000 + i,
    hostIfname: `rehearsal${i}`,
    gwMac: '02:00:00:00:00:01',
  };
}

/**
 * Add `rounds` dependencies between two scratch endpoints the way a runtime
 * policy is applied: how long it took, and the writes each round's commit
 * would have made (the rehearsal only counts them).
 */
export function rehearsePolicyChanges(rounds = 3): { ms: number; writes: number[] } {
  const t0 = performance.now();
  const numbers = new Map<string, number>();
  const compiler = new SliceCompiler({
    ruleNumber: (id) => {
      let n = numbers.get(id);
      if (n === undefined) numbers.set(id, (n = numbers.size + 1));
      return n;
    },
    cidrIdentity: () => SCRATCH_IDENTITY + 100,
  });
  const endpoints = new Map<string, Endpoint>();
  ['client', 'server'].forEach((app, i) => {
    const ep = scratchEndpoint(i, app);
    endpoints.set(ep.key, ep);
    compiler.upsertEndpoint(ep);
  });
  const env: SliceEnv = { endpoints, hostAddrs: [], mode: 'enforce' };
  const store = new SliceStore();
  const writes: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const doc = { policies: [{ name: `rehearsal-${i}`, from: { app: 'client' }, to: { app: 'server' }, ports: [`${8000 + i}/tcp`] }] };
    const parsed = parsePoliciesDocument(JSON.stringify(doc), 'rehearsal');
    if (!parsed.ok) throw new Error(`policy change rehearsal: ${parsed.errors.join('; ')}`);
    const touched = compiler.changeRules(parsed.policies.flatMap(policyToRules), []);
    for (const key of touched) store.replace(key, compiler.endpointSlice(endpoints.get(key)!, env));
    writes.push(store.commit().length);
  }
  return { ms: performance.now() - t0, writes };
}
