/** `bastion compose FILE`: the Bastion policy a Compose file's dependencies imply. */
import { DEFAULT_INPUT_MAX_BYTES, readInputFile } from '../../policy/input-file.js';
import { basename, dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { CliError, EXIT } from '../errors.js';
import { outputOption, publishedPortsOption } from '../options.js';
import {
  ComposeError,
  composeConfigDocument,
  composeToPolicies,
  normalizeProjectName,
  parseCompose,
  renderComposeYaml,
  type ComposeApp,
  type PublishedPortsMode,
} from '../../policy/compose.js';

interface ComposeCliOptions {
  output: string;
  project?: string | false;
  unported: string;
  publishedPorts: PublishedPortsMode;
}

/**
 * The project Compose itself would use: --project, else COMPOSE_PROJECT_NAME,
 * else the file's `name:`, else the name of the file's directory.
 */
export function composeProjectFor(file: string, app: ComposeApp, opt: string | false | undefined): string | null {
  if (opt === false) return null;
  const name = opt ?? process.env.COMPOSE_PROJECT_NAME ?? app.name ?? basename(dirname(resolve(file)));
  const norm = normalizeProjectName(name);
  if (!norm) throw new CliError(`cannot make a Compose project name out of "${name}": give --project NAME or --no-project`, EXIT.usage);
  return norm;
}

export function registerCompose(program: Command): void {
  program
    .command('compose')
    .description('Print the Bastion policy a Compose file implies: each depends_on/links edge allows its target\'s ports')
    .argument('<file>', 'Compose file (compose.yaml, docker-compose.yml)')
    .addOption(outputOption(['yaml', 'json']))
    .option('-p, --project <name>', 'scope selectors to this Compose project (default: COMPOSE_PROJECT_NAME, the file\'s name:, or its directory)')
    .option('--no-project', 'do not scope selectors to a Compose project')
    .option('--unported <all|none>', 'what a dependency on a service that declares no port allows', 'all')
    .addOption(publishedPortsOption())
    .addHelpText(
      'after',
      `
Each dependency A -> B (depends_on or links) lets A open connections to B on the
container ports B declares: its expose entries and the container side of its
ports. Nothing else between the services is allowed. A published port (ports:)
is reachable from the host and, unless bound to a loopback address, from
outside (--published-ports narrows that). When B declares no port,
the edge allows every port (--unported all, the default, with a warning and a
comment in the output) or nothing (--unported none).

Selectors use the labels Bastion puts on Docker endpoints:
bastion.io/compose-service and com.docker.compose.project.

Examples:
  bastion compose docker-compose.yml > bastion.yaml
  bastion compose compose.yaml -o json --no-project`,
    )
    .action((file: string, opts: ComposeCliOptions) => {
      const format = opts.output;
      if (format !== 'yaml' && format !== 'json') throw new CliError(`unknown output format "${format}" (use yaml or json)`, EXIT.usage);
      if (opts.unported !== 'all' && opts.unported !== 'none') throw new CliError(`--unported must be all or none, not "${opts.unported}"`, EXIT.usage);
      const text = readInputFile(file, { maxBytes: DEFAULT_INPUT_MAX_BYTES });
      let app: ComposeApp;
      try {
        app = parseCompose(text, { file, env: { ...process.env } });
      } catch (err) {
        if (err instanceof ComposeError) {
          const n = err.issues.length;
          throw new CliError(`invalid Compose file (${n} error${n === 1 ? '' : 's'}):\n  ${err.message.split('\n').join('\n  ')}`, EXIT.invalid);
        }
        throw err;
      }
      const project = composeProjectFor(file, app, opts.project);
      const result = composeToPolicies(app, { project, unported: opts.unported, publishedPorts: opts.publishedPorts });
      for (const w of result.warnings) process.stderr.write(`bastion: warning: ${w}\n`);
      if (format === 'json') process.stdout.write(JSON.stringify(composeConfigDocument(result), null, 2) + '\n');
      else process.stdout.write(renderComposeYaml(result, file));
    });
}
