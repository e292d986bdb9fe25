/**
 * One daemon per pin path, and knowing for sure which process it is.
 *
 * - The instance lock: an exclusive flock(2) on /run/bastion/<pin>.lock,
 *   taken before the daemon touches anything and held for its whole life
 *   (the kernel drops it when the process dies, however it dies). A second
 *   `bastion run` on the same pin path fails at once, naming the running
 *   one, instead of taking over its socket and pid file while the first
 *   keeps running unseen.
 * - The pid file records the process's identity, not only its pid: the
 *   start time from /proc/PID/stat (clock ticks since boot, which a reused
 *   pid cannot repeat) and the executable. `down` signals a recorded
 *   process only through a pidfd opened on it and checked against that
 *   identity, so a stale pid file whose pid now belongs to an unrelated
 *   process (one whose command line even says "bastion run") is never
 *   signalled.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname } from 'node:path';
import { libcFunction } from '../sys/libc.js';

const LOCK_EX = 2;
const LOCK_NB = 4;

interface Libc {
  flock(fd: number, op: number): number;
  pidfd_open(pid: number, flags: number): number;
  pidfd_send_signal(pidfd: number, sig: number, info: null, flags: number): number;
}
let libc: Libc | undefined;
function c(): Libc {
  if (!libc) {
    libc = {
      flock: libcFunction<Libc['flock']>('int flock(int fd, int op)'),
      pidfd_open: libcFunction<Libc['pidfd_open']>('int pidfd_open(int pid, unsigned int flags)'),
      pidfd_send_signal: libcFunction<Libc['pidfd_send_signal']>('int pidfd_send_signal(int pidfd, int sig, void *info, unsigned int flags)'),
    };
  }
  return libc;
}

// ------------------------------------------------------------ identity

/** What tells one process from another that later gets the same pid. */
export interface ProcessIdentity {
  pid: number;
  /** field 22 of /proc/PID/stat: start time in clock ticks since boot */
  startTime: string;
  /** /proc/PID/exe */
  exe?: string;
}

/** The identity of a running process, or undefined if there is none with that pid. */
export function processIdentity(pid: number): ProcessIdentity | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields restart after the last ')'
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTime = rest[22 - 3];
  if (!startTime) return undefined;
  let exe: string | undefined;
  try {
    exe = readlinkSync(`/proc/${pid}/exe`);
  } catch {
    exe = undefined;
  }
  return { pid, startTime, ...(exe ? { exe } : {}) };
}

/** Is `recorded` still the same process (same pid, start time and executable)? */
export function isSameProcess(recorded: ProcessIdentity): boolean {
  const now = processIdentity(recorded.pid);
  return !!now && now.startTime === recorded.startTime && (recorded.exe === undefined || now.exe === recorded.exe);
}

// ------------------------------------------------------------ pid file

/** What a pid file records: the identity, and for a daemon its pin path and config. */
export interface PidRecord extends ProcessIdentity {
  startedAt: string;
  pinPath?: string;
  configPath?: string;
}

/**
 * Write a pid file whole (temporary file and rename), mode 0600, for this
 * process or a child. A child's executable is not recorded: right after
 * spawn() it may not have exec'd yet.
 */
export function writePidFile(file: string, extra: { pinPath?: string; configPath?: string } = {}, pid = process.pid): PidRecord {
  const id = processIdentity(pid);
  if (!id) throw new Error(`cannot read /proc/${pid}/stat`);
  if (pid !== process.pid) delete id.exe;
  const rec: PidRecord = { ...id, startedAt: new Date().toISOString(), ...extra };
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(rec) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
  return rec;
}

/**
 * The record of a pid file; undefined when there is none, or when it is in
 * the old form (a bare pid, without identity: it cannot be verified, so it
 * is never acted on).
 */
export function readPidFile(file: string): PidRecord | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const r = JSON.parse(text) as Partial<PidRecord>;
    if (typeof r.pid === 'number' && r.pid > 0 && typeof r.startTime === 'string') return r as PidRecord;
  } catch {
    // not ours, or the old bare-pid form
  }
  return undefined;
}

/** What became of a signal sent to a recorded process. */
export type SignalOutcome = 'signalled' | 'gone' | 'not-the-same-process';

/**
 * Sends `signal` to the recorded process only if it is still that process:
 * a pidfd is opened on the pid first, then the identity is checked (a pidfd
 * keeps naming the process it was opened on, so nothing can replace it
 * between the check and the signal), then the signal goes through the pidfd.
 */
export function signalRecorded(rec: ProcessIdentity, signal: NodeJS.Signals | 0): SignalOutcome {
  const l = c();
  const fd = l.pidfd_open(rec.pid, 0);
  if (fd < 0) return 'gone';
  try {
    if (!isSameProcess(rec)) return processIdentity(rec.pid) ? 'not-the-same-process' : 'gone';
    const signo = signal === 0 ? 0 : osConstants.signals[signal];
    return l.pidfd_send_signal(fd, signo, null, 0) === 0 ? 'signalled' : 'gone';
  } finally {
    closeSync(fd);
  }
}

// ----------------------------------------------------------- the lock

/** Another daemon holds the pin path. */
export class InstanceLocked extends Error {
  constructor(
    readonly pinPath: string,
    readonly holder: PidRecord | undefined,
  ) {
    super(
      `another bastion daemon already runs with pin path ${pinPath}` +
        (holder ? ` (pid ${holder.pid}, started ${holder.startedAt}${holder.configPath ? `, config ${holder.configPath}` : ''})` : ' (its pid file is missing)') +
        `; stop it first (bastion down --pin-path ${pinPath}) or choose another --pin-path`,
    );
    this.name = 'InstanceLocked';
  }
}

/** The lock of one pin path, held until release() or the end of the process. */
export interface InstanceLock {
  file: string;
  release(): void;
}

/**
 * Takes the pin path's exclusive lock without waiting. `pidFile` names the
 * holder in the error. After locking, the lock file is checked to still be
 * the file that was opened (down removes a lock file nobody holds, and a
 * daemon that opened it just before must not hold a lock on a removed file
 * while a second daemon locks the new one): if not, it starts again.
 */
export function acquireInstanceLock(lockFile: string, pinPath: string, pidFile: string): InstanceLock {
  mkdirSync(dirname(lockFile), { recursive: true, mode: 0o700 });
  for (;;) {
    const fd = openSync(lockFile, 'a', 0o600); // O_CLOEXEC (libuv): children do not inherit the lock
    if (c().flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      closeSync(fd);
      const holder = readPidFile(pidFile);
      throw new InstanceLocked(pinPath, holder && isSameProcess(holder) ? holder : undefined);
    }
    if (!sameFile(fd, lockFile)) {
      closeSync(fd);
      continue;
    }
    let held = true;
    return {
      file: lockFile,
      release() {
        if (!held) return;
        held = false;
        closeSync(fd);
      },
    };
  }
}

function sameFile(fd: number, path: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(path);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** Is the pin path's lock held by a process (a daemon running)? */
export function isInstanceLocked(lockFile: string): boolean {
  let fd: number;
  try {
    fd = openSync(lockFile, 'r');
  } catch {
    return false;
  }
  try {
    return c().flock(fd, LOCK_EX | LOCK_NB) !== 0;
  } finally {
    closeSync(fd); // releases it if we got it
  }
}

/**
 * Removes the lock file of a pin path nobody holds (bastion down): taken
 * first, removed while held. Returns false (and leaves it) when a daemon
 * holds it.
 */
export function removeInstanceLock(lockFile: string): boolean {
  let fd: number;
  try {
    fd = openSync(lockFile, 'r');
  } catch {
    return true;
  }
  try {
    if (c().flock(fd, LOCK_EX | LOCK_NB) !== 0) return false;
    rmSync(lockFile, { force: true });
    return true;
  } finally {
    closeSync(fd);
  }
}
