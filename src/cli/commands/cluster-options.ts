/**
 * The flags every cluster-aware command takes: the store's URL and the TLS
 * files of the identity that talks to it (a node's, the admin's, root's).
 */
import type { Command } from 'commander';
import type { Etcd3 } from 'etcd3';
import { ClusterUsageError, connectCluster, etcdErrorText, isPermissionDenied, type ClusterConnection } from '../../cluster/etcd.js';
import { CliError, EXIT } from '../errors.js';

export interface ClusterFlags {
  cluster?: string;
  clusterCa?: string;
  clusterCert?: string;
  clusterKey?: string;
}

export function addClusterOptions(cmd: Command, what = 'the cluster store'): Command {
  return cmd
    .option('--cluster <url>', `${what}: etcd URL(s), https://HOST:2379[,https://...]`)
    .option('--cluster-ca <file>', 'CA certificate of the cluster (ca.pem from `bastion cluster certs`)')
    .option('--cluster-cert <file>', 'client certificate (its CN is the etcd user: node-NAME.pem, admin.pem, root.pem)')
    .option('--cluster-key <file>', 'the client certificate\'s key');
}

export function clusterConnection(f: ClusterFlags): ClusterConnection {
  if (!f.cluster) throw new CliError('give --cluster URL', EXIT.usage);
  return { url: f.cluster, ca: f.clusterCa, cert: f.clusterCert, key: f.clusterKey };
}

/** Connect, turning bad flags into usage errors. */
export function openCluster(f: ClusterFlags): Etcd3 {
  try {
    return connectCluster(clusterConnection(f));
  } catch (err) {
    if (err instanceof ClusterUsageError) throw new CliError(err.message, EXIT.usage);
    throw err;
  }
}

/** Run fn with a client, closing it after; store errors become CLI errors that say what to check. */
export async function withCluster<T>(f: ClusterFlags, fn: (c: Etcd3) => Promise<T>): Promise<T> {
  const client = openCluster(f);
  try {
    return await fn(client);
  } catch (err) {
    if (err instanceof CliError) throw err;
    if (isPermissionDenied(err)) {
      throw new CliError(`the cluster store refused: permission denied for the user of ${f.clusterCert ?? 'this connection'} (its certificate CN)`, EXIT.failure);
    }
    throw new CliError(`cluster store ${f.cluster}: ${etcdErrorText(err)}`, EXIT.failure);
  } finally {
    client.close();
  }
}
