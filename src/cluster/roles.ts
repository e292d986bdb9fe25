/**
 * `bastion cluster init`: etcd users and roles, then authentication on.
 *
 * Who may write what (etcd key-prefix permissions; everyone reads /bastion/):
 *   bastion-node-N   its node record (exact key), its endpoints (prefix
 *                    /bastion/endpoints/N/, with the slash: node "a" never
 *                    covers node "ab"), and the identity counter and records
 *                    (/bastion/identities/: every node allocates)
 *   bastion-admin    all of /bastion/ (policies)
 *   root             etcd's own superuser: needed to turn authentication on
 * A stolen node credential therefore cannot add or rewrite another node's
 * endpoints, its node record, or any policy; it cannot revoke another node's
 * lease either (etcd checks write permission on every key attached to it).
 *
 * Users get a random password nobody keeps: with --client-cert-auth the
 * certificate's CN is the user, and no password is ever used.
 */
import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import {
  ADMIN_USER,
  CLUSTER_PREFIX,
  IDENTITIES_PREFIX,
  ROOT_USER,
  checkNodeName,
  nodeEndpointsPrefix,
  nodeKey,
  nodeUser,
} from './keys.js';
import { etcdErrorText } from './etcd.js';

export interface Grant {
  permission: 'Read' | 'Write' | 'Readwrite';
  /** a key, or a prefix when `prefix` */
  key: string;
  prefix: boolean;
}

export const ADMIN_ROLE = 'bastion-admin';
export function nodeRole(node: string): string {
  return `bastion-node-${node}`;
}

/** The permissions of a node's role (pure, tested). */
export function nodeGrants(node: string): Grant[] {
  return [
    { permission: 'Read', key: CLUSTER_PREFIX, prefix: true },
    { permission: 'Readwrite', key: nodeKey(node), prefix: false },
    { permission: 'Readwrite', key: nodeEndpointsPrefix(node), prefix: true },
    { permission: 'Readwrite', key: IDENTITIES_PREFIX, prefix: true },
  ];
}

export function adminGrants(): Grant[] {
  return [{ permission: 'Readwrite', key: CLUSTER_PREFIX, prefix: true }];
}

export interface InitResult {
  roles: string[];
  users: string[];
  authEnabled: boolean;
}

/**
 * Create (or complete) roles and users for these nodes and the admin, then
 * enable authentication. Idempotent: run it again with more nodes to add
 * them (with the root certificate, once authentication is on).
 */
export async function initCluster(client: Etcd3, nodes: string[]): Promise<InitResult> {
  for (const n of nodes) {
    const bad = checkNodeName(n);
    if (bad) throw new Error(bad);
  }
  const existingRoles = new Set((await client.getRoles()).map((r) => r.name));
  const existingUsers = new Set((await client.getUsers()).map((u) => u.name));
  const roles: string[] = [];
  const users: string[] = [];

  const ensureRole = async (name: string, grants: Grant[]) => {
    const role = client.role(name);
    if (!existingRoles.has(name)) await role.create();
    for (const g of grants) {
      await role.grant({ permission: g.permission, range: g.prefix ? client.range({ prefix: g.key }) : client.range(g.key) });
    }
    roles.push(name);
  };
  const ensureUser = async (name: string, role: string) => {
    const user = client.user(name);
    if (!existingUsers.has(name)) await user.create(randomBytes(24).toString('base64url'));
    await user.addRole(role);
    users.push(name);
  };

  if (!existingUsers.has(ROOT_USER)) await client.user(ROOT_USER).create(randomBytes(24).toString('base64url'));
  await client.user(ROOT_USER).addRole('root').catch((err: unknown) => {
    // the root role exists once etcd knows a root user; granting it twice is fine
    if (!/already|exist/i.test(etcdErrorText(err))) throw err;
  });
  await ensureRole(ADMIN_ROLE, adminGrants());
  await ensureUser(ADMIN_USER, ADMIN_ROLE);
  for (const n of nodes) {
    await ensureRole(nodeRole(n), nodeGrants(n));
    await ensureUser(nodeUser(n), nodeRole(n));
  }
  let authEnabled = false;
  try {
    await client.auth.authEnable();
    authEnabled = true;
  } catch (err) {
    if (!/already enabled|AuthNotEnabled|auth.*enabled/i.test(etcdErrorText(err))) throw err;
    authEnabled = true;
  }
  return { roles, users, authEnabled };
}
