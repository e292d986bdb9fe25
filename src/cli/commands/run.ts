import { Option, type Command } from 'commander';
import { Daemon } from '../../daemon/daemon.js';
import { CannotProtect, ConfigRejected } from '../../daemon/config-reloader.js';
import { BASTION_MAX_CT, CT_DEFAULT_PER_ENDPOINT } from '../../datapath/layout.js';
import { CliError, EXIT } from '../errors.js';
import { pinPathOption, publishedPortsOption, sizeArg } from '../options.js';
import { DEFAULT_MAX_CONFIG_BYTES } from '../../daemon/config-source.js';
import type { PublishedPortsMode } from '../../policy/published.js';
import { platformFromOptions, type PlatformOptions } from '../../platform/select.js';
import { ComposeError } from '../../policy/compose.js';
import { DAEMON_CAPABILITIES, effectiveCapabilities, missingCapabilities } from '../../daemon/capabilities.js';
import { InstanceLocked } from '../../daemon/instance.js';
import { addClusterOptions, clusterConnection, type ClusterFlags } from './cluster-options.js';
import { checkNodeName } from '../../cluster/keys.js';
import { parseClusterUrls, ClusterUsageError } from '../../cluster/etcd.js';
import { DEFAULT_TUNNEL_DEVICE, DEFAULT_TUNNEL_PORT } from '../../agent/tunnel.js';
import { readFileSync } from 'node:fs';
import { load as loadYaml } from 'js-yaml';

/** What a permission failure of the daemon means (docs/operations.md has the details). */
const PRIVILEGE_HINT = `permission denied: bastion run needs ${DAEMON_CAPABILITIES.map((c) => c.name).join(', ')} (see docs/operations.md)`;

interface RunOptions extends PlatformOptions, ClusterFlags {
  maxConfigSize: number;
  publishedPorts: PublishedPortsMode;
  config?: string;
  pinPath: string;
  logLevel: string;
  verifyInterval: string;
  /** a directory, or false (--no-flow-history) */
  flowHistory?: string | false;
  flowHistoryMaxBytes?: string;
  eventsPerSecond?: string;
  conntrackPerContainer?: string;
  node?: string;
  underlay?: string;
  leaseTtl: string;
  tunnelDevice: string;
  tunnelPort: string;
}

/** "256M", "1G", "500k", "1048576" → bytes */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(text.trim());
  if (!m) throw new CliError(`${what} "${text}": expected a size such as 256M, 1G or 500k`, EXIT.usage);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * mult);
}

/** A positive whole number option, or a usage error naming it. */
function positiveInt(name: string, v: string | undefined, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > max) throw new CliError(`${name}: a whole number from 1 to ${max}, got "${v}"`, EXIT.usage);
  return n;
}

/** Cluster flags checked before anything starts: a mistake here is a usage error (exit 2). */
function clusterOptions(opts: RunOptions) {
  const given = [opts.node && '--node', opts.underlay && '--underlay'].filter(Boolean);
  if (!opts.cluster) {
    if (given.length) throw new CliError(`${given.join(' and ')} need --cluster URL`, EXIT.usage);
    return undefined;
  }
  if (!opts.node || !opts.underlay) throw new CliError('--cluster needs --node NAME and --underlay IFACE (the interface other nodes reach this one on)', EXIT.usage);
  const bad = checkNodeName(opts.node);
  if (bad) throw new CliError(`--node: ${bad}`, EXIT.usage);
  try {
    parseClusterUrls(opts.cluster);
  } catch (err) {
    if (err instanceof ClusterUsageError) throw new CliError(err.message, EXIT.usage);
    throw err;
  }
  const ttl = Number(opts.leaseTtl);
  if (!Number.isInteger(ttl) || ttl < 2 || ttl > 3600) throw new CliError(`--lease-ttl ${opts.leaseTtl}: whole seconds, 2 to 3600`, EXIT.usage);
  const port = Number(opts.tunnelPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new CliError(`--tunnel-port ${opts.tunnelPort}: a UDP port`, EXIT.usage);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(opts.tunnelDevice)) throw new CliError(`--tunnel-device ${opts.tunnelDevice}: an interface name (at most 15 characters)`, EXIT.usage);
  if (opts.config) {
    // In a cluster, policies are the cluster's: a policies section here is a mistake about where they go.
    let doc: unknown;
    try {
      doc = loadYaml(readFileSync(opts.config, 'utf8'));
    } catch {
      doc = undefined; // unreadable or invalid: the config loader reports it with its line
    }
    if (doc && typeof doc === 'object' && !Array.isArray(doc) && Object.hasOwn(doc, 'policies')) {
      throw new CliError(
        `${opts.config}: policies: in cluster mode the policies are the cluster's, not a node's file; remove this section and add them with "bastion policy add --cluster ${opts.cluster} ..." (admin credentials)`,
        EXIT.usage,
      );
    }
  }
  return {
    connection: clusterConnection(opts),
    node: opts.node,
    underlay: opts.underlay,
    leaseTtlS: ttl,
    tunnelDevice: opts.tunnelDevice,
    tunnelPort: port,
  };
}

export function registerRun(program: Command): void {
  addClusterOptions(program
    .command('run')
    .description('Run the Bastion daemon in the foreground: protect the containers and apply the policy')
    .option('-c, --config <file>', 'Bastion config file (containers, policies, mode); re-applied when it changes and on SIGHUP')
    .addOption(pinPathOption('bpffs directory for the pinned maps; names the instance'))
    .option('--docker', 'follow the containers of the local Docker engine')
    .option('--compose <file>', 'derive policy from a Compose file (depends_on, links, expose, ports)')
    .option('--select <label=value...>', 'with --docker: manage only containers with these labels')
    .addOption(
      new Option('--max-config-size <size>', 'largest config file accepted (64M, 512K, bytes); the parser\'s memory limit grows with it')
        .argParser(sizeArg)
        .default(DEFAULT_MAX_CONFIG_BYTES, '16M'),
    )
    .addOption(publishedPortsOption())
    .option('--log-level <level>', 'log level (trace, debug, info, warn, error)', 'info')
    .option('--verify-interval <seconds>', 'read every map and stack back this often and repair drift (0: only on SIGHUP, reload and status --verify)', '5')
    .option('--flow-history <dir>', 'where the flow history is kept (default /var/lib/bastion/<pin-dir-name>/flows)')
    .option('--no-flow-history', 'keep no flow history on disk (learn, verify and time-window queries then see only the last 10,000 flows in memory)')
    .option('--flow-history-max-bytes <size>', 'size cap of the flow history on disk (256M by default; the oldest flows are deleted first)', '256M')
    .option('--events-per-second <n>', 'flow events reported per second for each container and reason; the rest are counted (default 100)')
    .option('--conntrack-per-container <n>', `conntrack entries one container may hold; its new connections beyond are dropped as ct-limit (default ${CT_DEFAULT_PER_ENDPOINT}, a quarter of the table)`), "join this cluster store: policies and other nodes' endpoints come from it")
    .option('--node <name>', "cluster mode: this node's name (its certificate is node-NAME.pem)")
    .option('--underlay <iface>', "cluster mode: the interface other nodes reach this one on (its IPv4 address is the node's)")
    .option('--lease-ttl <seconds>', 'cluster mode: a node silent this long leaves the cluster, its endpoints with it', '15')
    .option('--tunnel-device <name>', 'cluster mode: the VXLAN device (external mode) to create or reuse', DEFAULT_TUNNEL_DEVICE)
    .option('--tunnel-port <port>', 'cluster mode: its UDP port', String(DEFAULT_TUNNEL_PORT))
    .addHelpText(
      'after',
      `
Drops and allowed connections are logged on stdout as JSON lines, and kept in the
flow history on disk (rotated, gzip-compressed, under --flow-history-max-bytes).
The config file is applied when it is complete: renamed into place, or closed by
its writer and ending with a newline (never half written). It is refused if it is
not a regular file of root or the invoking user, or larger than --max-config-size.
With --docker, a published port (docker run -p) is reachable from the host and,
unless bound to a loopback address, from outside (--published-ports narrows it).
SIGTERM, SIGINT or even SIGKILL leave enforcement in place; "bastion down" removes it.
Every --verify-interval seconds (and on SIGHUP) the maps and stacks are read back: entries or stacks
removed or changed by hand are repaired (logged, counted, and a REPAIRED flow each), and containers
whose network namespace was created again are found again on their new interface.

Examples:
  bastion run --config bastion.yaml
  bastion run --docker --config policy.yaml
  bastion run --docker --compose docker-compose.yml
  bastion run --config containers.yaml --cluster https://10.0.0.5:2379 --node a --underlay eth1 \\
    --cluster-ca pki/ca.pem --cluster-cert pki/node-a.pem --cluster-key pki/node-a-key.pem`,
    )
    .action(async (opts: RunOptions) => {
      if (!opts.config && !opts.docker) throw new CliError('give --config FILE, --docker, or both', EXIT.usage);
      const verifySeconds = Number(opts.verifyInterval);
      if (!/^\d+(\.\d+)?$/.test(opts.verifyInterval) || !Number.isFinite(verifySeconds)) {
        throw new CliError(`--verify-interval: a number of seconds, 0 or more (got "${opts.verifyInterval}")`, EXIT.usage);
      }
      const maxBytes = parseSize(opts.flowHistoryMaxBytes ?? '256M', '--flow-history-max-bytes');
      if (maxBytes < 64 * 1024) throw new CliError(`--flow-history-max-bytes ${opts.flowHistoryMaxBytes}: at least 64k`, EXIT.usage);
      const limits = {
        eventsPerSec: positiveInt('--events-per-second', opts.eventsPerSecond, 0xffffffff),
        ctPerEndpoint: positiveInt('--conntrack-per-container', opts.conntrackPerContainer, BASTION_MAX_CT),
      };
      const cluster = clusterOptions(opts);
      if (cluster && opts.compose) throw new CliError('--compose derives policies, and in cluster mode the policies are the cluster\'s: add them with "bastion policy add --cluster"', EXIT.usage);
      // before anything is touched: a daemon that lacks a capability would fail half-way
      const missing = missingCapabilities(effectiveCapabilities(), { docker: !!opts.docker });
      if (missing.length) {
        throw new CliError(
          `missing capabilities, nothing done:\n${missing.map((c) => `  ${c.name}, to ${c.why}`).join('\n')}\n(run as root, or grant them: docs/operations.md, contrib/systemd/bastion.service)`,
          EXIT.failure,
        );
      }
      const platform = await platformFromOptions(opts);
      const daemon = new Daemon({
        configPath: opts.config,
        pinPath: opts.pinPath,
        logLevel: opts.logLevel,
        verifyIntervalMs: Math.round(verifySeconds * 1000),
        maxConfigBytes: opts.maxConfigSize,
        publishedPorts: opts.publishedPorts,
        platform: platform?.source,
        extraPolicy: platform?.extraPolicy,
        flowHistory: opts.flowHistory === false ? false : { ...(typeof opts.flowHistory === 'string' ? { dir: opts.flowHistory } : {}), maxBytes },
        limits,
        ...(cluster ? { cluster } : {}),
      });
      try {
        await daemon.start();
      } catch (err) {
        if (err instanceof ConfigRejected) {
          throw new CliError(`config rejected, nothing applied:\n  ${err.errors.join('\n  ')}`, EXIT.invalid);
        }
        if (err instanceof InstanceLocked) throw new CliError(err.message, EXIT.failure);
        if (err instanceof CannotProtect) throw new CliError(`cannot reach these containers, nothing applied:\n  ${err.errors.join('\n  ')}`, EXIT.failure);
        if (err instanceof ComposeError) throw new CliError(`Compose file rejected, nothing applied:\n  ${err.message.split('\n').join('\n  ')}`, EXIT.invalid);
        // not enough privilege: say what is missing instead of a libbpf log alone
        if (/\b(EPERM|Operation not permitted)\b/.test((err as Error).message)) {
          throw new CliError(`${(err as Error).message}\n${PRIVILEGE_HINT}`, EXIT.failure);
        }
        throw err;
      }
      await daemon.untilSignalled();
    });
}
