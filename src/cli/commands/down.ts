import type { Command } from 'commander';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { flowHistoryDirFor, leaveFileFor, lockFileFor, modesFileFor, pidFileFor, policiesFileFor, socketPathFor } from '../../api/paths.js';
import { apiCall, DaemonUnreachable } from '../../api/client.js';
import type { ShutdownResult } from '../../api/types.js';
import { tearDown } from '../../agent/cleanup.js';
import { checkPinPath } from '../../datapath/bpffs.js';
import { isInstanceLocked, isSameProcess, readPidFile, removeInstanceLock, signalRecorded } from '../../daemon/instance.js';
import { CliError, EXIT } from '../errors.js';
import { parseOutputFormat, printData } from '../output.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';

/** What down did about the daemon. */
interface Stopped {
  pid: number | null;
  /** how: through its API, or a signal to the process its pid file identifies */
  how?: 'api' | 'signal';
  /** why a pid file was not acted on */
  note?: string;
}

/** How long a daemon may take to stop before down gives up on it (SIGKILL for a verified pid). */
const STOP_WAIT_MS = 5000;

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

/**
 * Stop the daemon of a pin path. First through its own socket (POST
 * /v1/shutdown): the daemon that answers is the one that owns the pin
 * path, no pid involved. Then, for a daemon that does not answer, only a
 * process its pid file identifies exactly (pid, start time, executable) is
 * signalled, through a pidfd: a stale pid file naming a reused pid is
 * reported and left alone, whatever that process's command line says. When
 * the instance lock is held but nothing identifies its holder, down fails
 * rather than pull the datapath from under a daemon it cannot stop.
 */
async function stopDaemon(pinPath: string): Promise<Stopped> {
  const lock = lockFileFor(pinPath);
  try {
    const r = await apiCall<ShutdownResult>(socketPathFor(pinPath), 'POST', '/v1/shutdown', undefined, 3000);
    if (r.status === 200 && 'pid' in r.body) {
      const pid = r.body.pid;
      if (await until(() => !isInstanceLocked(lock), STOP_WAIT_MS)) return { pid, how: 'api' };
    }
  } catch (err) {
    if (!(err instanceof DaemonUnreachable)) throw err;
  }
  const file = pidFileFor(pinPath);
  const rec = readPidFile(file);
  const locked = isInstanceLocked(lock);
  if (!rec) {
    if (locked) throw new CliError(`a daemon holds ${lock} but ${file} does not identify it; nothing done (stop it, then run down again)`, EXIT.failure);
    return { pid: null, ...(existsSync(file) ? { note: `${file} does not identify a process (no start time): not acted on` } : {}) };
  }
  const first = signalRecorded(rec, 'SIGTERM');
  if (first === 'gone') return { pid: null, note: `the daemon of ${file} (pid ${rec.pid}) had already stopped` };
  if (first === 'not-the-same-process') {
    if (locked) throw new CliError(`pid ${rec.pid} of ${file} is another process now, and a daemon holds ${lock}; nothing done`, EXIT.failure);
    return { pid: null, note: `pid ${rec.pid} of the stale ${file} is another process now: not signalled` };
  }
  if (!(await until(() => !isSameProcess(rec), STOP_WAIT_MS))) signalRecorded(rec, 'SIGKILL');
  return { pid: rec.pid, how: 'signal' };
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
      // A cluster node's daemon, however it is stopped, then leaves the
      // cluster at once (revokes its lease) instead of waiting for the lease
      // to run out, as a restart would.
      writeFileSync(leaveFileFor(opts.pinPath), `${process.pid}\n`);
      const stopped = await stopDaemon(opts.pinPath);
      if (stopped.note) process.stderr.write(`bastion: ${stopped.note}\n`);
      const r = tearDown(opts.pinPath);
      // Runtime policies (bastion policy add) go with the rest.
      const policiesFile = policiesFileFor(opts.pinPath);
      const runtimePoliciesRemoved = existsSync(policiesFile);
      // and the modes set at run time (bastion mode)
      const modesFile = modesFileFor(opts.pinPath);
      const runtimeModesRemoved = existsSync(modesFile);
      // and whatever a daemon killed without a chance to clean up left behind
      for (const f of [policiesFile, modesFile, pidFileFor(opts.pinPath), socketPathFor(opts.pinPath), leaveFileFor(opts.pinPath)]) rmSync(f, { force: true });
      removeInstanceLock(lockFileFor(opts.pinPath));
      // The flow history stays: it is the record of what happened (bastion learn --flows reads it).
      const history = flowHistoryDirFor(opts.pinPath);
      printData({ daemonStopped: stopped.pid, ...r, runtimePoliciesRemoved, runtimeModesRemoved, flowHistoryKept: existsSync(history) ? history : null }, format, () =>
        (stopped.pid ? `stopped daemon (pid ${stopped.pid})\n` : '') +
        (runtimePoliciesRemoved ? `forgot the runtime policies (${policiesFile})\n` : '') +
        (r.tunnel ? `removed the tunnel device ${r.tunnel}\n` : '') +
        (runtimeModesRemoved ? `forgot the modes set at run time (${modesFile})\n` : '') +
        (existsSync(history) ? `kept the flow history (${history}; remove it yourself when you no longer need it)\n` : '') +
        `detached ${r.detached.length} stacks, removed ${r.pinsRemoved.length} pins under ${opts.pinPath}\n`,
      );
    });
}
