/**
 * The cluster's key layout in etcd, and the records under each key.
 *
 *   /bastion/nodes/<node>                        node record, under the node's lease
 *   /bastion/endpoints/<node>/<endpoint key>     one per container interface, under the node's lease
 *   /bastion/identities/next                     the identity counter (transactions only)
 *   /bastion/identities/ids/<identity>           who an identity was granted to: written once, never deleted
 *   /bastion/policies/<name>                     one policy each, as in a `policies:` document
 *
 * Everything a node may write is under a prefix of its own (its node key,
 * its endpoints' prefix), so that `bastion cluster init` can give each node
 * an etcd role that writes only there (see roles.ts). Endpoint keys contain
 * '/' ("docker:<id>/<network>"): they are percent-encoded into one segment.
 *
 * Records are JSON, checked with zod when read: a record that does not
 * validate is ignored with a logged reason, never half used.
 */
import { z } from 'zod';

export const CLUSTER_PREFIX = '/bastion/';
export const NODES_PREFIX = `${CLUSTER_PREFIX}nodes/`;
export const ENDPOINTS_PREFIX = `${CLUSTER_PREFIX}endpoints/`;
export const IDENTITIES_PREFIX = `${CLUSTER_PREFIX}identities/`;
export const IDENTITY_COUNTER_KEY = `${IDENTITIES_PREFIX}next`;
export const IDENTITY_RECORDS_PREFIX = `${IDENTITIES_PREFIX}ids/`;
export const POLICIES_PREFIX = `${CLUSTER_PREFIX}policies/`;

/**
 * Identities of the cluster's endpoints travel in the VXLAN network
 * identifier (24 bits): they are allocated from ID_FIRST_DYNAMIC up to
 * CLUSTER_ID_MAX. A node's own identities for CIDR prefixes never leave the
 * node, and start at LOCAL_ID_FLOOR so the two never meet.
 */
export const CLUSTER_ID_MAX = 0xffffff;
export const LOCAL_ID_FLOOR = 0x1000000;

/** Node names: a DNS label. No '/', so one node's prefix never covers another's. */
export const NODE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkNodeName(name: string): string | undefined {
  if (!NODE_NAME.test(name)) return `node name "${name}": use lowercase letters, digits and '-' (a DNS label, at most 63 characters)`;
  return undefined;
}

/** The etcd user (and client certificate CN) of a node, and of the policy administrator. */
export function nodeUser(node: string): string {
  return `bastion-node-${node}`;
}
export const ADMIN_USER = 'bastion-admin';
export const ROOT_USER = 'root';

export function nodeKey(node: string): string {
  return `${NODES_PREFIX}${node}`;
}
export function nodeEndpointsPrefix(node: string): string {
  return `${ENDPOINTS_PREFIX}${node}/`;
}
export function endpointKey(node: string, endpoint: string): string {
  return `${nodeEndpointsPrefix(node)}${encodeURIComponent(endpoint)}`;
}
export function identityRecordKey(id: number): string {
  return `${IDENTITY_RECORDS_PREFIX}${id}`;
}
export function policyKey(name: string): string {
  return `${POLICIES_PREFIX}${encodeURIComponent(name)}`;
}

/** What a key is, from its text. */
export type ParsedKey =
  | { kind: 'node'; node: string }
  | { kind: 'endpoint'; node: string; endpoint: string }
  | { kind: 'identity'; id: number }
  | { kind: 'counter' }
  | { kind: 'policy'; name: string }
  | { kind: 'other' };

export function parseKey(key: string): ParsedKey {
  const rest = (p: string) => key.slice(p.length);
  try {
    if (key.startsWith(NODES_PREFIX)) {
      const node = rest(NODES_PREFIX);
      return NODE_NAME.test(node) ? { kind: 'node', node } : { kind: 'other' };
    }
    if (key.startsWith(ENDPOINTS_PREFIX)) {
      const r = rest(ENDPOINTS_PREFIX);
      const slash = r.indexOf('/');
      if (slash <= 0) return { kind: 'other' };
      const node = r.slice(0, slash);
      const enc = r.slice(slash + 1);
      if (!NODE_NAME.test(node) || !enc || enc.includes('/')) return { kind: 'other' };
      return { kind: 'endpoint', node, endpoint: decodeURIComponent(enc) };
    }
    if (key === IDENTITY_COUNTER_KEY) return { kind: 'counter' };
    if (key.startsWith(IDENTITY_RECORDS_PREFIX)) {
      const t = rest(IDENTITY_RECORDS_PREFIX);
      return /^[1-9][0-9]{0,9}$/.test(t) ? { kind: 'identity', id: Number(t) } : { kind: 'other' };
    }
    if (key.startsWith(POLICIES_PREFIX)) {
      const enc = rest(POLICIES_PREFIX);
      return enc && !enc.includes('/') ? { kind: 'policy', name: decodeURIComponent(enc) } : { kind: 'other' };
    }
  } catch {
    // a malformed percent-encoding
  }
  return { kind: 'other' };
}

// ------------------------------------------------------------------ records

const ipv4 = z.string().regex(/^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/, 'an IPv4 address');
const cidr = z.string().regex(/^[0-9.]+\/([0-9]|[12][0-9]|3[0-2])$/, 'an IPv4 prefix');
const mac = z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, 'a lowercase MAC address');

export const NodeRecordSchema = z.object({
  name: z.string().regex(NODE_NAME),
  /** the node's address on the underlay: where VXLAN for its containers goes */
  underlay: ipv4,
  underlayInterface: z.string().min(1),
  /** the prefixes its containers' addresses come from (informational; addresses are checked one by one) */
  subnets: z.array(cidr),
  /** UDP port of its VXLAN device */
  tunnelPort: z.number().int().min(1).max(65535),
  startedAt: z.string(),
  version: z.string(),
  /**
   * The daemon's process: a second daemon started on the same host with the
   * same --node finds the first still running and is refused, where a
   * restart (the first one gone) takes the record over. Absent in records
   * of earlier versions.
   */
  process: z.object({ bootId: z.string(), pid: z.number().int().positive(), startTime: z.string() }).optional(),
});
export type NodeRecord = z.infer<typeof NodeRecordSchema>;

export const EndpointRecordSchema = z.object({
  /** the endpoint's key on its node (the platform's: "web", "docker:<id>/<net>") */
  key: z.string().min(1),
  name: z.string().min(1),
  identity: z.number().int().min(256).max(CLUSTER_ID_MAX),
  ipv4,
  mac,
  labels: z.record(z.string(), z.string()),
  namedPorts: z
    .record(z.string(), z.object({ port: z.number().int().min(0).max(65535), protocol: z.enum(['tcp', 'udp', 'sctp']) }))
    .optional(),
});
export type EndpointRecord = z.infer<typeof EndpointRecordSchema>;

export const IdentityRecordSchema = z.object({
  node: z.string().regex(NODE_NAME),
  endpoint: z.string().min(1),
  allocatedAt: z.string(),
});
export type IdentityRecord = z.infer<typeof IdentityRecordSchema>;

/** Decode a JSON record; the error says which key and which field. */
export function decodeRecord<T>(schema: z.ZodType<T>, key: string, text: string): { ok: true; value: T } | { ok: false; error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `${key}: not JSON (${(err as Error).message})` };
  }
  const r = schema.safeParse(raw);
  if (r.success) return { ok: true, value: r.data };
  const first = r.error.issues[0]!;
  return { ok: false, error: `${key}: ${first.path.join('.') || 'record'}: ${first.message}` };
}
