import type { Command } from 'commander';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { DEFAULT_PIN_PATH } from '../../datapath/layout.js';
import { flowHistoryDirFor, modesFileFor, pidFileFor, policiesFileFor, socketPathFor } from '../../api/paths.js';
import { tearDown } from '../../agent/cleanup.js';
import { parseOutputFormat, printData } from '../output.js';

async function stopDaemon(pinPath: string): Promise<number | undefined> {
  const file = pidFileFor(pinPath);
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  if (!(pid > 0)) return undefined;
  // A stale pid file may name a process that is not ours any more.
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
  if (!/\bbastion\b|cli\/main\.js/.test(cmdline) || !cmdline.includes('run')) return undefined;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return undefined;
  }
  for (let i = 0; i < 50; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return pid;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.kill(pid, 'SIGKILL');
  return pid;
}

export function registerDown(program: Command): void {
  program
    .command('down')
    .description('Stop the daemon and remove every stack and pin Bastion made (enforcement ends)')
    .option('--pin-path <dir>', 'bpffs directory of the instance', DEFAULT_PIN_PATH)
    .option('-o, --output <format>', 'table, json or yaml', 'table')
    .option('--json', 'same as -o json')
    .action(async (opts: { pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      const stopped = await stopDaemon(opts.pinPath);
      const r = tearDown(opts.pinPath);
      // Runtime policies (bastion policy add) go with the rest.
      const policiesFile = policiesFileFor(opts.pinPath);
      const runtimePoliciesRemoved = existsSync(policiesFile);
      // and the modes set at run time (bastion mode)
      const modesFile = modesFileFor(opts.pinPath);
      const runtimeModesRemoved = existsSync(modesFile);
      // and whatever a daemon killed without a chance to clean up left behind
      for (const f of [policiesFile, modesFile, pidFileFor(opts.pinPath), socketPathFor(opts.pinPath)]) rmSync(f, { force: true });
      // The flow history stays: it is the record of what happened (bastion learn --flows reads it).
      const history = flowHistoryDirFor(opts.pinPath);
      printData({ daemonStopped: stopped ?? null, ...r, runtimePoliciesRemoved, runtimeModesRemoved, flowHistoryKept: existsSync(history) ? history : null }, format, () =>
        (stopped ? `stopped daemon (pid ${stopped})\n` : '') +
        (runtimePoliciesRemoved ? `forgot the runtime policies (${policiesFile})\n` : '') +
        (runtimeModesRemoved ? `forgot the modes set at run time (${modesFile})\n` : '') +
        (existsSync(history) ? `kept the flow history (${history}; remove it yourself when you no longer need it)\n` : '') +
        `detached ${r.detached.length} stacks, removed ${r.pinsRemoved.length} pins under ${opts.pinPath}\n`,
      );
    });
}
