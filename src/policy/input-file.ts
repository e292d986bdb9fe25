/**
 * Reading a file the user names as input: the config file, a policies
 * document (`policy add -f`), a Compose file, Kubernetes object files.
 *
 * The daemon runs as root and reports what is wrong with its input in its
 * log, on stderr and in API answers. A path that leads somewhere it should
 * not (a symlink to /etc/shadow, a FIFO, /dev/zero, a file another user
 * controls) must not become a way to read, block or steer it. So a file is
 * opened once and checked on that open descriptor (no race between check
 * and read):
 *
 * - it must be a regular file (not a FIFO, device, socket or directory);
 * - it must be owned by root or by the invoking user (the real uid, or the
 *   user behind sudo): a file another user owns can be changed under us;
 * - it must not be writable by others (mode o+w), for the same reason;
 * - it must not be larger than a limit, checked before reading and while
 *   reading (a file that grows is cut at the limit and refused).
 *
 * Symlinks are followed (a config in /etc pointing into a deployment is
 * ordinary); what they lead to is checked. What the parsers then say about
 * the content quotes only short excerpts (src/policy/errors.ts).
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { formatIssue, type Issue } from './errors.js';

/** Why a file was not read: missing, no permission, refused by a check, too large. */
export type InputFileProblem = 'missing' | 'permission' | 'refused' | 'too-large' | 'unreadable';

export class InputFileError extends Error {
  constructor(
    readonly path: string,
    /** what is wrong, without the path: "cannot read: no such file (ENOENT)" */
    readonly reason: string,
    readonly problem: InputFileProblem,
  ) {
    super(formatIssue(fileIssue(path, reason)));
    this.name = 'InputFileError';
  }

  /** The error as a validation issue of the file as a whole: "PATH: REASON". */
  get issue(): Issue {
    return fileIssue(this.path, this.reason);
  }

  /** The content was not acceptable (refused, too large), rather than not readable: invalid input. */
  get invalidInput(): boolean {
    return this.problem === 'refused' || this.problem === 'too-large';
  }
}

export interface InputFileOptions {
  /** largest size accepted, in bytes */
  maxBytes: number;
  /** how the size limit is raised, for the error ("--max-config-size") */
  limitHint?: string;
  /** users allowed to own the file (default: root and the invoking user) */
  owners?: ReadonlySet<number>;
}

function fileIssue(file: string, message: string): Issue {
  return { code: 'file', file, path: [], message };
}

/** Default limit of input files other than the config file (Compose, Kubernetes objects). */
export const DEFAULT_INPUT_MAX_BYTES = 16 * 1024 * 1024;

/** root, the real uid, and the user who ran sudo (SUDO_UID) when there is one. */
export function invokingOwners(env: NodeJS.ProcessEnv = process.env): Set<number> {
  const owners = new Set<number>([0, process.getuid?.() ?? 0]);
  const sudo = Number(env.SUDO_UID);
  if (Number.isInteger(sudo) && sudo >= 0) owners.add(sudo);
  return owners;
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${+(n / 1024 / 1024).toFixed(1)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** Checks a file's stat against the rules above; a message saying why it is refused, or undefined. */
export function refusalOf(st: Stats, o: InputFileOptions): { message: string; problem: InputFileProblem } | undefined {
  if (!st.isFile()) return { message: `refused: it is ${kindOf(st)}, not a regular file`, problem: 'refused' };
  const owners = o.owners ?? invokingOwners();
  if (!owners.has(st.uid)) {
    const who = [...owners].map((u) => (u === 0 ? 'root' : `uid ${u}`)).join(' or ');
    return { message: `refused: owned by uid ${st.uid}, not by ${who} (another user could change it under Bastion)`, problem: 'refused' };
  }
  if (st.mode & 0o002) return { message: `refused: writable by every user (mode ${(st.mode & 0o7777).toString(8)}); chmod o-w it`, problem: 'refused' };
  if (st.size > o.maxBytes) return tooLarge(st.size, o);
  return undefined;
}

function tooLarge(size: number, o: InputFileOptions): { message: string; problem: InputFileProblem } {
  return {
    message: `refused: ${size > o.maxBytes + 1 ? formatBytes(size) : 'more than the limit'}, over the limit of ${formatBytes(o.maxBytes)}${o.limitHint ? ` (raise it with ${o.limitHint})` : ''}`,
    problem: 'too-large',
  };
}

/**
 * Reads a file the user named as input, after the checks above. Errors are
 * InputFileError, whose message starts with the path.
 */
export function readInputFile(path: string, o: InputFileOptions): string {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below)
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    throw openError(path, err as NodeJS.ErrnoException);
  }
  try {
    const st = fstatSync(fd);
    const refused = refusalOf(st, o);
    if (refused) throw new InputFileError(path, refused.message, refused.problem);
    // Read up to the limit plus one byte: a file that grew past the limit since fstat is refused too.
    const buf = Buffer.allocUnsafe(Math.min(st.size, o.maxBytes) + 1);
    let n = 0;
    for (;;) {
      if (n === buf.length) break;
      let r: number;
      try {
        r = readSync(fd, buf, n, buf.length - n, null);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === 'EAGAIN') continue;
        throw new InputFileError(path, `cannot read: ${e.code ?? e.message}`, 'unreadable');
      }
      if (r === 0) break;
      n += r;
    }
    if (n > o.maxBytes) {
      const t = tooLarge(n, o);
      throw new InputFileError(path, t.message, t.problem);
    }
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}

function openError(path: string, e: NodeJS.ErrnoException): InputFileError {
  switch (e.code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new InputFileError(path, `cannot read: no such file (${e.code})`, 'missing');
    case 'EACCES':
    case 'EPERM':
      return new InputFileError(path, `cannot read: permission denied (${e.code}) for uid ${process.getuid?.()}`, 'permission');
    case 'ELOOP':
      return new InputFileError(path, 'refused: too many levels of symbolic links', 'refused');
    default:
      return new InputFileError(path, `cannot read: ${e.code ?? e.message}`, 'unreadable');
  }
}
