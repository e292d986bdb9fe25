/**
 * Noticing that the config file holds a complete new version, and never
 * applying one that is half written.
 *
 * A file written in place (`cat > bastion.yaml`, an editor that truncates
 * then writes, a script writing in several steps) goes through every
 * prefix of its new content. Applying one of them can drop containers out
 * of protection, or allow every port of a policy whose `ports:` line is
 * not written yet. So the watch follows the writer through inotify, which
 * says when a file opened for writing is closed:
 *
 * - while a writer modifies the file (IN_MODIFY) nothing is applied;
 * - when it closes it (IN_CLOSE_WRITE), or a complete file is renamed into
 *   place (IN_MOVED_TO: editors and `mv`), the file must then stay
 *   unchanged for SETTLE_MS (a script that writes in several opens) and be
 *   whole (end with a newline: a last line still being written is not);
 *   then the reload runs, and reads it again itself;
 * - a file whose content is what the last reload read is not handed over
 *   again (touched, rewritten the same). That reload, not this watch, is the
 *   judge: when a second version landed as a reload started, the reload read
 *   the second one, and the first written back is a change to reload.
 * - a writer that keeps the file open is waited for, however long it
 *   pauses (past STALLED_MS the log says so, and SIGHUP or POST /v1/reload
 *   applies the file as it is: an operator's explicit request).
 *
 * The directory is watched, not the file: editors and `mv` replace the
 * file, which would silently end a watch on the file itself. A config path
 * that is a symlink is watched where it points too.
 */
import { closeSync, readFileSync, readSync, realpathSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import koffi from 'koffi';
import { errnoName, libcFunction } from '../sys/libc.js';
import { configDigest } from './config-source.js';
import type { Logger } from 'pino';

/** How long a closed or renamed file must stay unchanged before it is applied. */
export const SETTLE_MS = 300;
/** A complete file renamed into place (an editor's save, `mv`): only the other events of the same save are waited for. */
const RENAME_SETTLE_MS = 50;
/** After this long with a writer that has not closed the file, the log says the change waits for it. */
const STALLED_MS = 10_000;
/** How often inotify's queue is read (a non-blocking read: one syscall). */
const POLL_MS = 50;

const IN_MODIFY = 0x2;
const IN_ATTRIB = 0x4;
const IN_CLOSE_WRITE = 0x8;
const IN_MOVED_FROM = 0x40;
const IN_MOVED_TO = 0x80;
const IN_CREATE = 0x100;
const IN_DELETE = 0x200;
const IN_Q_OVERFLOW = 0x4000;
const IN_NONBLOCK = 0o4000;
const IN_CLOEXEC = 0o2000000;

interface Inotify {
  init1(flags: number): number;
  addWatch(fd: number, path: string, mask: number): number;
}
let inotify: Inotify | undefined;
function lib(): Inotify {
  if (!inotify) {
    inotify = {
      init1: libcFunction<Inotify['init1']>('int inotify_init1(int flags)'),
      addWatch: libcFunction<Inotify['addWatch']>('int inotify_add_watch(int fd, const char *path, uint32_t mask)'),
    };
  }
  return inotify;
}

/** One inotify event: the watch, what happened, the name in the directory. */
export interface WatchEvent {
  wd: number;
  mask: number;
  name: string;
}

/** Splits what read() returned from an inotify fd into events (struct inotify_event, linux/inotify.h). */
export function parseInotifyEvents(buf: Buffer, length: number): WatchEvent[] {
  const out: WatchEvent[] = [];
  for (let off = 0; off + 16 <= length; ) {
    const wd = buf.readInt32LE(off);
    const mask = buf.readUInt32LE(off + 4);
    const len = buf.readUInt32LE(off + 12);
    const raw = buf.subarray(off + 16, off + 16 + len);
    const nul = raw.indexOf(0);
    out.push({ wd, mask, name: raw.subarray(0, nul < 0 ? raw.length : nul).toString('utf8') });
    off += 16 + len;
  }
  return out;
}

/** What the watch needs from the daemon. */
export interface ConfigWatchOptions {
  /** a complete new version is there: reload */
  onComplete(): void;
  log?: Logger;
  /** for metrics and status: a change waits for its writer (or for the rest of its last line) */
  onPending?(pending: string | undefined): void;
  /**
   * configDigest of what the last reload read (undefined: not known, a
   * reload is reading). A file with that content is not handed over again.
   * Without it, the watch compares with what it last handed over itself,
   * which a reload may not have read (a newer version landed as it started).
   */
  lastRead?: () => string | undefined;
}

/**
 * Follows the config file; calls onComplete when it holds a complete new
 * version (see above). Returns the function that stops watching.
 */
export function watchConfigFile(path: string, o: ConfigWatchOptions): () => void {
  const file = resolve(path);
  const targets = new Set([file]);
  try {
    targets.add(realpathSync(file));
  } catch {
    // not there yet: its directory is watched all the same
  }
  const l = lib();
  const fd = l.init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) throw new Error(`inotify_init1: ${errnoName(koffi.errno())}`);
  const names = new Map<number, string>(); // wd -> the basename watched in that directory
  for (const t of targets) {
    const wd = l.addWatch(fd, dirname(t), IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE);
    if (wd < 0) {
      closeSync(fd);
      throw new Error(`inotify_add_watch ${dirname(t)}: ${errnoName(koffi.errno())}`);
    }
    names.set(wd, basename(t));
  }

  let writing = false;
  let writingSince = 0;
  let stallLogged = false;
  let settle: NodeJS.Timeout | undefined;
  let handedOver = o.lastRead ? undefined : digestOf(read());
  const pending = (why: string | undefined) => o.onPending?.(why);
  /** What the file is compared with: what the last reload read, or else what this watch last handed over. */
  const judged = () => (o.lastRead ? o.lastRead() : handedOver);

  function read(): string | undefined {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  }
  function digestOf(text: string | undefined): string | undefined {
    return text === undefined ? undefined : configDigest(text);
  }

  /** The file has been closed or replaced and left alone for SETTLE_MS: apply it if it is whole and new. */
  const check = () => {
    settle = undefined;
    if (writing) return;
    const text = read();
    const digest = digestOf(text);
    // A stale lastRead (a reload asked for, not reading yet) only hands the file over once more: reloads coalesce.
    if (digest === judged()) return pending(undefined);
    if (text !== undefined && text.length > 0 && !text.endsWith('\n')) {
      // a last line still being written (or a file without a final newline: the next change, or SIGHUP, applies it)
      o.log?.info({ path: file }, 'config file changed but does not end with a newline: waiting for the rest before applying it');
      return pending('the config file does not end with a newline yet');
    }
    handedOver = digest;
    pending(undefined);
    o.onComplete();
  };
  const schedule = (ms = SETTLE_MS) => {
    clearTimeout(settle);
    settle = setTimeout(check, ms);
  };

  const buf = Buffer.alloc(64 * 1024);
  const poll = setInterval(() => {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') o.log?.warn({ err: (err as Error).message }, 'config watch: reading inotify failed');
        break;
      }
      if (n <= 0) break;
      for (const ev of parseInotifyEvents(buf, n)) {
        if (ev.mask & IN_Q_OVERFLOW) {
          // events were lost: look again once things are quiet
          writing = false;
          schedule();
          continue;
        }
        if (names.get(ev.wd) !== ev.name) continue;
        if (ev.mask & IN_MODIFY) {
          if (!writing) {
            writing = true;
            writingSince = Date.now();
            stallLogged = false;
            pending('the config file is being written');
          }
          clearTimeout(settle);
        }
        if (ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_ATTRIB)) {
          // closed by its writer, or replaced, removed, created (a created file is also closed later), chmod-ed
          if (ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) writing = false;
          // a file renamed into place was complete before it got its name: at once, nearly
          if (!writing) schedule(ev.mask & IN_MOVED_TO ? RENAME_SETTLE_MS : SETTLE_MS);
        }
      }
    }
    if (writing && !stallLogged && Date.now() - writingSince > STALLED_MS) {
      stallLogged = true;
      o.log?.warn({ path: file }, `config file open for writing for ${STALLED_MS / 1000} s: its change is applied when the writer closes it (or on SIGHUP / bastion reload)`);
    }
  }, POLL_MS);
  poll.unref();

  return () => {
    clearInterval(poll);
    clearTimeout(settle);
    closeSync(fd);
  };
}
