/**
 * The BPF filesystem where Bastion pins its maps (and, optionally, programs).
 *
 * Pinned objects live as long as their pin file, independently of the agent:
 * that is what lets enforcement survive an agent restart. This module makes
 * sure bpffs is mounted and the pin directory exists, and removes pin
 * directories (tests, `bastion uninstall`).
 */
import { mkdirSync, readdirSync, rmdirSync, statfsSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { getSystemErrorName } from 'node:util';
import koffi from 'koffi';

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

let mountFn: ((src: string, target: string, fstype: string, flags: number, data: string | null) => number) | undefined;

/**
 * Mounts bpffs at /sys/fs/bpf unless it already is. Done through mount(2)
 * rather than by running mount(8): the agent does this at every start.
 */
export function ensureBpffsMounted(root = BPFFS_ROOT): void {
  if (isBpffs(root)) return;
  mkdirSync(root, { recursive: true });
  if (!mountFn) mountFn = koffi.load('libc.so.6').func('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const char *data)');
  // mode=0700: pins give write access to the datapath's maps; root only.
  if (mountFn!('bpf', root, 'bpf', 0, 'mode=0700') !== 0) {
    const errno = koffi.errno();
    throw new Error(`mount -t bpf bpf ${root}: ${errnoText(errno)} (the agent must run as root, with CAP_SYS_ADMIN)`);
  }
  if (!isBpffs(root)) throw new Error(`${root} is not a bpf filesystem after mounting it`);
}

/**
 * Makes sure `pinRoot` is a directory on bpffs, mounting /sys/fs/bpf first
 * if the pin root is below it. Returns the absolute pin root.
 */
export function ensurePinRoot(pinRoot: string): string {
  const abs = resolve(pinRoot);
  if (abs === BPFFS_ROOT || abs.startsWith(BPFFS_ROOT + '/')) ensureBpffsMounted(BPFFS_ROOT);
  mkdirSync(abs, { recursive: true, mode: 0o700 });
  if (!isBpffs(abs)) {
    throw new Error(`pin root ${abs} is not on a bpf filesystem (mount -t bpf bpf ${dirname(abs)})`);
  }
  return abs;
}

/**
 * Removes every pin under `dir` and the directory itself. Unpinning drops
 * the kernel object once nothing else (an fd, a tc filter) holds it.
 * Missing directories are fine. Refuses to work outside bpffs.
 */
export function removePinDir(dir: string): void {
  const abs = resolve(dir);
  let st;
  try {
    st = statSync(abs);
  } catch {
    return;
  }
  if (!isBpffs(abs)) throw new Error(`refusing to remove ${abs}: not on a bpf filesystem`);
  if (!st.isDirectory()) {
    unlinkSync(abs);
    return;
  }
  for (const entry of readdirSync(abs, { withFileTypes: true })) {
    const p = join(abs, entry.name);
    if (entry.isDirectory()) removePinDir(p);
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

function errnoText(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}
