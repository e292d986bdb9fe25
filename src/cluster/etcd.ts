/**
 * Connecting to the cluster's etcd: the URL(s) and the TLS files of
 * `--cluster --cluster-ca --cluster-cert --cluster-key`. etcd runs with
 * --client-cert-auth, so the client certificate's CN is the etcd user, and
 * with it the permissions (see roles.ts): no password travels anywhere.
 *
 * Fault handling is ours, not the client library's: a call fails fast
 * (deadline, no circuit breaker that would keep the node off etcd for
 * seconds after it is back), and the callers retry with their own back-off
 * (session.ts). Watches reconnect quickly for the same reason: changes made
 * while etcd was away should arrive soon after it is back.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Etcd3, IKeyValue } from 'etcd3';
import { ExponentialBackoff, handleWhen, noop, retry, type IBackoff } from 'cockatiel';

export interface ClusterConnection {
  /** https://host:port[,https://host:port...] */
  url: string;
  ca?: string;
  cert?: string;
  key?: string;
  /** per-call deadline, ms */
  timeoutMs?: number;
}

/**
 * The etcd client and its gRPC stack cost the process about 20 MB resident
 * once loaded; a daemon that is not in cluster mode (and every CLI command
 * but the cluster ones) never needs them, so they are loaded on first
 * connection, not at import (the client is CommonJS: a synchronous require).
 */
function etcdClient(): typeof import('etcd3') {
  return createRequire(import.meta.url)('etcd3') as typeof import('etcd3');
}

/** A connection problem the user must fix (a file, the URL): exit 2 material. */
export class ClusterUsageError extends Error {}

export function parseClusterUrls(url: string): string[] {
  const hosts = url
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  if (hosts.length === 0) throw new ClusterUsageError(`--cluster "${url}": give one or more URLs such as https://10.0.0.5:2379`);
  for (const h of hosts) {
    let u: URL;
    try {
      u = new URL(h);
    } catch {
      throw new ClusterUsageError(`--cluster "${h}": not a URL (https://HOST:PORT)`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ClusterUsageError(`--cluster "${h}": use https:// (or http:// for a store without TLS)`);
    if (!u.port) throw new ClusterUsageError(`--cluster "${h}": give the port (etcd's client port is usually 2379)`);
  }
  return hosts;
}

function readPem(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ClusterUsageError(`${flag} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}

export function connectCluster(c: ClusterConnection): Etcd3 {
  const hosts = parseClusterUrls(c.url);
  const tls = hosts.some((h) => h.startsWith('https:'));
  if (tls && !c.ca) throw new ClusterUsageError('--cluster with https:// needs --cluster-ca (the CA that signed etcd\'s certificate)');
  if (Boolean(c.cert) !== Boolean(c.key)) throw new ClusterUsageError('give --cluster-cert and --cluster-key together');
  const timeoutMs = c.timeoutMs ?? 5000;
  const { Etcd3, isRecoverableError } = etcdClient();
  return new Etcd3({
    hosts,
    ...(tls
      ? {
          credentials: {
            rootCertificate: readPem('--cluster-ca', c.ca!),
            ...(c.cert ? { certChain: readPem('--cluster-cert', c.cert), privateKey: readPem('--cluster-key', c.key!) } : {}),
          },
        }
      : {}),
    dialTimeout: timeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    faultHandling: {
      host: () => noop,
      global: retry(handleWhen(isRecoverableError), { maxAttempts: 1, backoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 200 }) }),
      // the client calls next() on this itself (a backoff factory, typed as a backoff)
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as unknown as IBackoff<unknown>,
    },
    grpcOptions: {
      // notice a dead connection within seconds, not minutes
      'grpc.keepalive_time_ms': 5000,
      'grpc.keepalive_timeout_ms': 3000,
      'grpc.keepalive_permit_without_calls': 1,
    },
  });
}

/** Metadata etcd keeps with every key (numbers: revisions fit in 2^53 long before they matter). */
export interface KvMeta {
  createRevision: number;
  modRevision: number;
  version: number;
  /** lease id, '0' when none */
  lease: string;
}

export function kvMeta(kv: IKeyValue): KvMeta {
  return {
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: String(kv.lease ?? '0'),
  };
}

/** etcd's own words for a refused request, or the message. */
export function etcdErrorText(err: unknown): string {
  const m = (err as Error)?.message ?? String(err);
  return m.replace(/^\d+ [A-Z_]+: /, '');
}

export function isPermissionDenied(err: unknown): boolean {
  return /permission denied|PermissionDenied|EtcdPermissionDenied/i.test(`${(err as Error)?.name ?? ''} ${(err as Error)?.message ?? ''}`);
}
