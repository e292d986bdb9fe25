import type { Command } from 'commander';
import { Daemon } from '../../daemon/daemon.js';
import { ConfigRejected } from '../../daemon/config-reloader.js';
import { BASTION_MAX_CT, CT_DEFAULT_PER_ENDPOINT, DEFAULT_PIN_PATH } from '../../datapath/layout.js';
import { CliError, EXIT } from '../errors.js';
import { platformFromOptions, type PlatformOptions } from '../../platform/select.js';

interface RunOptions extends PlatformOptions {
  config?: string;
  pinPath: string;
  logLevel: string;
  eventsPerSecond?: string;
  conntrackPerContainer?: string;
}

/** A positive whole number option, or a usage error naming it. */
function positiveInt(name: string, v: string | undefined, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > max) throw new CliError(`${name}: a whole number from 1 to ${max}, got "${v}"`, EXIT.usage);
  return n;
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('Run the Bastion daemon in the foreground: protect the containers and apply the policy')
    .option('-c, --config <file>', 'Bastion config file (containers, policies, mode); re-applied when it changes and on SIGHUP')
    .option('--pin-path <dir>', 'bpffs directory for the pinned maps', DEFAULT_PIN_PATH)
    .option('--docker', 'follow the containers of the local Docker engine')
    .option('--compose <file>', 'derive policy from a Compose file (depends_on, links, expose, ports)')
    .option('--select <label=value...>', 'with --docker: manage only containers with these labels')
    .option('--log-level <level>', 'log level (trace, debug, info, warn, error)', 'info')
    .option('--events-per-second <n>', 'flow events reported per second for each container and reason; the rest are counted (default 100)')
    .option('--conntrack-per-container <n>', `conntrack entries one container may hold; its new connections beyond are dropped as ct-limit (default ${CT_DEFAULT_PER_ENDPOINT}, a quarter of the table)`)
    .addHelpText(
      'after',
      `
Drops and allowed connections are logged on stdout as JSON lines.
SIGTERM, SIGINT or even SIGKILL leave enforcement in place; "bastion down" removes it.

Examples:
  bastion run --config bastion.yaml
  bastion run --docker --config policy.yaml
  bastion run --docker --compose docker-compose.yml`,
    )
    .action(async (opts: RunOptions) => {
      if (!opts.config && !opts.docker) throw new CliError('give --config FILE, --docker, or both', EXIT.usage);
      const limits = {
        eventsPerSec: positiveInt('--events-per-second', opts.eventsPerSecond, 0xffffffff),
        ctPerEndpoint: positiveInt('--conntrack-per-container', opts.conntrackPerContainer, BASTION_MAX_CT),
      };
      const platform = await platformFromOptions(opts);
      const daemon = new Daemon({
        configPath: opts.config,
        pinPath: opts.pinPath,
        logLevel: opts.logLevel,
        platform: platform?.source,
        extraPolicy: platform?.extraPolicy,
        limits,
      });
      try {
        await daemon.start();
      } catch (err) {
        if (err instanceof ConfigRejected) {
          throw new CliError(`config rejected, nothing applied:\n  ${err.errors.join('\n  ')}`, EXIT.invalid);
        }
        throw err;
      }
      await daemon.untilSignalled();
    });
}
