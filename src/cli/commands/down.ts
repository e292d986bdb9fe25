import type { Command } from 'commander';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { pidFileFor, policiesFileFor, socketPathFor } from '../../api/paths.js';
import { tearDown } from '../../agent/cleanup.js';
import { checkPinPath } from '../../datapath/bpffs.js';
import { parseOutputFormat, printData } from '../output.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';

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
    .addOption(pinPathOption())
    .addOption(outputOption(['table', 'json', 'yaml']))
    .addOption(jsonOption())
    .action(async (opts: { pinPath: string; output: string; json?: boolean }) => {
      const format = parseOutputFormat(opts.output, opts.json);
      // a pin path that is a symlink or another user's directory: touch nothing
      checkPinPath(opts.pinPath);
      const stopped = await stopDaemon(opts.pinPath);
      const r = tearDown(opts.pinPath);
      // Runtime policies (bastion policy add) go with the rest.
      const policiesFile = policiesFileFor(opts.pinPath);
      const runtimePoliciesRemoved = existsSync(policiesFile);
      // and whatever a daemon killed without a chance to clean up left behind
      for (const f of [policiesFile, pidFileFor(opts.pinPath), socketPathFor(opts.pinPath)]) rmSync(f, { force: true });
      printData({ daemonStopped: stopped ?? null, ...r, runtimePoliciesRemoved }, format, () =>
        (stopped ? `stopped daemon (pid ${stopped})\n` : '') +
        (runtimePoliciesRemoved ? `forgot the runtime policies (${policiesFile})\n` : '') +
        `detached ${r.detached.length} stacks, removed ${r.pinsRemoved.length} pins under ${opts.pinPath}\n`,
      );
    });
}
