/**
 * Identities allocated cluster-wide, never reused.
 *
 * One counter key holds the next identity never granted. A node takes one
 * with a transaction that succeeds only if nobody moved the counter since
 * the node read it (mod revision compare) and nobody holds a record for that
 * number (create revision 0), and that writes both the counter and the
 * identity's record: who it was granted to (node, endpoint key). Two nodes
 * racing for the same number: one transaction wins, the other reads again.
 *
 * Records are written once and never deleted, so a number is never granted
 * twice even if the counter were rewound (a stolen node credential can write
 * here: nodes must be able to allocate). A counter found behind an existing
 * record is skipped past, and the receivers of endpoint records check each
 * identity against its record (view.ts): a record that was rewritten
 * (version > 1) or names another endpoint disqualifies the claim.
 */
import type { Etcd3 } from 'etcd3';
import { ID_FIRST_DYNAMIC } from '../datapath/layout.js';
import { CLUSTER_ID_MAX, IDENTITY_COUNTER_KEY, IdentityRecordSchema, decodeRecord, identityRecordKey, type IdentityRecord } from './keys.js';

export class IdentitiesExhausted extends Error {}

/** How many transactions a node tries before it reports contention. */
const MAX_ATTEMPTS = 50;

export async function allocateIdentity(client: Etcd3, node: string, endpoint: string, now = () => new Date()): Promise<number> {
  let floor = ID_FIRST_DYNAMIC;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const res = await client.get(IDENTITY_COUNTER_KEY).exec();
    const kv = res.kvs[0];
    const stored = kv ? Number(kv.value.toString()) : ID_FIRST_DYNAMIC;
    const counterRev = kv ? kv.mod_revision : '0';
    const candidate = Math.max(Number.isSafeInteger(stored) ? stored : ID_FIRST_DYNAMIC, floor);
    if (candidate > CLUSTER_ID_MAX) throw new IdentitiesExhausted(`the cluster has granted every identity up to ${CLUSTER_ID_MAX} (they are never reused)`);
    const record: IdentityRecord = { node, endpoint, allocatedAt: now().toISOString() };
    const txn = await client
      .if(IDENTITY_COUNTER_KEY, 'Mod', '==', counterRev)
      .and(identityRecordKey(candidate), 'Create', '==', 0)
      .then(client.put(IDENTITY_COUNTER_KEY).value(String(candidate + 1)), client.put(identityRecordKey(candidate)).value(JSON.stringify(record)))
      .commit();
    if (txn.succeeded) return candidate;
    // Lost a race, or the counter is behind a record that exists: never
    // take a number somebody holds; look past it.
    const held = await client.get(identityRecordKey(candidate)).exec();
    if (held.kvs.length > 0) floor = candidate + 1;
  }
  throw new Error(`could not allocate an identity after ${MAX_ATTEMPTS} attempts (contention on ${IDENTITY_COUNTER_KEY})`);
}

export interface IdentityClaim {
  record?: IdentityRecord;
  /** times the record was written: 1 for a record nobody tampered with */
  version: number;
}

/** The record of one identity, as stored (undefined when there is none or it does not validate). */
export async function readIdentity(client: Etcd3, id: number): Promise<IdentityClaim> {
  const res = await client.get(identityRecordKey(id)).exec();
  return claimOf(id, res.kvs[0]);
}

/** Identities read per transaction: one round trip for a batch of new endpoints, under etcd's default --max-txn-ops of 128. */
const READS_PER_TXN = 100;

/**
 * The records of many identities, a transaction of reads at a time: a node
 * learning another node's 5,000 endpoints reads their 5,000 identity
 * records in 50 round trips instead of 5,000 (20 s of the time to converge
 * on a loaded two-core machine, test/integration/cluster-scale.test.ts).
 * The identity keys are not one lexicographic range (decimal numbers), so a
 * transaction of point reads it is. The reads go in both branches: a
 * transaction needs a comparison, and whichever way it goes they run.
 */
export async function readIdentities(client: Etcd3, ids: readonly number[]): Promise<Map<number, IdentityClaim>> {
  const out = new Map<number, IdentityClaim>();
  for (let first = 0; first < ids.length; first += READS_PER_TXN) {
    const chunk = ids.slice(first, first + READS_PER_TXN);
    if (chunk.length === 1) {
      out.set(chunk[0]!, await readIdentity(client, chunk[0]!));
      continue;
    }
    const reads = () => chunk.map((id) => client.get(identityRecordKey(id)));
    const res = await client.if(IDENTITY_COUNTER_KEY, 'Version', '>', 0).then(...reads()).else(...reads()).commit();
    res.responses.forEach((r, i) => {
      const id = chunk[i]!;
      const kv = r.response_range?.kvs[0];
      out.set(id, claimOf(id, kv));
    });
  }
  return out;
}

function claimOf(id: number, kv: { value: Buffer; version: string } | undefined): IdentityClaim {
  if (!kv) return { version: 0 };
  const d = decodeRecord(IdentityRecordSchema, identityRecordKey(id), kv.value.toString());
  return d.ok ? { record: d.value, version: Number(kv.version) } : { version: Number(kv.version) };
}

/** Does this identity belong to this node's endpoint (and was its record never rewritten)? */
export function claimHolds(claim: IdentityClaim, node: string, endpoint: string): boolean {
  return claim.version === 1 && claim.record?.node === node && claim.record.endpoint === endpoint;
}
