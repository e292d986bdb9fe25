/**
 * `bastion cluster`: setting up the cluster store and looking at it.
 *
 *   bastion cluster certs --nodes a,b,c -o DIR [--etcd-hosts 10.0.0.5]
 *   bastion cluster init --cluster URL --cluster-ca ca.pem --cluster-cert root.pem --cluster-key root-key.pem --nodes a,b,c
 *   bastion cluster status --cluster URL --cluster-ca ... (also: bastion status --cluster ...)
 */
import type { Command } from 'commander';
import type { Etcd3 } from 'etcd3';
import { writeClusterCerts } from '../../cluster/certs.js';
import { initCluster } from '../../cluster/roles.js';
import { ENDPOINTS_PREFIX, NODES_PREFIX, NodeRecordSchema, decodeRecord, parseKey, checkNodeName } from '../../cluster/keys.js';
import { CliError, EXIT } from '../errors.js';
import { colors, formatTable, parseOutputFormat, printData } from '../output.js';
import { addClusterOptions, withCluster, type ClusterFlags } from './cluster-options.js';
import { jsonOption, outputOption } from '../options.js';

function nodeList(flag: string, v: string): string[] {
  const nodes = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (nodes.length === 0) throw new CliError(`${flag}: give node names, such as a,b,c`, EXIT.usage);
  for (const n of nodes) {
    const bad = checkNodeName(n);
    if (bad) throw new CliError(`${flag}: ${bad}`, EXIT.usage);
  }
  return nodes;
}

export interface ClusterNodeStatus {
  name: string;
  underlay: string;
  underlayInterface: string;
  subnets: string[];
  healthy: boolean;
  lease?: { id: string; ttlS: number; grantedTtlS: number; ageS: number };
  endpoints: number;
  startedAt: string;
}

/** The nodes the store knows, with their leases: alive (and how long since their last renewal) or not. */
export async function readClusterNodes(client: Etcd3): Promise<ClusterNodeStatus[]> {
  const nodes = await client.getAll().prefix(NODES_PREFIX).exec();
  const eps = await client.getAll().prefix(ENDPOINTS_PREFIX).keys();
  const count = new Map<string, number>();
  for (const k of eps) {
    const p = parseKey(k);
    if (p.kind === 'endpoint') count.set(p.node, (count.get(p.node) ?? 0) + 1);
  }
  const out: ClusterNodeStatus[] = [];
  for (const kv of nodes.kvs) {
    const key = kv.key.toString();
    const d = decodeRecord(NodeRecordSchema, key, kv.value.toString());
    if (!d.ok) continue;
    let lease: ClusterNodeStatus['lease'];
    if (kv.lease && kv.lease !== '0') {
      try {
        const r = await client.leaseClient.leaseTimeToLive({ ID: kv.lease });
        const ttl = Number(r.TTL);
        if (ttl >= 0) lease = { id: kv.lease, ttlS: ttl, grantedTtlS: Number(r.grantedTTL), ageS: Number(r.grantedTTL) - ttl };
      } catch {
        // not allowed to look, or gone in between
      }
    }
    out.push({
      name: d.value.name,
      underlay: d.value.underlay,
      underlayInterface: d.value.underlayInterface,
      subnets: d.value.subnets,
      healthy: !!lease && lease.ttlS > 0,
      ...(lease ? { lease } : {}),
      endpoints: count.get(d.value.name) ?? 0,
      startedAt: d.value.startedAt,
    });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

export function renderClusterNodes(nodes: ClusterNodeStatus[], self?: string): string {
  return formatTable(
    ['NODE', 'UNDERLAY', 'HEALTH', 'LEASE', 'ENDPOINTS', 'SUBNETS'],
    nodes.map((n) => [
      n.name === self ? `${n.name} (this node)` : n.name,
      n.underlay,
      n.healthy ? colors.green('alive') : colors.red('lease gone'),
      n.lease ? `renewed ${n.lease.ageS}s ago, ${n.lease.ttlS}s of ${n.lease.grantedTtlS}s left` : '-',
      String(n.endpoints),
      n.subnets.join(',') || '-',
    ]),
  );
}

/** `bastion status --cluster` and `bastion cluster status`. */
export async function clusterStatusCommand(opts: ClusterFlags & { output: string; json?: boolean }): Promise<void> {
  const format = parseOutputFormat(opts.output, opts.json);
  const nodes = await withCluster(opts, readClusterNodes);
  const data = { ok: nodes.every((n) => n.healthy), store: opts.cluster, nodes };
  printData(data, format, () => `${colors.bold('Cluster')}    ${opts.cluster}, ${nodes.length} node(s)\n\n${renderClusterNodes(nodes)}`);
  process.exitCode = data.ok ? EXIT.ok : EXIT.notReady;
}

export function registerCluster(program: Command): void {
  const cluster = program.command('cluster').description('Set up the cluster store (certificates, users and roles) and look at its nodes');

  cluster
    .command('certs')
    .description('Write a CA, etcd\'s server certificate, and client certificates for root, the admin and each node')
    .requiredOption('--nodes <names>', 'node names, comma-separated (a,b,c)')
    .requiredOption('-o, --out <dir>', 'directory to write to (a CA already there is reused: add nodes later)')
    .option('--etcd-hosts <names>', 'addresses and names etcd is reached at (its certificate\'s SANs), comma-separated', '')
    .option('--days <n>', 'validity in days', '825')
    .option('--json', 'print what was written as JSON (-o here is the directory)')
    .addHelpText(
      'after',
      `
Files: ca.pem ca-key.pem etcd-server.pem etcd-server-key.pem root.pem admin.pem
node-NAME.pem (and their -key.pem). A certificate's CN is its etcd user: start
etcd with --client-cert-auth --trusted-ca-file ca.pem, then run "bastion cluster init".

Example:
  bastion cluster certs --nodes a,b,c --etcd-hosts 192.168.10.5 -o /etc/bastion/pki`,
    )
    .action(async (opts: { nodes: string; out: string; etcdHosts: string; days: string; json?: boolean }) => {
      const nodes = nodeList('--nodes', opts.nodes);
      const days = Number(opts.days);
      if (!Number.isInteger(days) || days < 1) throw new CliError(`--days ${opts.days}: a whole number of days`, EXIT.usage);
      const hosts = opts.etcdHosts.split(',').map((s) => s.trim()).filter(Boolean);
      const r = await writeClusterCerts({ dir: opts.out, nodes, etcdHosts: hosts, days });
      printData(r, opts.json ? 'json' : 'table', () => `${r.reusedCa ? 'kept the CA in' : 'new CA in'} ${r.dir}; wrote ${r.written.join(' ')}\n`);
    });

  addClusterOptions(
    cluster
      .command('init')
      .description('Create the etcd users and roles (each node writes only its own keys; the admin writes policies) and turn authentication on'),
    'the cluster store (connect with root.pem)',
  )
    .requiredOption('--nodes <names>', 'node names, comma-separated; run again with more names to add nodes')
    .option('--json', 'print what was done as JSON')
    .addHelpText(
      'after',
      `
Example:
  bastion cluster init --cluster https://192.168.10.5:2379 --cluster-ca pki/ca.pem \\
    --cluster-cert pki/root.pem --cluster-key pki/root-key.pem --nodes a,b,c`,
    )
    .action(async (opts: ClusterFlags & { nodes: string; json?: boolean }) => {
      const nodes = nodeList('--nodes', opts.nodes);
      const r = await withCluster(opts, (c) => initCluster(c, nodes));
      printData(r, opts.json ? 'json' : 'table', () => `roles ${r.roles.join(', ')}\nusers ${r.users.join(', ')}\nauthentication ${r.authEnabled ? 'on' : 'off'}\n`);
    });

  addClusterOptions(cluster.command('status').description('Show the nodes in the cluster store: underlay address, lease health and age, endpoints'))
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText('after', '\nExit status: 0 when every node\'s lease is alive, 4 when one is not, 1 when the store cannot be reached.')
    .action(clusterStatusCommand);
}
