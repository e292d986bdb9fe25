/**
 * The cluster's policies, one key each: what `bastion policy add|list|delete
 * --cluster` does, from any machine with the admin credentials. A change of
 * several policies is one transaction: all of them or none.
 */
import type { Etcd3 } from 'etcd3';
import { POLICIES_PREFIX, policyKey, parseKey } from './keys.js';
import { describePolicy, parsePoliciesDocument, toDocumentPolicy } from '../policy/policy-document.js';
import type { PolicyRow } from '../api/types.js';
import type { PolicyConfig } from '../policy/bastion-config.js';

/** etcd's default limit of operations in one transaction */
const MAX_TXN_OPS = 128;

export interface PolicyChange {
  name: string;
  action: 'created' | 'replaced';
}

/** Validate a `policies:` document and store it whole. Errors name the source and field. */
export async function addClusterPolicies(client: Etcd3, text: string, source: string): Promise<{ ok: true; changes: PolicyChange[] } | { ok: false; errors: string[] }> {
  const parsed = parsePoliciesDocument(text, source);
  if (!parsed.ok) return parsed;
  return { ok: true, changes: await putPolicies(client, parsed.policies) };
}

export async function putPolicies(client: Etcd3, policies: PolicyConfig[]): Promise<PolicyChange[]> {
  if (policies.length > MAX_TXN_OPS) throw new Error(`at most ${MAX_TXN_OPS} policies in one change (etcd's transaction limit); split the document`);
  const existing = await Promise.all(policies.map((p) => client.get(policyKey(p.name)).exec()));
  const changes = policies.map((p, i) => ({ name: p.name, action: (existing[i]!.kvs.length ? 'replaced' : 'created') as PolicyChange['action'] }));
  // Applied only if none of them changed since we looked: no lost update.
  let txn = client.if(policyKey(policies[0]!.name), 'Mod', '==', existing[0]!.kvs[0]?.mod_revision ?? 0);
  policies.slice(1).forEach((p, i) => (txn = txn.and(policyKey(p.name), 'Mod', '==', existing[i + 1]!.kvs[0]?.mod_revision ?? 0)));
  const res = await txn.then(...policies.map((p) => client.put(policyKey(p.name)).value(JSON.stringify(toDocumentPolicy(p))))).commit();
  if (!res.succeeded) throw new Error('another change to these policies happened at the same time; nothing applied, try again');
  return changes;
}

export async function listClusterPolicies(client: Etcd3): Promise<Array<PolicyRow & { revision: number }>> {
  const res = await client.getAll().prefix(POLICIES_PREFIX).exec();
  const rows: Array<PolicyRow & { revision: number }> = [];
  for (const kv of res.kvs) {
    const k = parseKey(kv.key.toString());
    if (k.kind !== 'policy') continue;
    let raw: unknown;
    try {
      raw = JSON.parse(kv.value.toString());
    } catch {
      continue;
    }
    const parsed = parsePoliciesDocument(JSON.stringify({ policies: [raw] }), kv.key.toString());
    if (!parsed.ok) continue;
    rows.push({ name: parsed.policies[0]!.name, source: 'cluster', ...describePolicy(parsed.policies[0]!), spec: toDocumentPolicy(parsed.policies[0]!), revision: Number(kv.mod_revision) });
  }
  return rows.sort((a, b) => a.name.localeCompare(b.name));
}

/** Delete by name, all or none: a name that is not there deletes nothing. */
export async function deleteClusterPolicies(client: Etcd3, names: string[]): Promise<{ ok: true } | { ok: false; missing: string[] }> {
  const existing = await Promise.all(names.map((n) => client.get(policyKey(n)).exec()));
  const missing = names.filter((_, i) => existing[i]!.kvs.length === 0);
  if (missing.length) return { ok: false, missing };
  let txn = client.if(policyKey(names[0]!), 'Version', '>', 0);
  names.slice(1).forEach((n) => (txn = txn.and(policyKey(n), 'Version', '>', 0)));
  const res = await txn.then(...names.map((n) => client.delete().key(policyKey(n)))).commit();
  if (!res.succeeded) return { ok: false, missing: names };
  return { ok: true };
}
