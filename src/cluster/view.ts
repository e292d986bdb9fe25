/**
 * The cluster as one node sees it: node records, endpoint records and
 * policies, from the store's snapshot and watch, and the endpoints this node
 * may believe. Pure: records in, decisions and deltas out; no I/O.
 *
 * An endpoint record of node N is believed ("ok") only when
 *   1. N has a node record (its lease is alive): that gives its underlay address;
 *   2. the identity it claims was granted to N for this endpoint, by a record
 *      written once and never rewritten (identities.ts);
 *   3. no other believable endpoint holds its IPv4 address since an earlier
 *      revision: addresses do not overlap across the cluster. Every node
 *      decides the same way from the same records, and the node that holds
 *      the later record learns it lost (`refused`) and says so.
 * Anything else is "pending" (1) or "refused" (2, 3) with the reason.
 */
import { decodeRecord, EndpointRecordSchema, IdentityRecordSchema, NodeRecordSchema, parseKey, type EndpointRecord, type NodeRecord } from './keys.js';
import { claimHolds, type IdentityClaim } from './identities.js';
import type { KvMeta } from './etcd.js';
import { parsePoliciesDocument } from '../policy/policy-document.js';
import type { PolicyConfig } from '../policy/bastion-config.js';

/** One change of one key, as the watch (or a snapshot) reports it. */
export type KeyEvent = { type: 'put'; key: string; value: string; meta: KvMeta } | { type: 'delete'; key: string };

/** A believable endpoint, with its node's underlay address. */
export interface ResolvedEndpoint {
  /** `${node}/${key}` */
  id: string;
  node: string;
  nodeIp: string;
  key: string;
  name: string;
  identity: number;
  ipv4: string;
  mac: string;
  labels: Record<string, string>;
  namedPorts?: EndpointRecord['namedPorts'];
}

export type Verdict = { state: 'ok' } | { state: 'pending' | 'refused'; reason: string };

export interface StoredEndpoint {
  id: string;
  node: string;
  record: EndpointRecord;
  meta: KvMeta;
}

export interface StoredNode {
  record: NodeRecord;
  meta: KvMeta;
}

export interface StoredPolicy {
  policy: PolicyConfig;
  meta: KvMeta;
}

/** What one batch of events changed, for the node that applies it. */
export interface ViewDelta {
  /** believable endpoints of other nodes that appeared or changed */
  upserted: ResolvedEndpoint[];
  /** ids of endpoints of other nodes no longer believable (gone, refused, node gone) */
  removed: string[];
  /** this node's own endpoints whose verdict changed (refused ones carry the reason) */
  own: Array<{ key: string; verdict: Verdict }>;
  /** the node set changed (underlay addresses) */
  nodesChanged: boolean;
  policiesSet: PolicyConfig[];
  policiesDeleted: string[];
  /** records that do not validate (ignored), by key */
  invalid: Array<{ key: string; error: string }>;
  /** identity records deleted or rewritten: never done by Bastion, so someone tampered */
  tampered: Array<{ key: string; what: string }>;
}

export function endpointId(node: string, key: string): string {
  return `${node}/${key}`;
}

export class ClusterView {
  readonly nodes = new Map<string, StoredNode>();
  readonly endpoints = new Map<string, StoredEndpoint>();
  readonly policies = new Map<string, StoredPolicy>();
  /** identity claims of the identities endpoint records name; filled by the caller (see missingClaims) */
  readonly claims = new Map<number, IdentityClaim>();
  /** records that did not validate, by key */
  readonly invalid = new Map<string, string>();
  private readonly byIp = new Map<string, Set<string>>();
  private readonly byNode = new Map<string, Set<string>>();
  /** endpoints by the identity they claim: an identity record's change touches only them */
  private readonly byIdentity = new Map<number, Set<string>>();
  /** the last verdict of every endpoint */
  private readonly verdicts = new Map<string, Verdict>();
  /** the believable endpoints as last reported */
  private readonly effective = new Map<string, ResolvedEndpoint>();

  constructor(readonly self: string) {}

  /** Identities named by endpoint records in these events that have no claim loaded yet. */
  missingClaims(events: readonly KeyEvent[]): number[] {
    const out = new Set<number>();
    for (const ev of events) {
      if (ev.type !== 'put') continue;
      const k = parseKey(ev.key);
      if (k.kind !== 'endpoint') continue;
      const d = decodeRecord(EndpointRecordSchema, ev.key, ev.value);
      if (d.ok && !this.claims.has(d.value.identity)) out.add(d.value.identity);
    }
    return [...out];
  }

  verdict(id: string): Verdict | undefined {
    return this.verdicts.get(id);
  }

  resolved(id: string): ResolvedEndpoint | undefined {
    return this.effective.get(id);
  }

  /** Believable endpoints of other nodes. */
  remoteEndpoints(): ResolvedEndpoint[] {
    return [...this.effective.values()].filter((e) => e.node !== this.self);
  }

  /** Underlay addresses of the other nodes. */
  remoteNodeAddresses(): string[] {
    return [...this.nodes.entries()]
      .filter(([n]) => n !== this.self)
      .map(([, s]) => s.record.underlay)
      .sort();
  }

  /** Who holds an address, among believable endpoints (overlap checks before publishing). */
  holderOf(ipv4: string): ResolvedEndpoint | undefined {
    for (const id of this.byIp.get(ipv4) ?? []) {
      const e = this.effective.get(id);
      if (e) return e;
    }
    return undefined;
  }

  apply(events: readonly KeyEvent[]): ViewDelta {
    const delta: ViewDelta = { upserted: [], removed: [], own: [], nodesChanged: false, policiesSet: [], policiesDeleted: [], invalid: [], tampered: [] };
    const touched = new Set<string>();
    const touchIp = (ip: string) => {
      for (const id of this.byIp.get(ip) ?? []) touched.add(id);
    };
    const touchNode = (node: string) => {
      for (const id of this.byNode.get(node) ?? []) touched.add(id);
    };

    for (const ev of events) {
      const k = parseKey(ev.key);
      if (ev.type === 'put') this.invalid.delete(ev.key);
      switch (k.kind) {
        case 'node': {
          if (ev.type === 'delete') {
            if (this.nodes.delete(k.node)) delta.nodesChanged = true;
          } else {
            const d = decodeRecord(NodeRecordSchema, ev.key, ev.value);
            if (!d.ok || d.value.name !== k.node) {
              const error = d.ok ? `${ev.key}: name: "${d.value.name}" is not the node of this key` : d.error;
              this.invalid.set(ev.key, error);
              delta.invalid.push({ key: ev.key, error });
              if (this.nodes.delete(k.node)) delta.nodesChanged = true;
            } else {
              const before = this.nodes.get(k.node);
              this.nodes.set(k.node, { record: d.value, meta: ev.meta });
              if (!before || before.record.underlay !== d.value.underlay) delta.nodesChanged = true;
            }
          }
          touchNode(k.node);
          break;
        }
        case 'endpoint': {
          const id = endpointId(k.node, k.endpoint);
          const old = this.endpoints.get(id);
          if (old) {
            this.unindex(old);
            touchIp(old.record.ipv4);
          }
          touched.add(id);
          if (ev.type === 'delete') {
            this.endpoints.delete(id);
            break;
          }
          const d = decodeRecord(EndpointRecordSchema, ev.key, ev.value);
          if (!d.ok || d.value.key !== k.endpoint) {
            const error = d.ok ? `${ev.key}: key: "${d.value.key}" is not the endpoint of this key` : d.error;
            this.invalid.set(ev.key, error);
            delta.invalid.push({ key: ev.key, error });
            this.endpoints.delete(id);
            break;
          }
          const s: StoredEndpoint = { id, node: k.node, record: d.value, meta: ev.meta };
          this.endpoints.set(id, s);
          this.index(s);
          touchIp(d.value.ipv4);
          break;
        }
        case 'identity': {
          // Bastion writes an identity record once and never deletes it.
          const tampered = ev.type === 'delete' ? 'deleted' : ev.meta.version > 1 ? `rewritten (version ${ev.meta.version})` : undefined;
          if (tampered) delta.tampered.push({ key: ev.key, what: tampered });
          if (!this.claims.has(k.id)) break; // only the identities endpoints name are kept
          if (ev.type === 'delete' || tampered) this.claims.set(k.id, { version: -1 });
          else {
            const d = decodeRecord(IdentityRecordSchema, ev.key, ev.value);
            this.claims.set(k.id, d.ok ? { record: d.value, version: ev.meta.version } : { version: -1 });
          }
          for (const id of this.byIdentity.get(k.id) ?? []) touched.add(id);
          break;
        }
        case 'policy': {
          if (ev.type === 'delete') {
            if (this.policies.delete(k.name)) delta.policiesDeleted.push(k.name);
            break;
          }
          if (this.policies.get(k.name)?.meta.modRevision === ev.meta.modRevision) break; // seen (a resync)
          const parsed = parsePolicyValue(ev.key, k.name, ev.value);
          if (!parsed.ok) {
            this.invalid.set(ev.key, parsed.error);
            delta.invalid.push({ key: ev.key, error: parsed.error });
            if (this.policies.delete(k.name)) delta.policiesDeleted.push(k.name);
            break;
          }
          this.policies.set(k.name, { policy: parsed.policy, meta: ev.meta });
          delta.policiesSet.push(parsed.policy);
          break;
        }
        default:
          break;
      }
    }

    // Verdicts can move in a chain (an address freed lets the next holder
    // in): recompute until nothing new is touched.
    const done = new Set<string>();
    while (touched.size > 0) {
      const id = touched.values().next().value as string;
      touched.delete(id);
      if (done.has(id)) continue;
      done.add(id);
      const s = this.endpoints.get(id);
      const before = this.effective.get(id);
      const v: Verdict = s ? this.decide(s) : { state: 'pending', reason: 'gone' };
      const prevVerdict = this.verdicts.get(id);
      if (s) this.verdicts.set(id, v);
      else this.verdicts.delete(id);
      const node = s?.node ?? id.slice(0, id.indexOf('/'));
      if (node === this.self && s && !sameVerdict(prevVerdict, v)) delta.own.push({ key: s.record.key, verdict: v });
      if (v.state === 'ok' && s) {
        const r = this.resolve(s);
        this.effective.set(id, r);
        if (node !== this.self && (!before || !sameResolved(before, r))) delta.upserted.push(r);
        if (!before || before.ipv4 !== r.ipv4) {
          // a new holder of an address: its rivals' verdicts change
          touchIp(r.ipv4);
          if (before) touchIp(before.ipv4);
        }
      } else if (before) {
        this.effective.delete(id);
        if (node !== this.self) delta.removed.push(id);
        touchIp(before.ipv4);
      }
    }
    return delta;
  }

  private decide(s: StoredEndpoint): Verdict {
    const node = this.nodes.get(s.node);
    if (!node) return { state: 'pending', reason: `node ${s.node} has no node record (not started, or its lease expired)` };
    const claim = this.claims.get(s.record.identity);
    if (!claim || !claimHolds(claim, s.node, s.record.key)) {
      const why = !claim || claim.version === 0 ? 'was never granted' : claim.version < 0 || claim.version > 1 ? 'has a tampered record' : `was granted to ${claim.record?.node}/${claim.record?.endpoint}`;
      return { state: 'refused', reason: `identity ${s.record.identity} ${why}, not to ${s.node}/${s.record.key}` };
    }
    const holder = this.earliestHolder(s.record.ipv4, s.id);
    if (holder && holder.id !== s.id) {
      return { state: 'refused', reason: `address ${s.record.ipv4} is already held by node ${holder.node} (endpoint ${holder.record.name}); ${s.node}/${s.record.name} is refused` };
    }
    return { state: 'ok' };
  }

  /** Of the endpoints with this address that pass checks 1 and 2, the one recorded first. */
  private earliestHolder(ip: string, self: string): StoredEndpoint | undefined {
    let best: StoredEndpoint | undefined;
    for (const id of this.byIp.get(ip) ?? []) {
      const e = this.endpoints.get(id)!;
      if (id !== self) {
        if (!this.nodes.has(e.node)) continue;
        const c = this.claims.get(e.record.identity);
        if (!c || !claimHolds(c, e.node, e.record.key)) continue;
      }
      if (!best || e.meta.createRevision < best.meta.createRevision || (e.meta.createRevision === best.meta.createRevision && e.id < best.id)) best = e;
    }
    return best;
  }

  private resolve(s: StoredEndpoint): ResolvedEndpoint {
    const r = s.record;
    return {
      id: s.id,
      node: s.node,
      nodeIp: this.nodes.get(s.node)!.record.underlay,
      key: r.key,
      name: r.name,
      identity: r.identity,
      ipv4: r.ipv4,
      mac: r.mac,
      labels: r.labels,
      ...(r.namedPorts ? { namedPorts: r.namedPorts } : {}),
    };
  }

  private index(s: StoredEndpoint): void {
    let a = this.byIp.get(s.record.ipv4);
    if (!a) this.byIp.set(s.record.ipv4, (a = new Set()));
    a.add(s.id);
    let n = this.byNode.get(s.node);
    if (!n) this.byNode.set(s.node, (n = new Set()));
    n.add(s.id);
    let i = this.byIdentity.get(s.record.identity);
    if (!i) this.byIdentity.set(s.record.identity, (i = new Set()));
    i.add(s.id);
  }

  private unindex(s: StoredEndpoint): void {
    const a = this.byIp.get(s.record.ipv4);
    a?.delete(s.id);
    if (a?.size === 0) this.byIp.delete(s.record.ipv4);
    const n = this.byNode.get(s.node);
    n?.delete(s.id);
    if (n?.size === 0) this.byNode.delete(s.node);
    const i = this.byIdentity.get(s.record.identity);
    i?.delete(s.id);
    if (i?.size === 0) this.byIdentity.delete(s.record.identity);
  }
}

function parsePolicyValue(key: string, name: string, value: string): { ok: true; policy: PolicyConfig } | { ok: false; error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch (err) {
    return { ok: false, error: `${key}: not JSON (${(err as Error).message})` };
  }
  const parsed = parsePoliciesDocument(JSON.stringify({ policies: [raw] }), key);
  if (!parsed.ok) return { ok: false, error: parsed.errors.join('; ') };
  const p = parsed.policies[0]!;
  if (p.name !== name) return { ok: false, error: `${key}: name: "${p.name}" is not the policy of this key` };
  return { ok: true, policy: p };
}

function sameVerdict(a: Verdict | undefined, b: Verdict): boolean {
  if (!a || a.state !== b.state) return false;
  return a.state === 'ok' || (a as { reason: string }).reason === (b as { reason: string }).reason;
}

function sameResolved(a: ResolvedEndpoint, b: ResolvedEndpoint): boolean {
  return (
    a.nodeIp === b.nodeIp &&
    a.identity === b.identity &&
    a.ipv4 === b.ipv4 &&
    a.mac === b.mac &&
    a.name === b.name &&
    JSON.stringify(a.labels) === JSON.stringify(b.labels) &&
    JSON.stringify(a.namedPorts ?? null) === JSON.stringify(b.namedPorts ?? null)
  );
}
