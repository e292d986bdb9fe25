/**
 * `bastion mode`: audit per workload.
 *
 *   bastion mode                      every container's mode and where it comes from
 *   bastion mode audit web api        let web's and api's would-be drops through, reported as AUDIT
 *   bastion mode enforce web          enforce web again
 *
 * Set at run time, kept across daemon restarts, forgotten by `bastion down`.
 */
import type { Command } from 'commander';
import { socketPathFor } from '../../api/paths.js';
import { apiCall, DaemonUnreachable, errorsOf } from '../../api/client.js';
import { isErrorBody, type Done, type ModeChange, type ModesAnswer } from '../../api/types.js';
import { CliError, EXIT } from '../errors.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';
import { colors, formatTable, parseOutputFormat, printData } from '../output.js';

async function call<T>(pinPath: string, method: string, path: string, body?: string): Promise<{ status: number; body: T }> {
  try {
    const r = await apiCall<T>(socketPathFor(pinPath), method, path, body);
    if (r.status !== 200 || isErrorBody(r.body)) {
      const code = isErrorBody(r.body) ? r.body.error.code : '';
      throw new CliError(errorsOf(r.status, r.body).join('\n'), code === 'invalid' ? EXIT.usage : EXIT.failure);
    }
    return r as { status: number; body: T };
  } catch (err) {
    if (err instanceof DaemonUnreachable) throw new CliError(`${err.message} (is "bastion run" running with --pin-path ${pinPath}?)`, EXIT.notReady);
    throw err;
  }
}

export function registerMode(program: Command): void {
  program
    .command('mode')
    .description('Show every container\'s mode, or set containers to audit (allow, record what would be dropped) or enforce')
    .argument('[mode]', 'audit or enforce')
    .argument('[names...]', 'container names')
    .addOption(pinPathOption())
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
A mode set here wins over the config file's (a container's mode, a policy with
mode: audit) and is kept across daemon restarts until "bastion down". When the
config file puts the whole host in audit mode, no container can be enforced.

Examples:
  bastion mode audit web        # observe web: its would-be drops pass, as AUDIT flows
  bastion mode                  # who is in which mode, and why
  bastion mode enforce web      # after bastion learn / policy verify / policy add`,
    )
    .action(async (mode: string | undefined, names: string[], opts: { pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      if (mode === undefined || mode === 'list') {
        const r = await call<ModesAnswer>(opts.pinPath, 'GET', '/v1/modes');
        printData(r.body, format, () =>
          `host mode: ${r.body.global}\n` +
          formatTable(
            ['CONTAINER', 'MODE', 'SOURCE'],
            r.body.containers.map((c) => [c.name, c.mode === 'audit' ? colors.yellow('audit') : 'enforce', c.policy ? `${c.source} (policy ${c.policy})` : c.source]),
          ),
        );
        return;
      }
      if (mode !== 'audit' && mode !== 'enforce') throw new CliError(`mode "${mode}": expected audit or enforce`, EXIT.usage);
      if (!names.length) throw new CliError(`give the containers to set to ${mode}: bastion mode ${mode} NAME...`, EXIT.usage);
      const done: ModeChange[] = [];
      for (const name of names) {
        const r = await call<Done<ModeChange>>(opts.pinPath, 'PUT', `/v1/containers/${encodeURIComponent(name)}/mode`, JSON.stringify({ mode }));
        done.push({ name: r.body.name, mode: r.body.mode });
      }
      printData(done, format, () => done.map((d) => `${d.name}: ${d.mode}\n`).join(''));
    });
}
