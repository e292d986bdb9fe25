/**
 * `bastion k8s`: Kubernetes NetworkPolicy, evaluated offline from objects in
 * files (Namespace, Pod, NetworkPolicy; multi-document YAML or JSON; Lists).
 *
 *   bastion k8s matrix  -f FILE... --port P [--protocol TCP|UDP|SCTP] [-o json]
 *   bastion k8s explain -f FILE... --from ns/pod --to ns/pod --port P [--protocol X] [-o json]
 *   bastion k8s compile -f FILE... [-o json]
 */
import type { Command } from 'commander';
import { CliError, EXIT } from '../errors.js';
import { colors, formatTable, parseOutputFormat, printData } from '../output.js';
import { outputOption } from '../options.js';
import {
  K8sInputError,
  compileToPolicySet,
  computeMatrix,
  evaluateConnection,
  explain,
  findPod,
  formatExplanation,
  formatMatrix,
  isProtocol,
  readCluster,
  type Cluster,
  type K8sProtocol,
} from '../../policy/k8s/index.js';
import { checkPortName } from '../../policy/k8s/names.js';

interface CommonOpts {
  filename: string[];
  output?: string;
}

function parseProtocol(v: string | undefined): K8sProtocol {
  const p = (v ?? 'TCP').toUpperCase();
  if (!isProtocol(p)) throw new CliError(`--protocol: "${v}" is not TCP, UDP or SCTP`, EXIT.usage);
  return p;
}

function parsePort(v: string | undefined): number | string {
  if (v === undefined) throw new CliError('--port is required', EXIT.usage);
  if (/^[0-9]+$/.test(v)) {
    const n = Number(v);
    if (n < 1 || n > 65535) throw new CliError(`--port: ${v} is not a valid port number (1-65535)`, EXIT.usage);
    return n;
  }
  const e = checkPortName(v);
  if (e) throw new CliError(`--port: "${v}" is neither a port number nor a valid port name: ${e}`, EXIT.usage);
  return v;
}

async function load(files: string[] | undefined): Promise<Cluster> {
  if (!files || files.length === 0) throw new CliError('-f/--filename is required (one or more files)', EXIT.usage);
  try {
    const cluster = await readCluster(files);
    for (const w of cluster.warnings) process.stderr.write(`bastion: warning: ${w}\n`);
    return cluster;
  } catch (e) {
    if (e instanceof K8sInputError) throw new CliError(e.message, EXIT.invalid);
    throw e;
  }
}

function pod(cluster: Cluster, ref: string | undefined, flag: string) {
  if (!ref) throw new CliError(`${flag} is required (namespace/pod)`, EXIT.usage);
  const p = findPod(cluster, ref);
  if (!p)
    throw new CliError(
      `${flag}: no pod "${ref}" in the input (pods: ${cluster.pods.map((x) => x.key).join(', ') || 'none'})`,
      EXIT.usage,
    );
  return p;
}

function format(o: CommonOpts) {
  try {
    return parseOutputFormat(o.output);
  } catch (e) {
    throw new CliError((e as Error).message, EXIT.usage);
  }
}

export function registerK8s(program: Command): void {
  const k8s = program
    .command('k8s')
    .description('Kubernetes NetworkPolicy: reachability, explanations and compilation, from object files');

  k8s
    .command('matrix')
    .description('reachability between all pods (rows: from, columns: to; "." allowed, "X" denied)')
    .option('-f, --filename <files...>', '(required) YAML or JSON files with Namespace, Pod, NetworkPolicy objects')
    .option('--port <port>', '(required) destination port (number, or a container port name resolved on each server)')
    .option('--protocol <protocol>', 'TCP, UDP or SCTP', 'TCP')
    .addOption(outputOption(['table', 'json', 'yaml']))
    .action(async (o: CommonOpts & { port?: string; protocol?: string }) => {
      const fmt = format(o);
      const protocol = parseProtocol(o.protocol);
      const port = parsePort(o.port);
      const cluster = await load(o.filename);
      const m = computeMatrix(cluster, port, protocol);
      printData(m, fmt, () =>
        m.pods.length === 0
          ? 'no pods in the input\n'
          : `${protocol}/${port}: rows from, columns to ("." allowed, "X" denied)\n\n${formatMatrix(m)}`,
      );
    });

  k8s
    .command('explain')
    .description('the verdict for one connection, and which policies and rules decided it')
    .option('-f, --filename <files...>', '(required) YAML or JSON files with Namespace, Pod, NetworkPolicy objects')
    .option('--from <pod>', '(required) client pod, namespace/name')
    .option('--to <pod>', '(required) server pod, namespace/name (the connection goes to its IP)')
    .option('--port <port>', '(required) destination port (number, or a container port name of the server)')
    .option('--protocol <protocol>', 'TCP, UDP or SCTP', 'TCP')
    .addOption(outputOption(['table', 'json', 'yaml']))
    .action(async (o: CommonOpts & { from?: string; to?: string; port?: string; protocol?: string }) => {
      const fmt = format(o);
      const protocol = parseProtocol(o.protocol);
      const port = parsePort(o.port);
      const cluster = await load(o.filename);
      const v = evaluateConnection(cluster, pod(cluster, o.from, '--from'), pod(cluster, o.to, '--to'), port, protocol);
      printData(explain(v), fmt, () => {
        const text = formatExplanation(cluster, v);
        return text.replace(/: (ALLOWED|DENIED)\n/, (_m, w: string) =>
          `: ${w === 'ALLOWED' ? colors.green(w) : colors.red(w)}\n`,
        );
      });
    });

  k8s
    .command('compile')
    .description("the policies compiled into Bastion's rule model, with the endpoint labels")
    .option('-f, --filename <files...>', '(required) YAML or JSON files with Namespace, Pod, NetworkPolicy objects')
    .addOption(outputOption(['table', 'json', 'yaml']))
    .action(async (o: CommonOpts) => {
      const fmt = format(o);
      const cluster = await load(o.filename);
      let compiled;
      try {
        compiled = compileToPolicySet(cluster);
      } catch (e) {
        if (e instanceof K8sInputError) throw new CliError(e.message, EXIT.invalid);
        throw e;
      }
      const data = {
        rules: compiled.rules,
        endpoints: cluster.pods.map((p) => ({
          name: p.key,
          addresses: compiled.addresses.get(p.key) ?? [],
          labels: compiled.endpointLabels.get(p.key) ?? {},
          namedPorts: compiled.namedPorts.get(p.key) ?? {},
        })),
      };
      printData(data, fmt, () =>
        formatTable(
          ['RULE', 'DIRECTION', 'SUBJECT', 'PEERS', 'PORTS'],
          compiled.rules.map((r) => [
            r.id,
            r.direction,
            JSON.stringify(r.subject),
            r.peers.map((p) => (p.kind === 'endpoints' ? JSON.stringify(p.selector) : p.kind === 'cidr' ? `${p.cidr}${p.except ? ` except ${p.except.join(',')}` : ''}` : p.kind)).join(' | ') || '(none)',
            r.ports.map((p) => (p.name ? `${p.protocol}/${p.name}` : p.from === 0 && p.to === 65535 ? `${p.protocol}/*` : p.from === p.to ? `${p.protocol}/${p.from}` : `${p.protocol}/${p.from}-${p.to}`)).join(',') || 'all',
          ]),
        ),
      );
    });
}
