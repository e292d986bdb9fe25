/**
 * The BPF filesystem where Bastion pins its maps (and, optionally, programs).
 *
 * Pinned objects live as long as their pin file, independently of the agent:
 * that is what lets enforcement survive an agent restart. This module makes
 * sure bpffs is mounted and the pin directory exists, and removes pin
 * directories (tests, `bastion uninstall`).
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, rmdirSync, statfsSync, unlinkSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import koffi from 'koffi';
import { errnoName, libcFunction } from '../sys/libc.js';

export const BPFFS_ROOT = '/sys/fs/bpf';
/** f_type of a bpffs superblock (BPF_FS_MAGIC in linux/magic.h). */
const BPF_FS_MAGIC = 0xcafe4a11;

/** True when `path` is on a bpf filesystem. */
export function isBpffs(path: string): boolean {
  try {
    return statfsSync(path).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Mounts bpffs at /sys/fs/bpf unless it already is. Done through mount(2)
 * rather than by running mount(8): the agent does this at every start.
 */
export function ensureBpffsMounted(root = BPFFS_ROOT): void {
  if (isBpffs(root)) return;
  mkdirSync(root, { recursive: true });
  const mount = libcFunction<(src: string, target: string, fstype: string, flags: number, data: string) => number>('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const char *data)');
  // mode=0700: pins give write access to the datapath's maps; root only.
  if (mount('bpf', root, 'bpf', 0, 'mode=0700') !== 0) {
    const errno = koffi.errno();
    throw new Error(`mount -t bpf bpf ${root}: ${errnoName(errno)} (the agent must run as root, with CAP_SYS_ADMIN)`);
  }
  if (!isBpffs(root)) throw new Error(`${root} is not a bpf filesystem after mounting it`);
}

/**
 * A pin path that must not be used: a component is a symbolic link, or is
 * owned by someone else, or can be changed by someone else.
 */
export class PinPathRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PinPathRefused';
  }
}

/**
 * Who may own the directories of a pin path: root, and the user the daemon
 * runs as (a daemon with capabilities but without uid 0 owns what it makes).
 */
function trustedOwners(): Set<number> {
  return new Set([0, process.geteuid?.() ?? 0]);
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** "/sys/fs/bpf/a/b" → ["/", "/sys", "/sys/fs", "/sys/fs/bpf", "/sys/fs/bpf/a", "/sys/fs/bpf/a/b"] */
function components(abs: string): string[] {
  const out = ['/'];
  let cur = '';
  for (const part of abs.split('/').filter(Boolean)) out.push((cur += `/${part}`));
  return out;
}

/**
 * Checks every existing component of a pin path, from / down. /sys/fs/bpf
 * may be world-writable (mode 1777 on many hosts): another user can create
 * the pin directory first, or a symlink in its place, and then remove our
 * pins while status says all is in place, or make `down` remove pins of
 * another directory. So a pin path is refused when a component
 *
 * - is a symbolic link (lexical and physical paths then agree),
 * - is not owned by root or the daemon's user,
 * - can be written by group or others without the sticky bit (anyone could
 *   rename what is in it); the pin directory itself must not be writable by
 *   group or others at all.
 *
 * Returns the absolute path and whether it exists.
 */
export function checkPinPath(pinRoot: string): { abs: string; exists: boolean } {
  const abs = resolve(pinRoot);
  const owners = trustedOwners();
  for (const p of components(abs)) {
    const st = lstatOrUndefined(p);
    if (!st) return { abs, exists: false };
    if (st.isSymbolicLink()) throw new PinPathRefused(`pin path ${abs} refused: ${p} is a symbolic link (use the real path; a link could lead Bastion to another directory)`);
    if (!st.isDirectory()) throw new PinPathRefused(`pin path ${abs} refused: ${p} is not a directory`);
    if (!owners.has(st.uid)) {
      throw new PinPathRefused(`pin path ${abs} refused: ${p} is owned by uid ${st.uid}, not by root (another user made it; remove it, or choose another --pin-path)`);
    }
    const own = p === abs;
    if (own ? st.mode & 0o022 : st.mode & 0o022 && !(st.mode & 0o1000)) {
      throw new PinPathRefused(`pin path ${abs} refused: ${p} is writable by ${st.mode & 0o002 ? 'every user' : 'its group'} (mode ${(st.mode & 0o7777).toString(8)})`);
    }
  }
  return { abs, exists: true };
}

/**
 * Makes sure `pinRoot` is a directory on bpffs that only root (or the
 * daemon's user) controls: mounts /sys/fs/bpf first if the pin root is
 * below it, refuses a path checkPinPath refuses, creates what is missing one
 * directory at a time with mode 0700 (an EEXIST means someone was faster:
 * what they made is checked again) and leaves the pin directory at 0700.
 * Returns the absolute pin root.
 */
export function ensurePinRoot(pinRoot: string): string {
  const abs = resolve(pinRoot);
  if (abs === BPFFS_ROOT || abs.startsWith(BPFFS_ROOT + '/')) ensureBpffsMounted(BPFFS_ROOT);
  if (!checkPinPath(abs).exists) {
    for (const p of components(abs)) {
      if (lstatOrUndefined(p)) continue;
      try {
        mkdirSync(p, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    checkPinPath(abs);
  }
  // ours, and only ours: rwx------ (a umask or an older version may have left more)
  if ((lstatSync(abs).mode & 0o777) !== 0o700) chmodSync(abs, 0o700);
  if (!isBpffs(abs)) {
    throw new Error(`pin root ${abs} is not on a bpf filesystem (mount -t bpf bpf ${dirname(abs)})`);
  }
  return abs;
}

/**
 * Removes every pin under `dir` and the directory itself. Unpinning drops
 * the kernel object once nothing else (an fd, a tc filter) holds it.
 * Missing directories are fine. Refuses a path checkPinPath refuses and
 * anything outside bpffs, and never follows a symbolic link: one inside the
 * directory is removed as a link, not walked into.
 */
export function removePinDir(dir: string): void {
  const { abs, exists } = checkPinPath(dir);
  if (!exists) return;
  if (!isBpffs(abs)) throw new Error(`refusing to remove ${abs}: not on a bpf filesystem`);
  removeTree(abs);
}

function removeTree(abs: string): void {
  // Dirent types come from lstat semantics: a symlink is a symlink, never its target
  for (const entry of readdirSync(abs, { withFileTypes: true })) {
    const p = join(abs, entry.name);
    if (entry.isDirectory()) removeTree(p);
    else unlinkSync(p);
  }
  rmdirSync(abs);
}

/** Names of the pins directly under `dir` (empty when it does not exist). */
export function listPins(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

